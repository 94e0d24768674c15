//! The one write transaction of the store ([`Ingest`]): blocks are appended to a pack as they come,
//! each in the form chosen for it (a frame of neighbours, a delta on a similar stored block, a patched
//! normal form, a slice of a recipe's output), and nothing becomes visible until [`Ingest::commit`]
//! fsyncs the packs and commits one index transaction. Compaction moves records through it too
//! (`Ingest::move_pack`), so every index write that names pack bytes follows the same order.

mod compact;
mod forms;

use std::collections::{HashMap, HashSet};
use std::io;

use redb::{ReadableTable, TableHandle};


use super::compress::{CompressPool, Dictionary, StorageConfig};
use super::error::{Sha256Key, StoreError};
use super::pack::PACK_TARGET;
use super::tables::*;
use super::{alias_key, similar, Store};
use crate::dag::{BlockHash, BlockSink, Cid};
use crate::nix::hash::{NarHash, NixHash};
use crate::nix::narinfo::NarInfo;

/// A manifest entry made visible by [`Ingest::commit`].
#[derive(Debug, Clone)]
pub enum Manifest {
    /// A NAR: NarHash → root.
    Nar {
        /// SHA-256 of the NAR.
        nar_hash: NarHash,
        /// Where it is.
        entry: NarEntry,
    },
    /// A store path's metadata. Its NAR must be in the store or in the same commit. Recorded by a door
    /// the operator trusts, so the gateway vouches for it (and signs it).
    Path(Box<NarInfo>),
    /// A store path's metadata from a source the node does not vouch for (a peer): recorded like
    /// [`Manifest::Path`] and marked in `foreign-paths-0`, so it is served only with the signatures it
    /// carries.
    ForeignPath(Box<NarInfo>),
    /// A flat file, under its SHA-256 and aliases.
    File {
        /// SHA-256 of the file.
        sha256: [u8; 32],
        /// Where it is and what it is called.
        entry: FileEntry,
        /// Its other hashes (sha512, sha1, md5).
        aliases: Vec<NixHash>,
    },
    /// A catalogue snapshot's root (its nodes are this ingest's blocks): replaces the store's last one
    /// in `snapshots-0`.
    Snapshot(Cid),
}

/// A write transaction (an ingest, a repack, a compaction). Blocks go to the pack as they come; nothing becomes visible until
/// [`commit`](Ingest::commit), and dropping the guard without committing cuts its bytes off the pack again
/// (when no other ingest appended after them).
#[must_use = "an ingest that is not committed is rolled back"]
pub struct Ingest<'s> {
    store: &'s Store,
    pending: HashMap<BlockHash, BlockLoc>,
    /// End of this ingest's last record in each pack it wrote to.
    ends: HashMap<u32, u64>,
    /// Start of this ingest's latest unbroken run of records (pack, offset): only that run can be cut
    /// off again on rollback, since another ingest may have appended (and committed) before it.
    run_start: Option<(u32, u64)>,
    protected: Vec<BlockHash>,
    /// Compression threads, started with the first new block.
    pool: Option<CompressPool>,
    /// New blocks handed to the pool and not yet appended.
    queued: HashSet<BlockHash>,
    committed: bool,
    /// Whether this ingest holds its share of the cross-process gc lock.
    gated: bool,
    /// Bytes of new blocks (before compression) and their count.
    new_bytes: u64,
    new_blocks: u64,
    /// How new blocks are stored (the store's setting when the ingest began).
    cfg: StorageConfig,
    /// New blocks waiting to fill a frame, and their bytes.
    frame: Vec<(BlockHash, Vec<u8>)>,
    frame_bytes: usize,
    /// Super-features of new blocks, until their stored form is known.
    features: HashMap<BlockHash, [u64; similar::SUPERS]>,
    /// Super-features to index at commit: blocks that may serve as delta bases.
    similar: Vec<(u64, BlockHash)>,
    /// The dictionary new frames use (`cfg.dict`), looked up with the first frame.
    dict: Option<Dictionary>,
    dict_looked_up: bool,
    /// While the store has no dictionary: pieces of new framed blocks to train one on, and their sizes.
    samples: Vec<u8>,
    sample_sizes: Vec<usize>,
    /// A dictionary this ingest trained, to become the store's at commit.
    new_dict: Option<BlockHash>,
    /// Streams to queue for `import::repack` at commit (root, [`REPACK_NAR`] or [`REPACK_FILE`]).
    to_repack: Vec<(Cid, u8)>,
    /// Streams a repack has dealt with, to take off the queue at commit.
    repacked: Vec<Cid>,
    /// Blocks whose index entry this ingest replaces (a repack turning a stored leaf into a slice of a
    /// recipe's output); every other pending block keeps an entry that exists already.
    replacing: HashSet<BlockHash>,
    /// Stored blocks this ingest's DAGs reuse, while a repack wants to know (`track_reused`).
    reused: Option<Vec<BlockHash>>,
    /// Blocks no delta may be built on (see [`base_allowed`](Self::base_allowed)).
    avoid_bases: Option<HashSet<BlockHash>>,
    /// New blocks are written raw, each in a record of its own, and offered as no delta base: the
    /// leaves of a compressed file queued for a repack. They hardly compress, and once the repack
    /// re-indexes them their records are dead, which a frame shared with other blocks would keep alive.
    as_is: bool,
    /// The NARs and files this ingest commits arrived as uploads: they are recorded in `uploaded-0`,
    /// which eviction keeps unless told otherwise.
    uploaded: bool,
}

impl<'s> Ingest<'s> {
    pub(super) fn new(store: &'s Store) -> Self {
        // Keep other processes' gc sweeps out while this ingest may reuse stored blocks (see GcGate). An
        // error here (no lock could be taken) leaves only in-process protection; it is reported, not fatal.
        let gated = match store.ingest_gate(true) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("nixdag: ingest without the cross-process gc lock: {e}");
                false
            }
        };
        Ingest {
            gated,
            store,
            pending: HashMap::new(),
            ends: HashMap::new(),
            run_start: None,
            protected: Vec::new(),
            pool: None,
            queued: HashSet::new(),
            committed: false,
            new_bytes: 0,
            new_blocks: 0,
            cfg: store.storage(),
            frame: Vec::new(),
            frame_bytes: 0,
            features: HashMap::new(),
            similar: Vec::new(),
            dict: None,
            dict_looked_up: false,
            samples: Vec::new(),
            sample_sizes: Vec::new(),
            new_dict: None,
            to_repack: Vec::new(),
            repacked: Vec::new(),
            replacing: HashSet::new(),
            reused: None,
            avoid_bases: None,
            as_is: false,
            uploaded: false,
        }
    }

    /// Record the NARs and files this ingest commits as uploads (`uploaded-0`): eviction keeps them.
    pub fn mark_uploaded(&mut self) {
        self.uploaded = true;
    }

    /// Whether `hash` still has to be written: not in this ingest, not in the store. A block found in the
    /// store stays protected for the rest of the ingest. Protect before looking: a GC that has not swept
    /// yet will now keep the block; one that already swept it committed first, and the lookup sees it gone.
    fn is_new(&mut self, hash: BlockHash) -> Result<bool, StoreError> {
        if self.pending.contains_key(&hash) || self.queued.contains(&hash) {
            return Ok(false);
        }
        self.protect(hash);
        let stored = self.store.block_loc(&hash)?.is_some();
        if let (true, Some(reused)) = (stored, &mut self.reused) {
            reused.push(hash);
        }
        Ok(!stored)
    }

    /// From now on, note every stored block the ingest reuses rather than writes.
    pub(crate) fn track_reused(&mut self) {
        self.reused = Some(Vec::new());
    }

    /// The blocks noted since [`track_reused`](Self::track_reused).
    pub(crate) fn take_reused(&mut self) -> Vec<BlockHash> {
        self.reused.take().unwrap_or_default()
    }

    /// Register `hash` as needed by this ingest, so a concurrent GC keeps it.
    fn protect(&mut self, hash: BlockHash) {
        *self.store.protected().lock().entry(hash).or_insert(0) += 1;
        self.protected.push(hash);
    }

    /// Build no delta on these blocks or on chains through them (a repack's stream leaves).
    pub(crate) fn avoid_bases(&mut self, blocks: HashSet<BlockHash>) {
        self.avoid_bases = Some(blocks);
    }

    fn pool(&mut self) -> Result<&mut CompressPool, StoreError> {
        if self.pool.is_none() {
            self.pool = Some(CompressPool::new(self.cfg)?);
        }
        Ok(self.pool.as_mut().expect("just started"))
    }

    /// Append one record (given in parts) to the active pack, opening or rolling it as needed; never to
    /// pack `avoid` (the one being compacted). The pack is registered as holding uncommitted records of
    /// this ingest until the guard is dropped.
    fn append(&mut self, parts: &[&[u8]], avoid: Option<u32>) -> Result<(u32, u64), StoreError> {
        let mut writer = self.store.packs().lock_writer();
        let writer = &mut *writer;
        if writer.pack.as_ref().is_some_and(|a| a.len >= PACK_TARGET || Some(a.id) == avoid) {
            // Everything in a closed pack is durable before anyone can commit references to it; the pack
            // stays locked by this process (uncommitted records of ours may be in it).
            writer.retire()?;
            writer.pack = Some(self.store.new_pack()?);
        }
        let pack = match &mut writer.pack {
            Some(p) => p,
            None => writer.pack.insert(self.store.resume_pack(avoid)?),
        };
        let offset = pack.len;
        if self.ends.get(&pack.id) != Some(&offset) {
            self.run_start = Some((pack.id, offset));
        }
        for part in parts {
            pack.append(part)?;
        }
        if self.ends.insert(pack.id, pack.len).is_none() {
            *writer.in_flight.entry(pack.id).or_insert(0) += 1;
        }
        Ok((pack.id, offset))
    }

    /// Make every record this ingest appended durable.
    fn sync_packs(&mut self) -> Result<(), StoreError> {
        if !self.ends.is_empty() {
            if let Some(p) = self.store.packs().lock_writer().pack.as_mut() {
                p.sync()?;
            }
        }
        Ok(())
    }

    /// Raise each pack's committed length to cover this ingest's records (never lower it: another
    /// ingest may have committed further). Part of the transaction that indexes the records.
    fn record_pack_ends(&self, packs: &mut redb::Table<u32, u64>) -> Result<(), StoreError> {
        for (&id, &end) in &self.ends {
            let old = packs.get(id).map_err(StoreError::row("read", PACKS.name(), id))?.map(|v| v.value()).unwrap_or(0);
            packs.insert(id, old.max(end)).map_err(StoreError::row("write", PACKS.name(), id))?;
        }
        Ok(())
    }

    /// Blocks this ingest wrote (new to the store) and their raw bytes.
    pub fn new_blocks(&self) -> (u64, u64) {
        (self.new_blocks, self.new_bytes)
    }

    /// The store written to.
    pub fn store(&self) -> &'s Store {
        self.store
    }

    /// How new blocks are stored (the store's setting when the ingest began).
    pub fn storage(&self) -> &StorageConfig {
        &self.cfg
    }

    /// From now on write new blocks raw, each in a record of its own, and offer them as no delta base:
    /// the leaves of a compressed file queued for a repack. They hardly compress, and once the repack
    /// re-indexes them their records are dead, which a frame shared with other blocks would keep alive.
    pub fn set_as_is(&mut self, as_is: bool) {
        self.as_is = as_is;
    }

    /// Queue the stream under `root` (`REPACK_NAR` or `REPACK_FILE`) for a repack, at commit.
    pub fn queue_repack(&mut self, root: Cid, kind: u8) {
        self.to_repack.push((root, kind));
    }

    /// Make the ingest durable and visible: fsync the pack, then in one transaction index its blocks and
    /// record `manifests`. This is the only place a manifest becomes visible.
    ///
    ///
    /// Every commit is durable (the pack is fsynced before the index commit): other processes may have
    /// the store open and must never see a manifest whose blocks a crash could take back. (A batch mode
    /// that deferred the fsyncs saved 0.85 ms per commit, about 1 % of a corpus ingest; redb refuses it
    /// in multi-process mode.)
    pub fn commit(mut self, manifests: &[Manifest]) -> Result<(), StoreError> {
        self.write_compressed(true)?;
        let queue_unchanged = self.to_repack.is_empty() && self.repacked.is_empty();
        if self.pending.is_empty() && queue_unchanged && !self.uploaded && self.already_recorded(manifests)? {
            // Nothing new: leave the index file alone (re-adding is a no-op, byte for byte).
            self.committed = true;
            return Ok(());
        }
        let txn = self.store.db().begin_write().map_err(StoreError::txn("begin write"))?;
        self.sync_packs()?;
        {
            let mut blocks = txn.open_table(BLOCKS).map_err(StoreError::table_op("open", BLOCKS.name()))?;
            for (hash, loc) in &self.pending {
                // A block another ingest committed meanwhile keeps its first location: deltas may already
                // be built on that copy (and on its chain depth). This copy stays as dead bytes.
                if self.replacing.contains(hash) || blocks.get(hash.0.as_slice()).map_err(StoreError::row("read", BLOCKS.name(), hash))?.is_none() {
                    blocks.insert(hash.0.as_slice(), loc.encode().as_slice()).map_err(StoreError::row("write", BLOCKS.name(), hash))?;
                }
            }
            if !queue_unchanged {
                let mut queue = txn.open_table(REPACK).map_err(StoreError::table_op("open", REPACK.name()))?;
                for root in &self.repacked {
                    queue.remove(root.to_bytes().as_slice()).map_err(StoreError::row("remove", REPACK.name(), root))?;
                }
                for (root, kind) in &self.to_repack {
                    queue.insert(root.to_bytes().as_slice(), *kind).map_err(StoreError::row("write", REPACK.name(), root))?;
                }
            }
            self.record_pack_ends(&mut txn.open_table(PACKS).map_err(StoreError::table_op("open", PACKS.name()))?)?;
            if let Some(d) = &self.new_dict {
                txn.open_table(META).map_err(StoreError::table_op("open", META.name()))?.insert(META_DICT, d.0.as_slice()).map_err(StoreError::row("write", META.name(), META_DICT))?;
            }
            let mut similar = txn.open_table(SIMILAR).map_err(StoreError::table_op("open", SIMILAR.name()))?;
            for (f, hash) in &self.similar {
                similar.insert(*f, &hash.0[..SIMILAR_PREFIX]).map_err(StoreError::row("write", SIMILAR.name(), f))?;
            }
            let mut nars = txn.open_table(NARS).map_err(StoreError::table_op("open", NARS.name()))?;
            let mut paths = txn.open_table(PATHS).map_err(StoreError::table_op("open", PATHS.name()))?;
            let mut files = txn.open_table(FILES).map_err(StoreError::table_op("open", FILES.name()))?;
            let mut aliases = txn.open_table(FILE_ALIASES).map_err(StoreError::table_op("open", FILE_ALIASES.name()))?;
            let mut foreign = txn.open_table(FOREIGN).map_err(StoreError::table_op("open", FOREIGN.name()))?;
            let mut served = txn.open_table(SERVED).map_err(StoreError::table_op("open", SERVED.name()))?;
            let mut uploaded = txn.open_table(UPLOADED).map_err(StoreError::table_op("open", UPLOADED.name()))?;
            // A root stored now counts as served now: eviction goes by the later of the two.
            let now = super::evict::now_ms();
            let mut stamp = |root: &Cid| -> Result<(), StoreError> {
                let key = root.to_bytes();
                served.insert(key.as_slice(), now).map_err(StoreError::row("write", SERVED.name(), root))?;
                if self.uploaded {
                    uploaded.insert(key.as_slice(), 0).map_err(StoreError::row("write", UPLOADED.name(), root))?;
                }
                Ok(())
            };
            for m in manifests {
                match m {
                    Manifest::Snapshot(root) => {
                        let mut snaps =
                            txn.open_table(SNAPSHOTS).map_err(StoreError::table_op("open", SNAPSHOTS.name()))?;
                        snaps.retain(|_, _| false).map_err(StoreError::table_op("clear", SNAPSHOTS.name()))?;
                        snaps.insert(root.to_bytes().as_slice(), now).map_err(StoreError::row("write", SNAPSHOTS.name(), root))?;
                    }
                    Manifest::Nar { nar_hash, entry } => {
                        nars.insert(nar_hash.0.as_slice(), entry.encode().as_slice()).map_err(StoreError::row("write", NARS.name(), nar_hash))?;
                        stamp(&entry.root)?;
                    }
                    Manifest::Path(info) | Manifest::ForeignPath(info) => {
                        if nars.get(info.nar_hash.0.as_slice()).map_err(StoreError::row("read", NARS.name(), info.nar_hash))?.is_none() {
                            return Err(StoreError::NoSuchNar(info.nar_hash));
                        }
                        let key = info.store_path.hash().to_string();
                        paths.insert(key.as_str(), path_record(info).as_str()).map_err(StoreError::row("write", PATHS.name(), &key))?;
                        // The door that recorded the path last decides whether the gateway vouches for it.
                        if matches!(m, Manifest::ForeignPath(_)) {
                            foreign.insert(key.as_str(), 0).map_err(StoreError::row("write", FOREIGN.name(), &key))?;
                        } else {
                            foreign.remove(key.as_str()).map_err(StoreError::row("remove", FOREIGN.name(), &key))?;
                        }
                    }
                    Manifest::File { sha256, entry, aliases: other } => {
                        files.insert(sha256.as_slice(), entry.encode().as_slice()).map_err(StoreError::row("write", FILES.name(), Sha256Key(sha256)))?;
                        stamp(&entry.root_cid()?)?;
                        for a in other {
                            aliases.insert(alias_key(a).as_slice(), sha256.as_slice()).map_err(StoreError::row("write", FILE_ALIASES.name(), a))?;
                        }
                    }
                }
            }
        }
        txn.commit().map_err(StoreError::txn("commit"))?;
        self.committed = true;
        Ok(())
    }
}

impl Ingest<'_> {
    /// Whether every manifest is stored already, exactly as given.
    fn already_recorded(&self, manifests: &[Manifest]) -> Result<bool, StoreError> {
        let txn = self.store.db().begin_read().map_err(StoreError::txn("begin read"))?;
        let nars = txn.open_table(NARS).map_err(StoreError::table_op("open", NARS.name()))?;
        let paths = txn.open_table(PATHS).map_err(StoreError::table_op("open", PATHS.name()))?;
        let files = txn.open_table(FILES).map_err(StoreError::table_op("open", FILES.name()))?;
        let aliases = txn.open_table(FILE_ALIASES).map_err(StoreError::table_op("open", FILE_ALIASES.name()))?;
        for m in manifests {
            let same = match m {
                Manifest::Snapshot(root) => self.store.snapshot()?.is_some_and(|(r, _)| r == *root),
                Manifest::Nar { nar_hash, entry } => nars
                    .get(nar_hash.0.as_slice())
                    .map_err(StoreError::row("read", NARS.name(), nar_hash))?
                    .is_some_and(|v| v.value() == entry.encode().as_slice()),
                Manifest::Path(info) | Manifest::ForeignPath(info) => {
                    let key = info.store_path.hash().to_string();
                    let same = paths.get(key.as_str()).map_err(StoreError::row("read", PATHS.name(), &key))?
                    .is_some_and(|v| v.value() == path_record(info));
                    same && self.store.is_foreign_path(&key)? == matches!(m, Manifest::ForeignPath(_))
                }
                Manifest::File { sha256, entry, aliases: other } => {
                    let file_same = files
                        .get(sha256.as_slice())
                        .map_err(StoreError::row("read", FILES.name(), Sha256Key(sha256)))?
                        .is_some_and(|v| v.value() == entry.encode().as_slice());
                    let mut all = file_same;
                    for a in other {
                        all = all
                            && aliases
                                .get(alias_key(a).as_slice())
                                .map_err(StoreError::row("read", FILE_ALIASES.name(), a))?
                                .is_some_and(|v| v.value() == sha256.as_slice());
                    }
                    all
                }
            };
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// What `paths-0` keeps of a narinfo: everything but how one particular cache compressed the NAR.
fn path_record(info: &NarInfo) -> String {
    let mut info = info.clone();
    info.url = None;
    info.compression = None;
    info.file_hash = None;
    info.file_size = None;
    info.render()
}

impl BlockSink for Ingest<'_> {
    fn put_block(&mut self, hash: BlockHash, _codec: u64, bytes: &[u8]) -> io::Result<()> {
        self.put(hash, bytes).map_err(io::Error::other)
    }
}

impl Drop for Ingest<'_> {
    fn drop(&mut self) {
        if self.gated {
            let _ = self.store.ingest_gate(false);
        }
        let mut writer = self.store.packs().lock_writer();
        if !self.committed {
            if let (Some((pack, start)), Some(p)) = (self.run_start, writer.pack.as_mut()) {
                // Only our trailing run, and only if nobody appended after it; anything else stays as
                // unindexed garbage for compaction.
                if p.id == pack && self.ends.get(&pack) == Some(&p.len) {
                    let _ = p.truncate(start);
                }
            }
        }
        for id in self.ends.keys() {
            if let Some(n) = writer.in_flight.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    writer.in_flight.remove(id);
                }
            }
        }
        drop(writer);
        let mut protected = self.store.protected().lock();
        for h in self.protected.drain(..) {
            if let Some(n) = protected.get_mut(&h) {
                *n -= 1;
                if *n == 0 {
                    protected.remove(&h);
                }
            }
        }
    }
}
