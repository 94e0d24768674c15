//! NARs into the store: a stream (validated as it is read) or a path on disk (dumped as `nix-store --dump`
//! does), normalized, chunked and built into a DAG whose blocks go into one [`Ingest`].

use std::io::{self, Read};
use std::path::Path;

use super::flat::{flat_compressed_nar_len, FLAT_HEAD};
use super::normalize::{patches_for, Normalizer, Removals};
use super::tarball::{build_rebuilt, queues_for_repack};
use crate::chunk::{Chunker, ChunkerConfig};
use crate::dag::builder::BuiltDag;
use crate::dag::{BlockHash, Cid, DagBuilder};
use crate::nix::hash::NarHash;
use crate::nix::nar::{self, NarSink, NarSummary};
use crate::nix::narinfo::NarInfo;
use crate::recompress;
use crate::store::patch::{apply_patches, encode_patches};
use crate::store::rebuilt::REBUILD_MAX;
use crate::store::tables::{NarEntry, REPACK_NAR};
use crate::store::{Ingest, Manifest, Store, StoreError};

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
    let normalize = ingest.storage().normalize;
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

/// The store path a NAR is recorded with, if any, and whether the node vouches for it.
enum Record {
    /// A NAR alone.
    None,
    /// A path the node vouches for (`Manifest::Path`): signed by the gateway when served.
    Path(NarInfo),
    /// A path from a peer (`Manifest::ForeignPath`): served with the signatures it carries only.
    Foreign(NarInfo),
}

impl From<Option<NarInfo>> for Record {
    fn from(info: Option<NarInfo>) -> Record {
        info.map_or(Record::None, Record::Path)
    }
}

fn commit_nar(ingest: Ingest<'_>, summary: NarSummary, dag: BuiltDag, record: Record) -> Result<NarAdded, StoreError> {
    let info = match &record {
        Record::None => None,
        Record::Path(i) | Record::Foreign(i) => Some(i),
    };
    if let Some(info) = info {
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
    match record {
        Record::None => {}
        Record::Path(i) => manifests.push(Manifest::Path(Box::new(i))),
        Record::Foreign(i) => manifests.push(Manifest::ForeignPath(Box::new(i))),
    }
    let (new_blocks, new_bytes) = ingest.new_blocks();
    ingest.commit(&manifests)?;
    Ok(NarAdded { nar_hash: summary.nar_hash, nar_size: summary.nar_size, root: dag.root, new_blocks, new_bytes })
}

/// Store a NAR read from `r`, validating it as it streams. When `info` is given (a store path's
/// metadata), its NarHash and NarSize must match and it is recorded with the NAR.
pub fn add_nar(store: &Store, r: impl Read, cfg: ChunkerConfig, info: Option<NarInfo>) -> Result<NarAdded, StoreError> {
    add_nar_as(store, r, cfg, info.into(), false)
}

/// [`add_nar`] for a path whose narinfo came from a peer: recorded as foreign (never signed by this
/// node), and only if the NAR matches that narinfo's NarHash and NarSize.
pub fn add_foreign_nar(store: &Store, r: impl Read, cfg: ChunkerConfig, info: NarInfo) -> Result<NarAdded, StoreError> {
    add_nar_as(store, r, cfg, Record::Foreign(info), false)
}

/// [`add_nar`] for a NAR that arrived as an upload (`PUT /nar/…`): recorded in `uploaded-0` in the same
/// commit, so that a disk budget keeps it (unless `--evict-uploads`) and no crash can drop the mark.
pub fn add_uploaded_nar(store: &Store, r: impl Read, cfg: ChunkerConfig) -> Result<NarAdded, StoreError> {
    add_nar_as(store, r, cfg, Record::None, true)
}

fn add_nar_as(
    store: &Store,
    mut r: impl Read,
    cfg: ChunkerConfig,
    info: Record,
    uploaded: bool,
) -> Result<NarAdded, StoreError> {
    // A flat file holding a compressed tarball may be kept as its content plus a recipe: look at the
    // NAR's first bytes, and if they say so, take the (bounded) NAR whole.
    let mut head = Vec::with_capacity(FLAT_HEAD);
    let mut failed = (&mut r).take(FLAT_HEAD as u64).read_to_end(&mut head).err();
    if let Some(total) = flat_compressed_nar_len(&head).filter(|t| *t <= REBUILD_MAX && failed.is_none()) {
        failed = (&mut r).take((total + 1).saturating_sub(head.len() as u64)).read_to_end(&mut head).err();
        // Longer than its header says: not a NAR this takes whole; the streaming parser says what is wrong.
        if failed.is_none() && head.len() as u64 <= total {
            return add_nar_bytes(store, &head, cfg, info, uploaded);
        }
    }
    // A read error while peeking reaches the parser where it happened, so it is reported (and classed)
    // as any read error in the middle of a NAR.
    let r = Replay { head: io::Cursor::new(head), failed, rest: r };
    let mut ingest = store.begin_ingest();
    if uploaded {
        ingest.mark_uploaded();
    }
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
fn add_nar_bytes(
    store: &Store,
    nar: &[u8],
    cfg: ChunkerConfig,
    info: Record,
    uploaded: bool,
) -> Result<NarAdded, StoreError> {
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
    if uploaded {
        ingest.mark_uploaded();
    }
    let mut queue = false;
    if let Some((at, len)) = probe.contents {
        let range = at as usize..(at + len) as usize;
        queue = queues_for_repack(&ingest, &nar[range.clone()], nar.len());
        if let Some(dag) = build_rebuilt(&mut ingest, nar, range, cfg, true)? {
            return commit_nar(ingest, summary, dag, info);
        }
    }
    ingest.set_as_is(queue);
    let (summary, dag) = build_nar(&mut ingest, cfg, |mut sink| nar::copy_validated(nar, &mut sink))?;
    // Only a stream this ingest stored: one stored before is queued already, or converted, or kept.
    if queue && ingest.new_blocks().0 > 0 {
        ingest.queue_repack(dag.root, REPACK_NAR);
    }
    commit_nar(ingest, summary, dag, info)
}

/// Serialize a filesystem path as a NAR (as `nix-store --dump` does) and store it.
pub fn add_path(store: &Store, path: &Path, cfg: ChunkerConfig, info: Option<NarInfo>) -> Result<NarAdded, StoreError> {
    // A regular file that starts like a compressed stream, small enough to hold: try content + recipe.
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.is_file() && m.len() <= REBUILD_MAX - 1024 {
            let mut magic = [0u8; 6];
            let sniffed = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok();
            if sniffed && recompress::detect(&magic).is_some() {
                let mut nar = Vec::with_capacity(m.len() as usize + 256);
                nar::dump_path(path, &mut nar)?;
                return add_nar_bytes(store, &nar, cfg, info.into(), false);
            }
        }
    }
    let mut ingest = store.begin_ingest();
    let (summary, dag) = build_nar(&mut ingest, cfg, |mut sink| nar::dump_path(path, &mut sink))?;
    commit_nar(ingest, summary, dag, info.into())
}
