//! Post-process conversion of compressed tarballs into content plus a recipe (`tarballs=later`).
//!
//! Proving that a recipe rebuilds a tarball exactly costs a whole deflate -9 pass over its content
//! (~14 MiB/s per core), several times everything else an ingest does. With `tarballs=later` (the default)
//! the ingest stores such a file as it is, at full speed, and queues its stream's root in `repack-0` in
//! the same commit. [`Store::repack`] later does what an inline ingest would have done: it stores the
//! content's DAG and the recipe block, then re-indexes each of the stream's stored leaves as a slice of the
//! recipe's output ([`Form::Rebuilt`]), and takes the stream off the queue, all in one commit made after
//! the new blocks are durable. Until then every leaf keeps its old record, so a crash at any point leaves
//! a readable store; the old records become dead bytes that compaction reclaims. The DAG is untouched:
//! CIDs name raw bytes whatever form holds them.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::ops::Range;
use std::sync::atomic::Ordering;

use redb::ReadableTable;

use super::chain::ChainEnd;
use super::error::StoreError;
use super::flat::{flat_compressed_parts, FLAT_HEAD};
use super::gc::GcReport;
use super::ingest::store_recipe;
use super::proven::with_helpers;
use super::tables::{Form, REPACK, REPACK_FILE, REPACK_NAR};
use super::{rebuilt, Store};
use crate::chunk::ChunkerConfig;
use crate::dag::cid::{block_hash, cid_from_bytes};
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

impl Store {
    /// Streams waiting for [`repack`](Self::repack): root and [`REPACK_NAR`] or [`REPACK_FILE`].
    pub fn repack_queue(&self) -> Result<Vec<(Cid, u8)>, StoreError> {
        let txn = self.db().begin_read().map_err(StoreError::db("begin read"))?;
        let t = match txn.open_table(REPACK) {
            Ok(t) => t,
            // A store no ingest has queued anything in (or opened read-only before any did).
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::db("open table")(e)),
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(StoreError::db("read"))? {
            let (k, v) = row.map_err(StoreError::db("read"))?;
            let root = cid_from_bytes(k.value()).map_err(|e| StoreError::CorruptIndex {
                table: "repack-0",
                reason: format!("a key is not a CID: {e}"),
            })?;
            out.push((root, v.value()));
        }
        Ok(out)
    }

    /// Convert up to `limit` queued streams (all when `None`) into content plus a recipe, then compact the
    /// packs their old records leave sparse. Helper threads, one per core, prove the next streams'
    /// recipes while the current one is stored. `progress` hears of each stream as it is done.
    pub fn repack(
        &self,
        limit: Option<usize>,
        progress: &mut dyn FnMut(&Cid, u64, RepackOutcome),
    ) -> Result<RepackReport, StoreError> {
        let mut queue = self.repack_queue()?;
        let mut report = RepackReport::default();
        if let Some(n) = limit {
            report.left = queue.len().saturating_sub(n) as u64;
            queue.truncate(n);
        }
        if queue.is_empty() {
            return Ok(report);
        }
        // Errors in a helper only mean it could not help; the repack meets them itself.
        let prove = |i: usize| {
            if let Ok(Some((bytes, range))) = self.queued_stream(&queue[i].0, queue[i].1) {
                let _ = self.proven().prove(&bytes[range]);
            }
        };
        let result = with_helpers(queue.len(), true, prove, |at| -> Result<(), StoreError> {
            for (i, (root, kind)) in queue.iter().enumerate() {
                at.store(i, Ordering::Relaxed);
                let (outcome, bytes) = self.repack_stream(root, *kind)?;
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
            self.compact(&mut report.compaction, COMPACT_BELOW_LIVE, COMPACT_DEAD)?;
            self.drop_empty_active_pack()?;
        }
        Ok(report)
    }

    /// The stored bytes of a queued stream and where its compressed file lies in them; `None` when the
    /// stream is gone or no longer looks like one this repack takes.
    fn queued_stream(&self, root: &Cid, kind: u8) -> Result<Option<QueuedStream>, StoreError> {
        let reader = match DagReader::new(self, *root) {
            Ok(r) => r,
            Err(DagReadError::MissingBlock { .. }) => return Ok(None),
            Err(e) => return Err(StoreError::Dag(e)),
        };
        if reader.remaining() > rebuilt::REBUILD_MAX {
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
    fn repack_stream(&self, root: &Cid, kind: u8) -> Result<(RepackOutcome, u64), StoreError> {
        let mut ingest = self.begin_ingest();
        ingest.mark_repacked(*root);
        let Some((bytes, range)) = self.queued_stream(root, kind)? else {
            ingest.commit(&[])?;
            return Ok((RepackOutcome::Gone, 0));
        };
        let len = bytes.len() as u64;
        let mut stream_leaves = Vec::new();
        leaves(self, root, &mut |hash, start, len| stream_leaves.push((hash, start, len))).map_err(StoreError::Dag)?;
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
        if self.reaches_any(&reused, &theirs)? {
            drop(ingest); // rolls the content back
            let mut ingest = self.begin_ingest();
            ingest.mark_repacked(*root);
            ingest.commit(&[])?;
            return Ok((RepackOutcome::Kept, len));
        }
        for (hash, start, len) in stream_leaves {
            let raw_len = u32::try_from(len).map_err(|_| StoreError::CorruptBlock {
                hash,
                pack: 0,
                offset: 0,
                reason: format!("a {len}-byte leaf is longer than any block"),
            })?;
            ingest.replace_with_rebuilt(hash, raw_len, recipe, start)?;
        }
        ingest.commit(&[])?;
        Ok((RepackOutcome::Converted, len))
    }

    /// Whether reading any of `blocks` (stored blocks) could need one of `targets`: whether one of them,
    /// a block a delta or patch of theirs stands on, or a block in the content of a recipe one of them is
    /// rebuilt from (followed on the same way), is a target.
    fn reaches_any(&self, blocks: &[BlockHash], targets: &HashSet<BlockHash>) -> Result<bool, StoreError> {
        let mut recipes = HashSet::new();
        let mut roots = Vec::new();
        let mut note = |hash: &BlockHash, roots: &mut Vec<Cid>| -> Result<bool, StoreError> {
            match self.walk_bases(*hash, |h| targets.contains(h))? {
                ChainEnd::Stopped => return Ok(true),
                ChainEnd::Ends(Some(Form::Rebuilt { recipe, .. })) => {
                    if recipes.insert(recipe) {
                        roots.push(self.recipe_content(&recipe)?.0);
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
            walk(self, &r, None, &mut seen, WalkMode::NodesOnly, &mut |cid, _| {
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
}
