//! What is stored, and what dedup and compression save.

use redb::{ReadableTable, ReadableTableMetadata, TableHandle};

use super::error::{IoContext, StoreError};
use super::tables::{BlockLoc, FileEntry, Form, NarEntry, BLOCKS, FILES, NARS, PATHS};
use super::Store;

/// Store-wide figures. `logical_bytes / stored_bytes` is what the store saves.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct StoreStats {
    /// Sum of the sizes of every stored stream (NARs and files), as if each were kept whole.
    pub logical_bytes: u64,
    /// Sum of the sizes of the unique blocks (leaves and interior nodes), before compression.
    pub unique_bytes: u64,
    /// Bytes on disk: pack files (headers and dead records included) plus the index.
    pub stored_bytes: u64,
    /// Of which pack files.
    pub pack_bytes: u64,
    /// Of which the index database (`index.redb`).
    pub index_bytes: u64,
    /// Blocks by stored form.
    pub forms: FormStats,
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
    /// Compressed files stored as they are, waiting for `nixdag repack` (`tarballs=later`).
    pub repack_queued: u64,
}

/// How many blocks are kept in each form, and their raw bytes.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FormStats {
    /// Stored as is.
    pub raw_blocks: u64,
    /// Each in its own zstd frame.
    pub zstd_blocks: u64,
    /// Members of frames.
    pub framed_blocks: u64,
    /// Frames (several blocks, or any number with a dictionary).
    pub frames: u64,
    /// Their stored bytes (payloads).
    pub frame_stored_bytes: u64,
    /// Frames compressed with a trained dictionary.
    pub frames_with_dict: u64,
    /// Distinct dictionaries those frames use.
    pub dictionaries: u64,
    /// Deltas against a similar block.
    pub delta_blocks: u64,
    /// Raw bytes of the delta blocks.
    pub delta_raw_bytes: u64,
    /// Their stored bytes (payloads).
    pub delta_stored_bytes: u64,
    /// Longest delta chain.
    pub max_delta_depth: u8,
    /// Blocks kept as their normalized form plus patches.
    pub patched_blocks: u64,
    /// Stored bytes of their patch records.
    pub patched_stored_bytes: u64,
    /// Blocks of compressed tarballs kept as content plus a recipe.
    pub rebuilt_blocks: u64,
    /// Their raw bytes.
    pub rebuilt_raw_bytes: u64,
}

impl Store {
    /// Compute the figures from the index and the pack files.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut s = StoreStats::default();
        let txn = self.db().begin_read().map_err(StoreError::txn("begin read"))?;
        let nars = txn.open_table(NARS).map_err(StoreError::table_op("open", NARS.name()))?;
        for row in nars.iter().map_err(StoreError::table_op("scan", NARS.name()))? {
            let (_, v) = row.map_err(StoreError::table_op("scan", NARS.name()))?;
            s.logical_bytes += NarEntry::decode(v.value())?.nar_size;
            s.nars += 1;
        }
        let files = txn.open_table(FILES).map_err(StoreError::table_op("open", FILES.name()))?;
        for row in files.iter().map_err(StoreError::table_op("scan", FILES.name()))? {
            let (_, v) = row.map_err(StoreError::table_op("scan", FILES.name()))?;
            s.logical_bytes += FileEntry::decode(v.value())?.size;
            s.files += 1;
        }
        let blocks = txn.open_table(BLOCKS).map_err(StoreError::table_op("open", BLOCKS.name()))?;
        let mut frames = std::collections::HashSet::new();
        let mut dicts = std::collections::HashSet::new();
        for row in blocks.iter().map_err(StoreError::table_op("scan", BLOCKS.name()))? {
            let (_, v) = row.map_err(StoreError::table_op("scan", BLOCKS.name()))?;
            let loc = BlockLoc::decode(v.value())?;
            s.unique_bytes += u64::from(loc.raw_len);
            s.blocks += 1;
            let f = &mut s.forms;
            match loc.form {
                Form::Raw => f.raw_blocks += 1,
                Form::Zstd => f.zstd_blocks += 1,
                Form::Framed { dict, .. } => {
                    f.framed_blocks += 1;
                    if frames.insert((loc.pack, loc.offset)) {
                        f.frames += 1;
                        f.frame_stored_bytes += u64::from(loc.stored_len);
                        if let Some(d) = dict {
                            f.frames_with_dict += 1;
                            dicts.insert(d);
                        }
                    }
                }
                Form::Delta { depth, .. } => {
                    f.delta_blocks += 1;
                    f.delta_raw_bytes += u64::from(loc.raw_len);
                    f.delta_stored_bytes += u64::from(loc.stored_len);
                    f.max_delta_depth = f.max_delta_depth.max(depth);
                }
                Form::Rebuilt { .. } => {
                    f.rebuilt_blocks += 1;
                    f.rebuilt_raw_bytes += u64::from(loc.raw_len);
                }
                Form::Patched { .. } => {
                    f.patched_blocks += 1;
                    f.patched_stored_bytes += u64::from(loc.stored_len);
                }
            }
        }
        s.forms.dictionaries = dicts.len() as u64;
        s.paths = txn.open_table(PATHS).map_err(StoreError::table_op("open", PATHS.name()))?.len().map_err(StoreError::table_op("count", PATHS.name()))?;
        for (_, len) in self.packs().list()? {
            s.pack_bytes += len;
            s.packs += 1;
        }
        let index = self.dir().join("index.redb");
        s.index_bytes = std::fs::metadata(&index).context(|| format!("stat of {}", index.display()))?.len();
        s.stored_bytes = s.pack_bytes + s.index_bytes;
        s.repack_queued = self.repack_queue()?.len() as u64;
        Ok(s)
    }
}
