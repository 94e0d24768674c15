//! The store's behaviour on every pack backend: the same tests run on packs as files (`FilePacks`, the
//! store's `packs/` directory) and in memory (`MemPacks`), as iroh-blobs runs its tests against its
//! memory and file stores. What they pin down is what the engine promises whatever keeps the bytes:
//! every form reads back after a reopen, an uncommitted ingest leaves nothing visible, GC and compaction
//! keep what is live and free what is not, and a damaged byte is an error naming the block, never wrong
//! bytes.

use std::os::unix::fs::FileExt;
use std::path::Path;

use super::pack::{pack_path, MemPacks, PackBackend};
use super::tables::{BlockLoc, Form};
use super::{Manifest, NarEntry, StorageConfig, Store, StoreError};
use crate::dag::cid::RAW_CODEC;
use crate::dag::BlockHash;
use crate::nix::hash::NarHash;

/// Where a test's packs live.
enum Backend {
    File,
    Mem(MemPacks),
}

impl Backend {
    fn open(&self, dir: &Path) -> Store {
        match self {
            Backend::File => Store::open(dir).unwrap(),
            Backend::Mem(m) => Store::open_with_packs(dir, Box::new(m.clone())).unwrap(),
        }
    }

    /// Flip one byte of the payload of the record `loc` points at.
    fn flip(&self, dir: &Path, loc: &BlockLoc, at: u64) {
        let off = loc.offset + 41 + at;
        match self {
            Backend::File => {
                let f = std::fs::OpenOptions::new().read(true).write(true).open(pack_path(&dir.join("packs"), loc.pack));
                let f = f.unwrap();
                let mut b = [0u8; 1];
                f.read_exact_at(&mut b, off).unwrap();
                f.write_all_at(&[b[0] ^ 0xff], off).unwrap();
            }
            Backend::Mem(m) => assert!(m.flip_byte(loc.pack, off)),
        }
    }

    fn packs(&self, store: &Store) -> Vec<u32> {
        let listed = store.packs().list().unwrap().into_iter().map(|(id, _)| id).collect();
        if let Backend::Mem(m) = self {
            assert_eq!(m.list().unwrap().into_iter().map(|(id, _)| id).collect::<Vec<_>>(), listed);
        }
        listed
    }
}

/// Test data from the kit: `text` compresses (words), otherwise noise that does not.
fn bytes(seed: u64, n: usize, text: bool) -> Vec<u8> {
    if text {
        nixdag_testkit::store_words(seed, n)
    } else {
        nixdag_testkit::noise(seed, n)
    }
}

fn nar_of(hash: &BlockHash, len: usize) -> Manifest {
    let nar_hash = NarHash(BlockHash::of(&[b"nar:".as_slice(), &hash.0].concat()).0);
    Manifest::Nar { nar_hash, entry: NarEntry { root: hash.cid(RAW_CODEC), nar_size: len as u64 } }
}

/// One ingest of `blocks`, each the root of a NAR of its own.
fn add(store: &Store, blocks: &[Vec<u8>]) -> Vec<BlockHash> {
    let mut ingest = store.begin_ingest();
    let mut manifests = Vec::new();
    let mut hashes = Vec::new();
    for b in blocks {
        let h = BlockHash::of(b);
        ingest.put(h, b).unwrap();
        manifests.push(nar_of(&h, b.len()));
        hashes.push(h);
    }
    ingest.commit(&manifests).unwrap();
    hashes
}

fn assert_reads(store: &Store, blocks: &[Vec<u8>]) {
    for b in blocks {
        let h = BlockHash::of(b);
        let got = store.read_block(&h).unwrap().unwrap_or_else(|| panic!("block {h} is gone"));
        assert!(got == *b, "block {h} read back different bytes");
    }
}

fn every_form_reads_back_after_a_reopen(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path());
    let text = vec![bytes(1, 60_000, true), bytes(2, 50_000, true)];
    let noise = bytes(3, 70_000, false);
    let mut similar = noise.clone();
    similar[30_000..30_008].copy_from_slice(b"EDITED!!");
    add(&store, &text);
    add(&store, std::slice::from_ref(&noise));
    add(&store, std::slice::from_ref(&similar));
    let form = |b: &Vec<u8>| store.block_loc(&BlockHash::of(b)).unwrap().unwrap().form;
    assert!(matches!(form(&text[0]), Form::Framed { .. }), "text goes into a frame: {:?}", form(&text[0]));
    assert!(matches!(form(&noise), Form::Raw), "noise is stored raw: {:?}", form(&noise));
    assert!(matches!(form(&similar), Form::Delta { .. }), "a near copy is a delta: {:?}", form(&similar));
    let blocks = [text, vec![noise]].concat();
    drop(store);
    let store = backend.open(dir.path());
    assert_reads(&store, &blocks);
    assert_reads(&store, std::slice::from_ref(&similar));
    assert!(store.verify().unwrap().ok());
}

fn an_uncommitted_ingest_leaves_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path());
    let kept = bytes(10, 50_000, false);
    add(&store, std::slice::from_ref(&kept));
    let before: u64 = store.packs().list().unwrap().iter().map(|(_, l)| l).sum();
    {
        let mut ingest = store.begin_ingest();
        let doomed = bytes(11, 80_000, false);
        ingest.put(BlockHash::of(&doomed), &doomed).unwrap();
        // dropped: rolled back
    }
    let after: u64 = store.packs().list().unwrap().iter().map(|(_, l)| l).sum();
    assert_eq!(after, before, "the rolled-back records were cut off again");
    assert!(store.block_loc(&BlockHash::of(&bytes(11, 80_000, false))).unwrap().is_none());
    drop(store);
    let store = backend.open(dir.path());
    assert_reads(&store, &[kept]);
    assert!(store.verify().unwrap().ok());
}

fn gc_and_compaction_keep_what_is_live(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path());
    // Each block alone in a record, so forgetting half of them leaves a sparse pack.
    store.set_storage(StorageConfig { frame_bytes: 0, max_delta_depth: 0, ..StorageConfig::default() });
    let blocks: Vec<Vec<u8>> = (0..12).map(|i| bytes(100 + i, 60_000, false)).collect();
    let hashes = add(&store, &blocks);
    let packs_before = backend.packs(&store);
    // Two of every three forgotten: the pack is a third live, below GC's threshold of a half.
    let (dead, live): (Vec<_>, Vec<_>) = blocks.iter().enumerate().partition(|(i, _)| i % 3 != 0);
    for (i, _) in &dead {
        let h = hashes[*i];
        store.forget_nar(&NarHash(BlockHash::of(&[b"nar:".as_slice(), &h.0].concat()).0)).unwrap();
    }
    let report = store.gc().unwrap();
    assert_eq!(report.removed_blocks, 8, "{report:?}");
    assert!(report.packs_compacted >= 1, "{report:?}");
    assert!(report.disk_bytes_freed > 0, "{report:?}");
    let packs_after = backend.packs(&store);
    assert!(packs_before.iter().any(|p| !packs_after.contains(p)), "the sparse pack was removed from the backend");
    let live: Vec<Vec<u8>> = live.into_iter().map(|(_, b)| b.clone()).collect();
    assert_reads(&store, &live);
    for (_, b) in dead {
        assert!(store.read_block(&BlockHash::of(b)).unwrap().is_none());
    }
    drop(store);
    let store = backend.open(dir.path());
    assert_reads(&store, &live);
    assert!(store.verify().unwrap().ok());
}

fn a_damaged_byte_is_an_error_naming_the_block(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path());
    let raw = bytes(20, 50_000, false);
    let framed = bytes(21, 50_000, true);
    add(&store, std::slice::from_ref(&raw));
    add(&store, &[framed.clone(), bytes(22, 50_000, true)]);
    for b in [&raw, &framed] {
        let h = BlockHash::of(b);
        let loc = store.block_loc(&h).unwrap().unwrap();
        backend.flip(dir.path(), &loc, u64::from(loc.stored_len) / 2);
        store.frame_cache().clear();
        match store.read_block(&h) {
            Err(StoreError::CorruptBlock { hash, .. }) => assert_eq!(hash, h),
            Err(e) => panic!("a flipped byte in block {h} gave another error: {e}"),
            Ok(b) => panic!("a flipped byte in block {h} read as {} bytes", b.map_or(0, |b| b.len())),
        }
    }
    let r = store.verify().unwrap();
    assert!(!r.ok());
    assert!(r.problems.iter().any(|p| p.contains(&BlockHash::of(&raw).to_string())), "{:?}", r.problems);
}

fn two_stores_on_one_backend_share_its_packs(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let a = backend.open(dir.path());
    let b = backend.open(dir.path());
    let one = bytes(30, 40_000, false);
    let two = bytes(31, 40_000, false);
    add(&a, std::slice::from_ref(&one));
    add(&b, std::slice::from_ref(&two));
    // Each appends to a pack it holds; each sees what the other committed.
    assert_reads(&a, &[one.clone(), two.clone()]);
    assert_reads(&b, &[one, two]);
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod files {
            $(#[test] fn $name() { super::$name(super::Backend::File) })*
        }
        mod memory {
            $(#[test] fn $name() { super::$name(super::Backend::Mem(super::MemPacks::default())) })*
        }
    };
}

on_every_backend!(
    every_form_reads_back_after_a_reopen,
    an_uncommitted_ingest_leaves_nothing,
    gc_and_compaction_keep_what_is_live,
    a_damaged_byte_is_an_error_naming_the_block,
    two_stores_on_one_backend_share_its_packs,
);
