//! Tests across the NAR writer, parser, restore and listing, checked against real Nix where it
//! is installed and against fixtures Nix 2.8 produced (`src/nix/testdata/`).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::wire::{self, put_str};
use super::*;

/// `nix-store --dump` of a derivation output holding a directory tree, an executable, a
/// symlink and a file with a store reference (see `narinfo.rs` for its narinfo).
const FIXTURE_NAR: &[u8] = include_bytes!("../testdata/fixture.nar");
/// The `.ls` file Nix 2.8 wrote for it (`write-nar-listing=true`).
const FIXTURE_LS: &str = include_str!("../testdata/fixture.ls");

fn nix_store_available() -> bool {
    let found = Command::new("nix-store").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("note: nix-store not found on PATH; skipping comparison with real Nix");
    }
    found
}

fn nix_store_dump(path: &Path) -> Vec<u8> {
    let out = Command::new("nix-store").arg("--dump").arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "nix-store --dump {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn dump(path: &Path) -> Vec<u8> {
    let mut nar = Vec::new();
    let summary = dump_path(path, &mut nar).unwrap();
    assert_eq!(summary.nar_size, nar.len() as u64);
    assert_eq!(summary.nar_hash, NarHash::of_bytes(&nar));
    nar
}

/// Deterministic filler, so files are not all zeros and chunk boundaries matter.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ seed).collect()
}

fn write_mode(path: &Path, data: &[u8], mode: u32) {
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree exercising every node kind and the corner cases of the encoding.
fn synthetic_tree() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    write_mode(&root.join("empty"), b"", 0o644);
    fs::create_dir(root.join("emptydir")).unwrap();
    std::os::unix::fs::symlink("target/does/not/exist", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("nested", root.join("dirlink")).unwrap();
    write_mode(&root.join("exec"), b"#!/bin/sh\necho hi\n", 0o755);
    write_mode(&root.join("owner-exec-only"), b"x", 0o700);
    write_mode(&root.join("group-exec-only"), b"x", 0o654);
    write_mode(&root.join("seven"), b"1234567", 0o644);
    write_mode(&root.join("eight"), b"12345678", 0o644);
    write_mode(&root.join("big"), &pattern(200_003, 7), 0o644);
    // Byte order, not locale order: "B" < "a" < "a-b" < "a.b" < "a0" < "ä".
    for name in ["B", "a", "a-b", "a.b", "a0", "ä"] {
        write_mode(&root.join(name), name.as_bytes(), 0o644);
    }
    write_mode(&root.join("ünïcødé 名前"), "non-ASCII ✓\n".as_bytes(), 0o644);
    write_mode(&root.join("new\nline"), b"odd but legal", 0o644);
    let deep = root.join("nested/a/b/c");
    fs::create_dir_all(&deep).unwrap();
    write_mode(&deep.join("deep.bin"), &pattern(70_000, 3), 0o755);
    fs::create_dir(root.join("nested/a/empty")).unwrap();
    (tmp, root)
}

#[test]
fn dump_matches_nix_store_dump() {
    let (tmp, root) = synthetic_tree();
    let ours = dump(&root);
    if !nix_store_available() {
        return;
    }
    assert!(ours == nix_store_dump(&root), "NAR of the synthetic tree differs");
    for single in ["exec", "empty", "big", "dangling", "emptydir", "nested"] {
        let p = root.join(single);
        assert!(dump(&p) == nix_store_dump(&p), "NAR of {single} differs");
    }
    drop(tmp);
}

#[test]
fn dump_matches_fixture() {
    // The fixture restored and dumped again gives Nix's bytes back.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let summary = restore(FIXTURE_NAR, &out).unwrap();
    assert_eq!(summary.nar_size, FIXTURE_NAR.len() as u64);
    assert_eq!(summary.nar_hash.to_string(), "sha256:07p4bn1pmyp6b486sa7mz6il3rm3q2n479xyc4lbknj9fpfxp5rl");
    assert!(dump(&out) == FIXTURE_NAR);
}

#[test]
fn executable_is_owner_execute_bit() {
    let (_tmp, root) = synthetic_tree();
    let listing = list(&dump(&root)[..]).unwrap();
    let exec = |p: &str| match listing.get(p) {
        Some(NarEntry::Regular { executable, .. }) => *executable,
        other => panic!("{p}: {other:?}"),
    };
    assert!(exec("exec"));
    assert!(exec("owner-exec-only"));
    assert!(!exec("group-exec-only"));
    assert!(!exec("big"));
}

/// A sink that records where the hooks fire.
#[derive(Default)]
struct HookRecorder {
    bytes: Vec<u8>,
    /// `(offset of first contents byte, declared len, offset at end hook)`
    files: Vec<(u64, u64, Option<u64>)>,
    calls: usize,
}

impl NarSink for HookRecorder {
    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.calls += 1;
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }
    fn file_contents_begin(&mut self, len: u64) -> io::Result<()> {
        assert!(self.files.last().is_none_or(|f| f.2.is_some()), "begin twice");
        self.files.push((self.bytes.len() as u64, len, None));
        Ok(())
    }
    fn file_contents_end(&mut self) -> io::Result<()> {
        let last = self.files.last_mut().expect("end without begin");
        assert!(last.2.is_none(), "end twice");
        last.2 = Some(self.bytes.len() as u64);
        Ok(())
    }
}

/// Collects the regular files of a listing with their paths.
fn regular_files(entry: &NarEntry, path: String, out: &mut Vec<(String, u64, u64)>) {
    match entry {
        NarEntry::Regular { size, nar_offset, .. } => out.push((path, *size, *nar_offset)),
        NarEntry::Directory { entries } => {
            for (name, child) in entries {
                regular_files(child, format!("{path}/{}", String::from_utf8_lossy(name)), out);
            }
        }
        NarEntry::Symlink { .. } => {}
    }
}

#[test]
fn copy_validated_reproduces_bytes_and_fires_hooks() {
    let (_tmp, root) = synthetic_tree();
    for nar in [dump(&root), FIXTURE_NAR.to_vec()] {
        let mut rec = HookRecorder::default();
        let summary = copy_validated(&nar[..], &mut rec).unwrap();
        assert!(rec.bytes == nar, "copy differs from input");
        assert_eq!(summary.nar_size, nar.len() as u64);
        assert_eq!(summary.nar_hash, NarHash::of_bytes(&nar));

        // Hooks bracket exactly the contents of each file, in archive order.
        let mut files = Vec::new();
        regular_files(&list(&nar[..]).unwrap().root, String::new(), &mut files);
        files.sort_by_key(|f| f.2);
        assert_eq!(rec.files.len(), files.len());
        for ((begin, len, end), (path, size, offset)) in rec.files.iter().zip(&files) {
            assert_eq!((*begin, *len), (*offset, *size), "{path}");
            assert_eq!(*end, Some(begin + len), "{path}");
            let len_field = &nar[*begin as usize - 8..*begin as usize];
            assert_eq!(len_field, &len.to_le_bytes());
        }
        // Tokens are batched: far fewer sink calls than 8-byte strings.
        assert!(rec.calls < nar.len() / 64 + 2 * files.len() + 4);

        // The same hooks fire when dumping from the file system.
        if nar.len() != FIXTURE_NAR.len() {
            let mut rec2 = HookRecorder::default();
            dump_path(&root, &mut rec2).unwrap();
            assert_eq!(rec2.files, rec.files);
        }
    }
}

/// Hands out the input one byte per `read`, with an `Interrupted` in between, to exercise
/// every buffer boundary.
struct Trickle<'a> {
    data: &'a [u8],
    interrupt: bool,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(io::ErrorKind::Interrupted.into());
        }
        match (self.data.split_first(), buf.first_mut()) {
            (Some((&b, rest)), Some(slot)) => {
                *slot = b;
                self.data = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

#[test]
fn copy_validated_from_trickling_reader() {
    let mut out = Vec::new();
    let summary = copy_validated(Trickle { data: FIXTURE_NAR, interrupt: false }, &mut out).unwrap();
    assert!(out == FIXTURE_NAR);
    assert_eq!(summary.nar_size, 1280);
}

#[test]
fn restore_then_dump_round_trips() {
    let (tmp, root) = synthetic_tree();
    let nar = dump(&root);
    let out = tmp.path().join("restored");
    let summary = restore(&nar[..], &out).unwrap();
    assert_eq!(summary.nar_size, nar.len() as u64);
    assert!(dump(&out) == nar, "restored tree dumps differently");
    let mode = |p: &str| fs::metadata(out.join(p)).unwrap().permissions().mode();
    assert_eq!(mode("exec") & 0o111, 0o111);
    assert_eq!(mode("group-exec-only") & 0o111, 0);
    assert_eq!(fs::read_link(out.join("dirlink")).unwrap(), Path::new("nested"));
    assert_eq!(fs::read(out.join("big")).unwrap(), pattern(200_003, 7));
    if nix_store_available() {
        // And Nix agrees about what we restored.
        assert!(nix_store_dump(&out) == nar);
    }
}

#[test]
fn restore_single_file_and_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nar = Vec::new();
    let mut enc = NarEncoder::new(&mut nar);
    enc.regular_begin(true, 3).unwrap();
    enc.regular_data(b"abc").unwrap();
    enc.regular_end().unwrap();
    enc.finish().unwrap();
    let file = tmp.path().join("f");
    restore(&nar[..], &file).unwrap();
    assert_eq!(fs::read(&file).unwrap(), b"abc");
    assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o111, 0o111);

    let mut nar = Vec::new();
    let mut enc = NarEncoder::new(&mut nar);
    enc.symlink(b"/somewhere").unwrap();
    enc.finish().unwrap();
    let link = tmp.path().join("l");
    restore(&nar[..], &link).unwrap();
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("/somewhere"));
}

#[test]
fn restore_refuses_existing_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let err = restore(FIXTURE_NAR, tmp.path()).unwrap_err();
    match err.kind() {
        NarErrorKind::Output(e) => assert_eq!(e.kind(), io::ErrorKind::AlreadyExists),
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains(&tmp.path().display().to_string()));
}

#[test]
fn list_matches_nix_ls_file() {
    assert_eq!(list(FIXTURE_NAR).unwrap().to_json(), FIXTURE_LS);
}

#[test]
fn list_offsets_point_at_contents() {
    let (_tmp, root) = synthetic_tree();
    let nar = dump(&root);
    let listing = list(&nar[..]).unwrap();
    let mut files = Vec::new();
    regular_files(&listing.root, String::new(), &mut files);
    assert_eq!(files.len(), 16);
    for (path, size, offset) in files {
        let on_disk = fs::read(root.join(path.trim_start_matches('/'))).unwrap();
        assert_eq!(on_disk.len() as u64, size, "{path}");
        assert!(nar[offset as usize..(offset + size) as usize] == on_disk[..], "{path}");
    }
    assert_eq!(listing.get("/dangling"), Some(&NarEntry::Symlink { target: "target/does/not/exist".into() }));
    assert_eq!(listing.get(""), Some(&listing.root));
    assert_eq!(listing.get("nested/a/b/c/missing"), None);
    // Nix's escaping: \n as "\n", non-ASCII raw, control characters as \u00xx.
    let json = listing.to_json();
    assert!(json.contains("\"new\\nline\":{\"type\":\"regular\",\"size\":13,\"narOffset\":"));
    assert!(json.contains("\"ünïcødé 名前\""));
    let mut s = String::new();
    super::listing::write_json_string(&mut s, "\u{8}\u{c}\u{1f}\"\\");
    assert_eq!(s, "\"\\u0008\\u000c\\u001f\\\"\\\\\"");
}

#[test]
fn dump_rejects_unsupported_file_type() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let err = dump_path(tmp.path(), &mut Vec::new()).unwrap_err();
    assert!(matches!(&err, NarWriteError::UnsupportedFileType { path, kind: "socket" } if *path == sock), "{err}");
    assert_eq!(err.to_string(), format!("cannot archive {}: unsupported file type (socket)", sock.display()));
}

#[test]
fn dump_reports_missing_path() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let err = dump_path(&missing, &mut Vec::new()).unwrap_err();
    assert_eq!(err.path(), Some(missing.as_path()));
    assert_eq!(err.io_error().map(io::Error::kind), Some(io::ErrorKind::NotFound));
    assert!(err.to_string().starts_with(&format!("cannot read {}: ", missing.display())));
}

#[test]
fn encoder_rejects_wrong_contents_length() {
    let mut nar = Vec::new();
    let mut enc = NarEncoder::new(&mut nar);
    enc.regular_begin(false, 3).unwrap();
    assert!(enc.regular_data(b"abcd").is_err());
    enc.regular_data(b"ab").unwrap();
    assert!(enc.regular_end().is_err());
    assert!(enc.directory_begin().is_err());
}

#[test]
fn every_truncation_is_reported_where_input_ends() {
    for cut in 0..FIXTURE_NAR.len() {
        let err = list(&FIXTURE_NAR[..cut]).unwrap_err();
        assert!(matches!(err.kind(), NarErrorKind::Truncated), "cut at {cut}: {err}");
        assert_eq!(err.offset(), cut as u64, "cut at {cut}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile inputs

/// Builds NAR bytes token by token and remembers offsets for the expected errors.
#[derive(Clone, Default)]
struct B(Vec<u8>);

impl B {
    fn nar() -> B {
        B::default().s(wire::MAGIC)
    }
    fn s(mut self, s: &[u8]) -> B {
        put_str(&mut self.0, s);
        self
    }
    fn toks(mut self, toks: &[&[u8]]) -> B {
        for t in toks {
            put_str(&mut self.0, t);
        }
        self
    }
    fn u64(mut self, n: u64) -> B {
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }
    fn raw(mut self, b: &[u8]) -> B {
        self.0.extend_from_slice(b);
        self
    }
    fn at(&self) -> u64 {
        self.0.len() as u64
    }
    /// An entry holding an empty regular file.
    fn file_entry(self, name: &[u8]) -> B {
        self.toks(&[b"entry", b"(", b"name", name, b"node"])
            .toks(&[b"(", b"type", b"regular", b"contents"])
            .u64(0)
            .toks(&[b")", b")"])
    }
    fn dir(self) -> B {
        self.toks(&[b"(", b"type", b"directory"])
    }
}

/// `(case name, input, expected kind, expected offset, expected entry path)`
type Case = (&'static str, Vec<u8>, fn(&NarErrorKind) -> bool, u64, &'static str);

fn hostile_cases() -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();

    cases.push(("reject_empty_input", vec![], |k| matches!(k, NarErrorKind::Truncated), 0, "/"));
    let b = B::default().s(b"nix-archive-2");
    cases.push(("reject_bad_magic", b.0, |k| matches!(k, NarErrorKind::BadMagic), 0, "/"));
    let b = B::default().s(b"nix-archive-1!");
    cases.push(("reject_bad_magic_length", b.0, |k| matches!(k, NarErrorKind::BadMagic), 0, "/"));
    let b = B::default().u64(u64::MAX);
    cases.push(("reject_absurd_magic_length", b.0, |k| matches!(k, NarErrorKind::BadMagic), 0, "/"));
    let b = B::default().u64(13).raw(b"nix-archive-1\0\0\x01");
    cases.push(("reject_bad_padding_in_magic", b.0, |k| matches!(k, NarErrorKind::NonZeroPadding), 21, "/"));

    let b = B::nar();
    let at = b.at();
    let b = b.toks(&[b"type"]);
    cases.push((
        "reject_missing_open_paren",
        b.0,
        |k| matches!(k, NarErrorKind::UnexpectedTag { expected: "\"(\"", got } if got == "type"),
        at,
        "/",
    ));
    let b = B::nar().toks(&[b"(", b"type"]);
    let at = b.at();
    let b = b.toks(&[b"fifo"]);
    cases.push((
        "reject_unknown_node_type",
        b.0,
        |k| matches!(k, NarErrorKind::UnexpectedTag { got, .. } if got == "fifo"),
        at,
        "/",
    ));
    let b = B::nar().toks(&[b"(", b"type", b"regular", b"executable"]);
    let at = b.at();
    let b = b.toks(&[b"contents"]);
    cases.push((
        "reject_executable_without_empty_string",
        b.0,
        |k| matches!(k, NarErrorKind::UnexpectedTag { expected: "\"\"", got } if got == "contents"),
        at,
        "/",
    ));
    let b = B::nar().toks(&[b"(", b"type", b"regular", b"contents"]).u64(0);
    let at = b.at();
    let b = b.toks(&[b"entry"]);
    cases.push((
        "reject_missing_close_paren",
        b.0,
        |k| matches!(k, NarErrorKind::UnexpectedTag { expected: "\")\"", got } if got == "entry"),
        at,
        "/",
    ));
    let b = B::nar().dir();
    let at = b.at();
    let b = b.toks(&[b"entri"]);
    cases.push((
        "reject_unexpected_tag_in_directory",
        b.0,
        |k| matches!(k, NarErrorKind::UnexpectedTag { got, .. } if got == "entri"),
        at,
        "/",
    ));
    let b = B::nar();
    let at = b.at();
    let b = b.u64(u64::MAX);
    cases.push((
        "reject_absurd_tag_length",
        b.0,
        |k| matches!(k, NarErrorKind::StringTooLong { what: "tag", len: u64::MAX, .. }),
        at,
        "/",
    ));

    let b = B::nar().dir().file_entry(b"b");
    let at = b.at() + 3 * 16;
    let b = b.file_entry(b"a").toks(&[b")"]);
    cases.push((
        "reject_unsorted_entries",
        b.0,
        |k| matches!(k, NarErrorKind::UnsortedEntries { prev, name } if prev == "b" && name == "a"),
        at,
        "/",
    ));
    let b = B::nar().dir().file_entry(b"a");
    let at = b.at() + 3 * 16;
    let b = b.file_entry(b"a").toks(&[b")"]);
    cases.push((
        "reject_duplicate_entries",
        b.0,
        |k| matches!(k, NarErrorKind::DuplicateEntry { name } if name == "a"),
        at,
        "/",
    ));
    let b = B::nar().dir().toks(&[b"entry", b"(", b"name", b"sub", b"node"]).dir().file_entry(b"z");
    let at = b.at() + 3 * 16;
    let b = b.file_entry(b"y");
    cases.push((
        "reject_unsorted_entries_nested",
        b.0,
        |k| matches!(k, NarErrorKind::UnsortedEntries { .. }),
        at,
        "/sub",
    ));

    let name_at = B::nar().dir().at() + 3 * 16;
    let named = |name: &[u8]| B::nar().dir().file_entry(name).toks(&[b")"]).0;
    cases.push(("reject_empty_name", named(b""), |k| matches!(k, NarErrorKind::EmptyName), name_at, "/"));
    cases.push((
        "reject_dot_name",
        named(b"."),
        |k| matches!(k, NarErrorKind::DotName { name } if name == "."),
        name_at,
        "/",
    ));
    cases.push((
        "reject_dotdot_name",
        named(b".."),
        |k| matches!(k, NarErrorKind::DotName { name } if name == ".."),
        name_at,
        "/",
    ));
    cases.push((
        "reject_name_with_slash",
        named(b"../etc/passwd"),
        |k| matches!(k, NarErrorKind::NameContainsSlash { .. }),
        name_at,
        "/",
    ));
    cases.push((
        "reject_name_with_nul",
        named(b"a\0b"),
        |k| matches!(k, NarErrorKind::NameContainsNul { .. }),
        name_at,
        "/",
    ));
    let b = B::nar().dir().toks(&[b"entry", b"(", b"name"]).u64(1 << 40);
    cases.push((
        "reject_absurd_name_length",
        b.0,
        |k| matches!(k, NarErrorKind::StringTooLong { what: "entry name", len: 1_099_511_627_776, .. }),
        name_at,
        "/",
    ));
    let b = B::nar().dir().toks(&[b"entry", b"(", b"name"]).u64(1).raw(b"a\0\0\0\0\0\x01\0");
    cases.push(("reject_bad_padding", b.0, |k| matches!(k, NarErrorKind::NonZeroPadding), name_at + 9, "/"));

    let b = B::nar().toks(&[b"(", b"type", b"regular", b"contents"]).u64(3).raw(b"abc");
    let at = b.at();
    let b = b.raw(b"\0\0\0\0\x01").toks(&[b")"]);
    cases.push(("reject_bad_padding_after_contents", b.0, |k| matches!(k, NarErrorKind::NonZeroPadding), at, "/"));
    let b = B::nar()
        .dir()
        .toks(&[b"entry", b"(", b"name", b"f", b"node", b"(", b"type", b"regular", b"contents"])
        .u64(100)
        .raw(b"only ten b");
    let at = b.at();
    cases.push(("reject_contents_longer_than_data", b.0, |k| matches!(k, NarErrorKind::Truncated), at, "/f"));
    let b = B::nar().toks(&[b"(", b"type", b"regular", b"contents"]).u64(u64::MAX).raw(b"x");
    let at = b.at();
    cases.push(("reject_absurd_contents_length", b.0, |k| matches!(k, NarErrorKind::Truncated), at, "/"));

    let b = B::nar().toks(&[b"(", b"type", b"symlink", b"target"]);
    let at = b.at();
    let empty = b.clone().toks(&[b"", b")"]);
    cases.push(("reject_empty_symlink_target", empty.0, |k| matches!(k, NarErrorKind::EmptySymlinkTarget), at, "/"));
    let nul = b.clone().toks(&[b"a\0", b")"]);
    cases.push((
        "reject_symlink_target_with_nul",
        nul.0,
        |k| matches!(k, NarErrorKind::SymlinkTargetContainsNul { .. }),
        at,
        "/",
    ));
    let long = b.u64(1 << 20);
    cases.push((
        "reject_absurd_symlink_target_length",
        long.0,
        |k| matches!(k, NarErrorKind::StringTooLong { what: "symlink target", .. }),
        at,
        "/",
    ));

    let b = B::nar().dir().file_entry(b"a").toks(&[b")"]);
    let at = b.at();
    let b = b.raw(&[0; 8]);
    cases.push(("reject_trailing_data", b.0, |k| matches!(k, NarErrorKind::TrailingData), at, "/"));

    cases
}

#[test]
fn reject_hostile_inputs() {
    for (name, input, is_expected, offset, path) in hostile_cases() {
        let err = match list(&input[..]) {
            Ok(listing) => panic!("{name}: accepted, listed as {listing:?}"),
            Err(e) => e,
        };
        assert!(is_expected(err.kind()), "{name}: wrong kind: {err}");
        assert_eq!(err.offset(), offset, "{name}: wrong offset: {err}");
        assert_eq!(err.path(), path, "{name}: wrong path: {err}");
        assert!(err.is_malformed(), "{name}");
        assert!(!err.to_string().contains('\n'), "{name}: multi-line message");
        // The validating copy fails the same way, whatever it wrote before.
        let copy_err = copy_validated(&input[..], &mut Vec::new()).unwrap_err();
        assert_eq!(copy_err.offset(), offset, "{name}");
    }
}

#[test]
fn reject_too_deep_nesting() {
    let mut b = B::nar().dir();
    for _ in 0..wire::MAX_DEPTH {
        b = b.toks(&[b"entry", b"(", b"name", b"d", b"node"]).dir();
    }
    let err = list(&b.0[..]).unwrap_err();
    assert!(matches!(err.kind(), NarErrorKind::TooDeep { .. }), "{err}");
    assert_eq!(err.offset(), b.at());
    assert_eq!(err.path().len(), 2 * wire::MAX_DEPTH);
}

#[test]
fn accept_deepest_allowed_nesting() {
    let depth = wire::MAX_DEPTH - 1;
    let mut b = B::nar().dir();
    for _ in 0..depth {
        b = b.toks(&[b"entry", b"(", b"name", b"d", b"node"]).dir();
    }
    b = b.toks(&[b")"]);
    for _ in 0..depth {
        b = b.toks(&[b")", b")"]);
    }
    // Run on a thread with a small stack: the listing's recursive JSON writer and `Drop` must
    // cope with the deepest archive the parser lets through.
    let nar = b.0;
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let listing = list(&nar[..]).unwrap();
            assert!(listing.to_json().len() > depth * 35);
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn reject_too_long_path() {
    let name = vec![b'n'; wire::MAX_NAME_LEN as usize];
    let mut b = B::nar().dir();
    let levels = wire::MAX_PATH_LEN / (name.len() + 1);
    for _ in 0..levels {
        b = b.toks(&[b"entry", b"(", b"name", &name, b"node"]).dir();
    }
    let at = b.at() + 3 * 16;
    b = b.toks(&[b"entry", b"(", b"name", &name, b"node"]).dir();
    let err = list(&b.0[..]).unwrap_err();
    assert!(matches!(err.kind(), NarErrorKind::PathTooLong { .. }), "{}", err.kind());
    assert_eq!(err.offset(), at);
}

#[test]
fn error_message_is_one_line_with_offset_and_entry() {
    let b = B::nar().dir().toks(&[b"entry", b"(", b"name", b"lib", b"node"]).dir().file_entry(b"foo");
    let input = b.file_entry(b"bar").0;
    let err = list(&input[..]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("malformed NAR at byte {} (entry \"/lib\"): entries not sorted: \"bar\" follows \"foo\"", err.offset())
    );
    let io_err: io::Error = err.into();
    assert_eq!(io_err.kind(), io::ErrorKind::InvalidData);
}

#[test]
fn read_errors_keep_offset() {
    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "peer went away"));
            }
            let n = self.0.len().min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let err = list(Failing(&FIXTURE_NAR[..100])).unwrap_err();
    assert!(matches!(err.kind(), NarErrorKind::Io(e) if e.kind() == io::ErrorKind::ConnectionReset));
    assert_eq!(err.offset(), 100);
    assert!(!err.is_malformed());
    assert!(err.to_string().starts_with("cannot read NAR at byte 100 (entry \"/\"): peer went away"));
}

/// Compares with `nix-store --dump` on real trees:
/// `NIXDAG_NAR_CORPUS=/usr/share/doc:/nix/store cargo test --lib nar_corpus -- --ignored`.
/// Each colon-separated directory's children are dumped one by one; the NAR is also copied,
/// listed and restored.
#[test]
#[ignore = "needs NIXDAG_NAR_CORPUS and nix-store"]
fn nar_corpus_matches_nix_store_dump() {
    let Ok(corpus) = std::env::var("NIXDAG_NAR_CORPUS") else {
        eprintln!("note: NIXDAG_NAR_CORPUS not set");
        return;
    };
    if !nix_store_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for dir in corpus.split(':') {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let mut ours = Vec::new();
            if let Err(e) = dump_path(&path, &mut ours) {
                eprintln!("skipping {}: {e}", path.display());
                continue;
            }
            assert!(ours == nix_store_dump(&path), "{} differs", path.display());
            let mut copy = Vec::new();
            copy_validated(&ours[..], &mut copy).unwrap();
            assert!(copy == ours);
            list(&ours[..]).unwrap();
            let out = tmp.path().join(checked.to_string());
            restore(&ours[..], &out).unwrap();
            assert!(dump(&out) == ours, "{} restores differently", path.display());
            checked += 1;
        }
    }
    eprintln!("checked {checked} paths");
}

/// Found by fuzzing (`fuzz/regressions/nar_parse/strict-lossy-names.nar`): names that are not UTF-8,
/// which Nix dumps and restores, used to collapse into one lossy listing entry.
#[test]
fn listing_keeps_distinct_non_utf8_names() {
    let mut nar = Vec::new();
    let mut enc = NarEncoder::new(&mut nar);
    enc.directory_begin().unwrap();
    for name in [&b"\xfe"[..], b"\xff"] {
        enc.entry_begin(name).unwrap();
        enc.regular_begin(false, 1).unwrap();
        enc.regular_data(b"x").unwrap();
        enc.regular_end().unwrap();
        enc.entry_end().unwrap();
    }
    enc.directory_end().unwrap();
    enc.finish().unwrap();
    let listing = list(&nar[..]).unwrap();
    match listing.root {
        NarEntry::Directory { entries } => assert_eq!(entries.len(), 2),
        other => panic!("root is {other:?}"),
    }
}
