//! The catalogue snapshot (`nixdag snapshot`): the manifests, read in one transaction, written as
//! dag-cbor nodes (`dag::catalogue`) through an ordinary ingest, and its root recorded in
//! `snapshots-0` by that ingest's commit, so it works beside a running `serve` exactly as `add` does.

use redb::{ReadableTable, TableHandle};

use super::error::StoreError;
use super::tables::{FileEntry, NarEntry, FILES, NARS, PATHS, SNAPSHOTS};
use super::txn::Manifest;
use super::Store;
use crate::dag::catalogue::{self, CatalogueError, FileRow, NarRow, PathRow, SnapshotSummary};
use crate::dag::cid::{block_hash, cid_from_bytes, DAG_CBOR_CODEC};
use crate::dag::{BlockSource, Cid};
use crate::nix::narinfo::NarInfo;

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Reading the manifests or committing the nodes failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The catalogue could not be encoded (or a node not stored).
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
}

/// The manifests as the catalogue lists them.
#[derive(Debug, Default)]
pub struct CatalogueRows {
    /// Store paths with their NAR's root.
    pub paths: Vec<PathRow>,
    /// NARs.
    pub nars: Vec<NarRow>,
    /// Files.
    pub files: Vec<FileRow>,
}

impl Store {
    /// The latest catalogue snapshot: its root and when it was taken (ms since the epoch).
    pub fn snapshot(&self) -> Result<Option<(Cid, u64)>, StoreError> {
        let txn = self.db().begin_read().map_err(StoreError::txn("begin read"))?;
        let t = match txn.open_table(SNAPSHOTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(StoreError::table_op("open", SNAPSHOTS.name())(e)),
        };
        let mut rows = t.iter().map_err(StoreError::table_op("scan", SNAPSHOTS.name()))?;
        let Some(row) = rows.next() else { return Ok(None) };
        let (k, v) = row.map_err(StoreError::table_op("scan", SNAPSHOTS.name()))?;
        let cid = cid_from_bytes(k.value())
            .map_err(|e| StoreError::CorruptIndex { table: "snapshots-0", reason: e.to_string() })?;
        Ok(Some((cid, v.value())))
    }

    /// Every store path, NAR and file, as one read transaction saw them (a commit meanwhile is either
    /// wholly in or wholly out).
    pub fn catalogue_rows(&self) -> Result<CatalogueRows, StoreError> {
        let txn = self.db().begin_read().map_err(StoreError::txn("begin read"))?;
        let mut out = CatalogueRows::default();
        let nars = txn.open_table(NARS).map_err(StoreError::table_op("open", NARS.name()))?;
        for row in nars.iter().map_err(StoreError::table_op("scan", NARS.name()))? {
            let (k, v) = row.map_err(StoreError::table_op("scan", NARS.name()))?;
            let e = NarEntry::decode(v.value())?;
            let nar_hash = k
                .value()
                .try_into()
                .map_err(|_| StoreError::CorruptIndex { table: "nars-0", reason: "key is not 32 bytes".into() })?;
            out.nars.push(NarRow { nar_hash, size: e.nar_size, root: e.root });
        }
        let paths = txn.open_table(PATHS).map_err(StoreError::table_op("open", PATHS.name()))?;
        for row in paths.iter().map_err(StoreError::table_op("scan", PATHS.name()))? {
            let (_, v) = row.map_err(StoreError::table_op("scan", PATHS.name()))?;
            let info = NarInfo::parse(v.value())
                .map_err(|e| StoreError::CorruptIndex { table: "paths-0", reason: e.to_string() })?;
            // Every path's NAR is committed with or before it; one forgotten since has no root to name.
            let Some(entry) =
                nars.get(info.nar_hash.0.as_slice()).map_err(StoreError::row("read", NARS.name(), info.nar_hash))?
            else {
                continue;
            };
            let root = NarEntry::decode(entry.value())?.root;
            out.paths.push(PathRow { info, root });
        }
        let files = txn.open_table(FILES).map_err(StoreError::table_op("open", FILES.name()))?;
        for row in files.iter().map_err(StoreError::table_op("scan", FILES.name()))? {
            let (k, v) = row.map_err(StoreError::table_op("scan", FILES.name()))?;
            let e = FileEntry::decode(v.value())?;
            let sha256 = k
                .value()
                .try_into()
                .map_err(|_| StoreError::CorruptIndex { table: "files-0", reason: "key is not 32 bytes".into() })?;
            out.files.push(FileRow { sha256, size: e.size, name: e.name.clone(), root: e.root_cid()? });
        }
        Ok(out)
    }

    /// Take a catalogue snapshot: write its nodes and make it the store's snapshot in one commit.
    pub fn take_snapshot(&self) -> Result<(Cid, SnapshotSummary), SnapshotError> {
        let rows = self.catalogue_rows()?;
        let mut ingest = self.begin_ingest();
        let (root, summary) = catalogue::write(&mut ingest, &rows.paths, &rows.nars, &rows.files)?;
        ingest.commit(&[Manifest::Snapshot(root)])?;
        Ok((root, summary))
    }

    /// The catalogue nodes under the latest snapshot, for GC to keep: only dag-cbor nodes are
    /// followed (NARs and files live by their own manifests). A node already gone ends that branch:
    /// a snapshot cut short by damage is not a reason to refuse a collection.
    pub(super) fn catalogue_nodes(&self, root: &Cid) -> Vec<crate::dag::BlockHash> {
        let mut out = Vec::new();
        let mut todo = vec![*root];
        while let Some(cid) = todo.pop() {
            let Ok(hash) = block_hash(&cid) else { continue };
            // Missing or damaged: nothing below it can be reached to keep.
            let Ok(Some(bytes)) = self.get_block(&hash) else { continue };
            out.push(hash);
            if let Ok(links) = catalogue::links(&cid, &bytes) {
                todo.extend(links.into_iter().filter(|l| l.codec() == DAG_CBOR_CODEC));
            }
        }
        out
    }
}
