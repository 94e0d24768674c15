//! Byte-exact round trips, judged by real Nix: our NAR equals `nix-store --dump`, our NarHash equals
//! Nix's, and what `restore` unpacks hashes the same again.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Stdio;

use sha2::Digest;

use crate::common::*;

/// Empty files and directories, symlinks, executables, deep nesting, non-ASCII names, a 0-byte file.
fn synthetic_tree(root: &Path) {
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("zero-bytes"), b"").unwrap();
    fs::write(root.join("hello.txt"), b"hello, world\n").unwrap();
    let exe = root.join("bin/run");
    fs::create_dir_all(exe.parent().unwrap()).unwrap();
    fs::write(&exe, b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    symlink("../hello.txt", root.join("bin/link-relative")).unwrap();
    symlink("/nonexistent/dangling", root.join("dangling")).unwrap();
    let mut deep = root.join("deep");
    for i in 0..60 {
        deep = deep.join(format!("level{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("bottom"), b"bottom").unwrap();
    fs::write(root.join("ünïcödé-名前-🦀.txt"), "non-ASCII name\n").unwrap();
    fs::create_dir_all(root.join("dir with spaces/ä")).unwrap();
    fs::write(root.join("dir with spaces/ä/x"), b"x").unwrap();
    let mut rng = Xorshift::new(42);
    fs::write(root.join("big.bin"), rng.bytes(3 << 20)).unwrap();
    fs::create_dir_all(root.join("many")).unwrap();
    for i in 0..300 {
        let len = rng.below(5000) as usize;
        fs::write(root.join(format!("many/f{i:04}")), rng.bytes(len)).unwrap();
    }
}

fn check_roundtrip(store: &TestStore, path: &Path) {
    let (hash, _root, size) = store.add(&[path.to_str().unwrap()]);
    assert_eq!(hash, nix_hash(path), "NarHash of {}", path.display());
    let nar = nix_dump(path);
    assert_eq!(size, nar.len() as u64);
    let ours = store.bytes(&["cat", "--nar-hash", &hash]);
    assert!(ours == nar, "cat of {} differs from nix-store --dump", path.display());
    let restored = store.dir.path().join(format!("restored-{}", blake3::hash(path.as_os_str().as_encoded_bytes())));
    store.ok(&["restore", "--nar-hash", &hash, restored.to_str().unwrap()]);
    assert_eq!(nix_hash(&restored), hash, "restore of {}", path.display());
}

#[test]
fn synthetic_tree_roundtrips_byte_exact() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    synthetic_tree(&tree);
    let store = TestStore::new();
    check_roundtrip(&store, &tree);
    // Roots that are not directories: a regular file, an executable, an empty file, a symlink.
    check_roundtrip(&store, &tree.join("hello.txt"));
    check_roundtrip(&store, &tree.join("bin/run"));
    check_roundtrip(&store, &tree.join("zero-bytes"));
    check_roundtrip(&store, &tree.join("dangling"));
    check_roundtrip(&store, &tree.join("empty-dir"));
    store.verify();
}

#[test]
fn ranges_match_nix_dump_slices() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    synthetic_tree(&tree);
    let store = TestStore::new();
    let (hash, _, size) = store.add(&[tree.to_str().unwrap()]);
    let nar = nix_dump(&tree);
    for (a, b) in [(0, 0), (0, 99), (size - 1, size - 1), (1000, 200_000), (65_000, 70_000), (size / 2, size - 1)] {
        let got = store.bytes(&["cat", "--nar-hash", &hash, "--range", &format!("{a}-{b}")]);
        assert!(got == nar[a as usize..=b as usize], "range {a}-{b}");
    }
    let tail = store.bytes(&["cat", "--nar-hash", &hash, "--range", &format!("{}-", size - 10)]);
    assert_eq!(tail, nar[nar.len() - 10..]);
    let err = store.fails(&["cat", "--nar-hash", &hash, "--range", &format!("{size}-{}", size + 5)]);
    assert!(err.contains("outside"), "{err}");
}

/// A file of 1 GiB, generated on the fly; streamed in and out, compared by hash with Nix's.
#[test]
fn one_gib_file_roundtrips() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("huge");
    fs::create_dir_all(&dir).unwrap();
    write_random(&dir.join("one-gib"), 1 << 30, 7);
    fs::write(dir.join("small"), b"neighbour").unwrap();
    let store = TestStore::new();
    let (hash, _, size) = store.add(&[dir.to_str().unwrap()]);
    assert_eq!(hash, nix_hash(&dir));
    // Stream `cat` through SHA-256 without holding it.
    let mut child = store.cmd().args(["cat", "--nar-hash", &hash]).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        n_total += n as u64;
        h.update(&buf[..n]);
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(n_total, size);
    let o = std::process::Command::new("nix-hash").args(["--type", "sha256"]).arg(&dir).output().unwrap();
    assert_eq!(data_encoding::HEXLOWER.encode(&h.finalize()), String::from_utf8(o.stdout).unwrap().trim());
}

/// Real package trees from PyPI, added to the real Nix store, then to nixdag by store path.
#[test]
fn real_store_paths_match_nix() {
    require_nix();
    let trees = crate::dedup::pygments_trees();
    let store = TestStore::new();
    for tree in [&trees.old, &trees.new] {
        let sp = nix_add(tree);
        let (hash, _, size) = store.add(&[sp.to_str().unwrap()]);
        let (nix_nar_hash, nix_size) = nix_path_info(&sp);
        assert_eq!(hash, to_nix32(&nix_nar_hash), "NarHash of {}", sp.display());
        assert_eq!(size, nix_size);
        assert!(store.bytes(&["cat", "--nar-hash", &hash]) == nix_dump(&sp), "NAR of {}", sp.display());
    }
    assert_eq!(store.stat("paths"), 2, "store paths recorded with their narinfo fields");
    store.verify();
}

#[test]
fn nar_stream_and_flat_file_roundtrip() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    synthetic_tree(&tree);
    let nar_file = work.path().join("tree.nar");
    fs::write(&nar_file, nix_dump(&tree)).unwrap();
    let store = TestStore::new();
    let (hash, _, _) = store.add(&["--nar", nar_file.to_str().unwrap()]);
    assert_eq!(hash, nix_hash(&tree));
    assert!(store.bytes(&["cat", "--nar-hash", &hash]) == fs::read(&nar_file).unwrap());

    let tarball = work.path().join("src-1.0.tar.gz");
    write_random(&tarball, 700_000, 3);
    let (sha, root, size) = store.add(&["--file", tarball.to_str().unwrap()]);
    let o = std::process::Command::new("nix-hash")
        .args(["--type", "sha256", "--flat", "--base32"])
        .arg(&tarball)
        .output()
        .unwrap();
    assert_eq!(sha, format!("sha256:{}", String::from_utf8(o.stdout).unwrap().trim()));
    assert_eq!(size, 700_000);
    let want = fs::read(&tarball).unwrap();
    assert!(store.bytes(&["cat", "--file-hash", &sha]) == want);
    assert!(store.bytes(&["cat", &root]) == want, "cat by CID");
    // Any hash form, and the aliases.
    let sri = std::process::Command::new("nix")
        .args(["--extra-experimental-features", "nix-command", "hash", "file", "--sri"])
        .arg(&tarball)
        .output()
        .unwrap();
    let sri = String::from_utf8(sri.stdout).unwrap();
    assert!(store.bytes(&["cat", "--file-hash", sri.trim()]) == want, "SRI form");
    let sha1 = std::process::Command::new("sha1sum").arg(&tarball).output().unwrap();
    let sha1 = format!("sha1:{}", String::from_utf8(sha1.stdout).unwrap().split_whitespace().next().unwrap());
    assert!(store.bytes(&["cat", "--file-hash", &sha1]) == want, "sha1 alias");
    store.verify();
}
