//! The index tables and the byte layout of their values. All integers little-endian.
//!
//! Table names carry a version suffix (`-0`) so a future layout can live beside the old one during a
//! migration (iroh-blobs does the same).

use redb::{TableDefinition, TableHandle};

use super::error::{Hex, StoreError};
use crate::dag::cid::{cid_from_bytes, Cid};
use crate::dag::BlockHash;

/// BLAKE3 (32 bytes) → [`BlockLoc`] (21 bytes).
pub const BLOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blocks-0");
/// Pack id → committed length: bytes past it are an interrupted write, cut off when the store opens.
pub const PACKS: TableDefinition<u32, u64> = TableDefinition::new("packs-0");
/// NarHash (32 bytes) → [`NarEntry`].
pub const NARS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("nars-0");
/// Store-path hash part (32 nix32 chars) → narinfo text without URL/Compression/FileHash/FileSize.
pub const PATHS: TableDefinition<&str, &str> = TableDefinition::new("paths-0");
/// Store-path hash parts (as in [`PATHS`]) whose narinfo came from somewhere the node does not vouch for
/// (a peer): served with the signatures they carry, never signed by the gateway. The value is unused (0).
pub const FOREIGN: TableDefinition<&str, u8> = TableDefinition::new("foreign-paths-0");
/// Store-path hash parts (as in [`PATHS`]) whose NAR came from this machine's Nix store
/// (`serve --local-nix-store`): offered only while that store still has the path. The value is unused (0).
pub const LOCAL: TableDefinition<&str, u8> = TableDefinition::new("local-paths-0");
/// Flat SHA-256 of a file (32 bytes) → [`FileEntry`] as JSON.
pub const FILES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("files-0");
/// `algo:digest` of a file's other hashes (sha512, sha1, md5) → its SHA-256 (32 bytes).
pub const FILE_ALIASES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("file-aliases-0");
/// Root CID bytes (of a `nars-0` or `files-0` entry) → when it was last served or, if it never was,
/// stored: milliseconds since the Unix epoch. What `--max-size` evicts by (least recent first). Written by
/// the commit that records the root, and by the service in batches (never one write per request). A root
/// without a row counts as the oldest (stored by a build that predates the table).
pub const SERVED: TableDefinition<&[u8], u64> = TableDefinition::new("served-0");
/// Store-path hash parts (as in [`PATHS`]) the operator pinned (`nixdag pin`): never evicted, nor, by
/// the closure rule, anything they reference. The value is unused (0).
pub const PINS: TableDefinition<&str, u8> = TableDefinition::new("pins-0");
/// Root CID bytes of NARs that arrived as uploads (`PUT /nar/…` by an admitted client): kept by eviction
/// unless `--evict-uploads`. The value is unused (0).
pub const UPLOADED: TableDefinition<&[u8], u8> = TableDefinition::new("uploaded-0");
/// The catalogue snapshot (`nixdag snapshot`, docs/IPFS.md): its root CID bytes (dag-cbor) → when it
/// was taken, milliseconds since the Unix epoch. One row: a new snapshot replaces the last. GC keeps
/// the catalogue nodes under it (not the NARs and files they name: those live by their own manifests),
/// so the gateway serves the latest snapshot until the next one.
pub const SNAPSHOTS: TableDefinition<&[u8], u64> = TableDefinition::new("snapshots-0");
/// Store-wide settings: `format` → u32 format version.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta-0");

/// Compressed files stored as they are, waiting for `import::repack` to keep them as
/// content plus a recipe: the stream's root CID (bytes) → [`REPACK_NAR`] or [`REPACK_FILE`].
pub const REPACK: TableDefinition<&[u8], u8> = TableDefinition::new("repack-0");
/// A [`REPACK`] stream that is a NAR of one regular file (the compressed file is its contents).
pub const REPACK_NAR: u8 = 0;
/// A [`REPACK`] stream that is the compressed file itself.
pub const REPACK_FILE: u8 = 1;

/// Similarity index: super-feature (u64, see `similar.rs`) → the newest block with it, a candidate
/// delta base for new blocks that resemble it, named by the first [`SIMILAR_PREFIX`] bytes of its BLAKE3
/// (found in [`BLOCKS`] by a range lookup; format 2 stores wrote all 32 bytes, which still read).
pub const SIMILAR: TableDefinition<u64, &[u8]> = TableDefinition::new("similar-0");
/// Bytes of a block's name kept in [`SIMILAR`]. Twelve rows a block made the index 4 % of the packs;
/// 8 bytes instead of 32 halve it, and a wrong guess (two blocks sharing 64 bits) only costs a weak delta.
pub const SIMILAR_PREFIX: usize = 8;

/// The block a [`SIMILAR`] value names: a full name, or the first block in `blocks` whose name starts
/// with the stored prefix.
pub fn similar_target(
    blocks: &impl redb::ReadableTable<&'static [u8], &'static [u8]>,
    value: &[u8],
) -> Result<Option<BlockHash>, StoreError> {
    if let Ok(h) = <[u8; 32]>::try_from(value) {
        return Ok(Some(BlockHash(h)));
    }
    if value.len() != SIMILAR_PREFIX {
        return Ok(None);
    }
    let prefix = |e| StoreError::row("read", BLOCKS.name(), Hex(value))(e);
    let mut range = blocks.range(value..).map_err(prefix)?;
    match range.next() {
        Some(row) => {
            let (k, _) = row.map_err(prefix)?;
            Ok(<[u8; 32]>::try_from(k.value()).ok().filter(|k| k.starts_with(value)).map(BlockHash))
        }
        None => Ok(None),
    }
}
/// The format version this build writes (docs/FORMAT.md, "Version history").
pub const FORMAT_VERSION: u32 = 3;
/// Versions this build opens. Each is a subset of the next (1: no frames, deltas or similarity table;
/// 2: no frames with a dictionary): opening adds what is missing and records version 3; no block is
/// rewritten.
pub const READABLE_VERSIONS: [u32; 3] = [1, 2, 3];
/// [`META`] key of the dictionary new frames are compressed with (a block's 32-byte BLAKE3), once one
/// has been trained.
pub const META_DICT: &str = "dict";
/// `meta-0` key: the highest pack id a compaction deleted (u32 LE), so that no pack id is used twice.
pub const META_PACK_HWM: &str = "pack-hwm";

/// What a pack record holds (the record header's last byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// One block, stored as is.
    Raw = 0,
    /// One block, one zstd frame.
    Zstd = 1,
    /// Several neighbouring blocks in one zstd frame (maybe with a trained dictionary); the header's
    /// hash is BLAKE3 of the payload and its `raw_len` the frame's decompressed length.
    Frame = 2,
    /// One block as a zstd frame compressed against another block (its delta base) as a raw prefix.
    Delta = 3,
    /// One block as another (its normalized form, see `normalize.rs`) plus the bytes to put back.
    Patched = 5,
    /// No record: the block is a slice of a recipe's output (`rebuilt.rs`). Only an index form.
    Rebuilt = 6,
}

impl RecordKind {
    /// The kind with this byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => RecordKind::Raw,
            1 => RecordKind::Zstd,
            2 => RecordKind::Frame,
            3 => RecordKind::Delta,
            5 => RecordKind::Patched,
            6 => RecordKind::Rebuilt,
            _ => return None,
        })
    }
}

/// How a block is kept: the form-specific part of its [`BlockLoc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Its own record, stored as is.
    Raw,
    /// Its own record, one zstd frame.
    Zstd,
    /// A slice of a frame record: `start..start + raw_len` of the frame's `frame_len` decompressed bytes.
    Framed {
        /// Decompressed length of the whole frame.
        frame_len: u32,
        /// Where the block starts in it.
        start: u32,
        /// The block holding the zstd dictionary the frame was compressed with, if any (format 3).
        dict: Option<BlockHash>,
    },
    /// Its own record, compressed against `base`.
    Delta {
        /// The block whose raw bytes are the zstd prefix.
        base: BlockHash,
        /// Length of the chain: 1 when `base` is not itself a delta.
        depth: u8,
    },
    /// Its own record holds patches to apply to `base`, its normalized form.
    Patched {
        /// The normalized block.
        base: BlockHash,
    },
    /// No record of its own: bytes `start..start + raw_len` of what recipe block `recipe` rebuilds.
    Rebuilt {
        /// The recipe block.
        recipe: BlockHash,
        /// Where the block starts in the recipe's output.
        start: u64,
    },
}

impl Form {
    /// The record kind this form lives in.
    pub fn kind(&self) -> RecordKind {
        match self {
            Form::Raw => RecordKind::Raw,
            Form::Zstd => RecordKind::Zstd,
            Form::Framed { .. } => RecordKind::Frame,
            Form::Delta { .. } => RecordKind::Delta,
            Form::Patched { .. } => RecordKind::Patched,
            Form::Rebuilt { .. } => RecordKind::Rebuilt,
        }
    }

    /// The block this form is read through, if any: a delta's base, a patched block's normal form, a
    /// rebuilt block's recipe, a frame's dictionary.
    pub fn base(&self) -> Option<BlockHash> {
        match self {
            Form::Delta { base, .. } | Form::Patched { base } | Form::Rebuilt { recipe: base, .. } => Some(*base),
            Form::Framed { dict, .. } => *dict,
            _ => None,
        }
    }

    /// The delta chain length: 0 for every form but [`Form::Delta`].
    pub fn depth(&self) -> u8 {
        match self {
            Form::Delta { depth, .. } => *depth,
            _ => 0,
        }
    }
}

/// Where a block lives. Encoded as `pack u32 | offset u64 | stored_len u32 | raw_len u32 | kind u8`
/// (21 bytes, format 1's whole layout), then per kind: frame `frame_len u32 | start u32 | dict u32`
/// (`0`: no dictionary; `1`: the dictionary block's BLAKE3 `[32]` follows),
/// delta `depth u8 | base [32]`, patched `base [32]`, rebuilt `recipe [32] | start u64` (with pack, offset
/// and stored_len 0: it has no record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLoc {
    /// Pack id.
    pub pack: u32,
    /// Offset of the block's record (its header) in the pack; for a framed block, the frame's record.
    pub offset: u64,
    /// Payload bytes of that record.
    pub stored_len: u32,
    /// Block bytes.
    pub raw_len: u32,
    /// How the block is kept in the record.
    pub form: Form,
}

impl BlockLoc {
    /// Length of the part every form shares.
    pub const COMMON_LEN: usize = 4 + 8 + 4 + 4 + 1;

    /// The record's `raw_len` header field: the frame's length for a framed block, else the block's.
    pub fn record_raw_len(&self) -> u32 {
        match self.form {
            Form::Framed { frame_len, .. } => frame_len,
            _ => self.raw_len,
        }
    }

    /// Encode as stored in [`BLOCKS`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::COMMON_LEN + 33);
        out.extend_from_slice(&self.pack.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.push(self.form.kind() as u8);
        match self.form {
            Form::Raw | Form::Zstd => {}
            Form::Framed { frame_len, start, dict } => {
                out.extend_from_slice(&frame_len.to_le_bytes());
                out.extend_from_slice(&start.to_le_bytes());
                match dict {
                    None => out.extend_from_slice(&0u32.to_le_bytes()),
                    Some(d) => {
                        out.extend_from_slice(&1u32.to_le_bytes());
                        out.extend_from_slice(&d.0);
                    }
                }
            }
            Form::Delta { base, depth } => {
                out.push(depth);
                out.extend_from_slice(&base.0);
            }
            Form::Patched { base } => out.extend_from_slice(&base.0),
            Form::Rebuilt { recipe, start } => {
                out.extend_from_slice(&recipe.0);
                out.extend_from_slice(&start.to_le_bytes());
            }
        }
        out
    }

    /// Decode a [`BLOCKS`] value.
    pub fn decode(b: &[u8]) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::CorruptIndex { table: "blocks-0", reason };
        if b.len() < Self::COMMON_LEN {
            return Err(bad(format!("location is {} bytes, expected at least {}", b.len(), Self::COMMON_LEN)));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let rest = &b[Self::COMMON_LEN..];
        let want = |n: usize, what: &str| {
            if rest.len() == n {
                Ok(())
            } else {
                Err(bad(format!("{what} location has {} bytes after the common part, expected {n}", rest.len())))
            }
        };
        let form = match RecordKind::from_u8(b[20]) {
            Some(RecordKind::Raw) => want(0, "raw").map(|_| Form::Raw)?,
            Some(RecordKind::Zstd) => want(0, "zstd").map(|_| Form::Zstd)?,
            Some(RecordKind::Frame) => {
                if rest.len() < 12 {
                    want(12, "framed")?;
                }
                let r = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
                let dict = match r(8) {
                    0 => want(12, "framed").map(|_| None)?,
                    1 => {
                        want(44, "framed (with a dictionary)")?;
                        let mut h = [0u8; 32];
                        h.copy_from_slice(&rest[12..]);
                        Some(BlockHash(h))
                    }
                    n => return Err(bad(format!("framed location with dictionary marker {n}, expected 0 or 1"))),
                };
                Form::Framed { frame_len: r(0), start: r(4), dict }
            }
            Some(RecordKind::Delta) => {
                want(33, "delta")?;
                let mut h = [0u8; 32];
                h.copy_from_slice(&rest[1..]);
                if rest[0] == 0 {
                    return Err(bad("delta of depth 0".into()));
                }
                Form::Delta { base: BlockHash(h), depth: rest[0] }
            }
            Some(RecordKind::Patched) => {
                want(32, "patched")?;
                let mut h = [0u8; 32];
                h.copy_from_slice(rest);
                Form::Patched { base: BlockHash(h) }
            }
            Some(RecordKind::Rebuilt) => {
                want(40, "rebuilt")?;
                let mut h = [0u8; 32];
                h.copy_from_slice(&rest[..32]);
                let mut st = [0u8; 8];
                st.copy_from_slice(&rest[32..]);
                Form::Rebuilt { recipe: BlockHash(h), start: u64::from_le_bytes(st) }
            }
            None => return Err(bad(format!("unknown block form {}", b[20]))),
        };
        let mut off = [0u8; 8];
        off.copy_from_slice(&b[4..12]);
        let loc = BlockLoc {
            pack: u32_at(0),
            offset: u64::from_le_bytes(off),
            stored_len: u32_at(12),
            raw_len: u32_at(16),
            form,
        };
        if matches!(form, Form::Rebuilt { .. }) && (loc.pack, loc.offset, loc.stored_len) != (0, 0, 0) {
            return Err(bad("a rebuilt block has no record, but its location names one".into()));
        }
        if let Form::Framed { frame_len, start, .. } = form {
            if u64::from(start) + u64::from(loc.raw_len) > u64::from(frame_len) {
                return Err(bad(format!("block {start}+{} lies outside its {frame_len}-byte frame", loc.raw_len)));
            }
        }
        Ok(loc)
    }
}

/// A stored NAR: `nar_size u64 | root CID bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NarEntry {
    /// DAG root.
    pub root: Cid,
    /// NAR bytes.
    pub nar_size: u64,
}

impl NarEntry {
    /// Encode as stored in [`NARS`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.nar_size.to_le_bytes().to_vec();
        out.extend_from_slice(&self.root.to_bytes());
        out
    }

    /// Decode a [`NARS`] value.
    pub fn decode(b: &[u8]) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::CorruptIndex { table: "nars-0", reason };
        if b.len() < 9 {
            return Err(bad(format!("entry is {} bytes", b.len())));
        }
        let mut size = [0u8; 8];
        size.copy_from_slice(&b[..8]);
        let root = cid_from_bytes(&b[8..]).map_err(|e| bad(e.to_string()))?;
        Ok(NarEntry { root, nar_size: u64::from_le_bytes(size) })
    }
}

/// A stored flat file (a source tarball), kept byte-exact under its hashes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileEntry {
    /// DAG root, in text form.
    pub root: String,
    /// File bytes.
    pub size: u64,
    /// File name (the last path component it was added or fetched as).
    pub name: String,
    /// URLs it is known to be fetchable from.
    #[serde(default)]
    pub urls: Vec<String>,
}

impl FileEntry {
    /// Encode as stored in [`FILES`].
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("FileEntry serializes")
    }

    /// Decode a [`FILES`] value.
    pub fn decode(b: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(b).map_err(|e| StoreError::CorruptIndex { table: "files-0", reason: e.to_string() })
    }

    /// The root CID.
    pub fn root_cid(&self) -> Result<Cid, StoreError> {
        crate::dag::cid::parse_cid(&self.root)
            .map_err(|e| StoreError::CorruptIndex { table: "files-0", reason: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden bytes: pack 1, offset 16, stored 5, raw 7, zstd (format 1's layout, unchanged).
    #[test]
    fn block_loc_golden_bytes() {
        let loc = BlockLoc { pack: 1, offset: 16, stored_len: 5, raw_len: 7, form: Form::Zstd };
        assert_eq!(
            data_encoding::HEXLOWER.encode(&loc.encode()),
            concat!("01000000", "1000000000000000", "05000000", "07000000", "01")
        );
        assert_eq!(BlockLoc::decode(&loc.encode()).unwrap(), loc);
    }

    #[test]
    fn framed_and_delta_locations_round_trip() {
        let framed = BlockLoc {
            pack: 2,
            offset: 99,
            stored_len: 50,
            raw_len: 7,
            form: Form::Framed { frame_len: 20, start: 13, dict: None },
        };
        assert_eq!(
            data_encoding::HEXLOWER.encode(&framed.encode()),
            concat!("02000000", "6300000000000000", "32000000", "07000000", "02", "14000000", "0d000000", "00000000")
        );
        assert_eq!(BlockLoc::decode(&framed.encode()).unwrap(), framed);
        let with_dict =
            BlockLoc { form: Form::Framed { frame_len: 20, start: 13, dict: Some(BlockHash([5; 32])) }, ..framed };
        let b = with_dict.encode();
        assert_eq!(b.len(), BlockLoc::COMMON_LEN + 12 + 32);
        assert_eq!(&b[29..33], &[1, 0, 0, 0]);
        assert_eq!(BlockLoc::decode(&b).unwrap(), with_dict);
        // A marker other than 0 or 1, a marker 1 without its hash, a hash after marker 0.
        let mut bad = b.clone();
        bad[29] = 2;
        assert!(BlockLoc::decode(&bad).is_err());
        assert!(BlockLoc::decode(&b[..b.len() - 1]).is_err());
        let mut bad = b.clone();
        bad[29] = 0;
        assert!(BlockLoc::decode(&bad).is_err());
        let delta = BlockLoc {
            pack: 2,
            offset: 99,
            stored_len: 50,
            raw_len: 7,
            form: Form::Delta { base: BlockHash([9; 32]), depth: 2 },
        };
        assert_eq!(delta.encode().len(), 54);
        assert_eq!(BlockLoc::decode(&delta.encode()).unwrap(), delta);
    }

    #[test]
    fn reject_malformed_locations() {
        let mut b = BlockLoc { pack: 1, offset: 16, stored_len: 5, raw_len: 7, form: Form::Raw }.encode();
        b[20] = 9;
        assert!(BlockLoc::decode(&b).is_err());
        b[20] = 4;
        assert!(BlockLoc::decode(&b).is_err(), "kind 4 (dictionaries) is not defined");
        // A block reaching past its frame, a delta of depth 0, and truncated tails.
        let outside = BlockLoc {
            pack: 1,
            offset: 16,
            stored_len: 5,
            raw_len: 8,
            form: Form::Framed { frame_len: 20, start: 13, dict: None },
        };
        assert!(BlockLoc::decode(&outside.encode()).is_err());
        let mut d = BlockLoc {
            pack: 1,
            offset: 16,
            stored_len: 5,
            raw_len: 7,
            form: Form::Delta { base: BlockHash([1; 32]), depth: 1 },
        }
        .encode();
        d[21] = 0;
        assert!(BlockLoc::decode(&d).is_err());
        assert!(BlockLoc::decode(&d[..40]).is_err());
        assert!(BlockLoc::decode(&d[..10]).is_err());
    }
}
