//! Reading a file DAG: byte ranges that touch only the leaves they need, and whole-DAG walks.

use std::io::{self, Read};

use bytes::Bytes;

use super::cid::{block_hash, BlockHash, Cid, CidError, DAG_PB_CODEC, RAW_CODEC};
use super::unixfs::{decode_file_node, NodeError};
use super::BlockSource;

/// Deeper than any balanced DAG can be (174^12 leaves): a deeper one is hostile.
pub(super) const MAX_DEPTH: usize = 12;

/// Why a DAG could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DagReadError {
    /// A block the DAG needs is not in the store.
    #[error("missing block {cid} (under root {root})")]
    MissingBlock {
        /// The missing block.
        cid: Cid,
        /// The root being read.
        root: Cid,
    },
    /// A node is malformed.
    #[error("under root {root}: {source}")]
    Node {
        /// The root being read.
        root: Cid,
        /// What is wrong with the node.
        source: NodeError,
    },
    /// A CID in the DAG cannot be followed.
    #[error("under root {root}: {source}")]
    Cid {
        /// The root being read.
        root: Cid,
        /// Why.
        source: CidError,
    },
    /// A child's size differs from what its parent declares.
    #[error("block {cid} holds {got} file bytes but its parent says {expected} (under root {root})")]
    SizeMismatch {
        /// The child.
        cid: Cid,
        /// Declared by the parent.
        expected: u64,
        /// Found.
        got: u64,
        /// The root being read.
        root: Cid,
    },
    /// One block is linked with two different codecs.
    #[error("block {cid} is linked as codec 0x{:x} here but as 0x{seen_as:x} elsewhere (under root {root})", cid.codec())]
    CodecMismatch {
        /// The link.
        cid: Cid,
        /// The codec it was first reached with.
        seen_as: u64,
        /// The root being read.
        root: Cid,
    },
    /// The DAG is deeper than a balanced DAG can be.
    #[error("DAG under root {root} is deeper than {MAX_DEPTH} levels")]
    TooDeep {
        /// The root being read.
        root: Cid,
    },
    /// The requested range does not intersect the file.
    #[error("range {start}-{end} is outside the {size}-byte file")]
    RangeNotSatisfiable {
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// File size.
        size: u64,
    },
    /// Reading a block failed.
    #[error("reading block {cid}: {source}")]
    Io {
        /// The block.
        cid: Cid,
        /// The underlying error.
        source: io::Error,
    },
}

pub(super) fn load(source: &impl BlockSource, cid: &Cid, root: &Cid) -> Result<Bytes, DagReadError> {
    let hash = block_hash(cid).map_err(|source| DagReadError::Cid { root: *root, source })?;
    match source.get_block_bytes(&hash) {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(DagReadError::MissingBlock { cid: *cid, root: *root }),
        Err(source) => Err(DagReadError::Io { cid: *cid, source }),
    }
}

/// Size of the file under `root`, reading at most the root block.
pub fn file_size(source: &impl BlockSource, root: &Cid) -> Result<u64, DagReadError> {
    let hash = block_hash(root).map_err(|source| DagReadError::Cid { root: *root, source })?;
    if root.codec() == RAW_CODEC {
        return match source.block_len(&hash) {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Err(DagReadError::MissingBlock { cid: *root, root: *root }),
            Err(source) => Err(DagReadError::Io { cid: *root, source }),
        };
    }
    let bytes = load(source, root, root)?;
    let node = decode_file_node(hash, &bytes).map_err(|source| DagReadError::Node { root: *root, source })?;
    Ok(node.filesize)
}

struct Frame {
    links: Vec<Cid>,
    sizes: Vec<u64>,
    next: usize,
    /// File offset where child `next` starts.
    offset: u64,
}

/// Reads bytes `[start, end)` of the file under a root, fetching only the leaves that overlap the range.
/// Memory is one leaf plus one node per level.
pub struct DagReader<S> {
    source: S,
    root: Cid,
    stack: Vec<Frame>,
    pos: u64,
    end: u64,
    leaf: Bytes,
    /// File offset of `leaf[0]`.
    leaf_start: u64,
}

impl<S: BlockSource> DagReader<S> {
    /// The whole file.
    pub fn new(source: S, root: Cid) -> Result<Self, DagReadError> {
        Self::range(source, root, 0, None)
    }

    /// Bytes `[start, end)`; `end = None` reads to the end. A range starting at or past the end of a
    /// non-empty file is [`DagReadError::RangeNotSatisfiable`]; `end` is clamped to the file size.
    pub fn range(source: S, root: Cid, start: u64, end: Option<u64>) -> Result<Self, DagReadError> {
        let mut r =
            DagReader { source, root, stack: Vec::new(), pos: start, end: u64::MAX, leaf: Bytes::new(), leaf_start: 0 };
        // The root is read once: it gives the size and is the first step of the descent.
        r.enter(root, 0, None)?;
        let size = match r.stack.first() {
            Some(top) => top.offset + top.sizes.iter().sum::<u64>(),
            None => r.leaf.len() as u64,
        };
        let end = end.unwrap_or(size).min(size);
        if start > end || (start == size && size > 0) {
            return Err(DagReadError::RangeNotSatisfiable { start, end, size });
        }
        r.end = end;
        Ok(r)
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    /// Load the next leaf overlapping `[pos, end)` into `self.leaf`; false when none is left.
    fn next_leaf(&mut self) -> Result<bool, DagReadError> {
        while let Some(top) = self.stack.last_mut() {
            if top.next == top.links.len() {
                self.stack.pop();
                continue;
            }
            let (cid, size, start) = (top.links[top.next], top.sizes[top.next], top.offset);
            top.next += 1;
            top.offset += size;
            if start + size <= self.pos {
                continue;
            }
            if start >= self.end {
                self.stack.clear();
                return Ok(false);
            }
            if self.enter(cid, start, Some(size))? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Load `cid` starting at file offset `start`: a raw leaf becomes the current leaf (true); a node is
    /// pushed (false), with any inline data as the current leaf (true).
    fn enter(&mut self, cid: Cid, start: u64, expected: Option<u64>) -> Result<bool, DagReadError> {
        let root = self.root;
        let bytes = load(&self.source, &cid, &root)?;
        let check = |got: u64| match expected {
            Some(e) if e != got => Err(DagReadError::SizeMismatch { cid, expected: e, got, root }),
            _ => Ok(()),
        };
        if cid.codec() == RAW_CODEC {
            check(bytes.len() as u64)?;
            self.leaf = bytes;
            self.leaf_start = start;
            return Ok(true);
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(DagReadError::TooDeep { root });
        }
        let hash = BlockHash::of(&bytes);
        let node = decode_file_node(hash, &bytes).map_err(|source| DagReadError::Node { root, source })?;
        check(node.filesize)?;
        let inline_len = node.inline.len() as u64;
        self.stack.push(Frame { links: node.links, sizes: node.blocksizes, next: 0, offset: start + inline_len });
        if inline_len > 0 && start + inline_len > self.pos {
            self.leaf = node.inline;
            self.leaf_start = start;
            return Ok(true);
        }
        Ok(false)
    }
}

impl<S: BlockSource> DagReader<S> {
    /// The next piece of the range, at most `max` bytes: a slice of a leaf, shared rather than copied,
    /// so a server can hand it to the socket as is. `None` at the end of the range.
    pub fn next_bytes(&mut self, max: usize) -> Result<Option<Bytes>, DagReadError> {
        loop {
            if self.pos >= self.end || max == 0 {
                return Ok(None);
            }
            let leaf_end = self.leaf_start + self.leaf.len() as u64;
            if self.pos >= self.leaf_start && self.pos < leaf_end {
                let from = (self.pos - self.leaf_start) as usize;
                let upto = (leaf_end.min(self.end) - self.leaf_start) as usize;
                let n = (upto - from).min(max);
                self.pos += n as u64;
                return Ok(Some(self.leaf.slice(from..from + n)));
            }
            if !self.next_leaf()? {
                return Err(DagReadError::Io {
                    cid: self.root,
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("DAG ended at byte {} before {}", self.pos, self.end),
                    ),
                });
            }
        }
    }
}

impl<S: BlockSource> Read for DagReader<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.next_bytes(buf.len()).map_err(io::Error::other)? {
            Some(b) => {
                buf[..b.len()].copy_from_slice(&b);
                Ok(b.len())
            }
            None => Ok(0),
        }
    }
}

/// Called by [`walk`] for each block: its CID and, when loaded, its bytes.
pub type Visit<'a> = dyn FnMut(&Cid, Option<&[u8]>) -> io::Result<()> + 'a;

/// Every raw leaf under `root` in file order, with the file offset it starts at and its length (a leaf
/// linked twice is visited twice). What a repack re-indexes as slices of a recipe's output. A node
/// holding file bytes itself (nixdag never makes one) is reported as [`DagReadError::Node`].
pub fn leaves(
    source: &impl BlockSource,
    root: &Cid,
    visit: &mut dyn FnMut(BlockHash, u64, u64),
) -> Result<(), DagReadError> {
    let mut stack = vec![(*root, 0u64, None::<u64>, 0usize)];
    while let Some((cid, offset, expected, depth)) = stack.pop() {
        let hash = block_hash(&cid).map_err(|source| DagReadError::Cid { root: *root, source })?;
        let size_check = |got: u64| match expected {
            Some(e) if e != got => Err(DagReadError::SizeMismatch { cid, expected: e, got, root: *root }),
            _ => Ok(()),
        };
        if cid.codec() == RAW_CODEC {
            let len = source
                .block_len(&hash)
                .map_err(|source| DagReadError::Io { cid, source })?
                .ok_or(DagReadError::MissingBlock { cid, root: *root })?;
            size_check(len)?;
            visit(hash, offset, len);
            continue;
        }
        if depth >= MAX_DEPTH {
            return Err(DagReadError::TooDeep { root: *root });
        }
        let bytes = load(source, &cid, root)?;
        let node = decode_file_node(hash, &bytes).map_err(|source| DagReadError::Node { root: *root, source })?;
        size_check(node.filesize)?;
        if !node.inline.is_empty() {
            let reason = "holds file bytes itself, so its bytes are no leaf's".into();
            return Err(DagReadError::Node { root: *root, source: NodeError::UnixFs { block: hash, reason } });
        }
        let mut at = offset;
        let mut children = Vec::with_capacity(node.links.len());
        for (link, size) in node.links.iter().zip(&node.blocksizes) {
            children.push((*link, at, Some(*size), depth + 1));
            at += size;
        }
        stack.extend(children.into_iter().rev());
    }
    Ok(())
}

/// Blocks a walk has visited: codec and file bytes under each, so a later link to one is checked, not
/// re-read.
pub type Seen = std::collections::HashMap<BlockHash, (u64, u64)>;

/// What [`walk`] loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkMode {
    /// Read every block, leaves included (CAR export).
    Everything,
    /// Read interior nodes; for leaves only check presence and length (GC marking, verify).
    NodesOnly,
}

/// Visit every block of the DAG under `root` once, depth-first pre-order, skipping sub-DAGs whose root
/// is already in `seen` (so a store-wide walk costs each shared block once). `visit` gets the CID and,
/// in [`WalkMode::Everything`] or for interior nodes, the bytes. `expected_size` checks the root's size.
pub fn walk(
    source: &impl BlockSource,
    root: &Cid,
    expected_size: Option<u64>,
    seen: &mut Seen,
    mode: WalkMode,
    visit: &mut Visit<'_>,
) -> Result<(), DagReadError> {
    let mut stack = vec![(*root, expected_size, 0usize)];
    while let Some((cid, expected, depth)) = stack.pop() {
        let hash = block_hash(&cid).map_err(|source| DagReadError::Cid { root: *root, source })?;
        let size_check = |got: u64| match expected {
            Some(e) if e != got => Err(DagReadError::SizeMismatch { cid, expected: e, got, root: *root }),
            _ => Ok(()),
        };
        // A block seen before is not read again, but this link's claims about it must agree with what
        // was found then: a DAG that links one block as two different things is not one `DagReader`
        // could read, whatever `walk` (and so `verify`) says.
        if let Some(&(codec, size)) = seen.get(&hash) {
            if codec != cid.codec() {
                return Err(DagReadError::CodecMismatch { cid, seen_as: codec, root: *root });
            }
            size_check(size)?;
            continue;
        }
        let io_err = |source| DagReadError::Io { cid, source };
        match cid.codec() {
            RAW_CODEC if mode == WalkMode::NodesOnly => {
                let len =
                    source.block_len(&hash).map_err(io_err)?.ok_or(DagReadError::MissingBlock { cid, root: *root })?;
                size_check(len)?;
                seen.insert(hash, (RAW_CODEC, len));
                visit(&cid, None).map_err(io_err)?;
            }
            RAW_CODEC => {
                let bytes = load(source, &cid, root)?;
                size_check(bytes.len() as u64)?;
                seen.insert(hash, (RAW_CODEC, bytes.len() as u64));
                visit(&cid, Some(&bytes)).map_err(io_err)?;
            }
            DAG_PB_CODEC => {
                if depth >= MAX_DEPTH {
                    return Err(DagReadError::TooDeep { root: *root });
                }
                let bytes = load(source, &cid, root)?;
                let node =
                    decode_file_node(hash, &bytes).map_err(|source| DagReadError::Node { root: *root, source })?;
                size_check(node.filesize)?;
                seen.insert(hash, (DAG_PB_CODEC, node.filesize));
                visit(&cid, Some(&bytes)).map_err(io_err)?;
                for (child, size) in node.links.iter().zip(&node.blocksizes).rev() {
                    stack.push((*child, Some(*size), depth + 1));
                }
            }
            codec => {
                let source = CidError::UnsupportedCodec { cid: cid.to_string(), codec };
                return Err(DagReadError::Cid { root: *root, source });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::{DagBuilder, MemBlocks};

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn build(bytes: &[u8], chunk: usize, width: usize) -> (Cid, MemBlocks) {
        let mut b = DagBuilder::with_width(MemBlocks::default(), width);
        for c in bytes.chunks(chunk) {
            b.push_leaf(c).unwrap();
        }
        let (dag, blocks) = b.finish().unwrap();
        (dag.root, blocks)
    }

    /// Counts leaf reads, to show ranges touch only what they need.
    struct Counting<'a>(&'a MemBlocks, std::cell::Cell<usize>);
    impl BlockSource for Counting<'_> {
        fn get_block(&self, h: &BlockHash) -> io::Result<Option<Vec<u8>>> {
            self.1.set(self.1.get() + 1);
            self.0.get_block(h)
        }
        fn block_len(&self, h: &BlockHash) -> io::Result<Option<u64>> {
            self.0.block_len(h)
        }
    }

    #[test]
    fn every_range_reads_back_exactly() {
        let bytes = data(10_000);
        let (root, blocks) = build(&bytes, 100, 3);
        for (a, b) in [(0, 10_000), (0, 1), (9_999, 10_000), (150, 151), (99, 101), (1234, 8765), (5000, 5000)] {
            let mut out = Vec::new();
            DagReader::range(&blocks, root, a, Some(b)).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, &bytes[a as usize..b as usize], "{a}-{b}");
        }
    }

    #[test]
    fn small_range_touches_few_blocks() {
        let bytes = data(100_000);
        let (root, blocks) = build(&bytes, 100, 10);
        let counting = Counting(&blocks, Default::default());
        let mut out = Vec::new();
        DagReader::range(&counting, root, 50_050, Some(50_060)).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, &bytes[50_050..50_060]);
        // 1000 leaves under 10-link nodes: the root (read once, for the size and the descent), one node on
        // each of the two levels below it, and one leaf.
        assert!(counting.1.get() <= 4, "read {} blocks", counting.1.get());
    }

    #[test]
    fn reject_range_past_end() {
        let (root, blocks) = build(&data(1000), 100, 3);
        assert!(matches!(DagReader::range(&blocks, root, 1000, None), Err(DagReadError::RangeNotSatisfiable { .. })));
    }

    #[test]
    fn missing_leaf_is_reported_with_cid_and_root() {
        let bytes = data(1000);
        let (root, mut blocks) = build(&bytes, 100, 3);
        blocks.remove(&BlockHash::of(&bytes[500..600]));
        let mut out = Vec::new();
        let err = DagReader::new(&blocks, root).unwrap().read_to_end(&mut out).unwrap_err();
        assert!(err.to_string().contains("missing block"), "{err}");
        let mut seen = Seen::new();
        let err = walk(&blocks, &root, Some(1000), &mut seen, WalkMode::NodesOnly, &mut |_, _| Ok(())).unwrap_err();
        assert!(matches!(err, DagReadError::MissingBlock { .. }), "{err}");
    }

    #[test]
    fn walk_visits_each_block_once() {
        let bytes = vec![0u8; 1000]; // ten identical leaves
        let (root, blocks) = build(&bytes, 100, 3);
        let mut n = 0;
        let mut seen = Seen::new();
        walk(&blocks, &root, Some(1000), &mut seen, WalkMode::Everything, &mut |_, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, blocks.len());
    }

    #[test]
    fn tampered_leaf_is_detected() {
        let bytes = data(1000);
        let (root, mut blocks) = build(&bytes, 100, 3);
        blocks.tamper(BlockHash::of(&bytes[0..100]), vec![1; 100]);
        let mut out = Vec::new();
        assert!(DagReader::new(&blocks, root).unwrap().read_to_end(&mut out).is_err());
    }

    /// Found by fuzzing (`fuzz/regressions/dag_read/strict-walk-dedup-size.dag`): a node linking one
    /// leaf twice with different sizes passed `walk` (and so `verify`) but could not be read.
    #[test]
    fn walk_checks_every_link_to_a_block_seen_before() {
        use crate::dag::unixfs::encode_file_node;
        use crate::dag::BlockSink;
        let mut blocks = MemBlocks::default();
        let leaf = b"abc";
        let lh = BlockHash::of(leaf);
        blocks.put_block(lh, RAW_CODEC, leaf).unwrap();
        let leaf_cid = lh.cid(RAW_CODEC);
        let node = encode_file_node(&[(leaf_cid, 3, 3), (leaf_cid, 5, 5)]);
        let nh = BlockHash::of(&node);
        blocks.put_block(nh, DAG_PB_CODEC, &node).unwrap();
        let root = nh.cid(DAG_PB_CODEC);
        let mut out = Vec::new();
        assert!(DagReader::new(&blocks, root).unwrap().read_to_end(&mut out).is_err());
        for mode in [WalkMode::NodesOnly, WalkMode::Everything] {
            let err = walk(&blocks, &root, None, &mut Seen::new(), mode, &mut |_, _| Ok(())).unwrap_err();
            assert!(matches!(err, DagReadError::SizeMismatch { .. }), "{err}");
        }
    }
}
