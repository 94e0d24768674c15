//! `.narinfo` text from a binary cache.
//!
//! Properties: parsing never panics; on success `render()` parses again to an equal value, rendering is
//! a fixed point (render(parse(render(x))) == render(x)), and the signing fingerprint can be computed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nixdag::nix::narinfo::NarInfo;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let info = match NarInfo::parse(text) {
        Ok(info) => info,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let rendered = info.render();
    let again = match NarInfo::parse(&rendered) {
        Ok(again) => again,
        Err(e) => panic!("render() output does not parse: {e}\n--- rendered ---\n{rendered}"),
    };
    assert_eq!(info, again, "render() does not round-trip\n--- rendered ---\n{rendered}");
    assert_eq!(rendered, again.render(), "render() is not a fixed point");
    let fp = info.fingerprint();
    assert!(fp.starts_with("1;/nix/store/"), "{fp}");
});
