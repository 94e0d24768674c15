//! The binary-cache gateway's request grammar: `gateway::http_path::parse` (URL paths) and `parse_range`
//! (`Range:` headers), both fed by any HTTP client.
//!
//! Input: the first byte picks what is parsed (and with the next 8 bytes the body size for ranges); the
//! rest is the path or header text.
//!
//! Properties: nothing panics; a `Partial` range satisfies `start < end <= size`, so slicing a body of
//! `size` bytes with it cannot fail; a missing header or one without `bytes=` is `Full`; a parsed resource
//! prints back to exactly the path it was parsed from (hashes are canonical nix32); a file by hash
//! parses back from each canonical spelling of its hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nixdag::gateway::http_path::{parse, parse_range, IpfsTarget, RangeRequest, Resource};

fn check_range(header: &str, size: u64) {
    match parse_range(Some(header), size) {
        RangeRequest::Partial { start, end } => {
            assert!(start < end && end <= size, "{header:?} on {size} bytes gave {start}..{end}");
        }
        RangeRequest::Unsatisfiable => {
            assert!(header.trim().starts_with("bytes="), "{header:?} is not a bytes range");
        }
        RangeRequest::Full => {}
    }
    if !header.trim().starts_with("bytes=") {
        assert_eq!(parse_range(Some(header), size), RangeRequest::Full);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    assert_eq!(parse_range(None, 0), RangeRequest::Full);
    if sel & 1 == 0 {
        if rest.len() < 8 {
            return;
        }
        let size = u64::from_le_bytes(rest[..8].try_into().unwrap());
        let Ok(header) = std::str::from_utf8(&rest[8..]) else { return };
        // Small sizes are where the edge cases are; keep both.
        check_range(header, size);
        check_range(header, size % 1024);
        check_range(header, 0);
    } else {
        let Ok(path) = std::str::from_utf8(rest) else { return };
        let Ok(res) = parse(path) else { return };
        let printed = match &res {
            Resource::Root => Some("/".to_owned()),
            Resource::CacheInfo => Some("/nix-cache-info".to_owned()),
            Resource::NarInfo(h) => Some(format!("/{h}.narinfo")),
            Resource::Listing(h) => Some(format!("/{h}.ls")),
            Resource::Nar { hash, compression } => Some(format!("/nar/{}{}", hash.to_nix32(), compression.extension())),
            Resource::Log => None,
            Resource::Ipfs(IpfsTarget::Block(cid)) => Some(format!("/ipfs/{cid}")),
            Resource::Ipfs(_) => None,
            // A file has many spellings (hex, nix32, base64, SRI, escapes): each canonical one parses back.
            Resource::File(h) => {
                for form in [
                    format!("/{}/{}", h.algo, h.to_hex()),
                    format!("/{}/{}", h.algo, h.to_nix32()),
                    format!("//{}", h.to_sri()),
                ] {
                    assert_eq!(parse(&form).as_ref(), Ok(&res), "{form:?} from {path:?}");
                }
                None
            }
        };
        if let Some(printed) = printed {
            assert_eq!(printed, path, "{res:?}");
        }
    }
});
