//! CAR v1 export: `varint(len) header`, then `varint(len) CID bytes` per block.
//!
//! The header is the dag-cbor map `{"roots": [root], "version": 1}`, small and fixed enough to write by
//! hand (DESIGN §2): keys in dag-cbor's length-first order, the CID as tag 42 over `0x00 ‖ CID bytes`.

use std::collections::HashSet;
use std::io::Write;

use bytes::Bytes;

use super::cid::{block_hash, BlockHash, Cid, DAG_CBOR_CODEC, DAG_PB_CODEC};
use super::reader::{load, walk, DagReadError, WalkMode, MAX_DEPTH};
use super::unixfs::decode_file_node;
use super::{put_varint, BlockSource};

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarSummary {
    /// Blocks written.
    pub blocks: u64,
    /// Block bytes written (excluding CAR framing).
    pub block_bytes: u64,
}

/// The CAR v1 header naming `root`, with its varint length prefix.
pub fn header(root: &Cid) -> Vec<u8> {
    let cid = root.to_bytes();
    let mut cbor = vec![0xa2]; // map(2)
    cbor.push(0x65);
    cbor.extend_from_slice(b"roots");
    cbor.push(0x81); // array(1)
    cbor.extend_from_slice(&[0xd8, 0x2a]); // tag(42)
    let len = cid.len() + 1;
    if len < 24 {
        cbor.push(0x40 | len as u8);
    } else {
        cbor.extend_from_slice(&[0x58, len as u8]); // bytes(len), len < 256 for any CID we make
    }
    cbor.push(0x00);
    cbor.extend_from_slice(&cid);
    cbor.push(0x67);
    cbor.extend_from_slice(b"version");
    cbor.push(0x01);
    let mut out = Vec::with_capacity(cbor.len() + 2);
    put_varint(&mut out, cbor.len() as u64);
    out.extend_from_slice(&cbor);
    out
}

/// Write every block under `root` once, depth-first pre-order, with `root` as the CAR's only root.
pub fn write_car(source: &impl BlockSource, root: &Cid, out: &mut impl Write) -> Result<CarSummary, DagReadError> {
    let io_err = |source| DagReadError::Io { cid: *root, source };
    out.write_all(&header(root)).map_err(io_err)?;
    let mut summary = CarSummary { blocks: 0, block_bytes: 0 };
    let mut seen = super::reader::Seen::new();
    walk(source, root, None, &mut seen, WalkMode::Everything, &mut |cid, bytes| {
        let bytes = bytes.unwrap_or_default();
        let cid_bytes = cid.to_bytes();
        let mut frame = Vec::with_capacity(10 + cid_bytes.len());
        put_varint(&mut frame, (cid_bytes.len() + bytes.len()) as u64);
        frame.extend_from_slice(&cid_bytes);
        out.write_all(&frame)?;
        out.write_all(bytes)?;
        summary.blocks += 1;
        summary.block_bytes += bytes.len() as u64;
        Ok(())
    })?;
    out.flush().map_err(io_err)?;
    Ok(summary)
}

/// The blocks a streamed CAR carries (the trustless gateway's `dag-scope` and `entity-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarScope {
    /// The root block alone.
    Block,
    /// Every block under the root: a file's whole DAG; under a catalogue snapshot's node (dag-cbor),
    /// every catalogue node below it and every NAR and file DAG its entries name.
    All,
    /// The blocks on the paths from the root to the leaves holding file bytes `from..to` (end
    /// exclusive): what a client needs to verify that range and nothing more.
    Bytes {
        /// First byte.
        from: u64,
        /// One past the last byte.
        to: u64,
    },
}

/// A CAR v1 produced a block at a time (depth-first pre-order, the header first), so that a response
/// body holds one block, never the DAG. Interior nodes are read to find their children; with
/// [`CarScope::Bytes`] only children overlapping the range are visited. Each block is verified by the
/// source as it is read.
pub struct CarStream<S> {
    source: S,
    root: Cid,
    scope: CarScope,
    header: Option<Vec<u8>>,
    /// Blocks still to visit: CID, file offset of its first byte, depth.
    stack: Vec<(Cid, u64, usize)>,
    /// Blocks sent, when duplicates are left out (32 bytes a block).
    sent: Option<HashSet<BlockHash>>,
}

impl<S: BlockSource> CarStream<S> {
    /// A CAR of `root` (its only root) under `scope`; `dups` keeps a block that the DAG links twice as
    /// often as it is reached (`dups=y`), otherwise it is sent once.
    pub fn new(source: S, root: Cid, scope: CarScope, dups: bool) -> Self {
        CarStream {
            source,
            root,
            scope,
            header: Some(header(&root)),
            stack: vec![(root, 0, 0)],
            sent: (!dups).then(HashSet::new),
        }
    }

    /// The next piece of the CAR: the header, then one framed block at a time; `None` at the end.
    pub fn next_frame(&mut self) -> Result<Option<Vec<Bytes>>, DagReadError> {
        if let Some(h) = self.header.take() {
            return Ok(Some(vec![Bytes::from(h)]));
        }
        while let Some((cid, at, depth)) = self.stack.pop() {
            let hash = block_hash(&cid).map_err(|source| DagReadError::Cid { root: self.root, source })?;
            if let Some(sent) = &mut self.sent {
                if !sent.insert(hash) {
                    continue;
                }
            }
            let bytes = load(&self.source, &cid, &self.root)?;
            if cid.codec() == DAG_PB_CODEC && self.scope != CarScope::Block {
                if depth >= MAX_DEPTH {
                    return Err(DagReadError::TooDeep { root: self.root });
                }
                let node =
                    decode_file_node(hash, &bytes).map_err(|source| DagReadError::Node { root: self.root, source })?;
                let mut children = Vec::with_capacity(node.links.len());
                let mut child_at = at + node.inline.len() as u64;
                for (link, size) in node.links.iter().zip(&node.blocksizes) {
                    let wanted = match self.scope {
                        CarScope::Bytes { from, to } => child_at < to && from < child_at + size,
                        _ => true,
                    };
                    if wanted {
                        children.push((*link, child_at, depth + 1));
                    }
                    child_at += size;
                }
                self.stack.extend(children.into_iter().rev());
            } else if cid.codec() == DAG_CBOR_CODEC && self.scope == CarScope::All {
                // A catalogue node (`catalogue.rs`): every link, catalogue nodes and the NAR and file
                // roots alike, so one CAR of a snapshot carries the whole cache it names.
                if depth >= MAX_DEPTH {
                    return Err(DagReadError::TooDeep { root: self.root });
                }
                let links = super::catalogue::links(&cid, &bytes).map_err(|e| DagReadError::Io {
                    cid,
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                })?;
                self.stack.extend(links.into_iter().rev().map(|l| (l, 0, depth + 1)));
            }
            let cid_bytes = cid.to_bytes();
            let mut frame = Vec::with_capacity(10 + cid_bytes.len());
            put_varint(&mut frame, (cid_bytes.len() + bytes.len()) as u64);
            frame.extend_from_slice(&cid_bytes);
            return Ok(Some(vec![Bytes::from(frame), bytes]));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::cid::{BlockHash, RAW_CODEC};

    /// Golden header for the raw leaf of "": 3a (58 bytes) a2 65 "roots" 81 d8 2a 58 25 00 <36-byte CID>
    /// 67 "version" 01.
    #[test]
    fn header_golden_bytes() {
        let cid = BlockHash::of(b"").cid(RAW_CODEC);
        let h = header(&cid);
        let hex = data_encoding::HEXLOWER.encode(&h);
        assert_eq!(
            hex,
            format!(
                "3aa265726f6f747381d82a582500{}6776657273696f6e01",
                data_encoding::HEXLOWER.encode(&cid.to_bytes())
            )
        );
        assert_eq!(h.len(), 59);
    }
}
