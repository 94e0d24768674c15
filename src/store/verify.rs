//! `verify`: re-hash every block, check every pack against its committed length, walk every root.

use redb::ReadableTable;

use super::error::StoreError;
use super::tables::{BlockLoc, Form, BLOCKS, NARS, PACKS, PATHS};
use super::{pack::pack_path, roots_in, Store};
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
}

impl VerifyReport {
    /// Whether the store is consistent.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Check everything. Problems are collected, not returned as errors, so one report lists them all.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let mut r = VerifyReport::default();
        let txn = self.db().begin_read().map_err(StoreError::db("begin read"))?;
        let db = StoreError::db::<redb::StorageError>;

        let packs = txn.open_table(PACKS).map_err(StoreError::db("open table"))?;
        for row in packs.iter().map_err(db("read"))? {
            let (id, committed) = row.map_err(db("read"))?;
            let (id, committed) = (id.value(), committed.value());
            r.packs += 1;
            let path = pack_path(self.packs().dir(), id);
            match std::fs::File::open(&path).and_then(|f| super::pack::check_header(&f)) {
                Ok(super::pack::HeaderState::Ok) | Err(_) => {}
                Ok(h) => r.problems.push(format!(
                    "pack {id}: {}: header is {h:?} (its records are checked one by one)",
                    path.display()
                )),
            }
            match std::fs::metadata(&path) {
                Ok(m) if m.len() >= committed => {}
                Ok(m) => r.problems.push(format!(
                    "pack {id}: {} is {} bytes, but {committed} bytes were committed",
                    path.display(),
                    m.len()
                )),
                Err(e) => r.problems.push(format!("pack {id}: {}: {e}", path.display())),
            }
        }

        let blocks = txn.open_table(BLOCKS).map_err(StoreError::db("open table"))?;
        let mut frames = std::collections::HashSet::new();
        let mut rebuilt: std::collections::HashMap<BlockHash, Vec<(BlockHash, BlockLoc)>> = Default::default();
        for row in blocks.iter().map_err(db("read"))? {
            let (k, v) = row.map_err(db("read"))?;
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
                    }
                }
            }
            // Rebuilt blocks are checked per recipe below: each recipe's output is regenerated once.
            if let Form::Rebuilt { recipe, .. } = loc.form {
                rebuilt.entry(recipe).or_default().push((hash, loc));
                continue;
            }
            match self.read_at(&hash, &loc) {
                Ok(b) => {
                    r.blocks += 1;
                    r.block_bytes += b.len() as u64;
                }
                Err(e) => r.problems.push(e.to_string()),
            }
        }

        for (_, group) in rebuilt {
            for (hash, loc) in group {
                match self.read_at(&hash, &loc) {
                    Ok(b) => {
                        r.blocks += 1;
                        r.block_bytes += b.len() as u64;
                    }
                    Err(e) => r.problems.push(e.to_string()),
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

        let nars = txn.open_table(NARS).map_err(StoreError::db("open table"))?;
        let paths = txn.open_table(PATHS).map_err(StoreError::db("open table"))?;
        for row in paths.iter().map_err(db("read"))? {
            let (k, v) = row.map_err(db("read"))?;
            r.paths += 1;
            match NarInfo::parse(v.value()) {
                Ok(info) => {
                    if nars.get(info.nar_hash.0.as_slice()).map_err(db("read"))?.is_none() {
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
