//! Store paths: `StorePath::parse`, `from_base_name`, `StorePathHash` FromStr.
//!
//! Properties: nothing panics; an accepted path prints back to exactly the input (the hash is canonical
//! nix32 and the name is kept verbatim); its name obeys Nix's rules (so no `/`, `..` or NUL can reach a
//! file name built from it); and `Ord` on store paths agrees with the order of their text, as the
//! module promises. The input is split at the first newline into two candidates to compare.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nixdag::nix::store_path::{StorePath, StorePathHash, HASH_CHARS, MAX_NAME_LEN, STORE_DIR};

fn check(s: &str) -> Option<StorePath> {
    let p = StorePath::parse(s).ok()?;
    assert_eq!(p.to_string(), s);
    assert_eq!(p.to_absolute(), s);
    assert_eq!(format!("{STORE_DIR}/{}", p.base_name()), s);
    assert_eq!(s.parse::<StorePath>().as_ref(), Ok(&p));
    let name = p.name();
    assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN && !name.starts_with('.'), "{name:?}");
    assert!(
        name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b)),
        "name {name:?} has a character Nix forbids"
    );
    assert_eq!(StorePath::new(*p.hash(), name).as_ref(), Ok(&p));
    Some(p)
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (a, b) = s.split_once('\n').unwrap_or((s, ""));

    let pa = check(a);
    let pb = check(b);
    if let (Some(pa), Some(pb)) = (&pa, &pb) {
        assert_eq!(pa.cmp(pb), a.cmp(b), "Ord disagrees with text order: {a} vs {b}");
        assert_eq!(
            pa.hash().cmp(pb.hash()),
            a[..STORE_DIR.len() + 1 + HASH_CHARS].cmp(&b[..STORE_DIR.len() + 1 + HASH_CHARS])
        );
    }

    for base in [a, b] {
        if let Ok(p) = StorePath::from_base_name(base) {
            assert_eq!(p.base_name(), base);
            assert_eq!(StorePath::parse(&p.to_string()).as_ref(), Ok(&p));
        }
        if let Ok(h) = base.parse::<StorePathHash>() {
            assert_eq!(h.to_string(), base);
        }
    }
});
