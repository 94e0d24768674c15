//! A `blocks-0` index value ([`BlockLoc`]), read from the store's redb file.
//!
//! Properties: `BlockLoc::decode` never panics; an accepted value re-encodes to exactly the input bytes and
//! decodes back equal; a framed block lies inside its frame; a delta has depth ≥ 1; errors render.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nixdag::store::tables::{BlockLoc, Form};

fuzz_target!(|data: &[u8]| {
    let loc = match BlockLoc::decode(data) {
        Ok(loc) => loc,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let enc = loc.encode();
    assert_eq!(enc, data, "decode accepted a non-canonical location: {loc:?}");
    assert_eq!(BlockLoc::decode(&enc).expect("encode() output decodes"), loc);
    assert_eq!(loc.form.kind() as u8, data[20]);
    match loc.form {
        Form::Framed { frame_len, start, .. } => {
            assert!(u64::from(start) + u64::from(loc.raw_len) <= u64::from(frame_len), "{loc:?}");
            assert_eq!(loc.record_raw_len(), frame_len);
        }
        Form::Delta { depth, .. } => assert!(depth >= 1, "{loc:?}"),
        _ => assert_eq!(loc.record_raw_len(), loc.raw_len),
    }
    let _ = (loc.form.base(), loc.form.depth());
});
