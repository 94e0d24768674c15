//! Compressed tarballs kept as their decompressed content plus a recipe (`src/recompress`).
//!
//! A `.crate`, `.tgz` or `.tar.gz` changes almost entirely between two versions of a source once
//! compressed, while its tar stream shares most of its files with the previous version and with the
//! unpacked tree of the same source. So when [`recompress::analyze`] finds the compressor that rebuilds
//! the file byte for byte, the ingest stores the *decompressed* stream as an internal DAG (its blocks
//! are ordinary blocks: framed, deltas, shared) and one *recipe block* holding how to get back: the bytes
//! before the compressed file in the stream (a flat-file NAR's header), the content root, the
//! compressor's parameters, and the bytes after it. The stream's own leaves, which the DAG names as
//! always, become [`Form::Rebuilt`] index entries: "bytes `start..start + len` of that recipe's output".
//! Reading one regenerates the whole output once and keeps it for the next leaves (an output is bounded
//! by [`REBUILD_MAX`], the cache by 128 MiB). Ingest holds such a file whole in memory, bounded the same.

use std::sync::{Arc, Mutex};

use super::error::StoreError;
use crate::dag::cid::cid_from_bytes;
use crate::dag::{BlockHash, Cid, DagReader};
use crate::recompress::Recipe;

/// Largest compressed file (and stream around it) stored this way; larger ones are chunked as they are.
pub const REBUILD_MAX: u64 = 64 << 20;
const MAGIC: &[u8; 8] = b"NIXDAGRB";
const VERSION: u8 = 1;

/// What a recipe block says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeBlock {
    /// Bytes before the compressed file.
    pub prefix: Vec<u8>,
    /// Root of the decompressed content's DAG.
    pub content_root: Cid,
    /// Its length.
    pub content_size: u64,
    /// Bytes after the compressed file.
    pub suffix: Vec<u8>,
    /// How to compress the content again.
    pub recipe: Recipe,
}

impl RecipeBlock {
    /// `"NIXDAGRB" | version u8 | cid_len u8 | cid | content_size u64 | prefix_len u32 | prefix |
    /// suffix_len u32 | suffix | recipe (the rest)`.
    pub fn encode(&self) -> Vec<u8> {
        let cid = self.content_root.to_bytes();
        let mut out = Vec::with_capacity(64 + self.prefix.len() + self.suffix.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(cid.len() as u8);
        out.extend_from_slice(&cid);
        out.extend_from_slice(&self.content_size.to_le_bytes());
        out.extend_from_slice(&(self.prefix.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&(self.suffix.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.suffix);
        out.extend_from_slice(&self.recipe.encode());
        out
    }

    /// Decode; every malformation is an error naming what is wrong.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        let mut p = b;
        let mut take = |n: usize, what: &str| -> Result<&[u8], String> {
            if p.len() < n {
                return Err(format!("recipe block truncated in its {what}"));
            }
            let (a, rest) = p.split_at(n);
            p = rest;
            Ok(a)
        };
        if take(8, "magic")? != MAGIC {
            return Err("not a recipe block".into());
        }
        let v = take(1, "version")?[0];
        if v != VERSION {
            return Err(format!("recipe block version {v}"));
        }
        let cid_len = take(1, "CID length")?[0] as usize;
        let content_root = cid_from_bytes(take(cid_len, "CID")?).map_err(|e| e.to_string())?;
        let content_size = u64::from_le_bytes(take(8, "content size")?.try_into().map_err(|_| "size")?);
        let plen = u32::from_le_bytes(take(4, "prefix length")?.try_into().map_err(|_| "len")?) as usize;
        let prefix = take(plen, "prefix")?.to_vec();
        let slen = u32::from_le_bytes(take(4, "suffix length")?.try_into().map_err(|_| "len")?) as usize;
        let suffix = take(slen, "suffix")?.to_vec();
        let recipe = Recipe::decode(p).map_err(|e| e.to_string())?;
        Ok(RecipeBlock { prefix, content_root, content_size, suffix, recipe })
    }
}

/// Regenerated outputs kept for the next leaves of the same streams, newest last: several, so readers of
/// different tarballs (concurrent gateway downloads) do not regenerate each other's stream per leaf.
#[derive(Default)]
pub(crate) struct OutputCache(Mutex<Vec<(BlockHash, Arc<Vec<u8>>)>>);

/// Bytes of regenerated outputs kept; the newest is kept whatever its size (at most [`REBUILD_MAX`]).
const OUTPUT_CACHE_BYTES: usize = 128 << 20;

/// Most recipes regenerating inside one another on one thread. A recipe's content may hold a leaf of
/// another rebuilt stream (a tarball that ships a tarball the store also keeps); deeper nesting, and a
/// recipe reached from its own output (a damaged index), are errors rather than endless recursion.
const MAX_NESTED_REBUILDS: u8 = 4;

thread_local! {
    static REBUILDING: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// Counts this thread's regeneration in progress until dropped.
struct RebuildGuard;

impl RebuildGuard {
    fn enter() -> Option<RebuildGuard> {
        REBUILDING.with(|r| {
            let depth = r.get();
            (depth < MAX_NESTED_REBUILDS).then(|| {
                r.set(depth + 1);
                RebuildGuard
            })
        })
    }
}

impl Drop for RebuildGuard {
    fn drop(&mut self) {
        REBUILDING.with(|r| r.set(r.get().saturating_sub(1)));
    }
}

impl super::Store {
    /// The whole output of recipe block `recipe`: prefix, recompressed content, suffix.
    pub(crate) fn rebuilt_output(&self, recipe: &BlockHash) -> Result<Arc<Vec<u8>>, String> {
        let _guard = RebuildGuard::enter().ok_or_else(|| {
            format!("recipe {recipe} is nested more than {MAX_NESTED_REBUILDS} deep (or reached from its own output)")
        })?;
        {
            let mut c = self.outputs().0.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = c.iter().position(|(h, _)| h == recipe) {
                let e = c.remove(i);
                let out = e.1.clone();
                c.push(e);
                return Ok(out);
            }
        }
        let bytes = self
            .read_block(recipe)
            .map_err(|e| format!("its recipe {recipe} is damaged: {e}"))?
            .ok_or_else(|| format!("its recipe {recipe} is missing"))?;
        let rb = RecipeBlock::decode(&bytes).map_err(|e| format!("recipe {recipe}: {e}"))?;
        let content = DagReader::range(self, rb.content_root, 0, Some(rb.content_size))
            .map_err(|e| format!("content of recipe {recipe}: {e}"))?;
        let mut out = rb.prefix.clone();
        crate::recompress::rebuild(&rb.recipe, content, &mut out)
            .map_err(|e| format!("rebuilding from recipe {recipe}: {e}"))?;
        out.extend_from_slice(&rb.suffix);
        if out.len() as u64 > REBUILD_MAX + (1 << 20) {
            return Err(format!("recipe {recipe} rebuilds {} bytes, more than a recipe may", out.len()));
        }
        let out = Arc::new(out);
        let mut c = self.outputs().0.lock().unwrap_or_else(|p| p.into_inner());
        c.retain(|(h, _)| h != recipe);
        c.push((*recipe, out.clone()));
        while c.len() > 1 && c.iter().map(|(_, o)| o.len()).sum::<usize>() > OUTPUT_CACHE_BYTES {
            c.remove(0);
        }
        Ok(out)
    }

    /// The content DAG a recipe block needs (for GC's mark).
    pub(crate) fn recipe_content(&self, recipe: &BlockHash) -> Result<(Cid, u64), StoreError> {
        // Where the recipe is stored, so a damaged one is reported at its pack and offset.
        let loc = self.block_loc(recipe)?.ok_or_else(|| StoreError::CorruptIndex {
            table: "blocks-0",
            reason: format!("a rebuilt block names recipe {recipe}, which the table lacks"),
        })?;
        let bad = |reason: String| StoreError::CorruptBlock { hash: *recipe, pack: loc.pack, offset: loc.offset, reason };
        let bytes = self.read_block(recipe)?.ok_or_else(|| bad("recipe block is missing".into()))?;
        let rb = RecipeBlock::decode(&bytes).map_err(bad)?;
        Ok((rb.content_root, rb.content_size))
    }
}
