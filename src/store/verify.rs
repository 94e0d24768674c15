//! `verify`: re-hash every block, check every pack against its committed length, walk every root.

use redb::{ReadableTable, TableHandle};

use super::error::StoreError;
use super::tables::{BlockLoc, Form, BLOCKS, NARS, PACKS, PATHS};
use super::{roots_in, Store};
use crate::dag::{walk, BlockHash, WalkMode};
use crate::nix::narinfo::NarInfo;

/// What `verify` checked and what it found wrong.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct VerifyReport {
    /// Blocks re-hashed.
    pub blocks: u64,
    /// Their raw bytes.
    pub block_bytes: u64,
    /// Packs checked.
    pub packs: u64,
    /// Roots walked (NARs and files).
    pub roots: u64,
    /// Store paths whose metadata was checked.
    pub paths: u64,
    /// One line per problem; empty means consistent.
    pub problems: Vec<String>,
    /// Blocks whose stored bytes cannot be read back to their hash (what `verify --repair` drops from the
    /// index, so that adding or uploading their content again stores them anew).
    #[serde(rename = "damaged_blocks", serialize_with = "as_strings")]
    pub damaged: Vec<BlockHash>,
}

/// Block hashes in a report as their text form.
fn as_strings<S: serde::Serializer>(hashes: &[BlockHash], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(hashes.iter().map(|h| h.to_string()))
}

impl VerifyReport {
    /// Whether the store is consistent.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn check_read(&mut self, hash: BlockHash, read: Result<Vec<u8>, StoreError>) {
        match read {
            Ok(b) => {
                self.blocks += 1;
                self.block_bytes += b.len() as u64;
            }
            Err(e) => {
                self.problems.push(e.to_string());
                self.damaged.push(hash);
            }
        }
    }
}

impl Store {
    /// Drop the index entries of the blocks `report` found damaged, in one commit, and return how many.
    /// Their pack records stay as dead bytes (gc compacts them). The roots that used them are then
    /// incomplete, which `verify` and the gateway report as missing blocks, until their content is added
    /// or uploaded again: an ingest stores a block the index lacks, where it would have reused the
    /// damaged copy.
    pub fn drop_damaged(&self, report: &VerifyReport) -> Result<usize, StoreError> {
        if report.damaged.is_empty() {
            return Ok(0);
        }
        let txn = self.db().begin_write().map_err(StoreError::txn("begin write"))?;
        let mut n = 0;
        {
            let mut blocks = txn.open_table(BLOCKS).map_err(StoreError::table_op("open", BLOCKS.name()))?;
            for h in &report.damaged {
                if blocks.remove(h.0.as_slice()).map_err(StoreError::row("remove", BLOCKS.name(), h))?.is_some() {
                    n += 1;
                }
            }
        }
        txn.commit().map_err(StoreError::txn("commit"))?;
        self.frame_cache().clear();
        Ok(n)
    }

    /// Check everything. Problems are collected, not returned as errors, so one report lists them all.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let mut r = VerifyReport::default();
        let txn = self.db().begin_read().map_err(StoreError::txn("begin read"))?;

        let backend = self.packs().backend();
        let on_disk: std::collections::HashMap<u32, u64> = self.packs().list()?.into_iter().collect();
        let packs = txn.open_table(PACKS).map_err(StoreError::table_op("open", PACKS.name()))?;
        for row in packs.iter().map_err(StoreError::table_op("scan", PACKS.name()))? {
            let (id, committed) = row.map_err(StoreError::table_op("scan", PACKS.name()))?;
            let (id, committed) = (id.value(), committed.value());
            r.packs += 1;
            let name = backend.name(id);
            match backend.header_state(id) {
                Ok(super::pack::HeaderState::Ok) | Err(_) => {}
                Ok(h) => r.problems.push(format!("pack {id}: {name}: header is {h:?} (its records are checked one by one)")),
            }
            match on_disk.get(&id) {
                Some(&len) if len >= committed => {}
                Some(&len) => {
                    r.problems.push(format!("pack {id}: {name} is {len} bytes, but {committed} bytes were committed"))
                }
                None => r.problems.push(format!("pack {id}: {name}: missing")),
            }
        }

        let blocks = txn.open_table(BLOCKS).map_err(StoreError::table_op("open", BLOCKS.name()))?;
        let mut frames = std::collections::HashSet::new();
        // A frame whose payload is damaged is suspect as a whole: repair drops every block in it.
        let mut bad_frames = std::collections::HashSet::new();
        let mut members: std::collections::HashMap<(u32, u64), Vec<BlockHash>> = Default::default();
        let mut rebuilt: std::collections::HashMap<BlockHash, Vec<(BlockHash, BlockLoc)>> = Default::default();
        for row in blocks.iter().map_err(StoreError::table_op("scan", BLOCKS.name()))? {
            let (k, v) = row.map_err(StoreError::table_op("scan", BLOCKS.name()))?;
            let Ok(h) = <[u8; 32]>::try_from(k.value()) else {
                r.problems.push(format!("blocks-0: key of {} bytes", k.value().len()));
                continue;
            };
            let hash = BlockHash(h);
            let loc = match BlockLoc::decode(v.value()) {
                Ok(l) => l,
                Err(e) => {
                    r.problems.push(format!("block {hash}: {e}"));
                    continue;
                }
            };
            if let Form::Framed { .. } = loc.form {
                if frames.insert((loc.pack, loc.offset)) {
                    if let Err(e) = self.check_frame_payload(&loc) {
                        r.problems.push(e);
                        bad_frames.insert((loc.pack, loc.offset));
                    }
                }
                members.entry((loc.pack, loc.offset)).or_default().push(hash);
            }
            // Rebuilt blocks are checked per recipe below: each recipe's output is regenerated once.
            if let Form::Rebuilt { recipe, .. } = loc.form {
                rebuilt.entry(recipe).or_default().push((hash, loc));
                continue;
            }
            r.check_read(hash, self.read_at(&hash, &loc));
        }

        for (_, group) in rebuilt {
            for (hash, loc) in group {
                r.check_read(hash, self.read_at(&hash, &loc));
            }
        }
        for frame in bad_frames {
            for hash in members.remove(&frame).unwrap_or_default() {
                if !r.damaged.contains(&hash) {
                    r.damaged.push(hash);
                }
            }
        }

        let mut seen = crate::dag::reader::Seen::new();
        for (label, root, size) in roots_in(&txn)? {
            r.roots += 1;
            if let Err(e) = walk(self, &root, Some(size), &mut seen, WalkMode::NodesOnly, &mut |_, _| Ok(())) {
                r.problems.push(format!("{label}: {e}"));
            }
        }

        let nars = txn.open_table(NARS).map_err(StoreError::table_op("open", NARS.name()))?;
        let paths = txn.open_table(PATHS).map_err(StoreError::table_op("open", PATHS.name()))?;
        for row in paths.iter().map_err(StoreError::table_op("scan", PATHS.name()))? {
            let (k, v) = row.map_err(StoreError::table_op("scan", PATHS.name()))?;
            r.paths += 1;
            match NarInfo::parse(v.value()) {
                Ok(info) => {
                    if nars.get(info.nar_hash.0.as_slice()).map_err(StoreError::row("read", NARS.name(), info.nar_hash))?.is_none() {
                        r.problems
                            .push(format!("path {}: its NAR {} is not in the store", info.store_path, info.nar_hash));
                    }
                }
                Err(e) => r.problems.push(format!("path {}: unreadable metadata: {e}", k.value())),
            }
        }
        Ok(r)
    }
}
