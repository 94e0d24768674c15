//! A compressed tarball (`.tar.gz`, `.tgz`, `.crate`) offered for storage as content + recipe.
//!
//! Properties: `analyze` never panics; if it returns a recipe, the content callback saw the whole
//! decompressed stream and `rebuild` of that recipe over it reproduces the input byte for byte; the recipe
//! encodes to bytes that decode to an equal recipe (and re-encode identically); `describe()` works.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nixdag::recompress::{analyze, detect, rebuild, Recipe};

fuzz_target!(|data: &[u8]| {
    let mut content = Vec::new();
    let recipe = match analyze(data, |c| {
        content.extend_from_slice(c);
        Ok(())
    }) {
        Ok(Some(recipe)) => recipe,
        Ok(None) => return,
        Err(e) => panic!("analyze of an in-memory input returned Err: {e}"),
    };
    assert_eq!(detect(data), Some(recipe.codec()), "recipe codec differs from the sniffed one");
    let _ = recipe.describe();
    let mut out = Vec::with_capacity(data.len());
    if let Err(e) = rebuild(&recipe, &content[..], &mut out) {
        panic!("rebuild of an accepted recipe failed: {e} ({})", recipe.describe());
    }
    assert!(
        out == data,
        "rebuild differs from the input ({}): {} vs {} bytes",
        recipe.describe(),
        out.len(),
        data.len()
    );
    let enc = recipe.encode();
    let back = match Recipe::decode(&enc) {
        Ok(back) => back,
        Err(e) => panic!("encode() output does not decode: {e} ({})", recipe.describe()),
    };
    assert_eq!(back, recipe, "recipe does not round-trip");
    assert_eq!(back.encode(), enc, "encode() is not canonical");
});
