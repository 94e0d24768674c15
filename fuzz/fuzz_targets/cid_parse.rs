//! CIDs from untrusted text and bytes: `parse_cid` and `cid_from_bytes`.
//!
//! Properties: nothing panics; an accepted CID names a block nixdag can read (`block_hash` succeeds, the
//! codec is raw or dag-pb) and round-trips through its canonical text and binary forms.
//!
//! The parsers accept only the CID itself: the binary form is exactly `to_bytes()`, and the text is one
//! multibase string decoding to exactly `to_bytes()` (fixed finding: the `cid` crate ignores trailing bytes and anything
//! before `/ipfs/`; see `regressions/cid_parse/`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nixdag::dag::cid::{block_hash, cid_from_bytes, parse_cid, Cid, DAG_PB_CODEC, RAW_CODEC};

fn check(cid: &Cid) {
    let hash = block_hash(cid).expect("accepted CID has no nixdag block hash");
    assert!(cid.codec() == RAW_CODEC || cid.codec() == DAG_PB_CODEC);
    assert_eq!(&hash.cid(cid.codec()), cid, "CID is not the one its block hash and codec make");
    let text = cid.to_string();
    assert_eq!(&parse_cid(&text).unwrap_or_else(|e| panic!("{text}: {e}")), cid);
    let bytes = cid.to_bytes();
    assert_eq!(&cid_from_bytes(&bytes).unwrap(), cid);
}

fuzz_target!(|data: &[u8]| {
    match cid_from_bytes(data) {
        Ok(cid) => {
            check(&cid);
            assert_eq!(cid.to_bytes(), data, "cid_from_bytes accepted bytes beyond the CID");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let Ok(s) = std::str::from_utf8(data) else { return };
    match parse_cid(s) {
        Ok(cid) => {
            check(&cid);
            // The whole text is one multibase string holding exactly the CID's bytes: nothing before it
            // (no `/ipfs/` path), nothing after it. Any multibase is a legitimate spelling (`b` base32
            // in either case, `z` base58btc, `m` base64, even `\0` identity).
            match cid::multibase::decode(s) {
                Ok((_, bytes)) => assert_eq!(bytes, cid.to_bytes(), "parse_cid accepted bytes beyond the CID: {s:?}"),
                Err(e) => panic!("parse_cid accepted {s:?}, which is not one multibase string: {e}"),
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
