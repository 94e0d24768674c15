//! Blocks stored one to a record (format 1's per-block zstd, or raw when zstd cannot shrink them) and
//! neighbouring blocks sharing a zstd frame, with or without a trained dictionary: each reads back
//! byte-exact after a reopen.

use super::*;

#[test]
fn legacy_per_block_zstd_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.set_storage(StorageConfig::per_block());
    let (a, b) = (blk(store_words(1, 30_000)), blk(store_words(2, 5_000)));
    add(&store, &[&a, &b]);
    let store = reopen(store, dir.path());
    for x in [&a, &b] {
        let l = loc(&store, x);
        assert_eq!(l.form, Form::Zstd, "{l:?}");
        assert!(l.stored_len < l.raw_len);
        assert_eq!(l.encode().len(), BlockLoc::COMMON_LEN, "format 1's layout");
    }
    assert_ne!(loc(&store, &a).offset, loc(&store, &b).offset, "each block in its own record");
    assert_reads(&store, &[&a, &b]);
    assert_clean(&store);
    let s = store.stats().unwrap();
    assert_eq!((s.forms.zstd_blocks, s.forms.frames, s.forms.delta_blocks), (2, 0, 0));
}

#[test]
fn incompressible_block_is_stored_raw_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.set_storage(StorageConfig::per_block());
    let a = blk(noise(1, 40_000));
    add(&store, &[&a]);
    // The default settings too: a frame of one block is that block alone, raw when zstd cannot shrink it.
    store.set_storage(StorageConfig::default());
    let b = blk(noise(2, 20_000));
    add(&store, &[&b]);
    let store = reopen(store, dir.path());
    for x in [&a, &b] {
        let l = loc(&store, x);
        assert_eq!(l.form, Form::Raw, "{l:?}");
        assert_eq!(l.stored_len, l.raw_len);
    }
    assert_reads(&store, &[&a, &b]);
    assert_clean(&store);
}

#[test]
fn framed_blocks_share_one_record_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.set_storage(StorageConfig { frame_bytes: 256 * 1024, ..StorageConfig::default() });
    let blocks: Vec<Blk> = (0..5).map(|i| blk(store_words(10 + i, 9_000 + 3_000 * i as usize))).collect();
    add(&store, &blocks.iter().collect::<Vec<_>>());
    let store = reopen(store, dir.path());
    let locs: Vec<BlockLoc> = blocks.iter().map(|b| loc(&store, b)).collect();
    let total: u32 = blocks.iter().map(|b| b.1.len() as u32).sum();
    let mut starts = Vec::new();
    for (b, l) in blocks.iter().zip(&locs) {
        let Form::Framed { frame_len, start, dict } = l.form else { panic!("{} is not framed: {l:?}", b.0) };
        assert_eq!((l.pack, l.offset, l.stored_len), (locs[0].pack, locs[0].offset, locs[0].stored_len));
        assert_eq!((frame_len, dict), (total, None));
        assert_eq!(l.raw_len as usize, b.1.len());
        starts.push(start);
    }
    let mut sorted = starts.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), blocks.len(), "members start at distinct places: {starts:?}");
    assert!(locs[0].stored_len < total / 2, "the frame compresses: {} of {total}", locs[0].stored_len);
    // Out of order too (the frame cache must not hand one member's bytes to another).
    assert_reads(&store, &blocks.iter().rev().collect::<Vec<_>>());
    assert_reads(&store, &blocks.iter().collect::<Vec<_>>());
    assert_clean(&store);
    let s = store.stats().unwrap();
    assert_eq!((s.forms.framed_blocks, s.forms.frames), (5, 1));
}

#[test]
fn blocks_past_the_frame_size_go_to_the_next_frame() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.set_storage(StorageConfig { frame_bytes: 40_000, ..StorageConfig::default() });
    let blocks: Vec<Blk> = (0..4).map(|i| blk(store_words(20 + i, 20_000))).collect();
    add(&store, &blocks.iter().collect::<Vec<_>>());
    let store = reopen(store, dir.path());
    let locs: Vec<BlockLoc> = blocks.iter().map(|b| loc(&store, b)).collect();
    assert!(locs.iter().all(|l| matches!(l.form, Form::Framed { .. })), "{locs:?}");
    assert_eq!((locs[0].pack, locs[0].offset), (locs[1].pack, locs[1].offset));
    assert_eq!((locs[2].pack, locs[2].offset), (locs[3].pack, locs[3].offset));
    assert_ne!(locs[0].offset, locs[2].offset);
    assert_reads(&store, &blocks.iter().collect::<Vec<_>>());
    assert_clean(&store);
    assert_eq!(store.stats().unwrap().forms.frames, 2);
}

#[test]
fn frames_compressed_with_a_trained_dictionary_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (store, trained, later) = store_with_dictionary(dir.path());
    let d = store.dictionary().unwrap().expect("a dictionary was trained");
    // Frames before training have none, the rest name it; the dictionary is a plain block of its own.
    assert_eq!(dict_of(&store, &trained[0]), None);
    assert_eq!(dict_of(&store, trained.last().unwrap()), Some(d));
    for b in &later {
        assert_eq!(dict_of(&store, b), Some(d));
    }
    assert!(matches!(store.block_loc(&d).unwrap().unwrap().form, Form::Raw));
    let store = reopen(store, dir.path());
    assert_eq!(format_of(&store), 3);
    let all: Vec<&Blk> = trained.iter().chain(&later).collect();
    assert_reads(&store, &all);
    assert_clean(&store);
    let f = store.stats().unwrap().forms;
    assert_eq!(f.dictionaries, 1);
    assert!(f.frames_with_dict >= 10 && f.frames_with_dict < f.frames, "{f:?}");
    // A store reopened with dictionaries off still reads them, and writes frames without one.
    let extra = blk(store_words(9000, 30_000));
    store.set_storage(StorageConfig { frame_bytes: 64 * 1024, max_delta_depth: 0, ..Default::default() });
    add(&store, &[&extra]);
    assert!(!matches!(loc(&store, &extra).form, Form::Framed { dict: Some(_), .. }));
    assert_reads(&store, &all);
}
