//! Dedup: versions of a package share blocks; adding the same thing twice adds nothing.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::common::*;

pub struct Trees {
    _work: tempfile::TempDir,
    pub old: PathBuf,
    pub new: PathBuf,
}

/// Two released versions of Pygments (a ~4 MiB pure-Python package), downloaded once per test run.
pub fn pygments_trees() -> &'static Trees {
    static TREES: OnceLock<Trees> = OnceLock::new();
    TREES.get_or_init(|| {
        let work = tempfile::tempdir().unwrap();
        let old = pypi_wheel_tree(work.path(), "pygments", "2.17.2");
        let new = pypi_wheel_tree(work.path(), "pygments", "2.18.0");
        Trees { _work: work, old, new }
    })
}

#[test]
fn two_versions_cost_less_than_stored_apart() {
    let t = pygments_trees();
    let (old, new) = (t.old.to_str().unwrap(), t.new.to_str().unwrap());
    let alone_old = TestStore::new();
    alone_old.add(&[old]);
    let alone_new = TestStore::new();
    alone_new.add(&[new]);
    let both = TestStore::new();
    both.add(&[old]);
    both.add(&[new]);
    let (a, b, ab) = (alone_old.stat("stored_bytes"), alone_new.stat("stored_bytes"), both.stat("stored_bytes"));
    let (ua, ub, uab) = (alone_old.stat("unique_bytes"), alone_new.stat("unique_bytes"), both.stat("unique_bytes"));
    eprintln!("pygments 2.17.2 + 2.18.0: stored {ab} together vs {} apart; unique {uab} vs {}", a + b, ua + ub);
    assert!(ab < a + b, "stored together {ab} should be less than apart {}", a + b);
    assert!(uab < ua + ub, "unique together {uab} should be less than apart {}", ua + ub);
    both.verify();
}

#[test]
fn adding_the_same_path_twice_adds_no_block() {
    let t = pygments_trees();
    let store = TestStore::new();
    let first = store.add(&[t.old.to_str().unwrap()]);
    let before = store.snapshot();
    let second = store.add(&[t.old.to_str().unwrap()]);
    assert_eq!(first, second);
    assert_eq!(store.snapshot(), before, "second add changed the store");
}

/// A package-like tree: two large files (their own chunks, ≥ 64 KiB) and a few small text files.
fn demo_tree(root: &std::path::Path, big_a: u64, big_b: u64, text_seed: u64) {
    std::fs::create_dir_all(root.join("lib")).unwrap();
    write_random(&root.join("lib/libdemo.so"), 600 << 10, big_a);
    write_random(&root.join("lib/data.bin"), 300 << 10, big_b);
    let mut rng = Xorshift::new(text_seed);
    for i in 0..5 {
        std::fs::write(root.join(format!("README-{i}")), nix_words(&mut rng, 200)).unwrap();
    }
}

/// Every block of a CAR v1 file: (CID bytes, block length). The test's own reading of what a root holds.
fn car_blocks(car: &[u8]) -> std::collections::HashMap<Vec<u8>, u64> {
    fn varint(b: &[u8], pos: &mut usize) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = b[*pos];
            *pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }
    let mut pos = 0;
    let header = varint(car, &mut pos) as usize;
    pos += header;
    let mut out = std::collections::HashMap::new();
    while pos < car.len() {
        let len = varint(car, &mut pos) as usize;
        let start = pos;
        let mut p = pos;
        let version = varint(car, &mut p);
        assert_eq!(version, 1, "CIDv1 expected");
        varint(car, &mut p); // codec
        varint(car, &mut p); // multihash code
        let digest = varint(car, &mut p) as usize;
        p += digest;
        out.insert(car[start..p].to_vec(), (start + len - p) as u64);
        pos = start + len;
    }
    out
}

/// Validate `json` against docs/dedup-stats.schema.json with Python's `jsonschema` (scripts/test
/// installs it).
pub fn validate_report(json: &str) {
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dedup-stats.schema.json");
    let script = "import json, sys, jsonschema\n\
                  schema = json.load(open(sys.argv[1]))\n\
                  jsonschema.Draft202012Validator.check_schema(schema)\n\
                  jsonschema.validate(json.load(sys.stdin), schema, cls=jsonschema.Draft202012Validator)\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&schema)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(json.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "the report does not match the schema: {}", String::from_utf8_lossy(&o.stderr));
}

/// The numbers of `dedup-stats` hold on a store of real `nix-store --add` paths: logical ≥ unique,
/// stored = the files on disk, a path added again changes nothing, and a new version raises logical by
/// its size and unique (and its by-name cost) by exactly the bytes of the blocks its CAR has and the
/// first version's lacks, counted here from the two CARs.
#[test]
fn report_numbers_hold_on_a_real_store() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let (d1, d2) = (work.path().join("demo-1.0"), work.path().join("demo-1.1"));
    demo_tree(&d1, 1, 2, 3);
    demo_tree(&d2, 1, 4, 3); // the same libdemo.so and text, a new data.bin
    std::fs::write(d2.join("README-0"), "a new first README\n").unwrap();
    let (p1, p2) = (nix_add(&d1), nix_add(&d2));
    let store = TestStore::new();
    let (h1, _, size1) = store.add(&[p1.to_str().unwrap()]);
    let s1 = store.stats();
    let (logical1, unique1) = (s1["logical_bytes"].as_u64().unwrap(), s1["unique_bytes"].as_u64().unwrap());
    // unique_bytes counts interior nodes too (as it always has), so with nothing shared it is the
    // logical bytes plus the DAG's overhead (≈ 0.1 %); logical ≥ unique holds once anything is shared.
    assert!(unique1 > 0 && unique1 <= logical1 + logical1 / 100, "{s1}");
    assert_eq!(logical1, size1);
    validate_report(&serde_json::to_string(&s1).unwrap());

    // Stored bytes are the packs and the index as they are on disk.
    let on_disk = |store: &TestStore| -> (u64, u64) {
        let packs =
            std::fs::read_dir(store.path().join("packs")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        (packs, std::fs::metadata(store.path().join("index.redb")).unwrap().len())
    };
    // (redb may grow its file when a session closes, even a read-only one: it settles after one.)
    let mut settled = false;
    for _ in 0..3 {
        let s = store.stats();
        let (packs, index) = on_disk(&store);
        assert_eq!(s["pack_bytes"].as_u64().unwrap(), packs);
        assert_eq!(
            s["stored_bytes"].as_u64().unwrap(),
            s["pack_bytes"].as_u64().unwrap() + s["index_bytes"].as_u64().unwrap()
        );
        if s["index_bytes"].as_u64().unwrap() == index {
            settled = true;
            break;
        }
    }
    assert!(settled, "the reported index size never matched the file's");

    // The same path again: nothing changes.
    let before = store.snapshot();
    store.add(&[p1.to_str().unwrap()]);
    assert_eq!(store.snapshot(), before);

    // Version 2: logical by its size, unique by its blocks version 1 lacks.
    let (h2, _, size2) = store.add(&[p2.to_str().unwrap()]);
    let car = |h: &str| {
        let f = work.path().join(format!("{}.car", &h[7..15]));
        store.ok(&["export-car", "--nar-hash", h, "-o", f.to_str().unwrap()]);
        car_blocks(&std::fs::read(f).unwrap())
    };
    let (c1, c2) = (car(&h1), car(&h2));
    let new_bytes: u64 = c2.iter().filter(|(k, _)| !c1.contains_key(*k)).map(|(_, v)| v).sum();
    let both_bytes: u64 = c2.iter().filter(|(k, _)| c1.contains_key(*k)).map(|(_, v)| v).sum();
    assert!(new_bytes > 300 << 10 && both_bytes > 600 << 10, "new {new_bytes}, shared {both_bytes}");
    let out = store.ok(&["dedup-stats", "--json", "--by-name"]);
    validate_report(&out);
    let s2: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s2["logical_bytes"].as_u64().unwrap(), logical1 + size2);
    assert_eq!(s2["unique_bytes"].as_u64().unwrap(), unique1 + new_bytes);
    assert!(s2["logical_bytes"].as_u64().unwrap() >= s2["unique_bytes"].as_u64().unwrap(), "{s2}");
    let group = s2["by_name"].as_array().unwrap().iter().find(|g| g["name"] == "demo").expect("a demo group");
    let versions = group["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{group}");
    assert_eq!(versions[0]["version"], "1.0");
    assert_eq!(versions[1]["version"], "1.1");
    assert_eq!(versions[1]["cost_bytes"].as_u64().unwrap(), new_bytes);
    assert_eq!(versions[1]["size"].as_u64().unwrap(), size2);
    // Per path: version 2 shares with version 1 exactly the blocks both CARs hold.
    let row2 = s2["per_path"].as_array().unwrap().iter().find(|r| r["hash"] == h2.as_str()).unwrap();
    assert_eq!(row2["shared_bytes"].as_u64().unwrap(), both_bytes);
    assert_eq!(row2["unique_bytes"].as_u64().unwrap(), new_bytes);
    assert_eq!(row2["shares_most_with"][0]["name"], p1.to_str().unwrap());
    // One path in detail, and the tables a person reads.
    let detail = store.ok(&["dedup-stats", "--json", "--path", p2.to_str().unwrap()]);
    validate_report(&detail);
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["path_detail"]["package"], "demo");
    assert_eq!(detail["path_detail"]["version"], "1.1");
    let table = store.ok(&["dedup-stats", "--by-name", "--top", "5", "--sort", "shared"]);
    for want in ["== totals", "standard Nix cache (xz per NAR)", "== per path", "== by name", "stored form", "demo"] {
        assert!(table.contains(want), "no {want:?} in:\n{table}");
    }
    eprintln!("{table}");
    store.verify();
}
