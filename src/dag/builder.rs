//! Streaming balanced-layout builder.
//!
//! kubo's and `ipfs-unixfs-importer`'s balanced layout batches the leaves 174 at a time into parent
//! nodes, then batches those parents the same way, until one node is left; a file of one chunk is just
//! its raw leaf. The builder below produces exactly that tree while the leaves stream in: each level
//! keeps only its unfinished batch, so memory is `depth × 174` links whatever the file size.

use std::io;

use super::cid::{BlockHash, Cid, DAG_PB_CODEC, RAW_CODEC};
use super::unixfs::encode_file_node;
use super::BlockSink;

/// kubo's default maximum number of links per node.
pub const MAX_LINKS: usize = 174;

/// (CID, file bytes under it, cumulative Tsize)
type Entry = (Cid, u64, u64);

#[derive(Default)]
struct Level {
    pending: Vec<Entry>,
    total: u64,
}

/// Builds the DAG of one byte stream from its chunks, writing every block to the sink as it is made.
pub struct DagBuilder<S> {
    sink: S,
    levels: Vec<Level>,
    width: usize,
    size: u64,
}

/// What a finished build produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltDag {
    /// Root CID: a raw leaf for single-chunk streams, else a dag-pb file node.
    pub root: Cid,
    /// Bytes in the stream.
    pub size: u64,
    /// Number of leaves.
    pub leaves: u64,
}

impl<S: BlockSink> DagBuilder<S> {
    /// A builder with kubo's 174-link nodes.
    pub fn new(sink: S) -> Self {
        Self::with_width(sink, MAX_LINKS)
    }

    /// A builder with at most `width` (≥ 2) links per node.
    pub fn with_width(sink: S, width: usize) -> Self {
        DagBuilder { sink, levels: vec![Level::default()], width: width.max(2), size: 0 }
    }

    /// The sink, for blocks the caller stores itself before pushing their leaf.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Add the next chunk of the stream.
    pub fn push_leaf(&mut self, chunk: &[u8]) -> io::Result<()> {
        let hash = BlockHash::of(chunk);
        self.sink.put_block(hash, RAW_CODEC, chunk)?;
        self.size += chunk.len() as u64;
        let len = chunk.len() as u64;
        self.push(0, (hash.cid(RAW_CODEC), len, len))
    }

    fn push(&mut self, level: usize, entry: Entry) -> io::Result<()> {
        if self.levels.len() == level {
            self.levels.push(Level::default());
        }
        let l = &mut self.levels[level];
        l.pending.push(entry);
        l.total += 1;
        if l.pending.len() == self.width {
            self.close_batch(level)?;
        }
        Ok(())
    }

    fn close_batch(&mut self, level: usize) -> io::Result<()> {
        let children = std::mem::take(&mut self.levels[level].pending);
        let bytes = encode_file_node(&children);
        let hash = BlockHash::of(&bytes);
        self.sink.put_block(hash, DAG_PB_CODEC, &bytes)?;
        let filesize = children.iter().map(|c| c.1).sum();
        let tsize = bytes.len() as u64 + children.iter().map(|c| c.2).sum::<u64>();
        self.push(level + 1, (hash.cid(DAG_PB_CODEC), filesize, tsize))
    }

    /// Close every unfinished batch and return the root. An empty stream is one empty raw leaf.
    pub fn finish(mut self) -> io::Result<(BuiltDag, S)> {
        let leaves = self.levels[0].total;
        if leaves == 0 {
            self.push_leaf(&[])?;
        }
        let mut level = 0;
        loop {
            let l = &self.levels[level];
            if l.total == 1 && self.levels.len() == level + 1 {
                let root = l.pending[0].0;
                let built = BuiltDag { root, size: self.size, leaves: leaves.max(1) };
                return Ok((built, self.sink));
            }
            if !l.pending.is_empty() {
                self.close_batch(level)?;
            }
            level += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::unixfs::decode_file_node;
    use crate::dag::MemBlocks;

    fn build(chunks: &[Vec<u8>], width: usize) -> (BuiltDag, MemBlocks) {
        let mut b = DagBuilder::with_width(MemBlocks::default(), width);
        for c in chunks {
            b.push_leaf(c).unwrap();
        }
        b.finish().unwrap()
    }

    /// Link counts per level, top-down, as the JS importer's `batch(…, width)` recursion makes them.
    fn shape(root: &Cid, blocks: &MemBlocks) -> Vec<Vec<usize>> {
        let mut levels = vec![];
        let mut frontier = vec![*root];
        while frontier.iter().any(|c| c.codec() == DAG_PB_CODEC) {
            let mut next = vec![];
            let mut counts = vec![];
            for cid in &frontier {
                let h = crate::dag::cid::block_hash(cid).unwrap();
                let node = decode_file_node(h, &blocks.get(&h).unwrap()).unwrap();
                counts.push(node.links.len());
                next.extend(node.links);
            }
            levels.push(counts);
            frontier = next;
        }
        levels
    }

    #[test]
    fn single_chunk_is_its_raw_leaf() {
        let (dag, _) = build(&[b"hello".to_vec()], 174);
        assert_eq!(dag.root, BlockHash::of(b"hello").cid(RAW_CODEC));
    }

    #[test]
    fn empty_stream_is_empty_raw_leaf() {
        let (dag, _) = build(&[], 174);
        assert_eq!(dag.root, BlockHash::of(b"").cid(RAW_CODEC));
        assert_eq!(dag.size, 0);
    }

    #[test]
    fn balanced_shapes_match_batching() {
        let chunks: Vec<Vec<u8>> = (0..10u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let cases: &[(usize, Vec<Vec<usize>>)] = &[
            (2, vec![vec![2]]),
            (3, vec![vec![3]]),
            (4, vec![vec![2], vec![3, 1]]),
            (9, vec![vec![3], vec![3, 3, 3]]),
            (10, vec![vec![2], vec![3, 1], vec![3, 3, 3, 1]]),
        ];
        for (n, want) in cases {
            let (dag, blocks) = build(&chunks[..*n], 3);
            assert_eq!(&shape(&dag.root, &blocks), want, "{n} leaves");
        }
    }

    #[test]
    fn node_tsize_is_cumulative() {
        let chunks = vec![b"aaaa".to_vec(), b"bb".to_vec(), b"c".to_vec()];
        let (dag, blocks) = build(&chunks, 2);
        let h = crate::dag::cid::block_hash(&dag.root).unwrap();
        let root = blocks.get(&h).unwrap();
        let node = ipld_dagpb::PbNode::from_bytes(root.clone().into()).unwrap();
        let first_child = crate::dag::cid::block_hash(&node.links[0].cid).unwrap();
        let first_len = blocks.get(&first_child).unwrap().len() as u64;
        assert_eq!(node.links[0].size, Some(first_len + 6));
        assert_eq!(dag.size, 7);
    }
}
