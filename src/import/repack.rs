//! Post-process conversion of compressed tarballs into content plus a recipe (`tarballs=later`).
//!
//! Proving that a recipe rebuilds a tarball exactly costs a whole deflate -9 pass over its content
//! (~14 MiB/s per core), several times everything else an ingest does. With `tarballs=later` (the default)
//! the ingest stores such a file as it is, at full speed, and queues its stream's root in `repack-0` in
//! the same commit. [`repack`] later does what an inline ingest would have done: it stores the
//! content's DAG and the recipe block, then re-indexes each of the stream's stored leaves as a slice of the
//! recipe's output ([`Form::Rebuilt`]), and takes the stream off the queue, all in one commit made after
//! the new blocks are durable. Until then every leaf keeps its old record, so a crash at any point leaves
//! a readable store; the old records become dead bytes that compaction reclaims. The DAG is untouched:
//! CIDs name raw bytes whatever form holds them.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::ops::Range;
use std::sync::atomic::Ordering;

use super::ahead::with_helpers;
use super::flat::{flat_compressed_parts, FLAT_HEAD};
use super::tarball::store_recipe;
use crate::store::chain::ChainEnd;
use crate::store::rebuilt::REBUILD_MAX;
use crate::store::tables::{Form, REPACK_FILE, REPACK_NAR};
use crate::store::{GcReport, Store, StoreError};
use crate::chunk::ChunkerConfig;
use crate::dag::cid::block_hash;
use crate::dag::reader::leaves;
use crate::dag::{walk, BlockHash, Cid, DagReadError, DagReader, WalkMode};

/// A repack compacts packs less than this share of whose bytes are live, or with [`COMPACT_DEAD`] dead
/// bytes. Bolder than GC's half: the old records of converted tarballs are most of what a repack frees,
/// and packs are large (1 GiB), so waiting for half a pack to die would keep them on disk for good in a
/// store that only grows. Copying a pack's live records costs I/O, not CPU.
const COMPACT_BELOW_LIVE: f64 = 0.8;
const COMPACT_DEAD: u64 = 64 << 20;

/// A queued stream's bytes, and where the compressed file lies in them.
type QueuedStream = (Vec<u8>, Range<usize>);

/// What became of one queued stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RepackOutcome {
    /// Now kept as content plus a recipe.
    Converted,
    /// No recipe rebuilds it (or converting it would nest recipes in a loop): it stays as it is.
    Kept,
    /// Its blocks are no longer in the store (forgotten and collected).
    Gone,
}

/// What a repack did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RepackReport {
    /// Streams converted to content plus a recipe.
    pub converted: u64,
    /// Their bytes.
    pub converted_bytes: u64,
    /// Streams no recipe rebuilds, left as they are.
    pub kept: u64,
    /// Queued streams no longer in the store.
    pub gone: u64,
    /// Streams still queued (a repack given a limit).
    pub left: u64,
    /// What compacting the packs afterwards freed.
    pub compaction: GcReport,
}

/// Convert up to `limit` queued streams (all when `None`) into content plus a recipe, then compact the
/// packs their old records leave sparse. Helper threads, one per core, prove the next streams'
/// recipes while the current one is stored. `progress` hears of each stream as it is done.
pub fn repack(
    store: &Store,
    limit: Option<usize>,
    progress: &mut dyn FnMut(&Cid, u64, RepackOutcome),
) -> Result<RepackReport, StoreError> {
    let mut queue = store.repack_queue()?;
    let mut report = RepackReport::default();
    if let Some(n) = limit {
        report.left = queue.len().saturating_sub(n) as u64;
        queue.truncate(n);
    }
    if queue.is_empty() {
        return Ok(report);
    }
    // Errors in a helper only mean it could not help; the repack meets them itstore.
    let prove = |i: usize| {
        if let Ok(Some((bytes, range))) = queued_stream(store, &queue[i].0, queue[i].1) {
            let _ = store.proven().prove(&bytes[range]);
        }
    };
    let result = with_helpers(queue.len(), true, prove, |at| -> Result<(), StoreError> {
        for (i, (root, kind)) in queue.iter().enumerate() {
            at.store(i, Ordering::Relaxed);
            let (outcome, bytes) = repack_stream(store, root, *kind)?;
            match outcome {
                RepackOutcome::Converted => {
                    report.converted += 1;
                    report.converted_bytes += bytes;
                }
                RepackOutcome::Kept => report.kept += 1,
                RepackOutcome::Gone => report.gone += 1,
            }
            progress(root, bytes, outcome);
        }
        Ok(())
    });
    result?;
    if report.converted > 0 {
        store.compact(&mut report.compaction, COMPACT_BELOW_LIVE, COMPACT_DEAD)?;
        store.drop_empty_active_pack()?;
    }
    Ok(report)
}

/// The stored bytes of a queued stream and where its compressed file lies in them; `None` when the
/// stream is gone or no longer looks like one this repack takes.
fn queued_stream(store: &Store, root: &Cid, kind: u8) -> Result<Option<QueuedStream>, StoreError> {
    let reader = match DagReader::new(store, *root) {
        Ok(r) => r,
        Err(DagReadError::MissingBlock { .. }) => return Ok(None),
        Err(e) => return Err(StoreError::Dag(e)),
    };
    if reader.remaining() > REBUILD_MAX {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(reader.remaining() as usize);
    let mut reader = reader;
    if let Err(e) = reader.read_to_end(&mut bytes) {
        return match e.get_ref().and_then(|e| e.downcast_ref::<DagReadError>()) {
            Some(DagReadError::MissingBlock { .. }) => Ok(None),
            _ => Err(StoreError::Io { context: format!("reading queued stream {root}"), source: e }),
        };
    }
    let range = match kind {
        REPACK_NAR => match flat_compressed_parts(&bytes[..bytes.len().min(FLAT_HEAD)]) {
            Some((start, len, total)) if total == bytes.len() as u64 => start..start + len as usize,
            _ => return Ok(None),
        },
        REPACK_FILE => 0..bytes.len(),
        other => {
            return Err(StoreError::CorruptIndex {
                table: "repack-0",
                reason: format!("stream {root} has kind {other}, expected {REPACK_NAR} or {REPACK_FILE}"),
            })
        }
    };
    Ok(Some((bytes, range)))
}

/// Convert one queued stream; returns what became of it and its length.
fn repack_stream(store: &Store, root: &Cid, kind: u8) -> Result<(RepackOutcome, u64), StoreError> {
    let mut ingest = store.begin_ingest();
    ingest.mark_repacked(*root);
    let Some((bytes, range)) = queued_stream(store, root, kind)? else {
        ingest.commit(&[])?;
        return Ok((RepackOutcome::Gone, 0));
    };
    let len = bytes.len() as u64;
    let mut stream_leaves = Vec::new();
    leaves(store, root, &mut |hash, start, len| stream_leaves.push((hash, start, len))).map_err(StoreError::Dag)?;
    // The recipe's content must not need the stream it rebuilds, or reading either would loop. Blocks
    // the content adds are never replaced (`replace_with_rebuilt`) and build no delta on the stream's
    // leaves; a block it shares with the store might still lead to one (through a delta base or
    // another recipe). Then the stream stays as it is.
    let theirs: HashSet<BlockHash> = stream_leaves.iter().map(|(h, _, _)| *h).collect();
    ingest.avoid_bases(theirs.clone());
    ingest.track_reused();
    let Some((recipe, _)) = store_recipe(&mut ingest, &bytes, range, ChunkerConfig::default())? else {
        ingest.commit(&[])?;
        return Ok((RepackOutcome::Kept, len));
    };
    let reused = ingest.take_reused();
    if reaches_any(store, &reused, &theirs)? {
        drop(ingest); // rolls the content back
        let mut ingest = store.begin_ingest();
        ingest.mark_repacked(*root);
        ingest.commit(&[])?;
        return Ok((RepackOutcome::Kept, len));
    }
    for (hash, start, len) in stream_leaves {
        let raw_len = u32::try_from(len).map_err(|_| StoreError::BlockTooLarge { hash, len })?;
        ingest.replace_with_rebuilt(hash, raw_len, recipe, start)?;
    }
    ingest.commit(&[])?;
    Ok((RepackOutcome::Converted, len))
}

/// Whether reading any of `blocks` (stored blocks) could need one of `targets`: whether one of them,
/// a block a delta or patch of theirs stands on, or a block in the content of a recipe one of them is
/// rebuilt from (followed on the same way), is a target.
fn reaches_any(store: &Store, blocks: &[BlockHash], targets: &HashSet<BlockHash>) -> Result<bool, StoreError> {
    let mut recipes = HashSet::new();
    let mut roots = Vec::new();
    let mut note = |hash: &BlockHash, roots: &mut Vec<Cid>| -> Result<bool, StoreError> {
        match store.walk_bases(*hash, |h| targets.contains(h))? {
            ChainEnd::Stopped => return Ok(true),
            ChainEnd::Ends(Some(Form::Rebuilt { recipe, .. })) => {
                if recipes.insert(recipe) {
                    roots.push(store.recipe_content(&recipe)?.0);
                }
            }
            ChainEnd::Ends(_) | ChainEnd::TooLong => {}
        }
        Ok(false)
    };
    for h in blocks {
        if note(h, &mut roots)? {
            return Ok(true);
        }
    }
    let mut seen = HashMap::new();
    while let Some(r) = roots.pop() {
        let mut hashes = Vec::new();
        walk(store, &r, None, &mut seen, WalkMode::NodesOnly, &mut |cid, _| {
            hashes.push(block_hash(cid).map_err(std::io::Error::other)?);
            Ok(())
        })
        .map_err(StoreError::Dag)?;
        for h in &hashes {
            if note(h, &mut roots)? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
