//! The stored forms of formats 2 and 3 (frames, dictionaries, deltas, normalized and rebuilt blocks) end
//! to end through the store: each form reads back byte-exact after a reopen, damage to a frame or a delta
//! base is reported as such and never turns into wrong bytes, GC keeps every base a stored block still
//! needs, and a format-1 store is upgraded.
//!
//! One module a theme: `frames`, `deltas`, `tarballs` (rebuilt blocks), `normalized` (patched blocks),
//! `damage`, `gc`, `open` (format versions, read-only). Their helpers are in two places only: here, for
//! blocks committed one by one, and `streams`, for whole NARs and files (tarballs, a package built twice).
//! The data (noise, text, edits, tar streams) comes from the test kit, `nixdag_testkit` (testkit/).

mod damage;
mod deltas;
mod frames;
mod gc;
mod normalized;
mod open;
mod streams;
mod tarballs;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nixdag_testkit::{edited, noise, store_words};
use redb::{ReadableTable, ReadableTableMetadata};

use super::tables::{similar_target, BlockLoc, Form, BLOCKS, META, SIMILAR};
use super::{Manifest, NarEntry, StorageConfig, Store, StoreError, Tarballs};
use crate::dag::cid::RAW_CODEC;
use crate::dag::BlockHash;
use crate::nix::hash::NarHash;

/// A block: its name and bytes.
type Blk = (BlockHash, Vec<u8>);

fn blk(bytes: Vec<u8>) -> Blk {
    (BlockHash::of(&bytes), bytes)
}

/// The NAR manifest whose root is this block alone (as the tests in `store/mod.rs` build them).
fn nar_of(b: &Blk) -> (NarHash, Manifest) {
    let nar_hash = NarHash(BlockHash::of(&[b"nar:".as_slice(), &b.0 .0].concat()).0);
    let entry = NarEntry { root: b.0.cid(RAW_CODEC), nar_size: b.1.len() as u64 };
    (nar_hash, Manifest::Nar { nar_hash, entry })
}

/// One ingest holding `blocks`, each committed as a root of its own NAR. Returns their NAR hashes.
fn add(store: &Store, blocks: &[&Blk]) -> Vec<NarHash> {
    let mut ingest = store.begin_ingest();
    let mut manifests = Vec::new();
    let mut hashes = Vec::new();
    for b in blocks {
        ingest.put(b.0, &b.1).unwrap();
        let (h, m) = nar_of(b);
        hashes.push(h);
        manifests.push(m);
    }
    ingest.commit(&manifests).unwrap();
    hashes
}

fn loc(store: &Store, b: &Blk) -> BlockLoc {
    store.block_loc(&b.0).unwrap().unwrap_or_else(|| panic!("block {} is not indexed", b.0))
}

fn reopen(store: Store, dir: &Path) -> Store {
    drop(store);
    Store::open(dir).unwrap()
}

fn assert_reads(store: &Store, blocks: &[&Blk]) {
    for b in blocks {
        let got = store.read_block(&b.0).unwrap().unwrap_or_else(|| panic!("block {} is gone", b.0));
        assert!(got == b.1, "block {} read back different bytes", b.0);
    }
}

fn assert_clean(store: &Store) {
    let r = store.verify().unwrap();
    assert!(r.ok(), "verify: {:#?}", r.problems);
}

/// XOR byte `at` of the payload of the record `loc` points at (for a framed block: its frame's).
fn flip_payload_byte(dir: &Path, loc: &BlockLoc, at: u64) {
    assert!(at < u64::from(loc.stored_len));
    let path = dir.join("packs").join(format!("{:08}.pack", loc.pack));
    let f = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let off = loc.offset + 41 + at;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, off).unwrap();
    f.sync_all().unwrap();
}

fn problems_of(store: &Store) -> Vec<String> {
    let r = store.verify().unwrap();
    assert!(!r.ok(), "verify found nothing wrong");
    r.problems
}

/// Whether some problem is about block `h` (its error starts with its name) and contains `what`.
fn reported(problems: &[String], h: &BlockHash, what: &str) -> bool {
    problems.iter().any(|p| p.starts_with(&format!("block {h} ")) && p.contains(what))
}

/// Hashes `similar-0` points at.
fn similar_targets(store: &Store) -> Vec<BlockHash> {
    let txn = store.db().begin_read().unwrap();
    let t = txn.open_table(SIMILAR).unwrap();
    let blocks = txn.open_table(BLOCKS).unwrap();
    // A prefix that names no stored block resolves to a name no block has.
    t.iter()
        .unwrap()
        .map(|row| similar_target(&blocks, row.unwrap().1.value()).unwrap().unwrap_or(BlockHash([0xee; 32])))
        .collect()
}

fn format_of(store: &Store) -> u32 {
    let txn = store.db().begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    let v = meta.get("format").unwrap().unwrap();
    u32::from_le_bytes(v.value().try_into().unwrap())
}

/// The default settings with another longest delta chain.
fn deltas(max_depth: u8) -> StorageConfig {
    StorageConfig { max_delta_depth: max_depth, ..StorageConfig::default() }
}

fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("packs")).unwrap();
    std::fs::copy(from.join("index.redb"), to.join("index.redb")).unwrap();
    for e in std::fs::read_dir(from.join("packs")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join("packs").join(e.file_name())).unwrap();
    }
}

/// The framed form member `i` had before compaction (frames are copied verbatim, so it is unchanged).
fn loc_form_of(first: &BlockLoc, members: &[Blk], i: usize) -> Form {
    let Form::Framed { frame_len, dict, .. } = first.form else { unreachable!() };
    let start: usize = members[..i].iter().map(|m| m.1.len()).sum();
    Form::Framed { frame_len, start: start as u32, dict }
}

/// Small frames, no deltas, dictionaries on: a store whose first ingest (`trained`, ~4.7 MiB of text
/// blocks) trains a dictionary part-way through, and whose second (`later`) uses it from the start.
fn store_with_dictionary(dir: &Path) -> (Store, Vec<Blk>, Vec<Blk>) {
    let store = Store::open(dir).unwrap();
    store.set_storage(StorageConfig {
        frame_bytes: 64 * 1024,
        max_delta_depth: 0,
        dict: true,
        ..Default::default()
    });
    let trained: Vec<Blk> = (0..300).map(|i| blk(store_words(5000 + i, 16 * 1024))).collect();
    add(&store, &trained.iter().collect::<Vec<_>>());
    let later: Vec<Blk> = (0..10).map(|i| blk(store_words(7000 + i, 20_000))).collect();
    add(&store, &later.iter().collect::<Vec<_>>());
    (store, trained, later)
}

fn dict_of(store: &Store, b: &Blk) -> Option<BlockHash> {
    match loc(store, b).form {
        Form::Framed { dict, .. } => dict,
        f => panic!("{} is not framed: {f:?}", b.0),
    }
}
