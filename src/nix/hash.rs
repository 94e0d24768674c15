//! Nix hashes in all the forms a user types them.
//!
//! Nix prints and accepts a digest in several encodings, and users paste whichever one their
//! tool showed them, so every place nixdag takes a hash goes through [`NixHash::parse`] or
//! [`NixHash::parse_with_default`]:
//!
//! | form                  | example (SHA-256 of the empty string)                                    |
//! |-----------------------|--------------------------------------------------------------------------|
//! | `algo:<nix32>`        | `sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73`             |
//! | `algo:<hex>`          | `sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855` |
//! | `algo:<base64>`       | `sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=`                     |
//! | SRI `algo-<base64>`   | `sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=`                     |
//! | bare (default algo)   | any of the three digest encodings above without the prefix               |
//!
//! The digest encoding is told apart by its length, exactly as Nix does: for a given algorithm
//! the nix32, hex and base64 lengths never coincide.
//!
//! [`NarHash`] is the one hash nixdag stores everywhere: the SHA-256 of a NAR. It is a fixed-size
//! newtype so that it can be a map key and be copied around for free; its text form is Nix's own
//! `sha256:<nix32>`.

use std::fmt;
use std::str::FromStr;

use data_encoding::{BASE64, BASE64_NOPAD, HEXLOWER_PERMISSIVE};
use sha2::Digest as _;

/// Nix's base-32 encoding ("nix32"), as in Nix's `printHash32` and `parseHash32`.
///
/// It differs from RFC 4648 base32 in two ways, both of which matter for byte-exact
/// compatibility: the alphabet omits `e`, `o`, `u` and `t` (to avoid accidental words), and the
/// digits are produced from the *end* of the byte string with a little-endian bit order, so the
/// first character of the text holds the most significant bits of the last byte.
pub mod nix32 {
    use super::HashParseError;

    /// The 32 digits, in value order.
    pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

    /// Value of each ASCII byte as a digit, or `0xff` when it is not one. Built at compile time
    /// so decoding is a table lookup instead of a search through the alphabet.
    const REVERSE: [u8; 256] = {
        let mut table = [0xffu8; 256];
        let mut i = 0;
        while i < 32 {
            table[ALPHABET[i] as usize] = i as u8;
            i += 1;
        }
        table
    };

    /// Number of characters the encoding of `n_bytes` bytes takes: `ceil(8 * n / 5)`.
    pub fn encoded_len(n_bytes: usize) -> usize {
        if n_bytes == 0 {
            0
        } else {
            (n_bytes * 8 - 1) / 5 + 1
        }
    }

    /// Number of bytes a nix32 string of `len` characters decodes to, if `len` is the length
    /// of some encoding.
    pub fn decoded_len(len: usize) -> Option<usize> {
        let n = len * 5 / 8;
        (encoded_len(n) == len).then_some(n)
    }

    /// Encodes `bytes` the way Nix prints store-path hashes and `sha256:` digests.
    pub fn encode(bytes: &[u8]) -> String {
        let len = encoded_len(bytes.len());
        let mut out = String::with_capacity(len);
        for n in (0..len).rev() {
            let b = n * 5;
            let (i, j) = (b / 8, b % 8);
            // Widen before shifting: for j == 0 the high byte is shifted by 8.
            let lo = u16::from(bytes[i]) >> j;
            let hi = bytes.get(i + 1).map_or(0, |&next| u16::from(next) << (8 - j));
            out.push(char::from(ALPHABET[usize::from((lo | hi) & 0x1f)]));
        }
        out
    }

    /// Decodes a nix32 string. Rejects characters outside the alphabet, lengths that no byte
    /// string encodes to, and non-zero bits beyond the last byte (which Nix also rejects, so
    /// that every digest has exactly one spelling).
    pub fn decode(s: &str) -> Result<Vec<u8>, HashParseError> {
        let n_bytes = decoded_len(s.len())
            .ok_or_else(|| HashParseError::InvalidNix32Length { len: s.len(), input: s.to_owned() })?;
        let mut out = vec![0u8; n_bytes];
        for (pos, ch) in s.char_indices() {
            let digit = u8::try_from(ch)
                .ok()
                .map(|c| REVERSE[usize::from(c)])
                .filter(|&d| d != 0xff)
                .ok_or_else(|| HashParseError::InvalidNix32Char { ch, pos, input: s.to_owned() })?;
            // The character at `pos` is digit number `n` counted from the end.
            let n = s.len() - pos - 1;
            let b = n * 5;
            let (i, j) = (b / 8, b % 8);
            let wide = u16::from(digit) << j;
            out[i] |= (wide & 0xff) as u8;
            let carry = (wide >> 8) as u8;
            if i + 1 < n_bytes {
                out[i + 1] |= carry;
            } else if carry != 0 {
                return Err(HashParseError::Nix32Overflow { input: s.to_owned() });
            }
        }
        Ok(out)
    }
}

/// A hash algorithm Nix knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlgo {
    /// MD5 (16 bytes); still seen in old fixed-output derivations.
    Md5,
    /// SHA-1 (20 bytes); used by fetchgit and old fixed-output derivations.
    Sha1,
    /// SHA-256 (32 bytes); NAR hashes and almost everything modern.
    Sha256,
    /// SHA-512 (64 bytes); common in SRI hashes from npm and friends.
    Sha512,
}

impl HashAlgo {
    /// All algorithms, in Nix's order.
    pub const ALL: [HashAlgo; 4] = [HashAlgo::Md5, HashAlgo::Sha1, HashAlgo::Sha256, HashAlgo::Sha512];

    /// The name Nix uses in `algo:` prefixes and SRI strings.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
        }
    }

    /// Length of a digest in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlgo::Md5 => 16,
            HashAlgo::Sha1 => 20,
            HashAlgo::Sha256 => 32,
            HashAlgo::Sha512 => 64,
        }
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashAlgo {
    type Err = HashParseError;

    /// Accepts exactly the lowercase names Nix accepts.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HashAlgo::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| HashParseError::UnknownAlgo { name: s.to_owned() })
    }
}

/// Why a hash string was rejected. Every message names the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashParseError {
    /// The algorithm name before `:` or `-` is not one Nix knows.
    #[error("unknown hash algorithm \"{name}\"")]
    UnknownAlgo {
        /// The name as given.
        name: String,
    },
    /// The string has no `algo:` or `algo-` prefix and no default algorithm applies.
    #[error("hash \"{input}\" does not say its algorithm (expected e.g. \"sha256:…\" or \"sha256-…\")")]
    MissingAlgo {
        /// The whole input.
        input: String,
    },
    /// A character outside the nix32 alphabet.
    #[error("invalid nix32 character {ch:?} at position {pos} in \"{input}\"")]
    InvalidNix32Char {
        /// The character.
        ch: char,
        /// Its byte position in `input`.
        pos: usize,
        /// The nix32 string.
        input: String,
    },
    /// No byte string encodes to this many nix32 characters.
    #[error("invalid nix32 length {len} of \"{input}\"")]
    InvalidNix32Length {
        /// The length in characters.
        len: usize,
        /// The nix32 string.
        input: String,
    },
    /// The first nix32 character carries bits beyond the end of the digest.
    #[error("nix32 string \"{input}\" has non-zero bits beyond the end of the digest")]
    Nix32Overflow {
        /// The nix32 string.
        input: String,
    },
    /// Not valid hexadecimal.
    #[error("invalid hex digest \"{input}\"")]
    InvalidHex {
        /// The hex string.
        input: String,
    },
    /// Not valid base64.
    #[error("invalid base64 digest \"{input}\"")]
    InvalidBase64 {
        /// The base64 string.
        input: String,
    },
    /// The digest text has a length that fits none of the encodings for the algorithm.
    #[error(
        "digest \"{input}\" has {len} characters, but a {algo} digest has {} (nix32), {} (hex) or {} (base64)",
        nix32::encoded_len(algo.digest_len()),
        2 * algo.digest_len(),
        BASE64.encode_len(algo.digest_len())
    )]
    BadDigestLength {
        /// The algorithm the digest was parsed for.
        algo: HashAlgo,
        /// The length in characters.
        len: usize,
        /// The digest text.
        input: String,
    },
    /// A decoded digest has the wrong number of bytes for its algorithm.
    #[error("{algo} digest must be {} bytes, got {got}", algo.digest_len())]
    WrongDigestSize {
        /// The algorithm.
        algo: HashAlgo,
        /// The number of bytes decoded.
        got: usize,
    },
    /// A specific algorithm was required (e.g. SHA-256 for a NAR hash) and another was given.
    #[error("expected a {expected} hash, got {got} hash")]
    WrongAlgo {
        /// The algorithm required.
        expected: HashAlgo,
        /// The algorithm given.
        got: HashAlgo,
    },
}

/// A hash with its algorithm: what Nix calls `Hash`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NixHash {
    /// The algorithm.
    pub algo: HashAlgo,
    /// The raw digest; `algo.digest_len()` bytes long when built by this module.
    pub digest: Vec<u8>,
}

impl NixHash {
    /// Builds a hash from a raw digest, checking its length.
    pub fn new(algo: HashAlgo, digest: Vec<u8>) -> Result<NixHash, HashParseError> {
        if digest.len() != algo.digest_len() {
            return Err(HashParseError::WrongDigestSize { algo, got: digest.len() });
        }
        Ok(NixHash { algo, digest })
    }

    /// Hashes `data` in one go.
    pub fn digest_of(algo: HashAlgo, data: &[u8]) -> NixHash {
        let mut h = Hasher::new(algo);
        h.update(data);
        h.finish()
    }

    /// Parses a hash that names its algorithm: `algo:<nix32|hex|base64>` or SRI `algo-<base64>`.
    pub fn parse(s: &str) -> Result<NixHash, HashParseError> {
        if let Some((algo, rest)) = s.split_once(':') {
            let algo: HashAlgo = algo.parse()?;
            return Ok(NixHash { algo, digest: decode_digest(rest, algo)? });
        }
        if let Some((algo, rest)) = s.split_once('-') {
            let algo: HashAlgo = algo.parse()?;
            return Ok(NixHash { algo, digest: decode_sri_digest(rest, algo)? });
        }
        Err(HashParseError::MissingAlgo { input: s.to_owned() })
    }

    /// Like [`NixHash::parse`], but a bare digest (nix32, hex or base64, told apart by length)
    /// is taken to be a `default` hash. This is what a user-facing argument such as a NAR hash
    /// wants: people paste whatever `nix hash` or a narinfo showed them.
    ///
    /// None of the three digest alphabets contains `:` or `-`, so a prefix is never mistaken
    /// for a digest or the other way round.
    pub fn parse_with_default(s: &str, default: HashAlgo) -> Result<NixHash, HashParseError> {
        if s.contains([':', '-']) {
            return NixHash::parse(s);
        }
        Ok(NixHash { algo: default, digest: decode_digest(s, default)? })
    }

    /// The digest in nix32.
    pub fn to_nix32(&self) -> String {
        nix32::encode(&self.digest)
    }

    /// The digest in lowercase hex.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.digest)
    }

    /// The digest in padded standard base64.
    pub fn to_base64(&self) -> String {
        BASE64.encode(&self.digest)
    }

    /// The SRI form `algo-<base64>`, as `nix hash --sri` prints it.
    pub fn to_sri(&self) -> String {
        format!("{}-{}", self.algo, self.to_base64())
    }
}

/// `algo:<nix32>`, Nix's own form (as in narinfo files and `nix-store --query --hash`).
impl fmt::Display for NixHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo, self.to_nix32())
    }
}

impl FromStr for NixHash {
    type Err = HashParseError;

    /// Same as [`NixHash::parse`]: the algorithm must be named.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NixHash::parse(s)
    }
}

/// Decodes a digest whose encoding is given away by its length (nix32, hex, or base64 with or
/// without padding).
fn decode_digest(text: &str, algo: HashAlgo) -> Result<Vec<u8>, HashParseError> {
    let n = algo.digest_len();
    let len = text.len();
    if len == nix32::encoded_len(n) {
        nix32::decode(text)
    } else if len == 2 * n {
        HEXLOWER_PERMISSIVE.decode(text.as_bytes()).map_err(|_| HashParseError::InvalidHex { input: text.to_owned() })
    } else if len == BASE64.encode_len(n) || len == BASE64_NOPAD.encode_len(n) {
        decode_sri_digest(text, algo)
    } else {
        Err(HashParseError::BadDigestLength { algo, len, input: text.to_owned() })
    }
}

/// Decodes base64 (padding optional, as Nix's own decoder is lenient about it) and checks the size.
fn decode_sri_digest(text: &str, algo: HashAlgo) -> Result<Vec<u8>, HashParseError> {
    let engine = if text.ends_with('=') { &BASE64 } else { &BASE64_NOPAD };
    let digest =
        engine.decode(text.as_bytes()).map_err(|_| HashParseError::InvalidBase64 { input: text.to_owned() })?;
    if digest.len() != algo.digest_len() {
        return Err(HashParseError::WrongDigestSize { algo, got: digest.len() });
    }
    Ok(digest)
}

/// The SHA-256 of a NAR: the identity Nix gives a store path's contents.
///
/// A fixed-size array rather than a [`NixHash`] because it is a key in every index; ordering is
/// by digest bytes, which is all a map needs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NarHash(pub [u8; 32]);

impl NarHash {
    /// Wraps a raw SHA-256 digest.
    pub fn from_digest(digest: [u8; 32]) -> NarHash {
        NarHash(digest)
    }

    /// SHA-256 of `data`, for small inputs and tests; NARs are hashed while streaming.
    pub fn of_bytes(data: &[u8]) -> NarHash {
        NarHash(sha2::Sha256::digest(data).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest in nix32 (52 characters), as in `/nar/<nix32>.nar` URLs.
    pub fn to_nix32(&self) -> String {
        nix32::encode(&self.0)
    }

    /// The digest in lowercase hex.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// The SRI form `sha256-<base64>`, as `nix path-info --json` prints it.
    pub fn to_sri(&self) -> String {
        format!("sha256-{}", BASE64.encode(&self.0))
    }
}

/// `sha256:<nix32>`, as in narinfo files.
impl fmt::Display for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_nix32())
    }
}

/// Same as Display: a NAR hash is most useful in the form Nix prints.
impl fmt::Debug for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for NarHash {
    type Err = HashParseError;

    /// Accepts every form [`NixHash::parse_with_default`] does; a bare digest is SHA-256 and
    /// any other named algorithm is an error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NixHash::parse_with_default(s, HashAlgo::Sha256)?.try_into()
    }
}

impl From<NarHash> for NixHash {
    fn from(h: NarHash) -> NixHash {
        NixHash { algo: HashAlgo::Sha256, digest: h.0.to_vec() }
    }
}

impl TryFrom<NixHash> for NarHash {
    type Error = HashParseError;

    fn try_from(h: NixHash) -> Result<NarHash, HashParseError> {
        if h.algo != HashAlgo::Sha256 {
            return Err(HashParseError::WrongAlgo { expected: HashAlgo::Sha256, got: h.algo });
        }
        let got = h.digest.len();
        let digest: [u8; 32] =
            h.digest.try_into().map_err(|_| HashParseError::WrongDigestSize { algo: HashAlgo::Sha256, got })?;
        Ok(NarHash(digest))
    }
}

/// An incremental hasher for any [`HashAlgo`], so callers that learn the algorithm at run time
/// (fixed-output hashes, `FileHash`) need not match on it themselves.
#[derive(Clone)]
pub struct Hasher(HasherState);

#[derive(Clone)]
enum HasherState {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A fresh hasher for `algo`.
    pub fn new(algo: HashAlgo) -> Hasher {
        Hasher(match algo {
            HashAlgo::Md5 => HasherState::Md5(md5::Md5::new()),
            HashAlgo::Sha1 => HasherState::Sha1(sha1::Sha1::new()),
            HashAlgo::Sha256 => HasherState::Sha256(sha2::Sha256::new()),
            HashAlgo::Sha512 => HasherState::Sha512(sha2::Sha512::new()),
        })
    }

    /// The algorithm being computed.
    pub fn algo(&self) -> HashAlgo {
        match self.0 {
            HasherState::Md5(_) => HashAlgo::Md5,
            HasherState::Sha1(_) => HashAlgo::Sha1,
            HasherState::Sha256(_) => HashAlgo::Sha256,
            HasherState::Sha512(_) => HashAlgo::Sha512,
        }
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            HasherState::Md5(h) => h.update(data),
            HasherState::Sha1(h) => h.update(data),
            HasherState::Sha256(h) => h.update(data),
            HasherState::Sha512(h) => h.update(data),
        }
    }

    /// The hash of everything fed so far.
    pub fn finish(self) -> NixHash {
        let algo = self.algo();
        let digest = match self.0 {
            HasherState::Md5(h) => h.finalize().to_vec(),
            HasherState::Sha1(h) => h.finalize().to_vec(),
            HasherState::Sha256(h) => h.finalize().to_vec(),
            HasherState::Sha512(h) => h.finalize().to_vec(),
        };
        NixHash { algo, digest }
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256_NIX32: &str = "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";
    const EMPTY_SHA256_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const EMPTY_SHA256_B64: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    /// The NAR hash of `testdata/fixture.nar` as Nix 2.8 printed it: in the narinfo (nix32)
    /// and in `nix path-info --json` (SRI).
    const FIXTURE_NIX32: &str = "07p4bn1pmyp6b486sa7mz6il3rm3q2n479xyc4lbknj9fpfxp5rl";
    const FIXTURE_SRI: &str = "sha256-NJfb3XVJ2rkoYb6nQ6zAo+ZBo/n1KG0QWeb6eoNd5B4=";

    #[test]
    fn nix32_known_pairs() {
        let digest = data_encoding::HEXLOWER.decode(EMPTY_SHA256_HEX.as_bytes()).unwrap();
        assert_eq!(nix32::encode(&digest), EMPTY_SHA256_NIX32);
        assert_eq!(nix32::decode(EMPTY_SHA256_NIX32).unwrap(), digest);

        // Values printed by Nix 2.8 `nix-hash --type <algo> --to-base32 <hex>`.
        let cases: &[(&[u8], HashAlgo, &str)] = &[
            (b"", HashAlgo::Md5, "3y8bwfr609h3lh9ch0izcqq7fl"),
            (b"", HashAlgo::Sha1, "143xibwh31h9bvxzalr0sjvbbvpa6ffs"),
            (b"abc", HashAlgo::Sha256, "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"),
        ];
        for &(data, algo, expected) in cases {
            let h = NixHash::digest_of(algo, data);
            assert_eq!(h.to_nix32(), expected, "{algo}");
            assert_eq!(nix32::decode(expected).unwrap(), h.digest);
        }
    }

    #[test]
    fn nix32_round_trips_every_length() {
        for n in 0..70usize {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let text = nix32::encode(&bytes);
            assert_eq!(text.len(), nix32::encoded_len(n));
            assert_eq!(nix32::decode(&text).unwrap(), bytes, "n = {n}");
        }
    }

    #[test]
    fn nix32_rejects_invalid_char() {
        let mut s = EMPTY_SHA256_NIX32.to_owned();
        s.replace_range(3..4, "e");
        let err = nix32::decode(&s).unwrap_err();
        assert_eq!(err, HashParseError::InvalidNix32Char { ch: 'e', pos: 3, input: s.clone() });
        assert_eq!(err.to_string(), format!("invalid nix32 character 'e' at position 3 in \"{s}\""));
        // Non-ASCII is rejected without panicking on char boundaries.
        let mut s = EMPTY_SHA256_NIX32[..51].to_owned();
        s.push('é');
        assert!(nix32::decode(&s).is_err());
    }

    #[test]
    fn nix32_rejects_overflow_bits() {
        // 52 digits carry 260 bits for 256; the first digit may only use its lowest bit.
        let mut s = EMPTY_SHA256_NIX32.to_owned();
        s.replace_range(0..1, "2");
        assert!(matches!(nix32::decode(&s), Err(HashParseError::Nix32Overflow { .. })));
        s.replace_range(0..1, "1");
        assert!(nix32::decode(&s).is_ok());
    }

    #[test]
    fn nix32_rejects_impossible_length() {
        assert!(matches!(nix32::decode("abc"), Err(HashParseError::InvalidNix32Length { len: 3, .. })));
        assert_eq!(nix32::decode("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn parse_every_form() {
        let expected = NixHash::digest_of(HashAlgo::Sha256, b"");
        for s in [
            format!("sha256:{EMPTY_SHA256_NIX32}"),
            format!("sha256:{EMPTY_SHA256_HEX}"),
            format!("sha256:{}", EMPTY_SHA256_HEX.to_uppercase()),
            format!("sha256:{EMPTY_SHA256_B64}"),
            format!("sha256:{}", EMPTY_SHA256_B64.trim_end_matches('=')),
            format!("sha256-{EMPTY_SHA256_B64}"),
            format!("sha256-{}", EMPTY_SHA256_B64.trim_end_matches('=')),
        ] {
            assert_eq!(NixHash::parse(&s).unwrap(), expected, "{s}");
            assert_eq!(NixHash::parse_with_default(&s, HashAlgo::Md5).unwrap(), expected, "{s}");
        }
        for s in [EMPTY_SHA256_NIX32, EMPTY_SHA256_HEX, EMPTY_SHA256_B64] {
            assert_eq!(NixHash::parse_with_default(s, HashAlgo::Sha256).unwrap(), expected);
            assert!(matches!(NixHash::parse(s), Err(HashParseError::MissingAlgo { .. })));
        }
    }

    #[test]
    fn render_every_form() {
        let h = NixHash::digest_of(HashAlgo::Sha256, b"");
        assert_eq!(h.to_string(), format!("sha256:{EMPTY_SHA256_NIX32}"));
        assert_eq!(h.to_hex(), EMPTY_SHA256_HEX);
        assert_eq!(h.to_base64(), EMPTY_SHA256_B64);
        assert_eq!(h.to_sri(), format!("sha256-{EMPTY_SHA256_B64}"));
        let sha512 = NixHash::digest_of(HashAlgo::Sha512, b"x");
        for s in [sha512.to_string(), sha512.to_sri()] {
            assert_eq!(NixHash::parse(&s).unwrap(), sha512);
        }
    }

    #[test]
    fn reject_unknown_algo() {
        let err = NixHash::parse("sha3:abc").unwrap_err();
        assert_eq!(err.to_string(), "unknown hash algorithm \"sha3\"");
        assert!(matches!(NixHash::parse("blake3-abc"), Err(HashParseError::UnknownAlgo { .. })));
    }

    #[test]
    fn reject_wrong_digest_size() {
        // A SHA-1-sized digest in SRI form labelled sha256.
        let sri = format!("sha256-{}", NixHash::digest_of(HashAlgo::Sha1, b"").to_base64());
        let err = NixHash::parse(&sri).unwrap_err();
        assert_eq!(err.to_string(), "sha256 digest must be 32 bytes, got 20");
        assert!(matches!(NixHash::new(HashAlgo::Md5, vec![0; 3]), Err(HashParseError::WrongDigestSize { got: 3, .. })));
    }

    #[test]
    fn reject_bad_digest_length() {
        let err = NixHash::parse("sha256:abcd").unwrap_err();
        assert!(matches!(err, HashParseError::BadDigestLength { len: 4, .. }));
        assert!(err.to_string().contains("52 (nix32), 64 (hex) or 44 (base64)"));
    }

    #[test]
    fn reject_bad_hex_and_base64() {
        let hex = format!("sha256:{}g", &EMPTY_SHA256_HEX[..63]);
        assert!(matches!(NixHash::parse(&hex), Err(HashParseError::InvalidHex { .. })));
        let b64 = format!("sha256:{}!=", &EMPTY_SHA256_B64[..42]);
        assert!(matches!(NixHash::parse(&b64), Err(HashParseError::InvalidBase64 { .. })));
    }

    #[test]
    fn nar_hash_forms() {
        let h: NarHash = FIXTURE_SRI.parse().unwrap();
        assert_eq!(h.to_nix32(), FIXTURE_NIX32);
        assert_eq!(h.to_string(), format!("sha256:{FIXTURE_NIX32}"));
        assert_eq!(format!("{h:?}"), format!("sha256:{FIXTURE_NIX32}"));
        assert_eq!(h.to_sri(), FIXTURE_SRI);
        for s in
            [FIXTURE_NIX32.to_owned(), format!("sha256:{FIXTURE_NIX32}"), h.to_hex(), format!("sha256:{}", h.to_hex())]
        {
            assert_eq!(s.parse::<NarHash>().unwrap(), h);
        }
        let nix: NixHash = h.into();
        assert_eq!(NarHash::try_from(nix).unwrap(), h);
        assert_eq!(NarHash::of_bytes(include_bytes!("testdata/fixture.nar")), h);
    }

    #[test]
    fn nar_hash_rejects_other_algo() {
        let sha1 = NixHash::digest_of(HashAlgo::Sha1, b"").to_string();
        assert_eq!(
            sha1.parse::<NarHash>().unwrap_err(),
            HashParseError::WrongAlgo { expected: HashAlgo::Sha256, got: HashAlgo::Sha1 }
        );
    }
}
