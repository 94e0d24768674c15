//! The fetch protocol between nixdag nodes, ALPN `/nixdag/fetch/1`: its messages and their bytes.
//!
//! The stock iroh-blobs protocol (`/iroh-bytes/4`) moves raw blocks; between nixdag nodes that loses to
//! xz, because a new version's blocks are mostly small edits of blocks the receiver already holds. This
//! protocol moves a block **compressed**, or as a **zstd delta against a base block** the sender chose
//! (its own delta base, which a receiver holding the previous version usually has), and adds what a
//! node must ask before it can walk a DAG: a store path's narinfo, a NAR's or a file's root.
//!
//! One request per QUIC bi-directional stream: the client writes the request and finishes its side;
//! the server writes the answer and finishes. Integers are little-endian. Kind 0 is reserved, so a
//! zeroed buffer is never a request; unknown kinds close the stream with no answer.
//!
//! ```text
//! request                         answer
//! 01 NARINFO  [20] store-path hash   00 not here
//!                                    01 [1] cid_len [cid_len] root CID [4] text_len [text_len] narinfo
//! 02 NAR      [32] NarHash (sha256)  00 not here | 01 [1] cid_len [cid_len] root CID [8] NAR size
//! 03 FILE     [32] SHA-256 of a file 00 not here | 01 [1] cid_len [cid_len] root CID [8] file size
//! 05 FILE_BY  [1] algo [n] digest    as FILE; algo 1 md5 (n 16), 2 sha1 (20), 4 sha512 (64), for a file
//!                                    asked by another hash than its SHA-256 (a hashed mirror's sha512)
//! 04 BLOCKS   [1] flags [2] count    per block, in the order asked:
//!             count × [32] BLAKE3       00 not here
//!                                       01 ZSTD  [4] raw_len [4] len [len] zstd frame of the block
//!                                       02 DELTA [32] base [4] raw_len [4] len [len] zstd frame with the
//!                                                base's bytes as its raw prefix (zstd --patch-from)
//!                                       03 RAW   [4] raw_len [raw_len] the block
//! ```
//!
//! BLOCKS flag bit 0: the client welcomes deltas (it tries them against its own store and asks again
//! without the flag for those whose base it lacks). A block is named by its BLAKE3 hash, and the
//! receiver checks that hash after decoding, before the block goes anywhere: what a peer sends is never
//! trusted. A narinfo is the text the serving node's gateway would serve (with the signatures it
//! carries); whether to believe it is the receiver's decision (its trusted keys), not the wire's.

use std::io;

use crate::dag::cid::block_hash;
use crate::dag::{BlockHash, Cid};
use crate::nix::hash::{HashAlgo, NixHash};

/// The protocol's ALPN; the number is its version.
pub const ALPN: &[u8] = b"/nixdag/fetch/1";

/// Largest block either side accepts (the chunker's largest leaf is 256 KiB; recipe and interior
/// blocks are smaller than 1 MiB).
pub const MAX_BLOCK: u32 = 1 << 20;
/// Most blocks one BLOCKS request may name.
pub const MAX_BLOCKS_PER_REQUEST: usize = 256;
/// Largest narinfo text accepted.
pub const MAX_NARINFO: u32 = 64 << 10;
/// Largest request on the wire (a BLOCKS request of the most blocks).
pub const MAX_REQUEST: usize = 4 + 32 * MAX_BLOCKS_PER_REQUEST;

/// BLOCKS flag: the client welcomes deltas.
pub const FLAG_DELTAS: u8 = 1;

const K_NARINFO: u8 = 1;
const K_NAR: u8 = 2;
const K_FILE: u8 = 3;
const K_BLOCKS: u8 = 4;
const K_FILE_BY: u8 = 5;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A store path's narinfo, by the 20 bytes of its hash part.
    NarInfo([u8; 20]),
    /// A NAR's root and size, by its SHA-256.
    Nar([u8; 32]),
    /// A file's root and size, by any hash it is known under (SHA-256 travels as FILE, the others as
    /// FILE_BY: a node that predates FILE_BY closes the stream, which reads as "not here").
    File(NixHash),
    /// Blocks by BLAKE3 hash.
    Blocks {
        /// Whether deltas are welcome.
        deltas: bool,
        /// At most [`MAX_BLOCKS_PER_REQUEST`].
        hashes: Vec<BlockHash>,
    },
}

/// Why bytes are not a message of this protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The message ended early, or went on after its end.
    #[error("{what}: {len} bytes is not a whole message")]
    Length {
        /// What was being read.
        what: &'static str,
        /// Bytes there were.
        len: usize,
    },
    /// A kind, status or form byte that is not in the protocol.
    #[error("{what}: unknown byte 0x{byte:02x}")]
    Unknown {
        /// What the byte was.
        what: &'static str,
        /// The byte.
        byte: u8,
    },
    /// A count or length over the protocol's bounds.
    #[error("{what}: {got} is over the limit of {max}")]
    TooLarge {
        /// What was counted.
        what: &'static str,
        /// What came.
        got: u64,
        /// The bound.
        max: u64,
    },
    /// A root CID that nixdag cannot follow (not CIDv1 BLAKE3 raw or dag-pb).
    #[error("bad root CID: {0}")]
    Cid(String),
    /// A narinfo that is not UTF-8.
    #[error("narinfo is not UTF-8")]
    Utf8,
    /// The stream failed.
    #[error("reading the stream: {0}")]
    Io(#[from] io::Error),
}

impl Request {
    /// The request's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Request::NarInfo(h) => {
                out.push(K_NARINFO);
                out.extend_from_slice(h);
            }
            Request::Nar(h) => {
                out.push(K_NAR);
                out.extend_from_slice(h);
            }
            Request::File(h) if h.algo == HashAlgo::Sha256 => {
                out.push(K_FILE);
                out.extend_from_slice(&h.digest);
            }
            Request::File(h) => {
                out.push(K_FILE_BY);
                out.push(algo_code(h.algo));
                out.extend_from_slice(&h.digest);
            }
            Request::Blocks { deltas, hashes } => {
                out.push(K_BLOCKS);
                out.push(if *deltas { FLAG_DELTAS } else { 0 });
                out.extend_from_slice(&(hashes.len() as u16).to_le_bytes());
                for h in hashes {
                    out.extend_from_slice(&h.0);
                }
            }
        }
        out
    }

    /// Parse a whole request.
    pub fn decode(b: &[u8]) -> Result<Request, WireError> {
        let len_err = |what| WireError::Length { what, len: b.len() };
        let (&kind, rest) = b.split_first().ok_or(len_err("request"))?;
        match kind {
            K_NARINFO => Ok(Request::NarInfo(rest.try_into().map_err(|_| len_err("NARINFO request"))?)),
            K_NAR => Ok(Request::Nar(rest.try_into().map_err(|_| len_err("NAR request"))?)),
            K_FILE | K_FILE_BY => {
                let (algo, digest) = match kind {
                    K_FILE => (HashAlgo::Sha256, rest),
                    _ => {
                        let (&code, digest) = rest.split_first().ok_or(len_err("FILE_BY request"))?;
                        let algo = code_algo(code).ok_or(WireError::Unknown { what: "FILE_BY hash algorithm", byte: code })?;
                        (algo, digest)
                    }
                };
                let hash = NixHash::new(algo, digest.to_vec()).map_err(|_| len_err("FILE request"))?;
                Ok(Request::File(hash))
            }
            K_BLOCKS => {
                if rest.len() < 3 {
                    return Err(len_err("BLOCKS request"));
                }
                let deltas = rest[0] & FLAG_DELTAS != 0;
                let count = u16::from_le_bytes([rest[1], rest[2]]) as usize;
                if count > MAX_BLOCKS_PER_REQUEST {
                    let max = MAX_BLOCKS_PER_REQUEST as u64;
                    return Err(WireError::TooLarge { what: "blocks in a request", got: count as u64, max });
                }
                let list = &rest[3..];
                if list.len() != count * 32 {
                    return Err(len_err("BLOCKS request"));
                }
                let hashes = list.chunks_exact(32).map(|c| BlockHash(c.try_into().expect("32 bytes"))).collect();
                Ok(Request::Blocks { deltas, hashes })
            }
            byte => Err(WireError::Unknown { what: "request kind", byte }),
        }
    }
}

fn algo_code(algo: HashAlgo) -> u8 {
    match algo {
        HashAlgo::Md5 => 1,
        HashAlgo::Sha1 => 2,
        HashAlgo::Sha256 => 3,
        HashAlgo::Sha512 => 4,
    }
}

fn code_algo(code: u8) -> Option<HashAlgo> {
    Some(match code {
        1 => HashAlgo::Md5,
        2 => HashAlgo::Sha1,
        3 => HashAlgo::Sha256,
        4 => HashAlgo::Sha512,
        _ => return None,
    })
}

/// A root and a size (answers to NAR and FILE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// The DAG root.
    pub root: Cid,
    /// Bytes of the stream.
    pub size: u64,
}

/// The answer to NARINFO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfoAnswer {
    /// The NAR's DAG root.
    pub root: Cid,
    /// The narinfo text, with the signatures it carries.
    pub text: String,
}

fn put_cid(out: &mut Vec<u8>, cid: &Cid) {
    let b = cid.to_bytes();
    out.push(b.len() as u8);
    out.extend_from_slice(&b);
}

/// Encode the answer to NARINFO.
pub fn encode_narinfo(answer: Option<&NarInfoAnswer>) -> Vec<u8> {
    let Some(a) = answer else { return vec![0] };
    let mut out = vec![1];
    put_cid(&mut out, &a.root);
    out.extend_from_slice(&(a.text.len() as u32).to_le_bytes());
    out.extend_from_slice(a.text.as_bytes());
    out
}

/// Encode the answer to NAR or FILE.
pub fn encode_root(answer: Option<&Root>) -> Vec<u8> {
    let Some(a) = answer else { return vec![0] };
    let mut out = vec![1];
    put_cid(&mut out, &a.root);
    out.extend_from_slice(&a.size.to_le_bytes());
    out
}

/// A block as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireBlock {
    /// The sender has no such block.
    Missing,
    /// A zstd frame of the block.
    Zstd {
        /// Bytes of the block.
        raw_len: u32,
        /// The frame.
        payload: Vec<u8>,
    },
    /// A zstd frame with `base`'s bytes as its raw prefix.
    Delta {
        /// The block whose bytes the frame refers to.
        base: BlockHash,
        /// Bytes of the block.
        raw_len: u32,
        /// The frame.
        payload: Vec<u8>,
    },
    /// The block as it is.
    Raw(Vec<u8>),
}

impl WireBlock {
    /// Append its bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            WireBlock::Missing => out.push(0),
            WireBlock::Zstd { raw_len, payload } => {
                out.push(1);
                out.extend_from_slice(&raw_len.to_le_bytes());
                out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                out.extend_from_slice(payload);
            }
            WireBlock::Delta { base, raw_len, payload } => {
                out.push(2);
                out.extend_from_slice(&base.0);
                out.extend_from_slice(&raw_len.to_le_bytes());
                out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                out.extend_from_slice(payload);
            }
            WireBlock::Raw(b) => {
                out.push(3);
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
        }
    }

    /// Bytes this block takes on the wire.
    pub fn wire_len(&self) -> usize {
        match self {
            WireBlock::Missing => 1,
            WireBlock::Zstd { payload, .. } => 9 + payload.len(),
            WireBlock::Delta { payload, .. } => 41 + payload.len(),
            WireBlock::Raw(b) => 5 + b.len(),
        }
    }

    /// The block's bytes, given the base of a delta (`None` when the receiver lacks it: the caller asks
    /// again without deltas). Decoding never trusts `raw_len` beyond [`MAX_BLOCK`]; the caller still
    /// has to check the BLAKE3 hash.
    pub fn decode_bytes(&self, base: Option<&[u8]>) -> Result<Option<Vec<u8>>, WireError> {
        let bad = |e: io::Error| WireError::Io(io::Error::new(io::ErrorKind::InvalidData, e));
        match self {
            WireBlock::Missing => Ok(None),
            WireBlock::Raw(b) => Ok(Some(b.clone())),
            WireBlock::Zstd { raw_len, payload } => {
                let out = zstd::bulk::decompress(payload, *raw_len as usize).map_err(bad)?;
                if out.len() != *raw_len as usize {
                    return Err(WireError::Length { what: "zstd block", len: out.len() });
                }
                Ok(Some(out))
            }
            WireBlock::Delta { raw_len, payload, .. } => match base {
                Some(base) => Ok(Some(crate::store::delta_decompress(base, payload, *raw_len as usize).map_err(bad)?)),
                None => Ok(None),
            },
        }
    }
}

/// Reads messages from a stream with every length bounded before anything is allocated.
pub struct Reader<R> {
    inner: R,
    /// Bytes read so far (for the peer's counters).
    pub bytes: u64,
}

impl<R: tokio::io::AsyncRead + Unpin> Reader<R> {
    /// Read from `inner`.
    pub fn new(inner: R) -> Self {
        Reader { inner, bytes: 0 }
    }

    async fn exact(&mut self, buf: &mut [u8]) -> Result<(), WireError> {
        use tokio::io::AsyncReadExt;
        self.inner.read_exact(buf).await?;
        self.bytes += buf.len() as u64;
        Ok(())
    }

    async fn u8(&mut self) -> Result<u8, WireError> {
        let mut b = [0; 1];
        self.exact(&mut b).await?;
        Ok(b[0])
    }

    async fn u32(&mut self) -> Result<u32, WireError> {
        let mut b = [0; 4];
        self.exact(&mut b).await?;
        Ok(u32::from_le_bytes(b))
    }

    async fn u64(&mut self) -> Result<u64, WireError> {
        let mut b = [0; 8];
        self.exact(&mut b).await?;
        Ok(u64::from_le_bytes(b))
    }

    async fn hash(&mut self) -> Result<BlockHash, WireError> {
        let mut b = [0; 32];
        self.exact(&mut b).await?;
        Ok(BlockHash(b))
    }

    async fn bounded(&mut self, what: &'static str, max: u32) -> Result<Vec<u8>, WireError> {
        let len = self.u32().await?;
        if len > max {
            return Err(WireError::TooLarge { what, got: len.into(), max: max.into() });
        }
        let mut v = vec![0; len as usize];
        self.exact(&mut v).await?;
        Ok(v)
    }

    async fn cid(&mut self) -> Result<Cid, WireError> {
        let len = self.u8().await?;
        let mut b = vec![0; len as usize];
        self.exact(&mut b).await?;
        let cid = Cid::try_from(b.as_slice()).map_err(|e| WireError::Cid(e.to_string()))?;
        block_hash(&cid).map_err(|e| WireError::Cid(e.to_string()))?;
        Ok(cid)
    }

    async fn found(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8().await? {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(WireError::Unknown { what, byte }),
        }
    }

    /// The answer to NARINFO.
    pub async fn narinfo(&mut self) -> Result<Option<NarInfoAnswer>, WireError> {
        if !self.found("NARINFO answer").await? {
            return Ok(None);
        }
        let root = self.cid().await?;
        let text = self.bounded("narinfo bytes", MAX_NARINFO).await?;
        let text = String::from_utf8(text).map_err(|_| WireError::Utf8)?;
        Ok(Some(NarInfoAnswer { root, text }))
    }

    /// The answer to NAR or FILE.
    pub async fn root(&mut self) -> Result<Option<Root>, WireError> {
        if !self.found("root answer").await? {
            return Ok(None);
        }
        let root = self.cid().await?;
        let size = self.u64().await?;
        Ok(Some(Root { root, size }))
    }

    /// The next block of a BLOCKS answer.
    pub async fn block(&mut self) -> Result<WireBlock, WireError> {
        let raw_len = |n: u32| {
            if n > MAX_BLOCK {
                Err(WireError::TooLarge { what: "block bytes", got: n.into(), max: MAX_BLOCK.into() })
            } else {
                Ok(n)
            }
        };
        match self.u8().await? {
            0 => Ok(WireBlock::Missing),
            1 => {
                let raw_len = raw_len(self.u32().await?)?;
                // A frame of incompressible bytes is a little larger than they are.
                let payload = self.bounded("zstd frame bytes", MAX_BLOCK + 4096).await?;
                Ok(WireBlock::Zstd { raw_len, payload })
            }
            2 => {
                let base = self.hash().await?;
                let raw_len = raw_len(self.u32().await?)?;
                let payload = self.bounded("delta bytes", MAX_BLOCK + 4096).await?;
                Ok(WireBlock::Delta { base, raw_len, payload })
            }
            3 => Ok(WireBlock::Raw(self.bounded("block bytes", MAX_BLOCK).await?)),
            byte => Err(WireError::Unknown { what: "block form", byte }),
        }
    }
}

/// The answer to a NARINFO request decoded from bytes (tests, fuzzing).
pub fn decode_narinfo(b: &[u8]) -> Result<Option<NarInfoAnswer>, WireError> {
    block_on_slice(b, |mut r| async move {
        let a = r.narinfo().await?;
        Ok((a, r.bytes))
    })
}

/// The blocks of a BLOCKS answer decoded from bytes (tests, fuzzing).
pub fn decode_blocks(b: &[u8], count: usize) -> Result<Vec<WireBlock>, WireError> {
    block_on_slice(b, |mut r| async move {
        let mut v = Vec::new();
        for _ in 0..count {
            v.push(r.block().await?);
        }
        Ok((v, r.bytes))
    })
}

/// Run a reader over a byte slice, requiring it to consume every byte.
fn block_on_slice<'a, T, F, Fut>(b: &'a [u8], f: F) -> Result<T, WireError>
where
    F: FnOnce(Reader<&'a [u8]>) -> Fut,
    Fut: std::future::Future<Output = Result<(T, u64), WireError>>,
{
    // Reading a slice never waits: one poll finishes it.
    let fut = std::pin::pin!(f(Reader::new(b)));
    let waker = std::task::Waker::noop();
    match fut.poll(&mut std::task::Context::from_waker(waker)) {
        std::task::Poll::Ready(Ok((v, used))) if used as usize == b.len() => Ok(v),
        std::task::Poll::Ready(Ok(_)) => Err(WireError::Length { what: "answer", len: b.len() }),
        std::task::Poll::Ready(Err(e)) => Err(e),
        std::task::Poll::Pending => Err(WireError::Length { what: "answer", len: b.len() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::cid::RAW_CODEC;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn hex_to(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn raw_cid(h: BlockHash) -> Cid {
        Cid::new_v1(RAW_CODEC, multihash::Multihash::wrap(0x1e, &h.0).unwrap())
    }

    #[test]
    fn request_wire_format() {
        // 01 kind NARINFO, then the 20 bytes of the store-path hash.
        let r = Request::NarInfo([0xab; 20]);
        assert_eq!(hex(&r.encode()), format!("01{}", "ab".repeat(20)));
        // 02 kind NAR, then the NarHash.
        assert_eq!(hex(&Request::Nar([1; 32]).encode()), format!("02{}", "01".repeat(32)));
        // 03 kind FILE, then the SHA-256.
        let sha256 = |b: u8| Request::File(NixHash::new(HashAlgo::Sha256, vec![b; 32]).unwrap());
        assert_eq!(hex(&sha256(2).encode()), format!("03{}", "02".repeat(32)));
        let sha512 = Request::File(NixHash::new(HashAlgo::Sha512, vec![5; 64]).unwrap());
        assert_eq!(hex(&sha512.encode()), format!("0504{}", "05".repeat(64)));
        let md5 = Request::File(NixHash::new(HashAlgo::Md5, vec![6; 16]).unwrap());
        assert_eq!(hex(&md5.encode()), format!("0501{}", "06".repeat(16)));
        // A FILE_BY with a digest of the wrong length, or an unknown algorithm, is not a request.
        assert!(Request::decode(&hex_to(&format!("0504{}", "05".repeat(32)))).is_err());
        assert!(Request::decode(&hex_to(&format!("0509{}", "05".repeat(32)))).is_err());
        // 04 kind BLOCKS, 01 deltas welcome, 0200 two blocks, then their hashes.
        let r = Request::Blocks { deltas: true, hashes: vec![BlockHash([0x11; 32]), BlockHash([0x22; 32])] };
        assert_eq!(hex(&r.encode()), format!("04010200{}{}", "11".repeat(32), "22".repeat(32)));
        for r in [r, Request::NarInfo([7; 20]), Request::Nar([9; 32]), sha256(3), sha512, md5] {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn bad_requests_are_refused_by_name() {
        let cases: &[(&str, &[u8])] = &[
            ("empty", &[]),
            ("reserved kind 0", &[0]),
            ("unknown kind", &[9, 1, 2]),
            ("short narinfo hash", &[1, 0xab]),
            ("long nar hash", &[2; 34]),
            ("blocks without count", &[4, 0]),
            ("count says 2, one hash", &{
                let mut v = vec![4, 0, 2, 0];
                v.extend([0; 32]);
                v
            }),
            ("too many blocks", &[4, 0, 0x01, 0x01]),
        ];
        for (name, bytes) in cases {
            assert!(Request::decode(bytes).is_err(), "{name} accepted");
        }
    }

    #[test]
    fn answer_wire_format() {
        let root = raw_cid(BlockHash([0x33; 32]));
        // 01 found, 24 CID length (36 bytes), CIDv1 raw blake3 (01 55 1e 20 + digest), 0500 0000 text length, text.
        let a = NarInfoAnswer { root, text: "hello".into() };
        let bytes = encode_narinfo(Some(&a));
        assert_eq!(hex(&bytes), format!(concat!("0124", "01551e20{}", "05000000", "68656c6c6f"), "33".repeat(32)));
        assert_eq!(decode_narinfo(&bytes).unwrap(), Some(a));
        assert_eq!(hex(&encode_narinfo(None)), "00");
        assert_eq!(decode_narinfo(&[0]).unwrap(), None);
        // 01 found, CID, then the size as u64.
        let r = Root { root, size: 0x0102 };
        assert_eq!(hex(&encode_root(Some(&r))), format!("012401551e20{}0201000000000000", "33".repeat(32)));
    }

    #[test]
    fn block_wire_format() {
        let mut out = Vec::new();
        WireBlock::Missing.encode(&mut out);
        WireBlock::Raw(b"ab".to_vec()).encode(&mut out);
        WireBlock::Zstd { raw_len: 3, payload: vec![9, 9] }.encode(&mut out);
        WireBlock::Delta { base: BlockHash([0x44; 32]), raw_len: 5, payload: vec![7] }.encode(&mut out);
        assert_eq!(
            hex(&out),
            format!(
                concat!("00", "03", "02000000", "6162", "01", "03000000", "02000000", "0909", "02{}", "05000000"),
                "44".repeat(32)
            ) + "01000000" + "07"
        );
        let back = decode_blocks(&out, 4).unwrap();
        assert_eq!(back[1], WireBlock::Raw(b"ab".to_vec()));
        assert_eq!(back.iter().map(WireBlock::wire_len).sum::<usize>(), out.len());
        // Lengths over the bounds are refused before anything is allocated.
        let mut huge = vec![3];
        huge.extend_from_slice(&(MAX_BLOCK + 1).to_le_bytes());
        assert!(matches!(decode_blocks(&huge, 1), Err(WireError::TooLarge { .. })));
        assert!(matches!(decode_blocks(&[7], 1), Err(WireError::Unknown { .. })));
        assert!(decode_blocks(&[3, 9, 0, 0, 0, 1], 1).is_err(), "a block cut short");
    }

    #[test]
    fn compressed_and_delta_blocks_decode_to_their_bytes() {
        let base: Vec<u8> = (0..100_000u32).flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes()).collect();
        let mut edited = base.clone();
        edited[5000..5010].copy_from_slice(b"0123456789");
        let delta = crate::store::delta_compress(3, &base, &edited).unwrap();
        assert!(delta.len() < 200, "a delta of a small edit is small: {}", delta.len());
        let b = WireBlock::Delta { base: BlockHash::of(&base), raw_len: edited.len() as u32, payload: delta };
        assert_eq!(b.decode_bytes(Some(&base)).unwrap().unwrap(), edited);
        assert_eq!(b.decode_bytes(None).unwrap(), None, "no base: asked again");
        let z = WireBlock::Zstd { raw_len: base.len() as u32, payload: zstd::bulk::compress(&base, 3).unwrap() };
        assert_eq!(z.decode_bytes(None).unwrap().unwrap(), base);
        let lying = WireBlock::Zstd { raw_len: 10, payload: zstd::bulk::compress(&base, 3).unwrap() };
        assert!(lying.decode_bytes(None).is_err(), "more bytes than raw_len");
    }
}
