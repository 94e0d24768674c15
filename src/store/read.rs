//! Reading a block back from whichever form it is stored in, and checking it: every path ends in a
//! BLAKE3 of the rebuilt bytes against the block's name, so a damaged frame, delta base or index entry
//! gives an error naming the block, never wrong bytes.

use std::sync::{Arc, Mutex};

use super::compress::{delta_decompress, dict_decompress};
use super::error::StoreError;
use super::patch::apply_patches;
use super::pack::{record_header, RecordBytes};
use super::tables::{BlockLoc, Form, RecordKind};
use super::Store;
use crate::dag::BlockHash;

thread_local! {
    /// One zstd context per thread: creating one per block costs more than decompressing a small block.
    static DECOMPRESSOR: std::cell::RefCell<zstd::bulk::Decompressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().expect("zstd decompression context"));
}

/// Most bases one read may go through: a delta chain (at most 8 long) ending in a patched block's normal
/// form, or a recipe's content.
const MAX_BASES: u32 = 12;

/// Bytes of decompressed frames kept for the next reads. A sequential read (`cat`, a NAR download) touches
/// each frame's members one after the other and must not decompress the frame once per member; a NAR
/// stored as deltas also reads its bases from the frames of the version before, interleaved with its own.
/// 8 frames thrashed on such NARs (openjdk: 450 MiB/s); 64 MiB reads them at 536 MiB/s (docs/STORAGE.md).
const FRAME_CACHE_BYTES: usize = 64 << 20;

/// A decompressed frame and where its record is: (pack, offset).
type CachedFrame = ((u32, u64), Arc<Vec<u8>>);

/// A decompressed frame shared with the bytes sliced out of it.
struct SharedFrame(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedFrame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The most recently used decompressed frames, newest last.
#[derive(Default)]
pub(crate) struct FrameCache(Mutex<Vec<CachedFrame>>);

impl FrameCache {
    fn get(&self, key: (u32, u64)) -> Option<Arc<Vec<u8>>> {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let i = v.iter().position(|(k, _)| *k == key)?;
        let e = v.remove(i);
        let f = e.1.clone();
        v.push(e);
        Some(f)
    }

    fn put(&self, key: (u32, u64), frame: Arc<Vec<u8>>) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|(k, _)| *k != key);
        v.push((key, frame));
        let mut total: usize = v.iter().map(|(_, f)| f.len()).sum();
        while v.len() > 1 && total > FRAME_CACHE_BYTES {
            total -= v.remove(0).1.len();
        }
    }

    /// Forget everything (records moved or deleted by compaction).
    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Store {
    /// [`read_block`](Self::read_block) without a copy for a block in a cached frame: a slice of the
    /// frame, hashed in place. Serving a NAR of framed blocks copied every byte once more before.
    pub fn read_block_bytes(&self, hash: &BlockHash) -> Result<Option<bytes::Bytes>, StoreError> {
        let Some(loc) = self.block_loc(hash)? else { return Ok(None) };
        if let Form::Framed { frame_len, start, dict } = loc.form {
            if let Ok(frame) = self.frame(hash, &loc, frame_len, dict, MAX_BASES) {
                let (s, e) = (start as usize, start as usize + loc.raw_len as usize);
                if e <= frame.len() && BlockHash::of(&frame[s..e]) == *hash {
                    return Ok(Some(bytes::Bytes::from_owner(SharedFrame(frame)).slice(s..e)));
                }
            }
        }
        // Every other form, and any failure above (reported with its reason by the full path).
        self.read_located(hash, &loc).map(|b| b.map(bytes::Bytes::from))
    }

    /// Read and verify a block.
    pub fn read_block(&self, hash: &BlockHash) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(loc) = self.block_loc(hash)? else { return Ok(None) };
        self.read_located(hash, &loc)
    }

    /// [`read_at`](Self::read_at) for a block just looked up: `None` when it failed because the block
    /// left the index meanwhile (gc), so callers see it as missing rather than damaged.
    fn read_located(&self, hash: &BlockHash, loc: &BlockLoc) -> Result<Option<Vec<u8>>, StoreError> {
        match self.read_at(hash, loc) {
            Ok(b) => Ok(Some(b)),
            Err(e) => match self.block_loc(hash)? {
                None => Ok(None),
                Some(_) => Err(e),
            },
        }
    }

    /// Read the block `hash` stored at `loc`, rebuild it from its form and check it.
    pub(crate) fn read_at(&self, hash: &BlockHash, loc: &BlockLoc) -> Result<Vec<u8>, StoreError> {
        match self.read_within(hash, loc, MAX_BASES) {
            // A compaction (in this process or another) may have moved the block and deleted its pack
            // between the lookup and the read: look it up again, once, and read it where it is now.
            Err(e) => match self.block_loc(hash) {
                Ok(Some(fresh)) if fresh != *loc => self.read_within(hash, &fresh, MAX_BASES),
                _ => Err(e),
            },
            ok => ok,
        }
    }

    /// [`read_at`](Self::read_at) following at most `budget` more bases, so a damaged index that links
    /// blocks in a circle gives an error, not an endless recursion.
    fn read_within(&self, hash: &BlockHash, loc: &BlockLoc, budget: u32) -> Result<Vec<u8>, StoreError> {
        let corrupt =
            |reason: String| StoreError::CorruptBlock { hash: *hash, pack: loc.pack, offset: loc.offset, reason };
        let bytes = match loc.form {
            Form::Raw | Form::Zstd | Form::Delta { .. } | Form::Patched { .. } => {
                let RecordBytes { header, payload } =
                    self.packs().read_record(loc.pack, loc.offset, loc.stored_len).map_err(|e| corrupt(e.to_string()))?;
                if header != record_header(hash, loc.raw_len, loc.stored_len, loc.form.kind()) {
                    return Err(corrupt("record header does not match the index".into()));
                }
                match loc.form {
                    Form::Raw => payload,
                    Form::Zstd => DECOMPRESSOR
                        .with_borrow_mut(|d| d.decompress(&payload, loc.raw_len as usize))
                        .map_err(|e| corrupt(format!("zstd: {e}")))?,
                    Form::Delta { base, depth } => {
                        let base_raw = self.read_base(hash, loc, &base, budget, "delta base", |f| {
                            (f.depth() >= depth).then(|| {
                                format!("its delta base {base} has chain depth {}, not less than {depth}", f.depth())
                            })
                        })?;
                        delta_decompress(&base_raw, &payload, loc.raw_len as usize)
                            .map_err(|e| corrupt(format!("delta against {base}: {e}")))?
                    }
                    Form::Patched { base } => {
                        let mut b = self.read_base(hash, loc, &base, budget, "normalized form", |f| {
                            matches!(f, Form::Patched { .. })
                                .then(|| format!("its normalized form {base} is itself patched"))
                        })?;
                        apply_patches(&mut b, &payload).map_err(|e| corrupt(format!("patches: {e}")))?;
                        b
                    }
                    Form::Framed { .. } | Form::Rebuilt { .. } => unreachable!("handled below"),
                }
            }
            Form::Rebuilt { recipe, start } => {
                let out = self.rebuilt_output(&recipe).map_err(corrupt)?;
                let s = usize::try_from(start).unwrap_or(usize::MAX);
                let e = s.saturating_add(loc.raw_len as usize);
                out.get(s..e).ok_or_else(|| corrupt(format!("{s}..{e} lies outside its recipe's output")))?.to_vec()
            }
            Form::Framed { frame_len, start, dict } => {
                let frame = self.frame(hash, loc, frame_len, dict, budget)?;
                let (s, e) = (start as usize, start as usize + loc.raw_len as usize);
                frame.get(s..e).ok_or_else(|| corrupt(format!("{s}..{e} lies outside the frame")))?.to_vec()
            }
        };
        if bytes.len() != loc.raw_len as usize {
            return Err(corrupt(format!("{} bytes after decompression, expected {}", bytes.len(), loc.raw_len)));
        }
        let got = BlockHash::of(&bytes);
        if got != *hash {
            return Err(corrupt(format!("bytes hash to {got}")));
        }
        Ok(bytes)
    }

    /// The raw bytes of the block `hash` is read through (`what`: a delta's base, a patched block's
    /// normalized form), checked. A base that is missing, unreadable, or that `unfit` objects to (one that
    /// would allow a cycle), and a chain longer than `budget`, are reported against `hash`.
    fn read_base(
        &self,
        hash: &BlockHash,
        loc: &BlockLoc,
        base: &BlockHash,
        budget: u32,
        what: &str,
        unfit: impl FnOnce(&Form) -> Option<String>,
    ) -> Result<Vec<u8>, StoreError> {
        let corrupt =
            |reason: String| StoreError::CorruptBlock { hash: *hash, pack: loc.pack, offset: loc.offset, reason };
        if budget == 0 {
            return Err(corrupt("its chain of bases is too long (a damaged index links blocks in a circle)".into()));
        }
        let base_loc = self.block_loc(base)?.ok_or_else(|| corrupt(format!("its {what} {base} is missing")))?;
        if let Some(why) = unfit(&base_loc.form) {
            return Err(corrupt(why));
        }
        self.read_within(base, &base_loc, budget - 1).map_err(|e| corrupt(format!("its {what} is damaged: {e}")))
    }

    /// The decompressed frame a framed block lives in, from the cache or the pack.
    fn frame(
        &self,
        hash: &BlockHash,
        loc: &BlockLoc,
        frame_len: u32,
        dict: Option<BlockHash>,
        budget: u32,
    ) -> Result<Arc<Vec<u8>>, StoreError> {
        let key = (loc.pack, loc.offset);
        if let Some(f) = self.frame_cache().get(key) {
            return Ok(f);
        }
        let corrupt = |reason: String| StoreError::CorruptBlock {
            hash: *hash,
            pack: loc.pack,
            offset: loc.offset,
            reason: format!("its frame is damaged: {reason}"),
        };
        let RecordBytes { header, payload } =
            self.packs().read_record(loc.pack, loc.offset, loc.stored_len).map_err(|e| corrupt(e.to_string()))?;
        // The header's hash is the payload's; re-hashing it on every read would cost as much as the
        // block check after it, so reads check the rest and `verify` checks the hash.
        let want = record_header(&BlockHash([0; 32]), frame_len, loc.stored_len, RecordKind::Frame);
        if header[32..] != want[32..] {
            return Err(corrupt("record header does not match the index".into()));
        }
        let frame = match dict {
            None => DECOMPRESSOR
                .with_borrow_mut(|d| d.decompress(&payload, frame_len as usize))
                .map_err(|e| corrupt(format!("zstd: {e}")))?,
            Some(d) => {
                // A dictionary lives in a record of its own; one in a frame could need itself.
                let bytes = self.read_base(hash, loc, &d, budget, "dictionary", |f| {
                    (!matches!(f, Form::Raw | Form::Zstd)).then(|| format!("its dictionary {d} is not a plain block"))
                })?;
                dict_decompress(&bytes, &payload, frame_len as usize)
                    .map_err(|e| corrupt(format!("zstd with dictionary {d}: {e}")))?
            }
        };
        if frame.len() != frame_len as usize {
            return Err(corrupt(format!("{} bytes after decompression, expected {frame_len}", frame.len())));
        }
        let frame = Arc::new(frame);
        self.frame_cache().put(key, frame.clone());
        Ok(frame)
    }

    /// Check a frame record's payload against the hash in its header (what reads skip).
    pub(crate) fn check_frame_payload(&self, loc: &BlockLoc) -> Result<(), String> {
        let RecordBytes { header, payload } =
            self.packs().read_record(loc.pack, loc.offset, loc.stored_len).map_err(|e| e.to_string())?;
        let got = BlockHash::of(&payload);
        if header[..32] != got.0 {
            return Err(format!("frame in pack {} at offset {}: payload hashes to {got}", loc.pack, loc.offset));
        }
        Ok(())
    }
}
