//! Writing into the store: the [`Ingest`] guard and the ingest pipelines built on it
//! (NAR or file bytes → chunker → DAG builder → blocks).

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use redb::ReadableTable;
use sha2::Digest;

use super::chain::ChainEnd;
use super::compress::{train_dictionary, CompressPool, Compressed, Dictionary, Job, StorageConfig, Tarballs};
use super::error::StoreError;
use super::flat::{flat_compressed_nar_len, FLAT_HEAD};
use super::normalize::{apply_patches, encode_patches, patches_for, Normalizer, Removals};
use super::pack::{record_header, PACK_TARGET};
use super::proven::{self, Claim};
use super::tables::*;
use super::{alias_key, rebuilt, similar, Store};
use crate::chunk::{Chunker, ChunkerConfig, TarSplit};
use crate::dag::builder::BuiltDag;
use crate::dag::{BlockHash, BlockSink, Cid, DagBuilder};
use crate::nix::hash::{HashAlgo, NarHash, NixHash};
use crate::nix::nar::{self, NarSink, NarSummary};
use crate::nix::narinfo::NarInfo;
use crate::recompress;

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
    /// A store path's metadata. Its NAR must be in the store or in the same commit.
    Path(Box<NarInfo>),
    /// A flat file, under its SHA-256 and aliases.
    File {
        /// SHA-256 of the file.
        sha256: [u8; 32],
        /// Where it is and what it is called.
        entry: FileEntry,
        /// Its other hashes (sha512, sha1, md5).
        aliases: Vec<NixHash>,
    },
}

/// An ingest in progress. Blocks go to the pack as they come; nothing becomes visible until
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
    /// Streams to queue for [`Store::repack`] at commit (root, [`REPACK_NAR`] or [`REPACK_FILE`]).
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
}

/// Sample bytes gathered before a dictionary is trained (~40× its size, as zstd advises), and the most
/// taken from one block: the start of many blocks teaches more than all of a few.
const DICT_SAMPLES: usize = 4 << 20;
const DICT_SAMPLE_PIECE: usize = 16 << 10;

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
        }
    }

    /// The store's dictionary for new frames, if `cfg.dict` and it has one; until then, gather samples
    /// from `block` (a new block going into a frame) and train one when there are enough.
    fn frame_dictionary(&mut self, block: &[u8]) -> Result<(), StoreError> {
        if !self.cfg.dict || self.dict.is_some() {
            return Ok(());
        }
        if !self.dict_looked_up {
            self.dict_looked_up = true;
            if let Some(hash) = self.store.dictionary()? {
                self.protect(hash);
                // A dictionary that cannot be read is `verify`'s business; this ingest trains a new one.
                if let Some(bytes) = self.store.block_loc(&hash)?.and_then(|l| self.store.read_at(&hash, &l).ok()) {
                    self.dict = Some(Dictionary { hash, bytes: Arc::new(bytes) });
                    return Ok(());
                }
            }
        }
        let piece = &block[..block.len().min(DICT_SAMPLE_PIECE)];
        self.samples.extend_from_slice(piece);
        self.sample_sizes.push(piece.len());
        if self.samples.len() < DICT_SAMPLES {
            return Ok(());
        }
        let samples = std::mem::take(&mut self.samples);
        let sizes = std::mem::take(&mut self.sample_sizes);
        let Some(bytes) = train_dictionary(&samples, &sizes) else {
            return Ok(()); // nothing to learn: gather again
        };
        let hash = BlockHash::of(&bytes);
        if self.is_new(hash)? {
            // Stored raw in a record of its own: a frame must never need a frame to be read.
            let raw_len = bytes.len() as u32;
            let header = record_header(&hash, raw_len, raw_len, RecordKind::Raw);
            let (pack, offset) = self.append(&[&header, &bytes], None)?;
            self.pending.insert(hash, BlockLoc { pack, offset, stored_len: raw_len, raw_len, form: Form::Raw });
        }
        self.dict = Some(Dictionary { hash, bytes: Arc::new(bytes) });
        self.new_dict = Some(hash);
        Ok(())
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
    pub(super) fn track_reused(&mut self) {
        self.reused = Some(Vec::new());
    }

    /// The blocks noted since [`track_reused`](Self::track_reused).
    pub(super) fn take_reused(&mut self) -> Vec<BlockHash> {
        self.reused.take().unwrap_or_default()
    }

    /// Register `hash` as needed by this ingest, so a concurrent GC keeps it.
    fn protect(&mut self, hash: BlockHash) {
        *self.store.protected().lock().entry(hash).or_insert(0) += 1;
        self.protected.push(hash);
    }

    /// A stored block resembling one with super-features `sf`, shallow enough to be a delta base: the
    /// candidate most super-features point to, or, when its chain is already as long as allowed, the
    /// nearest block down its chain. Protected before it is looked up, as any reused block.
    fn find_base(&mut self, sf: &[u64; similar::SUPERS]) -> Result<Option<(BlockHash, BlockLoc)>, StoreError> {
        let mut votes: Vec<(Vec<u8>, u32)> = Vec::new();
        let best = {
            let txn = self.store.db().begin_read().map_err(StoreError::db("begin read"))?;
            let t = txn.open_table(SIMILAR).map_err(StoreError::db("open table"))?;
            for f in sf {
                if let Some(v) = t.get(*f).map_err(StoreError::db("read"))? {
                    let v = v.value();
                    match votes.iter_mut().find(|(c, _)| c == v) {
                        Some((_, n)) => *n += 1,
                        None => votes.push((v.to_vec(), 1)),
                    }
                }
            }
            let Some((v, _)) = votes.iter().max_by_key(|(_, n)| *n) else { return Ok(None) };
            similar_target(&txn.open_table(BLOCKS).map_err(StoreError::db("open table"))?, v)?
        };
        let Some(mut cand) = best else { return Ok(None) };
        for _ in 0..=self.cfg.max_delta_depth {
            self.protect(cand);
            let Some(loc) = self.store.block_loc(&cand)? else { return Ok(None) };
            match loc.form {
                Form::Delta { base, depth } if depth >= self.cfg.max_delta_depth => cand = base,
                // Reading it would regenerate a whole tarball for every delta built on it.
                Form::Rebuilt { .. } => return Ok(None),
                _ => return Ok(self.base_allowed(cand)?.then_some((cand, loc))),
            }
        }
        Ok(None)
    }

    /// Whether a delta may be built on `base`: always, unless a repack is storing a recipe's content and
    /// the base, or a block its chain stands on, is a leaf of the stream being converted (the content
    /// would then need the stream it rebuilds).
    fn base_allowed(&self, base: BlockHash) -> Result<bool, StoreError> {
        let Some(avoid) = &self.avoid_bases else { return Ok(true) };
        Ok(match self.store.walk_bases(base, |h| avoid.contains(h))? {
            ChainEnd::Ends(Some(form)) => !matches!(form, Form::Rebuilt { .. }),
            ChainEnd::Stopped | ChainEnd::Ends(None) | ChainEnd::TooLong => false,
        })
    }

    /// Build no delta on these blocks or on chains through them (a repack's stream leaves).
    pub(super) fn avoid_bases(&mut self, blocks: HashSet<BlockHash>) {
        self.avoid_bases = Some(blocks);
    }

    fn pool(&mut self) -> Result<&mut CompressPool, StoreError> {
        if self.pool.is_none() {
            self.pool = Some(CompressPool::new(self.cfg)?);
        }
        Ok(self.pool.as_mut().expect("just started"))
    }

    /// Hand the blocks gathered for a frame to the compression threads.
    fn flush_frame(&mut self) -> Result<(), StoreError> {
        if !self.frame.is_empty() {
            let blocks = std::mem::take(&mut self.frame);
            self.frame_bytes = 0;
            let dict = self.dict.clone();
            self.pool()?.submit(Job::Frame(blocks, dict))?;
        }
        Ok(())
    }

    /// Store a block unless the store (or this ingest) has it already.
    pub fn put(&mut self, hash: BlockHash, bytes: &[u8]) -> Result<(), StoreError> {
        if !self.is_new(hash)? {
            return Ok(());
        }
        let raw_len = u32::try_from(bytes.len()).map_err(|_| StoreError::CorruptBlock {
            hash,
            pack: 0,
            offset: 0,
            reason: format!("{} bytes is too large for one block", bytes.len()),
        })?;
        self.new_bytes += u64::from(raw_len);
        self.new_blocks += 1;
        if self.as_is {
            let header = record_header(&hash, raw_len, raw_len, RecordKind::Raw);
            let (pack, offset) = self.append(&[&header, bytes], None)?;
            self.pending.insert(hash, BlockLoc { pack, offset, stored_len: raw_len, raw_len, form: Form::Raw });
            return Ok(());
        }
        self.queued.insert(hash);
        let sf = if self.cfg.max_delta_depth > 0 { similar::super_features(bytes) } else { None };
        let mut job = None;
        if let Some(sf) = sf {
            if let Some((base, base_loc)) = self.find_base(&sf)? {
                // A base that cannot be read is `verify`'s business; this block is simply stored whole.
                if let Ok(base_raw) = self.store.read_at(&base, &base_loc) {
                    let depth = base_loc.form.depth() + 1;
                    job = Some(Job::Delta { hash, raw: bytes.to_vec(), base, base_raw: base_raw.into(), depth });
                }
            }
            self.features.insert(hash, sf);
        }
        match job {
            Some(job) => self.pool()?.submit(job)?,
            None if self.cfg.frame_bytes == 0 => self.pool()?.submit(Job::Single(hash, bytes.to_vec()))?,
            None => {
                self.frame_dictionary(bytes)?;
                self.frame.push((hash, bytes.to_vec()));
                self.frame_bytes += bytes.len();
                if self.frame_bytes >= self.cfg.frame_bytes {
                    self.flush_frame()?;
                }
            }
        }
        self.write_compressed(false)
    }

    /// Store a chunk that normalization changed: `norm` (the chunk as chunked, hash parts replaced) as an
    /// ordinary block, and the real chunk `hash` as a small record of the bytes to put back into it.
    pub(super) fn put_patched(
        &mut self,
        hash: BlockHash,
        raw: &[u8],
        norm: &[u8],
        patches: &[u8],
    ) -> Result<(), StoreError> {
        // Already stored (perhaps whole, by an ingest without normalization): nothing to add.
        if !self.is_new(hash)? {
            return Ok(());
        }
        let norm_hash = BlockHash::of(norm);
        self.put(norm_hash, norm)?;
        // Only in a crafted store could the normal form itself be patched; then keep the chunk whole.
        let base_patched = match self.pending.get(&norm_hash) {
            Some(l) => matches!(l.form, Form::Patched { .. }),
            None => self.store.block_loc(&norm_hash)?.is_some_and(|l| matches!(l.form, Form::Patched { .. })),
        };
        if base_patched {
            return self.put(hash, raw);
        }
        let raw_len = raw.len() as u32;
        let stored_len = patches.len() as u32;
        let header = record_header(&hash, raw_len, stored_len, RecordKind::Patched);
        let (pack, offset) = self.append(&[&header, patches], None)?;
        self.pending
            .insert(hash, BlockLoc { pack, offset, stored_len, raw_len, form: Form::Patched { base: norm_hash } });
        self.new_bytes += u64::from(raw_len);
        self.new_blocks += 1;
        Ok(())
    }

    /// Index a leaf that is a slice of recipe block `recipe`'s output; it has no record of its own.
    fn put_rebuilt(&mut self, hash: BlockHash, raw_len: u32, recipe: BlockHash, start: u64) -> Result<(), StoreError> {
        if !self.is_new(hash)? {
            return Ok(());
        }
        let form = Form::Rebuilt { recipe, start };
        self.pending.insert(hash, BlockLoc { pack: 0, offset: 0, stored_len: 0, raw_len, form });
        self.new_bytes += u64::from(raw_len);
        self.new_blocks += 1;
        Ok(())
    }

    /// Re-index stored leaf `hash` as bytes `start..start + raw_len` of recipe `recipe`'s output (a repack).
    /// Skipped for a block this ingest wrote (the recipe's own content) and for one already rebuilt; its
    /// old record becomes dead bytes for compaction once the commit names the new form.
    pub(super) fn replace_with_rebuilt(
        &mut self,
        hash: BlockHash,
        raw_len: u32,
        recipe: BlockHash,
        start: u64,
    ) -> Result<(), StoreError> {
        if self.pending.contains_key(&hash) || self.queued.contains(&hash) {
            return Ok(());
        }
        self.protect(hash);
        match self.store.block_loc(&hash)? {
            Some(loc) if loc.raw_len == raw_len && !matches!(loc.form, Form::Rebuilt { .. }) => {}
            _ => return Ok(()),
        }
        self.replacing.insert(hash);
        self.pending.insert(
            hash,
            BlockLoc { pack: 0, offset: 0, stored_len: 0, raw_len, form: Form::Rebuilt { recipe, start } },
        );
        Ok(())
    }

    /// Take `root` off the repack queue at commit.
    pub(super) fn mark_repacked(&mut self, root: Cid) {
        self.repacked.push(root);
    }

    /// Append the records the compression threads have finished; with `all`, wait for every one.
    fn write_compressed(&mut self, all: bool) -> Result<(), StoreError> {
        loop {
            if all {
                self.flush_frame()?;
            }
            while let Some(c) = match &mut self.pool {
                Some(p) => p.next(all)?,
                None => None,
            } {
                match c {
                    Compressed::Single { hash, raw_len, payload, form } => {
                        let stored_len = payload.len() as u32;
                        let header = record_header(&hash, raw_len, stored_len, form.kind());
                        let (pack, offset) = self.append(&[&header, &payload], None)?;
                        self.stored(hash, BlockLoc { pack, offset, stored_len, raw_len, form });
                    }
                    Compressed::Incompressible(blocks) => {
                        for (hash, raw) in blocks {
                            let len = raw.len() as u32;
                            let header = record_header(&hash, len, len, RecordKind::Raw);
                            let (pack, offset) = self.append(&[&header, &raw], None)?;
                            self.stored(hash, BlockLoc { pack, offset, stored_len: len, raw_len: len, form: Form::Raw });
                        }
                    }
                    Compressed::Rejected { hash, raw } => {
                        self.frame_bytes += raw.len();
                        self.frame.push((hash, raw));
                        // While draining (`all`), rejected blocks gather and go out together below.
                        if !all && self.frame_bytes >= self.cfg.frame_bytes {
                            self.flush_frame()?;
                        }
                    }
                    Compressed::Frame { members, frame_len, payload, dict } => {
                        let stored_len = payload.len() as u32;
                        let header = record_header(&BlockHash::of(&payload), frame_len, stored_len, RecordKind::Frame);
                        let (pack, offset) = self.append(&[&header, &payload], None)?;
                        for (hash, raw_len, start) in members {
                            let form = Form::Framed { frame_len, start, dict };
                            self.stored(hash, BlockLoc { pack, offset, stored_len, raw_len, form });
                        }
                    }
                }
            }
            if !all || self.frame.is_empty() {
                return Ok(());
            }
        }
    }

    /// A new block's record is written: index it at commit, and offer it as a delta base if its chain
    /// leaves room.
    fn stored(&mut self, hash: BlockHash, loc: BlockLoc) {
        self.queued.remove(&hash);
        if let Some(sf) = self.features.remove(&hash) {
            if loc.form.depth() < self.cfg.max_delta_depth {
                self.similar.extend(sf.iter().map(|f| (*f, hash)));
            }
        }
        self.pending.insert(hash, loc);
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

    /// Copy a whole record (header and payload, as read from another pack) into the active pack.
    pub(super) fn append_record(&mut self, parts: &[&[u8]], avoid: u32) -> Result<(u32, u64), StoreError> {
        self.append(parts, Some(avoid))
    }

    /// Make every record this ingest appended durable.
    pub(super) fn sync_packs(&mut self) -> Result<(), StoreError> {
        if !self.ends.is_empty() {
            if let Some(p) = self.store.packs().lock_writer().pack.as_mut() {
                p.sync()?;
            }
        }
        Ok(())
    }

    /// Raise each pack's committed length to cover this ingest's records (never lower it: another
    /// ingest may have committed further). Part of the transaction that indexes the records.
    pub(super) fn record_pack_ends(&self, packs: &mut redb::Table<u32, u64>) -> Result<(), StoreError> {
        let db = StoreError::db::<redb::StorageError>;
        for (&id, &end) in &self.ends {
            let old = packs.get(id).map_err(db("read"))?.map(|v| v.value()).unwrap_or(0);
            packs.insert(id, old.max(end)).map_err(db("write"))?;
        }
        Ok(())
    }

    /// The caller committed this ingest's records itself (compaction): do not roll them back on drop.
    pub(super) fn forget_written(mut self) {
        self.committed = true;
    }

    /// Blocks this ingest wrote (new to the store) and their raw bytes.
    pub fn new_blocks(&self) -> (u64, u64) {
        (self.new_blocks, self.new_bytes)
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
        if self.pending.is_empty() && queue_unchanged && self.already_recorded(manifests)? {
            // Nothing new: leave the index file alone (re-adding is a no-op, byte for byte).
            self.committed = true;
            return Ok(());
        }
        let db = StoreError::db::<redb::StorageError>;
        let txn = self.store.db().begin_write().map_err(StoreError::db("begin write"))?;
        self.sync_packs()?;
        {
            let open = || StoreError::db::<redb::TableError>("open table");
            let mut blocks = txn.open_table(BLOCKS).map_err(open())?;
            for (hash, loc) in &self.pending {
                // A block another ingest committed meanwhile keeps its first location: deltas may already
                // be built on that copy (and on its chain depth). This copy stays as dead bytes.
                if self.replacing.contains(hash) || blocks.get(hash.0.as_slice()).map_err(db("read"))?.is_none() {
                    blocks.insert(hash.0.as_slice(), loc.encode().as_slice()).map_err(db("write"))?;
                }
            }
            if !queue_unchanged {
                let mut queue = txn.open_table(REPACK).map_err(open())?;
                for root in &self.repacked {
                    queue.remove(root.to_bytes().as_slice()).map_err(db("write"))?;
                }
                for (root, kind) in &self.to_repack {
                    queue.insert(root.to_bytes().as_slice(), *kind).map_err(db("write"))?;
                }
            }
            self.record_pack_ends(&mut txn.open_table(PACKS).map_err(open())?)?;
            if let Some(d) = &self.new_dict {
                txn.open_table(META).map_err(open())?.insert(META_DICT, d.0.as_slice()).map_err(db("write"))?;
            }
            let mut similar = txn.open_table(SIMILAR).map_err(open())?;
            for (f, hash) in &self.similar {
                similar.insert(*f, &hash.0[..SIMILAR_PREFIX]).map_err(db("write"))?;
            }
            let mut nars = txn.open_table(NARS).map_err(open())?;
            let mut paths = txn.open_table(PATHS).map_err(open())?;
            let mut files = txn.open_table(FILES).map_err(open())?;
            let mut aliases = txn.open_table(FILE_ALIASES).map_err(open())?;
            for m in manifests {
                match m {
                    Manifest::Nar { nar_hash, entry } => {
                        nars.insert(nar_hash.0.as_slice(), entry.encode().as_slice()).map_err(db("write"))?;
                    }
                    Manifest::Path(info) => {
                        if nars.get(info.nar_hash.0.as_slice()).map_err(db("read"))?.is_none() {
                            return Err(StoreError::NoSuchNar(info.nar_hash));
                        }
                        let key = info.store_path.hash().to_string();
                        paths.insert(key.as_str(), path_record(info).as_str()).map_err(db("write"))?;
                    }
                    Manifest::File { sha256, entry, aliases: other } => {
                        files.insert(sha256.as_slice(), entry.encode().as_slice()).map_err(db("write"))?;
                        for a in other {
                            aliases.insert(alias_key(a).as_slice(), sha256.as_slice()).map_err(db("write"))?;
                        }
                    }
                }
            }
        }
        txn.commit().map_err(StoreError::db("commit"))?;
        self.committed = true;
        Ok(())
    }
}

impl Ingest<'_> {
    /// Whether every manifest is stored already, exactly as given.
    fn already_recorded(&self, manifests: &[Manifest]) -> Result<bool, StoreError> {
        let txn = self.store.db().begin_read().map_err(StoreError::db("begin read"))?;
        let open = || StoreError::db::<redb::TableError>("open table");
        let read = || StoreError::db::<redb::StorageError>("read");
        let nars = txn.open_table(NARS).map_err(open())?;
        let paths = txn.open_table(PATHS).map_err(open())?;
        let files = txn.open_table(FILES).map_err(open())?;
        let aliases = txn.open_table(FILE_ALIASES).map_err(open())?;
        for m in manifests {
            let same = match m {
                Manifest::Nar { nar_hash, entry } => nars
                    .get(nar_hash.0.as_slice())
                    .map_err(read())?
                    .is_some_and(|v| v.value() == entry.encode().as_slice()),
                Manifest::Path(info) => paths
                    .get(info.store_path.hash().to_string().as_str())
                    .map_err(read())?
                    .is_some_and(|v| v.value() == path_record(info)),
                Manifest::File { sha256, entry, aliases: other } => {
                    let file_same = files
                        .get(sha256.as_slice())
                        .map_err(read())?
                        .is_some_and(|v| v.value() == entry.encode().as_slice());
                    let mut all = file_same;
                    for a in other {
                        all = all
                            && aliases
                                .get(alias_key(a).as_slice())
                                .map_err(read())?
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

/// A NAR that is now in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NarAdded {
    /// Its SHA-256.
    pub nar_hash: NarHash,
    /// Its size.
    pub nar_size: u64,
    /// Its DAG root.
    pub root: Cid,
    /// Blocks it added to the store.
    pub new_blocks: u64,
    /// Raw bytes of those blocks.
    pub new_bytes: u64,
}

/// Run a NAR producer through chunker and builder into `ingest`.
fn build_nar<E>(
    ingest: &mut Ingest<'_>,
    cfg: ChunkerConfig,
    produce: impl FnOnce(&mut dyn NarSink) -> Result<NarSummary, E>,
) -> Result<(NarSummary, BuiltDag), StoreError>
where
    StoreError: From<E>,
{
    let normalize = ingest.cfg.normalize;
    let mut builder = DagBuilder::new(&mut *ingest);
    let removed = Removals::default();
    let mut pos = 0u64;
    let emit = |c: &[u8]| -> io::Result<()> {
        let start = pos;
        pos += c.len() as u64;
        if normalize {
            let patches = patches_for(&removed, start, c.len());
            if !patches.is_empty() {
                let encoded = encode_patches(&patches);
                let mut raw = c.to_vec();
                apply_patches(&mut raw, &encoded).map_err(io::Error::other)?;
                builder.sink_mut().put_patched(BlockHash::of(&raw), &raw, c, &encoded).map_err(io::Error::other)?;
                return builder.push_leaf(&raw);
            }
        }
        builder.push_leaf(c)
    };
    let mut chunker = Chunker::new(cfg, emit);
    let summary = if normalize {
        let mut n = Normalizer::new(&mut chunker, removed.clone());
        let summary = produce(&mut n)?;
        n.finish().map_err(StoreError::from_io)?;
        summary
    } else {
        produce(&mut chunker)?
    };
    chunker.finish().map_err(StoreError::from_io)?;
    let (dag, _) = builder.finish().map_err(StoreError::from_io)?;
    Ok((summary, dag))
}

fn commit_nar(
    ingest: Ingest<'_>,
    summary: NarSummary,
    dag: BuiltDag,
    info: Option<NarInfo>,
) -> Result<NarAdded, StoreError> {
    if let Some(info) = &info {
        if info.nar_hash != summary.nar_hash || info.nar_size != summary.nar_size {
            return Err(StoreError::HashMismatch {
                what: format!("NAR of {}", info.store_path),
                expected: format!("{} ({} bytes)", info.nar_hash, info.nar_size),
                got: format!("{} ({} bytes)", summary.nar_hash, summary.nar_size),
            });
        }
    }
    let entry = NarEntry { root: dag.root, nar_size: summary.nar_size };
    let mut manifests = vec![Manifest::Nar { nar_hash: summary.nar_hash, entry }];
    manifests.extend(info.map(|i| Manifest::Path(Box::new(i))));
    let (new_blocks, new_bytes) = ingest.new_blocks();
    ingest.commit(&manifests)?;
    Ok(NarAdded { nar_hash: summary.nar_hash, nar_size: summary.nar_size, root: dag.root, new_blocks, new_bytes })
}

/// Store a NAR read from `r`, validating it as it streams. When `info` is given (a store path's
/// metadata), its NarHash and NarSize must match and it is recorded with the NAR.
pub fn add_nar(
    store: &Store,
    mut r: impl Read,
    cfg: ChunkerConfig,
    info: Option<NarInfo>,
) -> Result<NarAdded, StoreError> {
    // A flat file holding a compressed tarball may be kept as its content plus a recipe: look at the
    // NAR's first bytes, and if they say so, take the (bounded) NAR whole.
    let mut head = Vec::with_capacity(FLAT_HEAD);
    let mut failed = (&mut r).take(FLAT_HEAD as u64).read_to_end(&mut head).err();
    if let Some(total) = flat_compressed_nar_len(&head).filter(|t| *t <= rebuilt::REBUILD_MAX && failed.is_none()) {
        failed = (&mut r).take((total + 1).saturating_sub(head.len() as u64)).read_to_end(&mut head).err();
        // Longer than its header says: not a NAR this takes whole; the streaming parser says what is wrong.
        if failed.is_none() && head.len() as u64 <= total {
            return add_nar_bytes(store, &head, cfg, info);
        }
    }
    // A read error while peeking reaches the parser where it happened, so it is reported (and classed)
    // as any read error in the middle of a NAR.
    let r = Replay { head: io::Cursor::new(head), failed, rest: r };
    let mut ingest = store.begin_ingest();
    let (summary, dag) = build_nar(&mut ingest, cfg, |mut sink| nar::copy_validated(r, &mut sink))?;
    commit_nar(ingest, summary, dag, info)
}

/// Bytes read ahead, then the error that stopped the read-ahead (if any), then the rest of the stream.
struct Replay<R> {
    head: io::Cursor<Vec<u8>>,
    failed: Option<io::Error>,
    rest: R,
}

impl<R: Read> Read for Replay<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.head.read(out)?;
        if n > 0 || out.is_empty() {
            return Ok(n);
        }
        match self.failed.take() {
            Some(e) => Err(e),
            None => self.rest.read(out),
        }
    }
}

/// Store a NAR held in memory: as content plus recipe when it is a rebuildable compressed flat file,
/// else as any NAR.
fn add_nar_bytes(store: &Store, nar: &[u8], cfg: ChunkerConfig, info: Option<NarInfo>) -> Result<NarAdded, StoreError> {
    struct Probe {
        pos: u64,
        contents: Option<(u64, u64)>,
    }
    impl NarSink for Probe {
        fn write_bytes(&mut self, b: &[u8]) -> io::Result<()> {
            self.pos += b.len() as u64;
            Ok(())
        }
        fn file_contents_begin(&mut self, len: u64) -> io::Result<()> {
            self.contents = Some((self.pos, len));
            Ok(())
        }
    }
    let mut probe = Probe { pos: 0, contents: None };
    let summary = nar::copy_validated(nar, &mut probe)?;
    let mut ingest = store.begin_ingest();
    let mut queue = false;
    if let Some((at, len)) = probe.contents {
        let range = at as usize..(at + len) as usize;
        queue = queues_for_repack(&ingest, &nar[range.clone()], nar.len());
        if let Some(dag) = build_rebuilt(&mut ingest, nar, range, cfg, true)? {
            return commit_nar(ingest, summary, dag, info);
        }
    }
    ingest.as_is = queue;
    let (summary, dag) = build_nar(&mut ingest, cfg, |mut sink| nar::copy_validated(nar, &mut sink))?;
    // Only a stream this ingest stored: one stored before is queued already, or converted, or kept.
    if queue && ingest.new_blocks > 0 {
        ingest.to_repack.push((dag.root, REPACK_NAR));
    }
    commit_nar(ingest, summary, dag, info)
}

/// When `stream[range]` is a compressed file [`recompress`] can rebuild byte for byte: store its
/// content's DAG and a recipe block, index the stream's leaves as slices of the recipe's output, and
/// return the stream's DAG. `None` (nothing stored) otherwise, and always unless `tarballs=on`.
/// `nar_hooks`: the stream is a NAR and `range` its file's contents, so chunk it with the NAR-aware
/// boundaries any NAR gets.
fn build_rebuilt(
    ingest: &mut Ingest<'_>,
    stream: &[u8],
    range: std::ops::Range<usize>,
    cfg: ChunkerConfig,
    nar_hooks: bool,
) -> Result<Option<BuiltDag>, StoreError> {
    if ingest.cfg.tarballs != Tarballs::Now {
        return Ok(None);
    }
    let Some((recipe_hash, _)) = store_recipe(ingest, stream, range.clone(), cfg)? else { return Ok(None) };
    let file = &stream[range.clone()];
    let mut builder = DagBuilder::new(&mut *ingest);
    let mut pos = 0u64;
    let emit = |c: &[u8]| -> io::Result<()> {
        let hash = BlockHash::of(c);
        builder.sink_mut().put_rebuilt(hash, c.len() as u32, recipe_hash, pos).map_err(io::Error::other)?;
        pos += c.len() as u64;
        builder.push_leaf(c)
    };
    let mut chunker = Chunker::new(if nar_hooks { cfg } else { cfg.with_large_file_threshold(u64::MAX) }, emit);
    if nar_hooks {
        chunker.write_bytes(&stream[..range.start]).map_err(StoreError::from_io)?;
        chunker.file_contents_begin(file.len() as u64).map_err(StoreError::from_io)?;
        chunker.write_bytes(file).map_err(StoreError::from_io)?;
        chunker.file_contents_end().map_err(StoreError::from_io)?;
        chunker.write_bytes(&stream[range.end..]).map_err(StoreError::from_io)?;
    } else {
        chunker.write(stream).map_err(StoreError::from_io)?;
    }
    chunker.finish().map_err(StoreError::from_io)?;
    Ok(Some(builder.finish().map_err(StoreError::from_io)?.0))
}

/// Whether an ingest with `tarballs=later` queues `stream` (holding compressed `file`) for a repack.
fn queues_for_repack(ingest: &Ingest<'_>, file: &[u8], stream_len: usize) -> bool {
    ingest.cfg.tarballs == Tarballs::Later
        && recompress::detect(file).is_some()
        && stream_len as u64 <= rebuilt::REBUILD_MAX
}

/// When `stream[range]` is a compressed file [`recompress`] can rebuild byte for byte: store its
/// content's DAG (chunked with `cfg`) and the recipe block saying how to get `stream` back from it, and
/// return the recipe block's name and the content's root. `None` otherwise; content blocks stored before
/// the analysis gave up are garbage for the next GC.
pub(super) fn store_recipe(
    ingest: &mut Ingest<'_>,
    stream: &[u8],
    range: std::ops::Range<usize>,
    cfg: ChunkerConfig,
) -> Result<Option<(BlockHash, Cid)>, StoreError> {
    let file = &stream[range.clone()];
    if recompress::detect(file).is_none() || stream.len() as u64 > rebuilt::REBUILD_MAX {
        return Ok(None);
    }
    let recompress_err = |e: recompress::RecompressError| StoreError::Io {
        context: "analyzing a compressed file".into(),
        source: io::Error::other(e.to_string()),
    };
    // One pass: the content is chunked and stored while the candidates race. When none rebuilds the
    // file, the content blocks stored so far are garbage (nothing names them) until the next GC; the
    // corpus's tarballs nearly all qualify (docs/STORAGE.md), so that is the rare case.
    // A helper may have proven the recipe already (`proven.rs`); then decompressing is all that is left.
    let store = ingest.store;
    let claim = store.proven().claim(proven::key_of(file));
    let known = match &claim {
        Claim::Known(None) => return Ok(None),
        Claim::Known(Some(r)) => Some(r.clone()),
        Claim::Mine(_) => None,
    };
    // A tar inside is cut at its members' contents as the unpacked tree's NAR is (`chunk/tar.rs`), so a
    // tarball and its unpacked source share whole chunks.
    let mut builder = DagBuilder::new(&mut *ingest);
    let mut chunker = TarSplit::new(Chunker::new(cfg, |c: &[u8]| builder.push_leaf(c)));
    let found = match known {
        Some(r) => recompress::decompress(&r, file, |c| chunker.write(c)).map_err(recompress_err)?.then_some(r),
        None => recompress::analyze(file, |c| chunker.write(c)).map_err(recompress_err)?,
    };
    drop(claim);
    let Some(recipe) = found else { return Ok(None) };
    chunker.finish().and_then(|c| c.finish()).map_err(StoreError::from_io)?;
    let content = builder.finish().map_err(StoreError::from_io)?.0;
    let block = rebuilt::RecipeBlock {
        prefix: stream[..range.start].to_vec(),
        content_root: content.root,
        content_size: content.size,
        suffix: stream[range.end..].to_vec(),
        recipe,
    }
    .encode();
    let recipe_hash = BlockHash::of(&block);
    ingest.put(recipe_hash, &block)?;
    Ok(Some((recipe_hash, content.root)))
}

/// Serialize a filesystem path as a NAR (as `nix-store --dump` does) and store it.
pub fn add_path(store: &Store, path: &Path, cfg: ChunkerConfig, info: Option<NarInfo>) -> Result<NarAdded, StoreError> {
    // A regular file that starts like a compressed stream, small enough to hold: try content + recipe.
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.is_file() && m.len() <= rebuilt::REBUILD_MAX - 1024 {
            let mut magic = [0u8; 6];
            let sniffed = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok();
            if sniffed && recompress::detect(&magic).is_some() {
                let mut nar = Vec::with_capacity(m.len() as usize + 256);
                nar::dump_path(path, &mut nar)?;
                return add_nar_bytes(store, &nar, cfg, info);
            }
        }
    }
    let mut ingest = store.begin_ingest();
    let (summary, dag) = build_nar(&mut ingest, cfg, |mut sink| nar::dump_path(path, &mut sink))?;
    commit_nar(ingest, summary, dag, info)
}

/// A flat file that is now in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAdded {
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// Its other hashes.
    pub aliases: Vec<NixHash>,
    /// Its size.
    pub size: u64,
    /// Its DAG root.
    pub root: Cid,
    /// Blocks it added to the store.
    pub new_blocks: u64,
}

/// Store a flat file (a source tarball) byte-exact, keyed by its SHA-256 with SHA-512, SHA-1 and MD5 as
/// aliases. When `expected` is given the file must hash to it, or nothing is stored.
pub fn add_file(
    store: &Store,
    mut r: impl Read,
    name: &str,
    urls: Vec<String>,
    cfg: ChunkerConfig,
    expected: Option<&NixHash>,
) -> Result<FileAdded, StoreError> {
    let mut ingest = store.begin_ingest();
    let mut sha256 = sha2::Sha256::new();
    let mut sha512 = sha2::Sha512::new();
    let mut sha1 = sha1::Sha1::new();
    let mut md5 = md5::Md5::new();
    let mut update = |b: &[u8]| {
        sha256.update(b);
        sha512.update(b);
        sha1.update(b);
        md5.update(b);
    };
    let read_err = |e: io::Error| StoreError::Io { context: format!("reading {name}"), source: e };
    // A compressed tarball small enough to hold is tried as content plus recipe first.
    let mut head = Vec::new();
    if ingest.cfg.tarballs != Tarballs::Off {
        (&mut r).take(6).read_to_end(&mut head).map_err(read_err)?;
        if recompress::detect(&head).is_some() {
            (&mut r).take(rebuilt::REBUILD_MAX + 1 - head.len() as u64).read_to_end(&mut head).map_err(read_err)?;
        }
    }
    let whole = recompress::detect(&head).is_some() && head.len() as u64 <= rebuilt::REBUILD_MAX;
    let rebuilt = if whole { build_rebuilt(&mut ingest, &head, 0..head.len(), cfg, false)? } else { None };
    let dag = match rebuilt {
        Some(dag) => {
            update(&head);
            dag
        }
        None => {
            let queue = whole && queues_for_repack(&ingest, &head, head.len());
            ingest.as_is = queue;
            let mut builder = DagBuilder::new(&mut ingest);
            let mut chunker = Chunker::new(cfg.with_large_file_threshold(u64::MAX), |c: &[u8]| builder.push_leaf(c));
            update(&head);
            chunker.write(&head).map_err(StoreError::from_io)?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(read_err(e)),
                };
                update(&buf[..n]);
                chunker.write(&buf[..n]).map_err(StoreError::from_io)?;
            }
            chunker.finish().map_err(StoreError::from_io)?;
            let dag = builder.finish().map_err(StoreError::from_io)?.0;
            if queue && ingest.new_blocks > 0 {
                ingest.to_repack.push((dag.root, REPACK_FILE));
            }
            dag
        }
    };
    let sha256: [u8; 32] = sha256.finalize().into();
    let aliases = vec![
        NixHash { algo: HashAlgo::Sha512, digest: sha512.finalize().to_vec() },
        NixHash { algo: HashAlgo::Sha1, digest: sha1.finalize().to_vec() },
        NixHash { algo: HashAlgo::Md5, digest: md5.finalize().to_vec() },
    ];
    if let Some(want) = expected {
        let got = if want.algo == HashAlgo::Sha256 {
            NixHash { algo: HashAlgo::Sha256, digest: sha256.to_vec() }
        } else {
            aliases.iter().find(|a| a.algo == want.algo).cloned().unwrap_or_else(|| want.clone())
        };
        if &got != want {
            return Err(StoreError::HashMismatch {
                what: name.to_string(),
                expected: want.to_string(),
                got: got.to_string(),
            });
        }
    }
    let entry = FileEntry { root: dag.root.to_string(), size: dag.size, name: name.to_string(), urls };
    let (new_blocks, _) = ingest.new_blocks();
    ingest.commit(&[Manifest::File { sha256, entry, aliases: aliases.clone() }])?;
    Ok(FileAdded { sha256, aliases, size: dag.size, root: dag.root, new_blocks })
}
