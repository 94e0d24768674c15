//! How blocks are stored (`add --storage`): neighbouring blocks share zstd frames, a block resembling a
//! stored one is kept as a delta on it, and `legacy` keeps format 1's one-record-per-block way. Whatever
//! the form, `cat` gives back exactly what `nix-store --dump` gives.

use std::fs;
use std::path::Path;

use crate::common::*;

/// Version 1 of a package-like tree: ~3 MiB in twelve large files and a few small ones.
fn tree_v1(dir: &Path) {
    let mut rng = Xorshift::new(2024);
    fs::create_dir_all(dir.join("share/doc")).unwrap();
    for i in 0..12 {
        fs::write(dir.join(format!("share/data-{i:02}.txt")), nix_words(&mut rng, 256 * 1024)).unwrap();
    }
    for i in 0..20 {
        let n = 200 + rng.below(3000) as usize;
        fs::write(dir.join(format!("share/doc/note-{i:02}")), nix_words(&mut rng, n)).unwrap();
    }
}

/// Version 2: a copy of `v1` with a few small in-place edits in four of the large files.
fn tree_v2(v1: &Path, dir: &Path) {
    copy_tree(v1, dir);
    let mut rng = Xorshift::new(7);
    for i in [1, 4, 7, 10] {
        let p = dir.join(format!("share/data-{i:02}.txt"));
        let mut b = fs::read(&p).unwrap();
        for _ in 0..3 {
            let at = rng.below(b.len() as u64 - 16) as usize;
            b[at..at + 12].copy_from_slice(b"version 2.0!");
        }
        fs::write(&p, b).unwrap();
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

pub(crate) struct Versions {
    _work: tempfile::TempDir,
    pub(crate) v1: std::path::PathBuf,
    pub(crate) v2: std::path::PathBuf,
}

pub(crate) fn versions() -> Versions {
    let work = tempfile::tempdir().unwrap();
    let (v1, v2) = (work.path().join("v1"), work.path().join("v2"));
    tree_v1(&v1);
    tree_v2(&v1, &v2);
    Versions { _work: work, v1, v2 }
}

#[test]
fn default_storage_uses_frames_and_deltas_and_round_trips() {
    require_nix();
    let t = versions();
    let store = TestStore::new();
    let (h1, _, size1) = store.add(&[t.v1.to_str().unwrap()]);
    let (h2, _, _) = store.add(&[t.v2.to_str().unwrap()]);
    assert_ne!(h1, h2);
    assert!(size1 > 3 << 20, "{size1}");
    let stats = store.stats();
    let forms = &stats["forms"];
    eprintln!("v1 + v2, default storage: {forms}");
    assert!(forms["frames"].as_u64().unwrap() > 0, "no frames: {stats:#}");
    assert!(forms["delta_blocks"].as_u64().unwrap() > 0, "no deltas after a small edit: {stats:#}");
    assert!(forms["delta_stored_bytes"].as_u64().unwrap() * 10 < forms["delta_raw_bytes"].as_u64().unwrap());
    assert!(forms["max_delta_depth"].as_u64().unwrap() >= 1);
    for (h, dir) in [(&h1, &t.v1), (&h2, &t.v2)] {
        assert_eq!(*h, nix_hash(dir));
        let ours = store.bytes(&["cat", "--nar-hash", h]);
        assert!(ours == nix_dump(dir), "cat of {} differs from nix-store --dump", dir.display());
    }
    store.verify();
}

#[test]
fn legacy_storage_uses_neither_frames_nor_deltas() {
    require_nix();
    let t = versions();
    let store = TestStore::new();
    let (h1, _, _) = store.add(&["--storage", "legacy", t.v1.to_str().unwrap()]);
    let (h2, _, _) = store.add(&["--storage", "legacy", t.v2.to_str().unwrap()]);
    let stats = store.stats();
    let forms = &stats["forms"];
    assert_eq!(forms["frames"], 0, "{stats:#}");
    assert_eq!(forms["framed_blocks"], 0, "{stats:#}");
    assert_eq!(forms["delta_blocks"], 0, "{stats:#}");
    assert!(forms["zstd_blocks"].as_u64().unwrap() > 0, "{stats:#}");
    for (h, dir) in [(&h1, &t.v1), (&h2, &t.v2)] {
        let ours = store.bytes(&["cat", "--nar-hash", h]);
        assert!(ours == nix_dump(dir), "cat of {} differs from nix-store --dump", dir.display());
    }
    store.verify();
}

#[test]
fn unknown_storage_option_is_a_one_line_error() {
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("f"), b"hello").unwrap();
    let store = TestStore::new();
    let line = store.fails(&["add", "--storage", "colour=blue", work.path().join("f").to_str().unwrap()]);
    assert!(line.contains("colour"), "{line}");
    let line = store.fails(&["add", "--storage", "frames=256K,level=99", work.path().join("f").to_str().unwrap()]);
    assert!(line.contains("level=99"), "{line}");
}

/// `dir` packed by GNU tar (reproducibly) and compressed by the real `tool` (`xz` or `bzip2`) into `out`.
pub(crate) fn tarball(dir: &Path, tool: &str, out: &Path) {
    let tar = out.with_extension("");
    let st = std::process::Command::new("tar")
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let st = std::process::Command::new(tool)
        .args(["-k", "-f"])
        .arg(&tar)
        .status()
        .unwrap_or_else(|e| panic!("{tool} (scripts/test installs it): {e}"));
    assert!(st.success());
    let made = tar.with_extension(if tool == "xz" { "tar.xz" } else { "tar.bz2" });
    fs::rename(made, out).unwrap();
}

/// Two versions of a source as `.tar.xz` and `.tar.bz2` from Debian's `xz` and `bzip2`: stored as their
/// content plus a recipe (so version 2 costs little beside version 1), and given back byte for byte,
/// added as flat files and, through real Nix, as store paths.
#[test]
fn xz_and_bzip2_tarballs_are_rebuilt_and_versions_share_blocks() {
    require_nix();
    let t = versions();
    let work = tempfile::tempdir().unwrap();
    for tool in ["xz", "bzip2"] {
        let store = TestStore::new();
        let ext = if tool == "xz" { "tar.xz" } else { "tar.bz2" };
        let (f1, f2) = (work.path().join(format!("pkg-1.{ext}")), work.path().join(format!("pkg-2.{ext}")));
        tarball(&t.v1, tool, &f1);
        tarball(&t.v2, tool, &f2);
        store.add(&["--file", f1.to_str().unwrap()]);
        store.ok(&["repack"]);
        let after_v1 = store.stat("pack_bytes");
        assert!(store.stats()["forms"]["rebuilt_blocks"].as_u64().unwrap() > 0, "{tool}: {:#}", store.stats());
        store.add(&["--file", f2.to_str().unwrap()]);
        store.ok(&["repack"]);
        let v2_cost = store.stat("pack_bytes") - after_v1;
        let v2_len = fs::metadata(&f2).unwrap().len();
        eprintln!("{tool}: version 2 ({v2_len} bytes) added {v2_cost} pack bytes");
        assert!(v2_cost * 10 < v2_len, "{tool}: version 2 cost {v2_cost} of {v2_len} bytes");
        for f in [&f1, &f2] {
            let sha = sha256_hex(&fs::read(f).unwrap());
            let ours = store.bytes(&["cat", "--file-hash", &format!("sha256:{sha}")]);
            assert!(ours == fs::read(f).unwrap(), "{}: cat differs", f.display());
        }
        // The same file as a store path (a flat-file NAR), as fetchurl leaves it.
        let p = nix_add(&f2);
        let (h, _, _) = store.add(&[p.to_str().unwrap()]);
        assert!(store.bytes(&["cat", "--nar-hash", &h]) == nix_dump(&p), "{tool}: NAR of {}", p.display());
        store.ok(&["repack"]);
        assert!(store.bytes(&["cat", "--nar-hash", &h]) == nix_dump(&p), "{tool}: NAR of {}", p.display());
        store.verify();
    }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(b))
}

/// A source tarball next to its unpacked tree: the tar's members are cut where the NAR's files are
/// (`chunk/tar.rs`), so the tarball costs little more than its recipe and its small files.
#[test]
fn a_tarball_shares_whole_chunks_with_its_unpacked_tree() {
    require_nix();
    let t = versions();
    let work = tempfile::tempdir().unwrap();
    let store = TestStore::new();
    let p = nix_add(&t.v1);
    store.add(&[p.to_str().unwrap()]);
    let before = store.stat("pack_bytes");
    let f = work.path().join("pkg-1.tar.xz");
    tarball(&t.v1, "xz", &f);
    store.add(&["--file", f.to_str().unwrap()]);
    store.ok(&["repack"]);
    let cost = store.stat("pack_bytes") - before;
    let len = fs::metadata(&f).unwrap().len();
    eprintln!("tarball of {len} bytes next to its tree: {cost} pack bytes");
    assert!(cost * 10 < len, "the tarball cost {cost} of its {len} bytes");
    let sha = sha256_hex(&fs::read(&f).unwrap());
    assert!(store.bytes(&["cat", "--file-hash", &format!("sha256:{sha}")]) == fs::read(&f).unwrap());
    store.verify();
}

/// The default `tarballs=later`: `add` stores a tarball as it is, at full speed, says so, and queues it;
/// `repack` turns it into content plus a recipe, frees the old records, and takes it off the queue. The
/// bytes read back the same before and after, through `cat` and `export-car`'s walk (`verify`).
#[test]
fn add_queues_tarballs_and_repack_converts_them() {
    let t = versions();
    let work = tempfile::tempdir().unwrap();
    let store = TestStore::new();
    let (f1, f2) = (work.path().join("pkg-1.tar.xz"), work.path().join("pkg-2.tar.xz"));
    tarball(&t.v1, "xz", &f1);
    tarball(&t.v2, "xz", &f2);
    let out = store.output(&["add", "--file", f1.to_str().unwrap(), f2.to_str().unwrap()]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 compressed file(s) are stored as they are") && err.contains("nixdag repack"), "{err}");
    assert_eq!(store.stat("repack_queued"), 2);
    assert_eq!(store.stats()["forms"]["rebuilt_blocks"].as_u64(), Some(0));
    let queued_bytes = store.stat("pack_bytes");
    let read =
        |f: &Path| store.bytes(&["cat", "--file-hash", &format!("sha256:{}", sha256_hex(&fs::read(f).unwrap()))]);
    assert!(read(&f1) == fs::read(&f1).unwrap() && read(&f2) == fs::read(&f2).unwrap());
    store.verify();

    let report: serde_json::Value = serde_json::from_str(&store.ok(&["repack", "--json"])).unwrap();
    assert_eq!((report["converted"].as_u64(), report["kept"].as_u64()), (Some(2), Some(0)), "{report:#}");
    assert!(report["compaction"]["disk_bytes_freed"].as_u64().unwrap() > 0, "{report:#}");
    assert_eq!(store.stat("repack_queued"), 0);
    assert!(store.stats()["forms"]["rebuilt_blocks"].as_u64().unwrap() > 0);
    let repacked_bytes = store.stat("pack_bytes");
    eprintln!("two .tar.xz versions: {queued_bytes} pack bytes queued, {repacked_bytes} after repack");
    assert!(repacked_bytes < queued_bytes, "{repacked_bytes} >= {queued_bytes}");
    assert!(read(&f1) == fs::read(&f1).unwrap() && read(&f2) == fs::read(&f2).unwrap());
    store.verify();
    // Nothing left: a second repack does nothing; `tarballs=on` converts during the add instead.
    assert!(store.ok(&["repack"]).starts_with("0 converted"));
    let f3 = work.path().join("pkg-3.tar.bz2");
    tarball(&t.v2, "bzip2", &f3);
    store.add(&["--storage", "tarballs=on", "--file", f3.to_str().unwrap()]);
    assert_eq!(store.stat("repack_queued"), 0);
    assert!(read(&f3) == fs::read(&f3).unwrap());
    store.verify();
}
