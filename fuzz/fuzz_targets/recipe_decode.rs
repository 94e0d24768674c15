//! A stored recompression recipe (the body of a recipe block), read back from packs on disk.
//!
//! Properties: `Recipe::decode` never panics; it is strict, so an accepted input re-encodes to exactly the
//! same bytes, and those decode to an equal recipe; `describe()` and `codec_name()` work; errors render;
//! every accepted recipe can run: `rebuild` over a short content succeeds and (gzip) writes the stored header
//! first, (bzip2, xz) writes a file of its codec
//! (decode must refuse parameters the compressor rejects, or a stored file could never be read back).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nixdag::recompress::{rebuild, Codec, Recipe};

fuzz_target!(|data: &[u8]| {
    let recipe = match Recipe::decode(data) {
        Ok(r) => r,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let enc = recipe.encode();
    assert_eq!(enc, data, "decode accepted a non-canonical recipe ({})", recipe.describe());
    let again = Recipe::decode(&enc).expect("encode() output decodes");
    assert_eq!(again, recipe);
    let _ = (recipe.describe(), recipe.codec_name());
    let mut out = Vec::new();
    if let Err(e) = rebuild(&recipe, &b"fuzz content fuzz content\n"[..], &mut out) {
        panic!("rebuild with a decoded recipe fails: {e} ({})", recipe.describe());
    }
    match recipe.codec() {
        Codec::Gzip => {
            // [1][tag][5 parameter bytes][header length u32] header
            let header = &data[11..];
            assert!(out.starts_with(header), "rebuild does not start with the stored header");
            assert!(out.len() >= header.len() + 2 + 8, "rebuild has no deflate body and trailer");
        }
        // The whole file is the library's: it must be one the detector recognises.
        c => assert_eq!(nixdag::recompress::detect(&out), Some(c), "{}", recipe.describe()),
    }
});
