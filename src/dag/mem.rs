//! An in-memory block map: the test double for the pack store and the reference for its behaviour.

use std::collections::HashMap;
use std::io;

use super::cid::BlockHash;
use super::{BlockSink, BlockSource};

/// Blocks in a `HashMap`. Every write is kept; reads re-check the hash like the real store does.
#[derive(Debug, Default, Clone)]
pub struct MemBlocks {
    blocks: HashMap<BlockHash, Vec<u8>>,
}

impl MemBlocks {
    /// The block's bytes, if present.
    pub fn get(&self, hash: &BlockHash) -> Option<Vec<u8>> {
        self.blocks.get(hash).cloned()
    }
    /// Number of distinct blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }
    /// Whether no block is held.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
    /// Drop a block (tests use it to make a DAG incomplete).
    pub fn remove(&mut self, hash: &BlockHash) -> Option<Vec<u8>> {
        self.blocks.remove(hash)
    }
    /// Replace a block's bytes without changing its name (tests use it to corrupt a DAG).
    pub fn tamper(&mut self, hash: BlockHash, bytes: Vec<u8>) {
        self.blocks.insert(hash, bytes);
    }
}

impl BlockSink for MemBlocks {
    fn put_block(&mut self, hash: BlockHash, _codec: u64, bytes: &[u8]) -> io::Result<()> {
        self.blocks.entry(hash).or_insert_with(|| bytes.to_vec());
        Ok(())
    }
}

impl BlockSource for MemBlocks {
    fn get_block(&self, hash: &BlockHash) -> io::Result<Option<Vec<u8>>> {
        match self.blocks.get(hash) {
            None => Ok(None),
            Some(b) if BlockHash::of(b) == *hash => Ok(Some(b.clone())),
            Some(b) => {
                Err(io::Error::other(format!("block {hash} is corrupt: its bytes hash to {}", BlockHash::of(b))))
            }
        }
    }
    fn block_len(&self, hash: &BlockHash) -> io::Result<Option<u64>> {
        Ok(self.blocks.get(hash).map(|b| b.len() as u64))
    }
}
