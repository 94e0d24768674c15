//! Compressed tarballs kept as their content plus a recipe that rebuilds them byte for byte
//! (`tarballs=on`), or queued for a later repack (`tarballs=later`).

use std::io;

use crate::chunk::{Chunker, ChunkerConfig, TarSplit};
use crate::dag::builder::BuiltDag;
use crate::dag::{BlockHash, Cid, DagBuilder};
use crate::nix::nar::NarSink;
use crate::recompress;
use crate::store::proven::{self, Claim};
use crate::store::rebuilt::{self, REBUILD_MAX};
use crate::store::{Ingest, StoreError, Tarballs};

/// When `stream[range]` is a compressed file [`recompress`] can rebuild byte for byte: store its
/// content's DAG and a recipe block, index the stream's leaves as slices of the recipe's output, and
/// return the stream's DAG. `None` (nothing stored) otherwise, and always unless `tarballs=on`.
/// `nar_hooks`: the stream is a NAR and `range` its file's contents, so chunk it with the NAR-aware
/// boundaries any NAR gets.
pub(super) fn build_rebuilt(
    ingest: &mut Ingest<'_>,
    stream: &[u8],
    range: std::ops::Range<usize>,
    cfg: ChunkerConfig,
    nar_hooks: bool,
) -> Result<Option<BuiltDag>, StoreError> {
    if ingest.storage().tarballs != Tarballs::Now {
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
pub(super) fn queues_for_repack(ingest: &Ingest<'_>, file: &[u8], stream_len: usize) -> bool {
    ingest.storage().tarballs == Tarballs::Later
        && recompress::detect(file).is_some()
        && stream_len as u64 <= REBUILD_MAX
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
    if recompress::detect(file).is_none() || stream.len() as u64 > REBUILD_MAX {
        return Ok(None);
    }
    let recompress_err = |source| StoreError::Recompress { context: "analyzing a compressed file", source };
    // One pass: the content is chunked and stored while the candidates race. When none rebuilds the
    // file, the content blocks stored so far are garbage (nothing names them) until the next GC; the
    // corpus's tarballs nearly all qualify (docs/STORAGE.md), so that is the rare case.
    // A helper may have proven the recipe already (`proven.rs`); then decompressing is all that is left.
    let store = ingest.store();
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
