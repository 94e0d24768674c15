//! Bad input gets a non-zero exit and a one-line error saying what and where; the store is unchanged,
//! `verify` passes and no root appears.

use std::fs;

use crate::common::*;

fn file_node(contents: &[u8]) -> Vec<u8> {
    toks(&[b"(", b"type", b"regular", b"contents", contents, b")"])
}

fn dir_nar(names: &[&[u8]]) -> Vec<u8> {
    let mut v = toks(&[b"nix-archive-1", b"(", b"type", b"directory"]);
    for n in names {
        v.extend(toks(&[b"entry", b"(", b"name", n, b"node"]));
        v.extend(file_node(b"data"));
        v.extend(tok(b")"));
    }
    v.extend(tok(b")"));
    v
}

/// Named hostile NARs and a fragment their error must contain.
fn cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let valid = dir_nar(&[b"a", b"b"]);
    let mut bad_padding = toks(&[b"nix-archive-1", b"(", b"type", b"regular", b"contents"]);
    bad_padding.extend(3u64.to_le_bytes());
    bad_padding.extend(b"abcXXXXX");
    bad_padding.extend(tok(b")"));
    let mut absurd = toks(&[b"nix-archive-1", b"(", b"type", b"regular", b"contents"]);
    absurd.extend((1u64 << 60).to_le_bytes());
    absurd.extend(b"tiny");
    let mut absurd_name = toks(&[b"nix-archive-1", b"(", b"type", b"directory", b"entry", b"(", b"name"]);
    absurd_name.extend(u64::MAX.to_le_bytes());
    let mut trailing = valid.clone();
    trailing.extend(tok(b"garbage"));
    vec![
        ("unsorted entries", dir_nar(&[b"b", b"a"]), "sorted"),
        ("duplicate entries", dir_nar(&[b"a", b"a"]), "a"),
        ("name with slash", dir_nar(&[b"a/b"]), "a/b"),
        ("name dot", dir_nar(&[b"."]), "\".\""),
        ("name dotdot", dir_nar(&[b".."]), "\"..\""),
        ("empty name", dir_nar(&[b""]), "name"),
        ("bad padding", bad_padding, "padding"),
        ("unknown node type", toks(&[b"nix-archive-1", b"(", b"type", b"blockdevice", b")"]), "blockdevice"),
        ("unknown tag", toks(&[b"nix-archive-1", b"(", b"kind", b"regular", b")"]), "kind"),
        ("absurd contents length", absurd, "byte"),
        ("absurd name length", absurd_name, "byte"),
        ("truncated", valid[..valid.len() - 20].to_vec(), "byte"),
        ("bad magic", toks(&[b"nix-archive-2", b"(", b")"]), "nix-archive"),
        ("trailing data", trailing, "byte"),
        ("empty input", Vec::new(), "byte"),
    ]
}

#[test]
fn malformed_nars_are_rejected_with_position_and_leave_store_unchanged() {
    let work = tempfile::tempdir().unwrap();
    let store = TestStore::new();
    // A populated store, so "unchanged" means something.
    let seed = work.path().join("seed");
    fs::create_dir_all(&seed).unwrap();
    write_random(&seed.join("f"), 1 << 20, 1);
    store.add(&[seed.to_str().unwrap()]);
    let before = store.snapshot();
    for (name, nar, fragment) in cases() {
        let f = work.path().join(name.replace(' ', "-"));
        fs::write(&f, &nar).unwrap();
        let err = store.fails(&["add", "--nar", f.to_str().unwrap()]);
        assert!(err.contains("byte"), "{name}: error does not give a position: {err}");
        assert!(err.contains(fragment), "{name}: error does not mention {fragment:?}: {err}");
        assert_eq!(store.snapshot(), before, "{name}: store changed");
    }
    store.verify();
    assert_eq!(store.stat("nars"), 1);
}

#[test]
fn entry_errors_name_the_entry_path() {
    let work = tempfile::tempdir().unwrap();
    let store = TestStore::new();
    let mut nar = toks(&[b"nix-archive-1", b"(", b"type", b"directory", b"entry", b"(", b"name", b"lib", b"node"]);
    nar.extend(toks(&[b"(", b"type", b"directory"]));
    nar.extend(toks(&[b"entry", b"(", b"name", b"z", b"node"]));
    nar.extend(file_node(b"1"));
    nar.extend(tok(b")"));
    nar.extend(toks(&[b"entry", b"(", b"name", b"y", b"node"]));
    let f = work.path().join("nested.nar");
    fs::write(&f, &nar).unwrap();
    let err = store.fails(&["add", "--nar", f.to_str().unwrap()]);
    assert!(err.contains("/lib"), "{err}");
}

/// A large NAR that breaks late: megabytes of blocks were already written when the error comes.
#[test]
fn late_failure_rolls_back_written_blocks() {
    let work = tempfile::tempdir().unwrap();
    let store = TestStore::new();
    let seed = work.path().join("seed");
    fs::write(&seed, b"seed").unwrap();
    store.add(&[seed.to_str().unwrap()]);
    let before = store.snapshot();
    let mut nar = toks(&[b"nix-archive-1", b"(", b"type", b"directory", b"entry", b"(", b"name", b"big", b"node"]);
    nar.extend(file_node(&Xorshift::new(3).bytes(8 << 20)));
    nar.extend(tok(b")"));
    nar.extend(toks(&[b"entry", b"(", b"name", b"a", b"node"])); // "a" after "big": unsorted
    nar.extend(file_node(b"x"));
    nar.extend(toks(&[b")", b")"]));
    let f = work.path().join("late.nar");
    fs::write(&f, &nar).unwrap();
    let err = store.fails(&["add", "--nar", f.to_str().unwrap()]);
    assert!(err.contains("sorted"), "{err}");
    assert_eq!(store.snapshot(), before);
    store.verify();
}

#[test]
fn bad_hashes_and_unknown_cids_are_clear_errors() {
    let work = tempfile::tempdir().unwrap();
    let store = TestStore::new();
    let f = work.path().join("f");
    fs::write(&f, b"some bytes").unwrap();
    let (nar, _, _) = store.add(&[f.to_str().unwrap()]);
    let before = store.snapshot();
    let backwards = ["cat", "--nar-hash", nar.as_str(), "--range", "9-2"];
    let past_end = ["cat", "--nar-hash", nar.as_str(), "--range", "100000-100001"];
    let cases: &[(&[&str], &str)] = &[
        (&backwards, "end before start"),
        (&past_end, "outside"),
        (&["cat", "--nar-hash", "sha256:notahash"], "invalid NAR hash"),
        (&["cat", "--nar-hash", "md5:d41d8cd98f00b204e9800998ecf8427e"], "invalid NAR hash"),
        (&["cat", "--nar-hash", "sha256-AAAA"], "invalid NAR hash"),
        (&["cat", "--nar-hash", "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"], "no NAR"),
        (&["cat", "--file-hash", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"], "no file"),
        (&["cat", "--file-hash", "zzzz"], "invalid file hash"),
        (&["cat", "bafynotacid"], "invalid CID"),
        (&["cat", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"], "blake3"),
        (&["cat", "bafkr4ifpcne3t5pzugtkaqcn5i3nzskjtpfslsnnyejlpte2spfoihzsmi"], "unknown CID"),
        (
            &[
                "restore",
                "--nar-hash",
                "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
                "/tmp/nixdag-never",
            ],
            "no NAR",
        ),
        (
            &[
                "export-car",
                "bafkr4ifpcne3t5pzugtkaqcn5i3nzskjtpfslsnnyejlpte2spfoihzsmi",
                "-o",
                "/tmp/nixdag-never.car",
            ],
            "unknown CID",
        ),
    ];
    for (args, want) in cases {
        let err = store.fails(args);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let missing = store.fails(&["add", "/nonexistent/path"]);
    assert!(missing.contains("/nonexistent/path"), "{missing}");
    assert_eq!(store.snapshot(), before);
    store.verify();
}
