//! What is stored, and what dedup and compression save.

use redb::{ReadableTable, ReadableTableMetadata, TableHandle};

use super::error::{IoContext, StoreError};
use super::tables::{BlockLoc, FileEntry, Form, NarEntry, RecordKind, BLOCKS, FILES, NARS, PATHS};
use super::Store;
use crate::dag::{BlockHash, Cid};
use crate::nix::hash::NarHash;
use crate::nix::narinfo::NarInfo;

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

/// What is stored, read in one pass over the index (one read transaction, so every part agrees): the
/// totals of [`StoreStats`], every block's size and form, and every stored stream with the names it is
/// known by. The report (`crate::stats`) builds on it; the store itself does not interpret names.
#[derive(Debug, Default)]
pub struct Census {
    /// The store-wide figures, as [`Store::stats`] gives them.
    pub stats: StoreStats,
    /// Every block in the index: its name, raw length, and form (`frame_stored` is the stored bytes of
    /// its frame record when this block is the first member of it the scan met, so that summing it
    /// counts each frame once).
    pub blocks: Vec<CensusBlock>,
    /// Every stored NAR and file.
    pub roots: Vec<CensusRoot>,
}

/// One block of a [`Census`].
#[derive(Debug, Clone, Copy)]
pub struct CensusBlock {
    /// Its name.
    pub hash: BlockHash,
    /// Its raw bytes.
    pub raw_len: u32,
    /// The stored bytes it accounts for: its own record's payload, or for a framed block the frame's
    /// payload once (on the first member met), else 0; 0 for a rebuilt block (it has no record).
    pub stored: u32,
    /// Its form.
    pub kind: RecordKind,
}

/// A stored stream: a NAR or a flat file.
#[derive(Debug, Clone)]
pub struct CensusRoot {
    /// `true` for a NAR, `false` for a flat file.
    pub is_nar: bool,
    /// `sha256:<nix32>`: the NarHash, or the file's SHA-256.
    pub hash: String,
    /// The DAG root.
    pub root: Cid,
    /// Its bytes.
    pub size: u64,
    /// Store paths recorded with this NAR (absolute), or the file's name; may be empty (a NAR added
    /// without metadata).
    pub names: Vec<String>,
    /// Where its root block's record lies, `(pack id, offset)`: packs are append-only and their ids only
    /// grow, so this orders streams by when their ingest wrote the root (its last block), the nearest
    /// thing to an ingest order the index keeps (no manifest table records a time or sequence). A
    /// compaction moves the records it keeps to a newer pack, which makes those streams look newer.
    /// `None` when the root has no record of its own (a rebuilt block) or is missing.
    pub written_at: Option<(u32, u64)>,
}

impl Store {
    /// Compute the figures from the index and the pack files.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        Ok(self.scan(false)?.stats)
    }

    /// [`Store::stats`] plus every block and stream: one pass over `blocks-0`, `nars-0`, `files-0` and
    /// `paths-0`. Memory is about 48 bytes a block.
    pub fn census(&self) -> Result<Census, StoreError> {
        self.scan(true)
    }

    fn scan(&self, detail: bool) -> Result<Census, StoreError> {
        let mut census = Census::default();
        let mut s = StoreStats::default();
        let txn = self.db().begin_read().map_err(StoreError::txn("begin read"))?;
        let mut by_nar: std::collections::HashMap<[u8; 32], usize> = std::collections::HashMap::new();
        let nars = txn.open_table(NARS).map_err(StoreError::table_op("open", NARS.name()))?;
        for row in nars.iter().map_err(StoreError::table_op("scan", NARS.name()))? {
            let (k, v) = row.map_err(StoreError::table_op("scan", NARS.name()))?;
            let e = NarEntry::decode(v.value())?;
            s.logical_bytes += e.nar_size;
            s.nars += 1;
            if detail {
                let key: [u8; 32] = k.value().try_into().map_err(|_| StoreError::CorruptIndex {
                    table: "nars-0",
                    reason: "key is not 32 bytes".into(),
                })?;
                by_nar.insert(key, census.roots.len());
                census.roots.push(CensusRoot {
                    is_nar: true,
                    hash: NarHash(key).to_string(),
                    root: e.root,
                    size: e.nar_size,
                    names: Vec::new(),
                    written_at: None,
                });
            }
        }
        let files = txn.open_table(FILES).map_err(StoreError::table_op("open", FILES.name()))?;
        for row in files.iter().map_err(StoreError::table_op("scan", FILES.name()))? {
            let (k, v) = row.map_err(StoreError::table_op("scan", FILES.name()))?;
            let e = FileEntry::decode(v.value())?;
            s.logical_bytes += e.size;
            s.files += 1;
            if detail {
                census.roots.push(CensusRoot {
                    is_nar: false,
                    hash: format!("sha256:{}", crate::nix::hash::nix32::encode(k.value())),
                    root: e.root_cid()?,
                    size: e.size,
                    names: vec![e.name.clone()],
                    written_at: None,
                });
            }
        }
        if detail {
            let paths = txn.open_table(PATHS).map_err(StoreError::table_op("open", PATHS.name()))?;
            for row in paths.iter().map_err(StoreError::table_op("scan", PATHS.name()))? {
                let (_, v) = row.map_err(StoreError::table_op("scan", PATHS.name()))?;
                let info = NarInfo::parse(v.value())
                    .map_err(|e| StoreError::CorruptIndex { table: "paths-0", reason: e.to_string() })?;
                if let Some(&i) = by_nar.get(&info.nar_hash.0) {
                    census.roots[i].names.push(info.store_path.to_absolute());
                }
            }
            for r in &mut census.roots {
                r.names.sort();
            }
        }
        // The streams each root block is the root of (two streams may share a root: a one-leaf NAR and a
        // file of the same bytes cannot, but nothing forbids it).
        let mut root_of: std::collections::HashMap<[u8; 32], Vec<usize>> = std::collections::HashMap::new();
        if detail {
            for (i, r) in census.roots.iter().enumerate() {
                if let Ok(h) = crate::dag::cid::block_hash(&r.root) {
                    root_of.entry(h.0).or_default().push(i);
                }
            }
        }
        let blocks = txn.open_table(BLOCKS).map_err(StoreError::table_op("open", BLOCKS.name()))?;
        let mut frames = std::collections::HashSet::new();
        let mut dicts = std::collections::HashSet::new();
        for row in blocks.iter().map_err(StoreError::table_op("scan", BLOCKS.name()))? {
            let (k, v) = row.map_err(StoreError::table_op("scan", BLOCKS.name()))?;
            let loc = BlockLoc::decode(v.value())?;
            if detail {
                let hash = BlockHash(k.value().try_into().map_err(|_| StoreError::CorruptIndex {
                    table: "blocks-0",
                    reason: "key is not 32 bytes".into(),
                })?);
                let stored = match loc.form {
                    Form::Rebuilt { .. } => 0,
                    Form::Framed { .. } if frames.contains(&(loc.pack, loc.offset)) => 0,
                    _ => loc.stored_len,
                };
                if let Some(rs) = root_of.get(&hash.0) {
                    if !matches!(loc.form, Form::Rebuilt { .. }) {
                        for &r in rs {
                            census.roots[r].written_at = Some((loc.pack, loc.offset));
                        }
                    }
                }
                census.blocks.push(CensusBlock { hash, raw_len: loc.raw_len, stored, kind: loc.form.kind() });
            }
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
        census.stats = s;
        Ok(census)
    }
}
