//! The form each new block takes: a frame of neighbours (with the store's dictionary, trained here),
//! a delta on a similar stored block, a patched normal form, a slice of a recipe's output, or raw; and
//! the records the compression threads hand back, appended to the pack.

use std::sync::Arc;

use redb::TableHandle;

use super::super::chain::ChainEnd;
use super::super::compress::{train_dictionary, Compressed, Dictionary, Job};
use super::super::error::StoreError;
use super::super::pack::record_header;
use super::super::similar;
use super::super::tables::*;
use super::Ingest;
use crate::dag::{BlockHash, Cid};

/// Sample bytes gathered before a dictionary is trained (~40× its size, as zstd advises), and the most
/// taken from one block: the start of many blocks teaches more than all of a few.
const DICT_SAMPLES: usize = 4 << 20;
const DICT_SAMPLE_PIECE: usize = 16 << 10;

impl Ingest<'_> {
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
            let loc = self.append_raw(hash, &bytes)?;
            self.pending.insert(hash, loc);
        }
        self.dict = Some(Dictionary { hash, bytes: Arc::new(bytes) });
        self.new_dict = Some(hash);
        Ok(())
    }

    /// A stored block resembling one with super-features `sf`, shallow enough to be a delta base: the
    /// candidate most super-features point to, or, when its chain is already as long as allowed, the
    /// nearest block down its chain. Protected before it is looked up, as any reused block.
    fn find_base(&mut self, sf: &[u64; similar::SUPERS]) -> Result<Option<(BlockHash, BlockLoc)>, StoreError> {
        let mut votes: Vec<(Vec<u8>, u32)> = Vec::new();
        let best = {
            let txn = self.store.db().begin_read().map_err(StoreError::txn("begin read"))?;
            let t = txn.open_table(SIMILAR).map_err(StoreError::table_op("open", SIMILAR.name()))?;
            for f in sf {
                if let Some(v) = t.get(*f).map_err(StoreError::row("read", SIMILAR.name(), f))? {
                    let v = v.value();
                    match votes.iter_mut().find(|(c, _)| c == v) {
                        Some((_, n)) => *n += 1,
                        None => votes.push((v.to_vec(), 1)),
                    }
                }
            }
            let Some((v, _)) = votes.iter().max_by_key(|(_, n)| *n) else { return Ok(None) };
            similar_target(&txn.open_table(BLOCKS).map_err(StoreError::table_op("open", BLOCKS.name()))?, v)?
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
        let raw_len = u32::try_from(bytes.len())
            .map_err(|_| StoreError::BlockTooLarge { hash, len: bytes.len() as u64 })?;
        self.new_bytes += u64::from(raw_len);
        self.new_blocks += 1;
        if self.as_is {
            let loc = self.append_raw(hash, bytes)?;
            self.pending.insert(hash, loc);
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
    pub(crate) fn put_patched(
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
    pub(crate) fn put_rebuilt(&mut self, hash: BlockHash, raw_len: u32, recipe: BlockHash, start: u64) -> Result<(), StoreError> {
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
    pub(crate) fn replace_with_rebuilt(
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
    pub(crate) fn mark_repacked(&mut self, root: Cid) {
        self.repacked.push(root);
    }

    /// Append `bytes` (at most `u32::MAX`, checked by the caller) as a raw record of their own.
    fn append_raw(&mut self, hash: BlockHash, bytes: &[u8]) -> Result<BlockLoc, StoreError> {
        let len = bytes.len() as u32;
        let header = record_header(&hash, len, len, RecordKind::Raw);
        let (pack, offset) = self.append(&[&header, bytes], None)?;
        Ok(BlockLoc { pack, offset, stored_len: len, raw_len: len, form: Form::Raw })
    }

    /// Append the records the compression threads have finished; with `all`, wait for every one.
    pub(super) fn write_compressed(&mut self, all: bool) -> Result<(), StoreError> {
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
                            let loc = self.append_raw(hash, &raw)?;
                            self.stored(hash, loc);
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
}
