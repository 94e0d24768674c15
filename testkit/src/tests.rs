//! Every generator's output, pinned: a digest of what it makes for fixed arguments. The tests that use
//! the kit were tuned on these bytes (see the crate's documentation), so a change to any generator must
//! show here first; a new kind of data is a new generator, not a change to one of these.

use std::fs;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;

/// 64-bit FNV-1a: enough to tell one output from another, and nothing to depend on.
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3))
}

/// A scratch directory of this test's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("nixdag-testkit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Paths, modes, link targets and contents of a tree, in one byte string.
fn tree_bytes(root: &Path) -> Vec<u8> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let mut v = p.strip_prefix(root).unwrap().as_os_str().as_encoded_bytes().to_vec();
            if m.is_dir() {
                dirs.push(p);
            } else if m.file_type().is_symlink() {
                v.extend_from_slice(b" -> ");
                v.extend_from_slice(fs::read_link(&p).unwrap().as_os_str().as_encoded_bytes());
            } else {
                v.extend_from_slice(format!(" {:o}\n", m.permissions().mode() & 0o777).as_bytes());
                v.extend_from_slice(&fs::read(&p).unwrap());
            }
            entries.push(v);
        }
    }
    entries.sort();
    entries.concat()
}

#[test]
fn random_sources_are_pinned() {
    // SplitMix64's first output for state 0, as its reference implementation gives it.
    assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    let mut x = Xorshift::new(5);
    let words: Vec<u64> = (0..4).map(|_| x.next_u64()).collect();
    assert_eq!(words, [0xbe6f263aaff8bef1, 0x1c59458f94ced3cc, 0xf871a22c18fc3d6b, 0x5f4fb9ae07cdffd1]);
    assert_eq!((x.below(1000), x.below(0)), (454, 0));
    assert_eq!(fnv(&Xorshift::new(42).bytes(100_003)), 0x618e688808b98279);
    assert_eq!(fnv(&Xorshift::from_state(1).low_bytes(65_536)), 0x4d5383e068e14254);
}

#[test]
fn bytes_are_pinned() {
    assert_eq!(fnv(&noise(1, 40_000)), 0xd54fbef9850a804a);
    assert_eq!(fnv(&splitmix_bytes(7, 8192)), 0xa371a9b86e22c75c);
    assert_eq!(fnv(&xorshift_bytes(7, 100_000)), 0x14336d57e2f843ae);
    assert_eq!(fnv(&std_rng_bytes(1, 100_000)), 0x057b017e35e5ad82);
    assert_eq!(fnv(&edited(&noise(7, 64 * 1024), 1)), 0x5d7d203c32ece553);
}

#[test]
fn texts_are_pinned() {
    assert_eq!(fnv(&store_words(1, 30_000)), 0x7e0193d54a6a146d);
    assert_eq!(fnv(&nix_words(&mut Xorshift::new(2024), 100_000)), 0xcee9d8b26b90a9cd);
    assert_eq!(fnv(&rust_tokens(1, 100_000)), 0xef6e230399334132);
    assert_eq!(fnv(&source_words(&mut StdRng::seed_from_u64(3), 100_000)), 0x0b86a7b4fffb68df);
}

#[test]
fn tar_and_nar_bytes_are_pinned() {
    assert_eq!(fnv(&tarball_content(1)), 0x483764d1c74f7dc6);
    assert_eq!(fnv(&tar_stream(8, 12, 4_000)), 0xf0bcd4aa7de1ff2c);
    let readme = store_words(9, 3000);
    assert_eq!(fnv(&tar_of(&[("pkg-2.0/README", &readme), ("pkg-2.0/empty", b"")])), 0xdcee242c82edfe78);
    assert_eq!(tok(b"type"), b"\x04\0\0\0\0\0\0\0type\0\0\0\0");
    assert_eq!(toks(&[b"", b"regular"]), b"\0\0\0\0\0\0\0\0\x07\0\0\0\0\0\0\0regular\0");
}

#[test]
fn files_and_trees_are_pinned() {
    let dir = Scratch::new("pins");
    fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("random");
    write_random(&file, 2 * MIB as u64 + 3, 9);
    assert!(fs::read(&file).unwrap() == Xorshift::new(9).bytes(2 * MIB + 3), "not the stream Xorshift::new(9) makes");
    let s = package_tree(&dir.0.join("pkg"), 3 * MIB, 3);
    assert_eq!((s.bytes, s.files, fnv(&tree_bytes(&dir.0.join("pkg")))), (3242737, 23, 0x7573b21e0ffee3b2));
    let s = small_files_tree(&dir.0.join("small"), 200, 4);
    assert_eq!((s.bytes, s.files, fnv(&tree_bytes(&dir.0.join("small")))), (413869, 200, 0x3eec51db467c3ae4));
}
