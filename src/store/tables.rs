//! The index tables and the byte layout of their values. All integers little-endian.
//!
//! Table names carry a version suffix (`-0`) so a future layout can live beside the old one during a
//! migration (iroh-blobs does the same).

use redb::TableDefinition;

use super::error::StoreError;
use crate::dag::cid::{cid_from_bytes, Cid};

/// BLAKE3 (32 bytes) → [`BlockLoc`] (21 bytes).
pub const BLOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blocks-0");
/// Pack id → committed length: bytes past it are an interrupted write, cut off when the store opens.
pub const PACKS: TableDefinition<u32, u64> = TableDefinition::new("packs-0");
/// NarHash (32 bytes) → [`NarEntry`].
pub const NARS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("nars-0");
/// Store-path hash part (32 nix32 chars) → narinfo text without URL/Compression/FileHash/FileSize.
pub const PATHS: TableDefinition<&str, &str> = TableDefinition::new("paths-0");
/// Flat SHA-256 of a file (32 bytes) → [`FileEntry`] as JSON.
pub const FILES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("files-0");
/// `algo:digest` of a file's other hashes (sha512, sha1, md5) → its SHA-256 (32 bytes).
pub const FILE_ALIASES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("file-aliases-0");
/// Store-wide settings: `format` → u32 format version.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta-0");

/// The format version this build writes and reads (docs/FORMAT.md, "Version history").
pub const FORMAT_VERSION: u32 = 1;

/// How a block's bytes are kept in its pack record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is (zstd did not shrink it).
    None = 0,
    /// One zstd frame.
    Zstd = 1,
}

/// Where a block lives: `pack u32 | offset u64 | stored_len u32 | raw_len u32 | compression u8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLoc {
    /// Pack id.
    pub pack: u32,
    /// Offset of the block's record (its header) in the pack.
    pub offset: u64,
    /// Payload bytes in the pack.
    pub stored_len: u32,
    /// Block bytes after decompression.
    pub raw_len: u32,
    /// How the payload is encoded.
    pub compression: Compression,
}

impl BlockLoc {
    /// Encoded size.
    pub const LEN: usize = 4 + 8 + 4 + 4 + 1;

    /// Encode as stored in [`BLOCKS`].
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0..4].copy_from_slice(&self.pack.to_le_bytes());
        out[4..12].copy_from_slice(&self.offset.to_le_bytes());
        out[12..16].copy_from_slice(&self.stored_len.to_le_bytes());
        out[16..20].copy_from_slice(&self.raw_len.to_le_bytes());
        out[20] = self.compression as u8;
        out
    }

    /// Decode a [`BLOCKS`] value.
    pub fn decode(b: &[u8]) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::CorruptIndex { table: "blocks-0", reason };
        if b.len() != Self::LEN {
            return Err(bad(format!("location is {} bytes, expected {}", b.len(), Self::LEN)));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let compression = match b[20] {
            0 => Compression::None,
            1 => Compression::Zstd,
            c => return Err(bad(format!("unknown compression {c}"))),
        };
        let mut off = [0u8; 8];
        off.copy_from_slice(&b[4..12]);
        Ok(BlockLoc {
            pack: u32_at(0),
            offset: u64::from_le_bytes(off),
            stored_len: u32_at(12),
            raw_len: u32_at(16),
            compression,
        })
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

    /// Golden bytes: pack 1, offset 16, stored 5, raw 7, zstd.
    #[test]
    fn block_loc_golden_bytes() {
        let loc = BlockLoc { pack: 1, offset: 16, stored_len: 5, raw_len: 7, compression: Compression::Zstd };
        assert_eq!(
            data_encoding::HEXLOWER.encode(&loc.encode()),
            concat!("01000000", "1000000000000000", "05000000", "07000000", "01")
        );
        assert_eq!(BlockLoc::decode(&loc.encode()).unwrap(), loc);
    }

    #[test]
    fn reject_unknown_compression() {
        let mut b =
            BlockLoc { pack: 1, offset: 16, stored_len: 5, raw_len: 7, compression: Compression::None }.encode();
        b[20] = 9;
        assert!(BlockLoc::decode(&b).is_err());
    }
}
