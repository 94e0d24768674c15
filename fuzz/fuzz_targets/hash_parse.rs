//! Nix hashes in every textual form: `NixHash::parse`, `parse_with_default`, `NarHash` FromStr and the
//! nix32 codec.
//!
//! Properties: nothing panics; every accepted hash has a digest of its algorithm's length and re-parses
//! equal from each of its printed forms (`algo:nix32`, `algo:hex`, `algo:base64`, SRI, bare digests);
//! nix32 is canonical (`encode(decode(s)) == s`) and `decode(encode(b)) == b` for any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nixdag::nix::hash::{nix32, HashAlgo, NarHash, NixHash};

fn check_forms(h: &NixHash) {
    assert_eq!(h.digest.len(), h.algo.digest_len(), "{h:?}");
    let algo = h.algo;
    for text in [
        h.to_string(),
        h.to_sri(),
        format!("{algo}:{}", h.to_nix32()),
        format!("{algo}:{}", h.to_hex()),
        format!("{algo}:{}", h.to_base64()),
        format!("{algo}:{}", h.to_base64().trim_end_matches('=')),
    ] {
        assert_eq!(&NixHash::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}")), h, "{text}");
        assert_eq!(&text.parse::<NixHash>().unwrap(), h, "{text}");
    }
    for bare in [h.to_nix32(), h.to_hex(), h.to_base64()] {
        let got = NixHash::parse_with_default(&bare, algo).unwrap_or_else(|e| panic!("{bare}: {e}"));
        assert_eq!(&got, h, "{bare}");
    }
    assert_eq!(nix32::decode(&h.to_nix32()).unwrap(), h.digest);
}

fuzz_target!(|data: &[u8]| {
    // The raw bytes themselves: decode(encode(x)) == x.
    let enc = nix32::encode(data);
    assert_eq!(enc.len(), nix32::encoded_len(data.len()));
    assert_eq!(nix32::decoded_len(enc.len()), Some(data.len()));
    assert_eq!(nix32::decode(&enc).unwrap(), data);

    let Ok(s) = std::str::from_utf8(data) else { return };

    if let Ok(bytes) = nix32::decode(s) {
        assert_eq!(nix32::encode(&bytes), s, "nix32 decoding is not canonical");
    }

    if let Ok(h) = NixHash::parse(s) {
        check_forms(&h);
    }
    for algo in HashAlgo::ALL {
        if let Ok(h) = NixHash::parse_with_default(s, algo) {
            check_forms(&h);
            if !s.contains([':', '-']) {
                assert_eq!(h.algo, algo);
            }
        }
    }

    if let Ok(algo) = s.parse::<HashAlgo>() {
        assert_eq!(algo.name(), s);
    }

    match s.parse::<NarHash>() {
        Ok(n) => {
            let h = NixHash::from(n);
            check_forms(&h);
            for text in [n.to_string(), n.to_sri(), n.to_hex(), n.to_nix32()] {
                assert_eq!(text.parse::<NarHash>().unwrap(), n, "{text}");
            }
            assert_eq!(NarHash::try_from(h).unwrap(), n);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
