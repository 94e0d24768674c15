//! What is stored, and what dedup and compression save.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::error::{IoContext, StoreError};
use super::tables::{BlockLoc, FileEntry, NarEntry, BLOCKS, FILES, NARS, PATHS};
use super::Store;

/// Store-wide figures. `logical_bytes / stored_bytes` is what the store saves.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct StoreStats {
    /// Sum of the sizes of every stored stream (NARs and files), as if each were kept whole.
    pub logical_bytes: u64,
    /// Sum of the sizes of the unique blocks (leaves and interior nodes), before compression.
    pub unique_bytes: u64,
    /// Bytes on disk for blocks: the pack files, headers and dead records included.
    pub stored_bytes: u64,
    /// Bytes of the index database (`index.redb`).
    pub index_bytes: u64,
    /// Unique blocks.
    pub blocks: u64,
    /// NARs.
    pub nars: u64,
    /// Flat files.
    pub files: u64,
    /// Store paths with metadata.
    pub paths: u64,
    /// Pack files.
    pub packs: u64,
}

impl Store {
    /// Compute the figures from the index and the pack files.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut s = StoreStats::default();
        let db = StoreError::db::<redb::StorageError>;
        let txn = self.db().begin_read().map_err(StoreError::db("begin read"))?;
        let nars = txn.open_table(NARS).map_err(StoreError::db("open table"))?;
        for row in nars.iter().map_err(db("read"))? {
            let (_, v) = row.map_err(db("read"))?;
            s.logical_bytes += NarEntry::decode(v.value())?.nar_size;
            s.nars += 1;
        }
        let files = txn.open_table(FILES).map_err(StoreError::db("open table"))?;
        for row in files.iter().map_err(db("read"))? {
            let (_, v) = row.map_err(db("read"))?;
            s.logical_bytes += FileEntry::decode(v.value())?.size;
            s.files += 1;
        }
        let blocks = txn.open_table(BLOCKS).map_err(StoreError::db("open table"))?;
        for row in blocks.iter().map_err(db("read"))? {
            let (_, v) = row.map_err(db("read"))?;
            s.unique_bytes += u64::from(BlockLoc::decode(v.value())?.raw_len);
            s.blocks += 1;
        }
        s.paths = txn.open_table(PATHS).map_err(StoreError::db("open table"))?.len().map_err(db("read"))?;
        for (_, len) in self.packs().list()? {
            s.stored_bytes += len;
            s.packs += 1;
        }
        let index = self.dir().join("index.redb");
        s.index_bytes = std::fs::metadata(&index).context(|| format!("stat of {}", index.display()))?.len();
        Ok(s)
    }
}
