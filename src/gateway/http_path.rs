//! The binary cache URL grammar and `Range` headers, parsed without touching the store.
//!
//! Every hash is checked for shape here, so garbage becomes a 400 and unknown-but-well-formed names a
//! 404, before any lookup (harmonia and snix do the same).

use crate::nix::hash::{nix32, HashAlgo, NarHash, NixHash};
use crate::nix::store_path::StorePathHash;

pub use crate::nix::compression::NarCompression;

/// A resource of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// `/nix-cache-info`
    CacheInfo,
    /// `/<hash>.narinfo`
    NarInfo(StorePathHash),
    /// `/<hash>.ls`
    Listing(StorePathHash),
    /// `/nar/<nix32 sha256>.nar[.xz|.zst|.bz2]`: for downloads the hash is the NarHash; for uploads it
    /// is the hash of the (compressed) file, as Nix names it.
    Nar {
        /// The 32-byte SHA-256 in the name.
        hash: NarHash,
        /// From the extension.
        compression: NarCompression,
    },
    /// A flat file by hash, as hashed mirrors serve them: `/<algo>/<hex|nix32|base64>` (Nix's
    /// `builtin:fetchurl` asks for hex; tarballs.nixos.org answers nix32), `/<SRI>`, and `//<SRI>` (what
    /// nixpkgs' `fetchurl` asks for when the hash is SRI: its algorithm part is empty).
    File(NixHash),
    /// `/ipfs/<cid>`: the IPFS trustless gateway (docs/IPFS.md).
    Ipfs(IpfsTarget),
    /// `/log/<drv>`
    Log,
    /// `/`
    Root,
}

/// What an `/ipfs/` path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpfsTarget {
    /// A block this store may hold (raw or dag-pb, BLAKE3).
    Block(crate::dag::Cid),
    /// An identity CID: the block is the digest itself (`bafkqaaa` is the empty block, the probe).
    Inline(crate::dag::Cid, Vec<u8>),
    /// A well-formed CID that cannot name a block here (another hash or codec), or a path below a CID:
    /// our DAGs are single files, so there is nothing under them by name.
    Elsewhere,
}

/// Why a path is not a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// Shaped like a resource, but its hash is malformed: a client error (400).
    Malformed(String),
    /// Not a resource this cache has (404).
    Unknown,
}

/// Parse a request path (without query string).
pub fn parse(path: &str) -> Result<Resource, PathError> {
    let rest = path.strip_prefix('/').ok_or(PathError::Unknown)?;
    if rest.is_empty() {
        return Ok(Resource::Root);
    }
    if rest == "nix-cache-info" {
        return Ok(Resource::CacheInfo);
    }
    if rest.starts_with("log/") {
        return Ok(Resource::Log);
    }
    if let Some(name) = rest.strip_prefix("nar/") {
        let (stem, compression) =
            [NarCompression::None, NarCompression::Xz, NarCompression::Zstd, NarCompression::Bzip2]
                .into_iter()
                .find_map(|c| name.strip_suffix(c.extension()).map(|s| (s, c)))
                .ok_or(PathError::Unknown)?;
        let digest = nix32::decode(stem)
            .ok()
            .filter(|d| d.len() == 32)
            .ok_or_else(|| PathError::Malformed(format!("{stem:?} is not a nix32 SHA-256")))?;
        let mut h = [0u8; 32];
        h.copy_from_slice(&digest);
        return Ok(Resource::Nar { hash: NarHash(h), compression });
    }
    if let Some(target) = rest.strip_prefix("ipfs/") {
        return ipfs(target).map(Resource::Ipfs);
    }
    if let Some(file) = hashed_mirror(rest) {
        return file.map(Resource::File);
    }
    if rest.contains('/') {
        return Err(PathError::Unknown);
    }
    let (stem, listing) = if let Some(s) = rest.strip_suffix(".narinfo") {
        (s, false)
    } else if let Some(s) = rest.strip_suffix(".ls") {
        (s, true)
    } else {
        return Err(PathError::Unknown);
    };
    let hash: StorePathHash =
        stem.parse().map_err(|_| PathError::Malformed(format!("{stem:?} is not a store path hash")))?;
    Ok(if listing { Resource::Listing(hash) } else { Resource::NarInfo(hash) })
}

fn ipfs(target: &str) -> Result<IpfsTarget, PathError> {
    use crate::dag::cid::{parse_cid, CidError};
    let (text, below) = match target.split_once('/') {
        Some((c, rest)) => (c, !rest.is_empty()),
        None => (target, false),
    };
    let bad = |why: String| PathError::Malformed(format!("{text:?} is not a CID: {why}"));
    let cid = match parse_cid(text) {
        Ok(cid) if !below => return Ok(IpfsTarget::Block(cid)),
        Ok(_) => return Ok(IpfsTarget::Elsewhere),
        // Not one of ours: any CID the `cid` crate reads (CIDv0 `Qm…` included) is well-formed.
        Err(e) => crate::dag::Cid::try_from(text).map_err(|_| match e {
            CidError::Malformed { reason, .. } => bad(reason),
            other => bad(other.to_string()),
        })?,
    };
    const IDENTITY: u64 = 0x00;
    const RAW: u64 = 0x55;
    if cid.hash().code() == IDENTITY && cid.codec() == RAW && !below {
        return Ok(IpfsTarget::Inline(cid, cid.hash().digest().to_vec()));
    }
    Ok(IpfsTarget::Elsewhere)
}

/// The hashed-mirror forms, or `None` when `rest` (the path after its first `/`) is not one. Base64
/// digests may hold `/` and `+`, so everything after the algorithm is the digest; clients that
/// percent-encode those characters are understood too.
fn hashed_mirror(rest: &str) -> Option<Result<NixHash, PathError>> {
    let rest = rest.trim_start_matches('/');
    let algo_of = |name: &str| -> Option<HashAlgo> {
        HashAlgo::ALL.into_iter().find(|a| a.name() == name)
    };
    let (algo, digest, sri) = if let Some((a, d)) = rest.split_once('/').and_then(|(a, d)| Some((algo_of(a)?, d))) {
        (a, d, false)
    } else {
        let (a, d) = rest.split_once('-')?;
        (algo_of(a)?, d, true)
    };
    let digest = percent_decode(digest);
    let bad = || PathError::Malformed(format!("{digest:?} is not a {algo} hash"));
    let parsed = match digest.as_deref() {
        Some(d) if sri => NixHash::parse(&format!("{algo}-{d}")),
        Some(d) => NixHash::parse(&format!("{algo}:{d}")),
        None => return Some(Err(bad())),
    };
    Some(parsed.map_err(|_| bad()))
}

/// `%XX` sequences decoded; `None` for a bad escape or a result that is not ASCII.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok().filter(|s| s.is_ascii())
}

/// `a <= b` for two strings of ASCII digits of any length.
fn decimal_le(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    (a.len(), a) <= (b.len(), b)
}

/// What a `Range:` header asks of a body of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No range (or one this server ignores, as RFC 9110 allows): the whole body, 200.
    Full,
    /// Bytes `[start, end)`, 206.
    Partial {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// Nothing of the body is in the range: 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Parse a `Range:` header value. Only single `bytes=` ranges are served partially; multiple ranges and
/// malformed headers get the full body.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return RangeRequest::Full };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return RangeRequest::Full };
    let (a, b) = (a.trim(), b.trim());
    // RFC 9110 positions are unbounded decimals: one too large for u64 lies past the end of any body, so it
    // saturates (a first position there is unsatisfiable, a last position means "to the end").
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse().unwrap_or(u64::MAX))
    };
    match (a.is_empty(), b.is_empty()) {
        // bytes=-N: the last N bytes
        (true, false) => match num(b) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) if size == 0 => {
                let _ = n;
                RangeRequest::Unsatisfiable
            }
            Some(n) => RangeRequest::Partial { start: size.saturating_sub(n), end: size },
            None => RangeRequest::Full,
        },
        // bytes=A-
        (false, true) => match num(a) {
            Some(start) if start >= size => RangeRequest::Unsatisfiable,
            Some(start) => RangeRequest::Partial { start, end: size },
            None => RangeRequest::Full,
        },
        // bytes=A-B
        (false, false) => match (num(a), num(b)) {
            // Compared as decimals, before saturation: a backwards range is ignored however large.
            (Some(start), Some(last)) if decimal_le(a, b) => {
                if start >= size {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Partial { start, end: last.saturating_add(1).min(size) }
                }
            }
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";

    #[test]
    fn resources() {
        assert_eq!(parse("/nix-cache-info"), Ok(Resource::CacheInfo));
        assert!(matches!(parse("/xkqag603938xw013sv3hgqh30laryip9.narinfo"), Ok(Resource::NarInfo(_))));
        assert!(matches!(parse("/xkqag603938xw013sv3hgqh30laryip9.ls"), Ok(Resource::Listing(_))));
        assert!(matches!(parse(&format!("/nar/{H}.nar")), Ok(Resource::Nar { compression: NarCompression::None, .. })));
        assert!(matches!(
            parse(&format!("/nar/{H}.nar.xz")),
            Ok(Resource::Nar { compression: NarCompression::Xz, .. })
        ));
        assert!(matches!(
            parse(&format!("/nar/{H}.nar.zst")),
            Ok(Resource::Nar { compression: NarCompression::Zstd, .. })
        ));
        assert!(matches!(
            parse(&format!("/nar/{H}.nar.bz2")),
            Ok(Resource::Nar { compression: NarCompression::Bzip2, .. })
        ));
        assert_eq!(parse("/log/abc-foo.drv"), Ok(Resource::Log));
    }

    #[test]
    fn reject_malformed_hashes_as_client_errors() {
        assert!(matches!(parse("/xkqag603938xw013sv3hgqh30laryip.narinfo"), Err(PathError::Malformed(_))));
        assert!(matches!(parse("/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.narinfo"), Err(PathError::Malformed(_))));
        assert!(matches!(parse("/nar/zzzz.nar"), Err(PathError::Malformed(_))));
        assert!(matches!(parse("/nar/../../etc/passwd.nar"), Err(PathError::Malformed(_))));
    }

    #[test]
    fn hashed_mirror_forms() {
        let sha = NixHash::digest_of(HashAlgo::Sha256, b"hello");
        let want = Ok(Resource::File(sha.clone()));
        assert_eq!(parse(&format!("/sha256/{}", sha.to_hex())), want);
        assert_eq!(parse(&format!("/sha256/{}", sha.to_nix32())), want);
        assert_eq!(parse(&format!("/sha256/{}", sha.to_base64())), want);
        assert_eq!(parse(&format!("/sha256/{}", sha.to_base64().trim_end_matches('='))), want);
        assert_eq!(parse(&format!("//{}", sha.to_sri())), want);
        assert_eq!(parse(&format!("/{}", sha.to_sri())), want);
        assert_eq!(parse(&format!("///{}", sha.to_sri())), want);
        assert_eq!(parse(&format!("//{}", sha.to_sri().replace('/', "%2F").replace('+', "%2b"))), want);
        for algo in [HashAlgo::Md5, HashAlgo::Sha1, HashAlgo::Sha512] {
            let h = NixHash::digest_of(algo, b"hello");
            assert_eq!(parse(&format!("/{algo}/{}", h.to_hex())), Ok(Resource::File(h.clone())));
            assert_eq!(parse(&format!("/{algo}/{}", h.to_nix32())), Ok(Resource::File(h.clone())));
            assert_eq!(parse(&format!("//{}", h.to_sri())), Ok(Resource::File(h.clone())));
        }
        // A base64 digest with `/` in it (the case nixpkgs' mirrors must handle).
        let slashed = (0u32..).map(|i| NixHash::digest_of(HashAlgo::Sha256, &i.to_le_bytes())).find(|h| h.to_base64().contains('/'));
        let slashed = slashed.unwrap();
        assert_eq!(parse(&format!("//{}", slashed.to_sri())), Ok(Resource::File(slashed.clone())));
        assert_eq!(parse(&format!("/sha256/{}", slashed.to_base64())), Ok(Resource::File(slashed)));
        for bad in ["/sha256/zzz", "/sha256/", "//sha256-abc", "/md5/%zz", "/sha1/../../etc/passwd", "/sha512-x"] {
            assert!(matches!(parse(bad), Err(PathError::Malformed(_))), "{bad}");
        }
        for other in ["/sha384/abc", "/sha256", "/blake3/abc"] {
            assert_eq!(parse(other), Err(PathError::Unknown), "{other}");
        }
    }

    #[test]
    fn ipfs_paths() {
        let cid = crate::dag::BlockHash::of(b"x").cid(crate::dag::cid::RAW_CODEC);
        assert_eq!(parse(&format!("/ipfs/{cid}")), Ok(Resource::Ipfs(IpfsTarget::Block(cid))));
        assert!(matches!(parse("/ipfs/bafkqaaa"), Ok(Resource::Ipfs(IpfsTarget::Inline(_, ref b))) if b.is_empty()));
        assert_eq!(parse(&format!("/ipfs/{cid}/a/b")), Ok(Resource::Ipfs(IpfsTarget::Elsewhere)));
        // sha2-256 (a CIDv0 and its v1 form): well-formed, not ours.
        let v0 = "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n";
        assert_eq!(parse(&format!("/ipfs/{v0}")), Ok(Resource::Ipfs(IpfsTarget::Elsewhere)));
        for bad in ["/ipfs/", "/ipfs/not-a-cid", "/ipfs/bafy"] {
            assert!(matches!(parse(bad), Err(PathError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for p in ["/favicon.ico", "/a/b/c", "/nar/x.tar", "relative", "/.narinfo.x"] {
            assert_eq!(parse(p), Err(PathError::Unknown), "{p}");
        }
    }

    #[test]
    fn ranges() {
        use RangeRequest::*;
        let cases: &[(&str, u64, RangeRequest)] = &[
            ("bytes=0-0", 10, Partial { start: 0, end: 1 }),
            ("bytes=9-9", 10, Partial { start: 9, end: 10 }),
            ("bytes=2-5", 10, Partial { start: 2, end: 6 }),
            ("bytes=2-500", 10, Partial { start: 2, end: 10 }),
            ("bytes=3-", 10, Partial { start: 3, end: 10 }),
            ("bytes=-4", 10, Partial { start: 6, end: 10 }),
            ("bytes=-500", 10, Partial { start: 0, end: 10 }),
            ("bytes=10-", 10, Unsatisfiable),
            ("bytes=10-20", 10, Unsatisfiable),
            ("bytes=-0", 10, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=5-2", 10, Full),
            ("bytes=0-1,4-5", 10, Full),
            ("items=0-1", 10, Full),
            ("bytes=a-b", 10, Full),
            ("bytes=-", 10, Full),
            ("bytes=+1-2", 10, Full),
            // RFC 9110 edge cases: decimal overflow saturates; first position at/after the end is 416.
            ("bytes=99999999999999999999-", 10, Unsatisfiable),
            ("bytes=18446744073709551615-", 10, Unsatisfiable),
            ("bytes=0-99999999999999999999", 10, Partial { start: 0, end: 10 }),
            ("bytes=0-18446744073709551615", 10, Partial { start: 0, end: 10 }),
            ("bytes=3-18446744073709551614", 10, Partial { start: 3, end: 10 }),
            ("bytes=-99999999999999999999", 10, Partial { start: 0, end: 10 }),
            ("bytes=99999999999999999999-5", 10, Full),
            // Found by fuzzing: a backwards range of two overflowing positions is ignored too.
            ("bytes=18446744073709551616-18446744073709551615", 10, Full),
            ("bytes=000-0009", 10, Partial { start: 0, end: 10 }),
        ];
        for (h, size, want) in cases {
            assert_eq!(parse_range(Some(h), *size), *want, "{h} of {size}");
        }
        assert_eq!(parse_range(None, 10), Full);
    }
}
