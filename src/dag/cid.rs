//! Block identities: the BLAKE3 hash of a block's bytes, and the CIDv1 forms that carry it.
//!
//! The same 32 bytes are the iroh-blobs hash and the CID digest (DESIGN §1), so one block is addressable
//! from iroh and from IPFS tooling alike. The codec only says how to read the bytes: `raw` for leaves,
//! `dag-pb` for UnixFS interior nodes, `dag-cbor` for the catalogue snapshot's nodes.

use std::fmt;

pub use cid::Cid;

/// Multihash code of BLAKE3-256.
pub const BLAKE3_CODE: u64 = 0x1e;
/// Multicodec of raw leaves.
pub const RAW_CODEC: u64 = 0x55;
/// Multicodec of dag-pb nodes.
pub const DAG_PB_CODEC: u64 = 0x70;
/// Multicodec of dag-cbor nodes: the catalogue snapshot's (`catalogue.rs`); no file DAG uses it.
pub const DAG_CBOR_CODEC: u64 = 0x71;

/// The BLAKE3-256 hash of a block's bytes: the block's name in the store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHash(pub [u8; 32]);

impl BlockHash {
    /// Hash `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        BlockHash(*blake3::hash(bytes).as_bytes())
    }

    /// The CIDv1 naming this block read as `codec`.
    pub fn cid(&self, codec: u64) -> Cid {
        let mh = cid::multihash::Multihash::<64>::wrap(BLAKE3_CODE, &self.0).expect("32 bytes fit a 64-byte multihash");
        Cid::new_v1(codec, mh)
    }

    /// Lower-case hex, for logs and error messages.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockHash({})", self.to_hex())
    }
}

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Why a CID cannot name a nixdag block.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CidError {
    /// The text or bytes are not a CID at all.
    #[error("invalid CID {input:?}: {reason}")]
    Malformed {
        /// What was given.
        input: String,
        /// What the parser said.
        reason: String,
    },
    /// A CID whose hash is not BLAKE3-256 (nixdag names every block by BLAKE3).
    #[error("CID {cid} uses multihash 0x{code:x} with {len}-byte digest; nixdag blocks need blake3 (0x1e, 32 bytes)")]
    UnsupportedHash {
        /// The CID.
        cid: String,
        /// Its multihash code.
        code: u64,
        /// Its digest length.
        len: usize,
    },
    /// A codec other than raw, dag-pb and dag-cbor.
    #[error("CID {cid} has codec 0x{codec:x}; nixdag reads raw (0x55), dag-pb (0x70) and dag-cbor (0x71)")]
    UnsupportedCodec {
        /// The CID.
        cid: String,
        /// Its codec.
        codec: u64,
    },
}

/// The block hash inside a CID, after checking the CID is one nixdag can read.
pub fn block_hash(cid: &Cid) -> Result<BlockHash, CidError> {
    let mh = cid.hash();
    if mh.code() != BLAKE3_CODE || mh.digest().len() != 32 {
        return Err(CidError::UnsupportedHash { cid: cid.to_string(), code: mh.code(), len: mh.digest().len() });
    }
    if ![RAW_CODEC, DAG_PB_CODEC, DAG_CBOR_CODEC].contains(&cid.codec()) {
        return Err(CidError::UnsupportedCodec { cid: cid.to_string(), codec: cid.codec() });
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(mh.digest());
    Ok(BlockHash(out))
}

/// Parse a CID's text form (CIDv1 in any multibase) and check it names a nixdag block. The whole string
/// must be the CID: the `cid` crate alone would also accept a `/ipfs/` prefix and ignore trailing bytes.
pub fn parse_cid(s: &str) -> Result<Cid, CidError> {
    let malformed = |reason: String| CidError::Malformed { input: s.to_string(), reason };
    let (_, bytes) = cid::multibase::decode(s).map_err(|e| malformed(e.to_string()))?;
    cid_from_bytes(&bytes).map_err(|e| match e {
        CidError::Malformed { reason, .. } => malformed(reason),
        other => other,
    })
}

/// Parse a CID's binary form (as stored in manifests) and check it names a nixdag block; bytes after
/// the CID are an error, not ignored.
pub fn cid_from_bytes(bytes: &[u8]) -> Result<Cid, CidError> {
    let malformed = |reason: String| CidError::Malformed { input: data_encoding::HEXLOWER.encode(bytes), reason };
    let cid = Cid::try_from(bytes).map_err(|e| malformed(e.to_string()))?;
    if cid.encoded_len() != bytes.len() {
        return Err(malformed(format!("{} bytes after the CID", bytes.len() - cid.encoded_len())));
    }
    block_hash(&cid)?;
    Ok(cid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden bytes: a raw-leaf CID of the empty block.
    /// 01 (CIDv1) 55 (raw) 1e (blake3) 20 (32 bytes) af1349b9… (BLAKE3 of "")
    #[test]
    fn empty_raw_leaf_cid_golden() {
        let cid = BlockHash::of(b"").cid(RAW_CODEC);
        assert_eq!(
            data_encoding::HEXLOWER.encode(&cid.to_bytes()),
            "01551e20af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert!(cid.to_string().starts_with("bafk"));
        assert_eq!(parse_cid(&cid.to_string()).unwrap(), cid);
        assert_eq!(cid_from_bytes(&cid.to_bytes()).unwrap(), cid);
    }

    #[test]
    fn dag_pb_cid_prints_bafy() {
        assert!(BlockHash::of(b"x").cid(DAG_PB_CODEC).to_string().starts_with("bafy"));
    }

    #[test]
    fn reject_sha256_cid() {
        // bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku: raw, sha2-256 of ""
        let err = parse_cid("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku").unwrap_err();
        assert!(matches!(err, CidError::UnsupportedHash { code: 0x12, .. }), "{err}");
    }

    #[test]
    fn reject_trailing_bytes_and_path_prefixes() {
        let cid = BlockHash::of(b"x").cid(RAW_CODEC);
        let mut bytes = cid.to_bytes();
        bytes.push(0);
        assert!(matches!(cid_from_bytes(&bytes), Err(CidError::Malformed { .. })));
        assert!(parse_cid(&format!("/ipfs/{cid}")).is_err());
        assert!(parse_cid(&format!("{cid}a")).is_err());
    }

    #[test]
    fn reject_garbage_cid() {
        assert!(matches!(parse_cid("bafynotacid!"), Err(CidError::Malformed { .. })));
        assert!(matches!(cid_from_bytes(&[1, 2, 3]), Err(CidError::Malformed { .. })));
    }
}
