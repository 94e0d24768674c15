//! CAR v1 export: `varint(len) header`, then `varint(len) CID bytes` per block.
//!
//! The header is the dag-cbor map `{"roots": [root], "version": 1}`, small and fixed enough to write by
//! hand (DESIGN §2): keys in dag-cbor's length-first order, the CID as tag 42 over `0x00 ‖ CID bytes`.

use std::io::Write;

use super::cid::Cid;
use super::reader::{walk, DagReadError, WalkMode};
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
