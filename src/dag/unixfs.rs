//! UnixFS `Data` messages of file nodes, and dag-pb nodes that carry them.
//!
//! Only the file subset is written: `Type = File`, `filesize`, one `blocksizes` entry per link, fields in
//! field-number order and `blocksizes` unpacked, as kubo and `ipfs-unixfs` write them, so our root CIDs
//! equal theirs for the same leaves. Reading is more lenient (packed `blocksizes`, `Raw` type, inline
//! `Data`), because peers may hand us DAGs other tools made.

use bytes::Bytes;
use ipld_dagpb::{PbLink, PbNode};

use super::cid::{block_hash, BlockHash, Cid, CidError};
use super::put_varint;

const TYPE_RAW: u64 = 0;
const TYPE_FILE: u64 = 2;

/// A decoded UnixFS file node: its children with their byte counts, plus any bytes held inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileNode {
    /// Child CIDs in file order.
    pub links: Vec<Cid>,
    /// File bytes under each child (`blocksizes`), parallel to `links`.
    pub blocksizes: Vec<u64>,
    /// Bytes stored in the node itself, preceding the children's bytes.
    pub inline: Bytes,
    /// The node's declared `filesize`.
    pub filesize: u64,
}

/// Why a dag-pb block is not a UnixFS file node nixdag can read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Not valid dag-pb.
    #[error("block {block} is not valid dag-pb: {reason}")]
    DagPb {
        /// The block.
        block: BlockHash,
        /// The decoder's message.
        reason: String,
    },
    /// dag-pb, but its UnixFS `Data` is not a file node or is malformed.
    #[error("block {block} is not a UnixFS file node: {reason}")]
    UnixFs {
        /// The block.
        block: BlockHash,
        /// What is wrong.
        reason: String,
    },
    /// A link's CID is not one nixdag can follow.
    #[error("block {block} links to an unreadable CID: {source}")]
    Link {
        /// The block.
        block: BlockHash,
        /// Why.
        source: CidError,
    },
}

/// Encode a file node over `children`, each `(cid, file bytes under it, Tsize)`. Returns the block bytes.
///
/// Tsize is the cumulative encoded size of the sub-DAG (leaf bytes for raw leaves), as kubo computes it;
/// it is what makes our CIDs equal other implementations' for the same leaves.
pub fn encode_file_node(children: &[(Cid, u64, u64)]) -> Vec<u8> {
    let filesize: u64 = children.iter().map(|c| c.1).sum();
    let mut data = Vec::with_capacity(4 + 11 + children.len() * 5);
    put_key(&mut data, 1, 0);
    put_varint(&mut data, TYPE_FILE);
    put_key(&mut data, 3, 0);
    put_varint(&mut data, filesize);
    for (_, size, _) in children {
        put_key(&mut data, 4, 0);
        put_varint(&mut data, *size);
    }
    let node = PbNode {
        links: children
            .iter()
            .map(|(cid, _, tsize)| PbLink { cid: *cid, name: Some(String::new()), size: Some(*tsize) })
            .collect(),
        data: Some(Bytes::from(data)),
    };
    node.into_bytes()
}

/// Decode a dag-pb block as a UnixFS file node, checking that sizes add up.
pub fn decode_file_node(block: BlockHash, bytes: &[u8]) -> Result<FileNode, NodeError> {
    let node = PbNode::from_bytes(Bytes::copy_from_slice(bytes))
        .map_err(|e| NodeError::DagPb { block, reason: e.to_string() })?;
    let unixfs = |reason: String| NodeError::UnixFs { block, reason };
    let data = node.data.ok_or_else(|| unixfs("no Data field".into()))?;
    let mut r = PbReader { buf: &data, pos: 0 };
    let mut ty = None;
    let mut inline = Bytes::new();
    let mut filesize = None;
    let mut blocksizes = Vec::new();
    while r.pos < r.buf.len() {
        let key = r.varint().map_err(unixfs)?;
        match (key >> 3, key & 7) {
            (1, 0) => ty = Some(r.varint().map_err(unixfs)?),
            (2, 2) => {
                let (a, b) = r.bytes().map_err(unixfs)?;
                inline = data.slice(a..b);
            }
            (3, 0) => filesize = Some(r.varint().map_err(unixfs)?),
            (4, 0) => blocksizes.push(r.varint().map_err(unixfs)?),
            (4, 2) => {
                let (a, b) = r.bytes().map_err(unixfs)?;
                let mut packed = PbReader { buf: &data[a..b], pos: 0 };
                while packed.pos < packed.buf.len() {
                    blocksizes.push(packed.varint().map_err(unixfs)?);
                }
            }
            (_, 0) => {
                r.varint().map_err(unixfs)?;
            }
            (_, 2) => {
                r.bytes().map_err(unixfs)?;
            }
            (field, wire) => return Err(unixfs(format!("field {field} has unsupported wire type {wire}"))),
        }
    }
    match ty {
        Some(TYPE_FILE | TYPE_RAW) => {}
        Some(t) => return Err(unixfs(format!("UnixFS type {t} is not a file"))),
        None => return Err(unixfs("no UnixFS Type".into())),
    }
    if blocksizes.len() != node.links.len() {
        return Err(unixfs(format!("{} links but {} blocksizes", node.links.len(), blocksizes.len())));
    }
    let total = blocksizes
        .iter()
        .try_fold(inline.len() as u64, |acc, s| acc.checked_add(*s))
        .ok_or_else(|| unixfs("blocksizes overflow".into()))?;
    let filesize = filesize.unwrap_or(total);
    if filesize != total {
        return Err(unixfs(format!("filesize {filesize} but inline data and blocksizes add up to {total}")));
    }
    let mut links = Vec::with_capacity(node.links.len());
    for l in node.links {
        block_hash(&l.cid).map_err(|source| NodeError::Link { block, source })?;
        links.push(l.cid);
    }
    Ok(FileNode { links, blocksizes, inline, filesize })
}

fn put_key(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, field << 3 | wire);
}

struct PbReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl PbReader<'_> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn bytes(&mut self) -> Result<(usize, usize), String> {
        let len = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
        let end = self.pos.checked_add(len).filter(|e| *e <= self.buf.len()).ok_or("truncated field")?;
        let start = self.pos;
        self.pos = end;
        Ok((start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::cid::RAW_CODEC;

    /// Golden bytes of a node over two raw leaves of 3 and 2 bytes:
    /// each link: 12 2a (PBLink, 42 bytes) 0a 24 <36-byte CID> (Hash) 12 00 (Name "") 18 NN (Tsize);
    /// then 0a 08 (Data, 8 bytes) = 08 02 (Type File) 18 05 (filesize 5) 20 03 20 02 (blocksizes 3, 2).
    #[test]
    fn file_node_golden_bytes() {
        let a = BlockHash::of(b"abc").cid(RAW_CODEC);
        let b = BlockHash::of(b"de").cid(RAW_CODEC);
        let bytes = encode_file_node(&[(a, 3, 3), (b, 2, 2)]);
        let mut want = Vec::new();
        for (cid, tsize) in [(a, 3u8), (b, 2u8)] {
            want.extend_from_slice(&[0x12, 0x2a, 0x0a, 0x24]);
            want.extend_from_slice(&cid.to_bytes());
            want.extend_from_slice(&[0x12, 0x00, 0x18, tsize]);
        }
        want.extend_from_slice(&[0x0a, 0x08, 0x08, 0x02, 0x18, 0x05, 0x20, 0x03, 0x20, 0x02]);
        assert_eq!(data_encoding::HEXLOWER.encode(&bytes), data_encoding::HEXLOWER.encode(&want));
        let node = decode_file_node(BlockHash::of(&bytes), &bytes).unwrap();
        assert_eq!(node.links, vec![a, b]);
        assert_eq!(node.blocksizes, vec![3, 2]);
        assert_eq!(node.filesize, 5);
    }

    #[test]
    fn reject_blocksizes_not_matching_links() {
        let a = BlockHash::of(b"abc").cid(RAW_CODEC);
        let node = PbNode {
            links: vec![PbLink { cid: a, name: Some(String::new()), size: Some(3) }],
            data: Some(Bytes::from_static(&[0x08, 0x02, 0x18, 0x03])),
        };
        let bytes = node.into_bytes();
        let err = decode_file_node(BlockHash::of(&bytes), &bytes).unwrap_err();
        assert!(err.to_string().contains("1 links but 0 blocksizes"), "{err}");
    }

    #[test]
    fn reject_filesize_mismatch() {
        let a = BlockHash::of(b"abc").cid(RAW_CODEC);
        let node = PbNode {
            links: vec![PbLink { cid: a, name: Some(String::new()), size: Some(3) }],
            data: Some(Bytes::from_static(&[0x08, 0x02, 0x18, 0x09, 0x20, 0x03])),
        };
        let bytes = node.into_bytes();
        assert!(decode_file_node(BlockHash::of(&bytes), &bytes).is_err());
    }

    #[test]
    fn reject_non_dag_pb() {
        let err = decode_file_node(BlockHash::of(b"\xff\xff"), b"\xff\xff").unwrap_err();
        assert!(matches!(err, NodeError::DagPb { .. }), "{err}");
    }
}
