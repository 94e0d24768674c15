//! The Merkle DAG: CIDs, UnixFS file nodes, the balanced builder, ranged reads and CAR export.
//!
//! Every stored byte stream is a UnixFS file (DESIGN §2): raw leaves are its chunks, dag-pb interior nodes
//! list children with their byte counts. Nothing here knows how blocks are kept: builders write through
//! [`BlockSink`], readers read through [`BlockSource`], and [`MemBlocks`] is the executable specification
//! both traits are tested against.

pub mod builder;
pub mod car;
pub mod catalogue;
pub mod cid;
pub mod mem;
pub mod reader;
pub mod unixfs;

use std::io;

pub use self::builder::DagBuilder;
pub use self::cid::{BlockHash, Cid};
#[cfg_attr(not(feature = "internals"), allow(unused_imports))] // for fuzz targets and benches
pub use self::mem::MemBlocks;
pub use self::reader::{walk, DagReadError, DagReader, WalkMode};

/// Append `v` as an unsigned LEB128 varint (protobuf, multiformats and CAR all use it).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Somewhere blocks can be written. Errors are `io::Error` because blocks are produced from inside
/// `io::Write`-shaped pipelines (the NAR encoder, the chunker); stores wrap their typed errors with
/// `io::Error::other` and unwrap them again at the top.
pub trait BlockSink {
    /// Store `bytes` under `hash` (already computed by the caller). `codec` says how it will be read.
    fn put_block(&mut self, hash: BlockHash, codec: u64, bytes: &[u8]) -> io::Result<()>;
}

/// Somewhere blocks can be read from.
pub trait BlockSource {
    /// The block's bytes, verified to hash to `hash`, or `None` when absent.
    fn get_block(&self, hash: &BlockHash) -> io::Result<Option<Vec<u8>>>;
    /// The same as shared bytes: a source that holds the block inside a larger buffer (a decompressed
    /// frame) hands out a slice of it instead of a copy, which is what readers of whole NARs use.
    fn get_block_bytes(&self, hash: &BlockHash) -> io::Result<Option<bytes::Bytes>> {
        Ok(self.get_block(hash)?.map(bytes::Bytes::from))
    }
    /// The block's length without reading it, or `None` when absent.
    fn block_len(&self, hash: &BlockHash) -> io::Result<Option<u64>>;
}

impl<T: BlockSink + ?Sized> BlockSink for &mut T {
    fn put_block(&mut self, hash: BlockHash, codec: u64, bytes: &[u8]) -> io::Result<()> {
        (**self).put_block(hash, codec, bytes)
    }
}

/// A shared store reads like the store: lets a reader own its source (`DagReader<Arc<Store>>` is
/// `'static`, so a response body can carry it).
impl<T: BlockSource + ?Sized> BlockSource for std::sync::Arc<T> {
    fn get_block(&self, hash: &BlockHash) -> io::Result<Option<Vec<u8>>> {
        (**self).get_block(hash)
    }
    fn get_block_bytes(&self, hash: &BlockHash) -> io::Result<Option<bytes::Bytes>> {
        (**self).get_block_bytes(hash)
    }
    fn block_len(&self, hash: &BlockHash) -> io::Result<Option<u64>> {
        (**self).block_len(hash)
    }
}

impl<T: BlockSource + ?Sized> BlockSource for &T {
    fn get_block(&self, hash: &BlockHash) -> io::Result<Option<Vec<u8>>> {
        (**self).get_block(hash)
    }
    fn get_block_bytes(&self, hash: &BlockHash) -> io::Result<Option<bytes::Bytes>> {
        (**self).get_block_bytes(hash)
    }
    fn block_len(&self, hash: &BlockHash) -> io::Result<Option<u64>> {
        (**self).block_len(hash)
    }
}
