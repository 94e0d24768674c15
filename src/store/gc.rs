//! Garbage collection: mark from every root, sweep what nothing reaches, compact sparse packs.
//!
//! Mark and sweep run inside one write transaction, so no manifest can appear between them; blocks
//! protected by in-flight ingests are kept, and the protection registry is held until the sweep commits
//! (see the module doc of `store`). Marking refuses to go on past a damaged root: sweeping with an
//! incomplete mark would delete blocks a root still needs, the worst thing this cache can do.

use std::collections::{HashMap, HashSet};

use redb::{ReadableTable, TableHandle};

use super::error::StoreError;
use super::pack::{HEADER_LEN, RECORD_HEADER_LEN};
use super::tables::{BlockLoc, Form, BLOCKS, REPACK, SERVED, SIMILAR, SIMILAR_PREFIX, UPLOADED};
use super::{roots_in, Store};
use crate::dag::cid::{block_hash, cid_from_bytes};
use crate::dag::{walk, BlockHash, WalkMode};

/// What a collection did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcReport {
    /// Roots marked from.
    pub roots: u64,
    /// Blocks reachable from them.
    pub live_blocks: u64,
    /// Blocks removed from the index.
    pub removed_blocks: u64,
    /// Raw bytes of the removed blocks.
    pub removed_bytes: u64,
    /// Packs rewritten without their dead records.
    pub packs_compacted: u64,
    /// Packs deleted (all their records dead, or rewritten elsewhere).
    pub packs_deleted: u64,
    /// Pack bytes freed on disk.
    pub disk_bytes_freed: u64,
}

/// A pack is compacted once less than this share of its bytes is live.
const COMPACT_BELOW_LIVE: f64 = 0.5;

impl Store {
    /// Remove unreachable blocks and compact packs that became sparse.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let mut report = self.without_other_ingests(|| self.mark_and_sweep())?;
        self.compact(&mut report, COMPACT_BELOW_LIVE, u64::MAX)?;
        self.drop_empty_active_pack()?;
        Ok(report)
    }

    /// Compaction opens a fresh pack to move records into; when none moved, that pack is an empty file no
    /// commit names. A read-write open would delete it, but readers open the store read-only: delete it
    /// now (no ingest can be writing to it, we hold the writer).
    pub(crate) fn drop_empty_active_pack(&self) -> Result<(), StoreError> {
        let mut writer = self.packs().lock_writer();
        let Some(p) = writer.pack.as_ref() else { return Ok(()) };
        let id = p.id;
        if p.len != HEADER_LEN || writer.in_flight.get(&id).copied().unwrap_or(0) > 0 {
            return Ok(());
        }
        writer.pack = None;
        self.packs().backend().remove(id)?;
        Ok(())
    }

    pub(super) fn mark_and_sweep(&self) -> Result<GcReport, StoreError> {
        let mut report = GcReport::default();
        let txn = self.db().begin_write().map_err(StoreError::txn("begin write"))?;
        let roots = roots_in(&txn)?;
        report.roots = roots.len() as u64;
        let mut live = crate::dag::reader::Seen::new();
        for (label, root, size) in &roots {
            walk(self, root, Some(*size), &mut live, WalkMode::NodesOnly, &mut |_, _| Ok(()))
                .map_err(|source| StoreError::GcRefused { what: label.clone(), source })?;
        }
        // The latest catalogue snapshot's own nodes (the NARs and files it names are roots already).
        if let Some((snap, _)) = self.snapshot()? {
            for h in self.catalogue_nodes(&snap) {
                live.entry(h).or_insert((crate::dag::cid::DAG_CBOR_CODEC, 0));
            }
        }
        let protected = self.protected().lock();
        {
            let mut blocks = txn.open_table(BLOCKS).map_err(StoreError::table_op("open", BLOCKS.name()))?;
            // Everything a live or protected block needs to be read: its delta base or normalized form,
            // that block's base …
            let mut all = HashMap::new();
            for row in blocks.iter().map_err(StoreError::table_op("scan", BLOCKS.name()))? {
                let (k, v) = row.map_err(StoreError::table_op("scan", BLOCKS.name()))?;
                let hash = BlockHash(k.value().try_into().map_err(|_| StoreError::CorruptIndex {
                    table: "blocks-0",
                    reason: "key is not 32 bytes".into(),
                })?);
                all.insert(hash, BlockLoc::decode(v.value())?);
            }
            let mut keep: HashSet<BlockHash> = live.keys().chain(protected.keys()).copied().collect();
            // The dictionary new frames will use, even while no stored frame uses it yet.
            keep.extend(self.dictionary()?);
            let mut todo: Vec<BlockHash> = keep.iter().copied().collect();
            let mut content = crate::dag::reader::Seen::new();
            while let Some(h) = todo.pop() {
                let Some(loc) = all.get(&h) else { continue };
                if let Some(base) = loc.form.base() {
                    if keep.insert(base) {
                        todo.push(base);
                    }
                }
                // A rebuilt block needs its recipe (its base, above) and the whole content DAG under it.
                if let Form::Rebuilt { recipe, .. } = loc.form {
                    let (root, size) = self.recipe_content(&recipe)?;
                    let before = content.len();
                    walk(self, &root, Some(size), &mut content, WalkMode::NodesOnly, &mut |_, _| Ok(()))
                        .map_err(|source| StoreError::GcRefused { what: format!("content of recipe {recipe}"), source })?;
                    if content.len() != before {
                        for c in content.keys() {
                            if keep.insert(*c) {
                                todo.push(*c);
                            }
                        }
                    }
                }
            }
            report.live_blocks = keep.iter().filter(|h| all.contains_key(h)).count() as u64;
            let mut dead = Vec::new();
            for (hash, loc) in &all {
                if !keep.contains(hash) {
                    dead.push((*hash, *loc));
                }
            }
            for (hash, loc) in &dead {
                blocks.remove(hash.0.as_slice()).map_err(StoreError::row("remove", BLOCKS.name(), hash))?;
                report.removed_blocks += 1;
                report.removed_bytes += u64::from(loc.raw_len);
            }
            // Super-features of removed blocks would offer missing bases.
            // Rows name blocks by a prefix of their hash (format 2: the whole hash); a row whose prefix a
            // removed block shares goes too, which at worst forgets a candidate base.
            let gone: HashSet<[u8; SIMILAR_PREFIX]> =
                dead.iter().map(|(h, _)| h.0[..SIMILAR_PREFIX].try_into().expect("prefix of a hash")).collect();
            let mut similar = txn.open_table(SIMILAR).map_err(StoreError::table_op("open", SIMILAR.name()))?;
            similar
                .retain(|_, v| {
                    (v.len() == SIMILAR_PREFIX || v.len() == 32)
                        && !gone
                            .contains(&<[u8; SIMILAR_PREFIX]>::try_from(&v[..SIMILAR_PREFIX]).expect("length checked"))
                })
                .map_err(StoreError::table_op("remove from", SIMILAR.name()))?;
            // A queued tarball whose blocks are gone has nothing left to repack.
            let removed: HashSet<BlockHash> = dead.iter().map(|(h, _)| *h).collect();
            let mut queue = txn.open_table(REPACK).map_err(StoreError::table_op("open", REPACK.name()))?;
            queue
                .retain(|k, _| {
                    let root = cid_from_bytes(k).ok().and_then(|c| block_hash(&c).ok());
                    root.is_some_and(|h| !removed.contains(&h))
                })
                .map_err(StoreError::table_op("remove from", REPACK.name()))?;
        }
        // Last-served times and upload marks of roots that are gone (forgotten, evicted).
        let root_keys: HashSet<Vec<u8>> = roots.iter().map(|(_, root, _)| root.to_bytes()).collect();
        prune_orphans(&txn, &root_keys)?;
        txn.commit().map_err(StoreError::txn("commit"))?;
        drop(protected);
        Ok(report)
    }

    /// Live record bytes per pack, from the index.
    pub(super) fn live_bytes_per_pack(&self) -> Result<HashMap<u32, u64>, StoreError> {
        let mut live = HashMap::new();
        let mut records = HashSet::new();
        let txn = self.db().begin_read().map_err(StoreError::txn("begin read"))?;
        let t = txn.open_table(BLOCKS).map_err(StoreError::table_op("open", BLOCKS.name()))?;
        for row in t.iter().map_err(StoreError::table_op("scan", BLOCKS.name()))? {
            let (_, v) = row.map_err(StoreError::table_op("scan", BLOCKS.name()))?;
            let loc = BlockLoc::decode(v.value())?;
            // A frame counts once, however many of its members are live.
            if records.insert((loc.pack, loc.offset)) {
                *live.entry(loc.pack).or_insert(0) += RECORD_HEADER_LEN + u64::from(loc.stored_len);
            }
        }
        Ok(live)
    }

    /// Compact every pack less than `below_live` of whose bytes are live, or with at least `min_dead`
    /// dead bytes.
    pub(crate) fn compact(&self, report: &mut GcReport, below_live: f64, min_dead: u64) -> Result<(), StoreError> {
        let live = self.live_bytes_per_pack()?;
        for (id, len) in self.committed_packs()? {
            let payload = len.saturating_sub(HEADER_LEN);
            let l = live.get(&id).copied().unwrap_or(0);
            let sparse = (l as f64) < below_live * payload as f64 || payload.saturating_sub(l) >= min_dead;
            if payload == 0 || !sparse {
                continue;
            }
            self.compact_pack(id, report)?;
        }
        Ok(())
    }

    /// Copy pack `id`'s live records to the active pack, repoint the index, then delete `id`.
    /// Skipped while an uncommitted ingest has records in `id`: its commit will point into that pack.
    pub(super) fn compact_pack(&self, id: u32, report: &mut GcReport) -> Result<(), StoreError> {
        // Another process that appends to `id`, or has uncommitted records there, holds its lock: skip it.
        let _locked = {
            let mut writer = self.packs().lock_writer();
            if writer.in_flight.get(&id).copied().unwrap_or(0) > 0 {
                return Ok(());
            }
            let locked = if writer.holds(id) {
                None
            } else {
                match self.packs().try_lock(id)? {
                    Some(f) => Some(f),
                    None => return Ok(()),
                }
            };
            // Move appends elsewhere now, under the same lock, so no ingest can start writing to `id`.
            if writer.pack.as_ref().is_none_or(|p| p.id == id) {
                writer.retire()?;
                writer.pack = Some(self.resume_pack(Some(id))?);
            }
            locked
        };
        let moved = self.begin_ingest().move_pack(id)?;
        if moved.is_empty() {
            report.packs_deleted += 1;
        } else {
            report.packs_compacted += 1;
        }
        let size = self.packs().list()?.into_iter().find(|(i, _)| *i == id).map_or(0, |(_, len)| len);
        self.packs().backend().remove(id)?;
        self.packs().lock_writer().held.remove(&id);
        self.frame_cache().clear();
        let records: HashMap<(u32, u64), u32> = moved.iter().map(|(_, l)| ((l.pack, l.offset), l.stored_len)).collect();
        let written: u64 = records.values().map(|&n| RECORD_HEADER_LEN + u64::from(n)).sum();
        report.disk_bytes_freed += size.saturating_sub(written);
        Ok(())
    }
}

/// Drop `served-0` and `uploaded-0` rows of roots no manifest names any more (forgotten or evicted),
/// inside GC's transaction: a root stored again later starts afresh.
fn prune_orphans(txn: &redb::WriteTransaction, roots: &HashSet<Vec<u8>>) -> Result<(), StoreError> {
    let mut served = txn.open_table(SERVED).map_err(StoreError::table_op("open", SERVED.name()))?;
    served.retain(|k, _| roots.contains(k)).map_err(StoreError::table_op("remove from", SERVED.name()))?;
    let mut uploaded = txn.open_table(UPLOADED).map_err(StoreError::table_op("open", UPLOADED.name()))?;
    uploaded.retain(|k, _| roots.contains(k)).map_err(StoreError::table_op("remove from", UPLOADED.name()))?;
    Ok(())
}
