//! Garbage collection removes only what no root reaches, also while ingests run beside it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common::*;

fn tree(dir: &Path, shared: &[u8], own_seed: u64) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("shared.bin"), shared).unwrap();
    write_random(&dir.join("own.bin"), 3 << 20, own_seed);
}

#[test]
fn gc_keeps_shared_blocks_and_frees_the_rest() {
    let work = tempfile::tempdir().unwrap();
    let shared = Xorshift::new(1).bytes(4 << 20);
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    tree(&a, &shared, 2);
    tree(&b, &shared, 3);
    let store = TestStore::new();
    let (ha, _, _) = store.add(&[a.to_str().unwrap()]);
    let (hb, _, _) = store.add(&[b.to_str().unwrap()]);
    let blocks_before = store.stat("blocks");
    store.ok(&["forget", "--nar-hash", &ha]);
    store.ok(&["gc"]);
    let after = store.stats();
    assert!(after["blocks"].as_u64().unwrap() < blocks_before);
    store.verify();
    let restored = work.path().join("rb");
    store.ok(&["restore", "--nar-hash", &hb, restored.to_str().unwrap()]);
    assert_eq!(nix_hash(&restored), hb);
    // Unique bytes now cover b alone: its own bytes and the shared file.
    assert!(after["unique_bytes"].as_u64().unwrap() < (8 << 20) + (1 << 20));
    store.ok(&["forget", "--nar-hash", &hb]);
    store.ok(&["gc"]);
    let empty = store.stats();
    assert_eq!(empty["blocks"], 0);
    assert_eq!(empty["pack_bytes"], 0, "packs with no live record are deleted");
    store.verify();
}

/// `add` and `gc` loop in separate processes at the same time; afterwards every root verifies.
#[test]
fn add_and_gc_loop_concurrently() {
    let work = tempfile::tempdir().unwrap();
    let shared = Arc::new(Xorshift::new(5).bytes(2 << 20));
    let store = Arc::new(TestStore::new());
    let dirs: Vec<PathBuf> = (0..12).map(|i| work.path().join(format!("t{i}"))).collect();
    for (i, d) in dirs.iter().enumerate() {
        tree(d, &shared, 100 + i as u64);
    }
    let adder = {
        let store = store.clone();
        let dirs = dirs.clone();
        std::thread::spawn(move || {
            let mut hashes = Vec::new();
            for (i, d) in dirs.iter().enumerate() {
                let (h, _, _) = store.add(&[d.to_str().unwrap()]);
                hashes.push(h.clone());
                if i >= 2 && i % 3 == 0 {
                    store.ok(&["forget", "--nar-hash", &hashes[i - 2]]);
                }
            }
            hashes
        })
    };
    let collector = {
        let store = store.clone();
        std::thread::spawn(move || {
            for _ in 0..12 {
                store.ok(&["gc"]);
            }
        })
    };
    let hashes = adder.join().unwrap();
    collector.join().unwrap();
    store.ok(&["gc"]);
    store.verify();
    let forgotten: Vec<usize> = (2..12).filter(|i| i % 3 == 0).map(|i| i - 2).collect();
    for (i, h) in hashes.iter().enumerate() {
        if forgotten.contains(&i) {
            continue;
        }
        let out = store.bytes(&["cat", "--nar-hash", h]);
        assert_eq!(
            format!("sha256:{}", nixdag::NarHash(<sha2::Sha256 as sha2::Digest>::digest(&out).into()).to_nix32()),
            *h
        );
    }
}

/// Inside one process (the gateway's case): ingests and GC share a `Store` on several threads. An
/// ingest that reuses a block GC is about to sweep must keep it.
#[test]
fn in_process_ingest_and_gc_race_loses_nothing() {
    use nixdag::{add_nar, ChunkerConfig, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let shared = Arc::new(Xorshift::new(8).bytes(1 << 20));
    // NARs of single files: shared prefix bytes plus a distinct tail.
    let nar_of = move |i: u64| {
        let mut contents = (*shared).clone();
        contents.extend(Xorshift::new(i).bytes(300_000));
        toks(&[b"nix-archive-1", b"(", b"type", b"regular", b"contents", &contents, b")"])
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store.gc().unwrap();
                runs += 1;
            }
            runs
        })
    };
    let workers: Vec<_> = (0..2u64)
        .map(|w| {
            let store = store.clone();
            let nar_of = nar_of.clone();
            std::thread::spawn(move || {
                for i in 0..15u64 {
                    let added = add_nar(&store, &nar_of(w * 100 + i)[..], ChunkerConfig::default(), None).unwrap();
                    // Drop every other NAR again, so GC always has shared blocks it would like to take.
                    if i % 2 == 0 {
                        store.forget_nar(&added.nar_hash).unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = gc.join().unwrap();
    assert!(runs > 0);
    let report = store.verify().unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.roots, 2 * 7);
}
