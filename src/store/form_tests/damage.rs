//! Damage is reported as such and never turns into wrong bytes: a damaged or missing delta base, frame,
//! dictionary, tarball recipe or content block, normalized form, and an index whose recipes form a cycle.

use std::io::Read;

use super::streams::*;
use super::*;
use crate::dag::DagReader;

#[test]
fn damaged_delta_base_is_reported_for_base_and_delta() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v1 = blk(noise(21, 64 * 1024));
    add(&store, &[&v1]);
    let v2 = blk(edited(&v1.1, 2));
    add(&store, &[&v2]);
    let l1 = loc(&store, &v1);
    assert_eq!(loc(&store, &v2).form, Form::Delta { base: v1.0, depth: 1 });
    drop(store);
    flip_payload_byte(dir.path(), &l1, u64::from(l1.stored_len) / 2);
    let store = Store::open(dir.path()).unwrap();
    let problems = problems_of(&store);
    assert!(reported(&problems, &v1.0, ""), "base not reported: {problems:#?}");
    assert!(reported(&problems, &v2.0, "delta base"), "delta not reported as such: {problems:#?}");
    assert!(store.read_block(&v2.0).is_err(), "a delta on a damaged base must not read");
    assert!(store.read_block(&v1.0).is_err());
}

#[test]
fn damaged_framed_delta_base_is_reported_for_frame_members_and_delta() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v1 = blk(noise(22, 64 * 1024));
    let neighbour = blk(store_words(23, 20_000));
    add(&store, &[&v1, &neighbour]);
    let v2 = blk(edited(&v1.1, 3));
    add(&store, &[&v2]);
    let l1 = loc(&store, &v1);
    assert!(matches!(l1.form, Form::Framed { .. }), "{l1:?}");
    assert_eq!(loc(&store, &v2).form, Form::Delta { base: v1.0, depth: 1 });
    drop(store);
    // The frame's first byte (zstd's magic number): the whole frame is lost.
    flip_payload_byte(dir.path(), &l1, 0);
    let store = Store::open(dir.path()).unwrap();
    let problems = problems_of(&store);
    assert!(problems.iter().any(|p| p.contains("payload hashes to")), "frame not reported: {problems:#?}");
    assert!(reported(&problems, &v1.0, "frame"), "{problems:#?}");
    assert!(reported(&problems, &neighbour.0, "frame"), "{problems:#?}");
    assert!(reported(&problems, &v2.0, "delta base"), "{problems:#?}");
    for b in [&v1, &neighbour, &v2] {
        assert!(store.read_block(&b.0).is_err(), "{} read from a damaged frame", b.0);
    }
}

#[test]
fn damaged_frame_payload_is_reported_and_never_read_as_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let blocks: Vec<Blk> = (0..4).map(|i| blk(store_words(30 + i, 12_000))).collect();
    add(&store, &blocks.iter().collect::<Vec<_>>());
    let l = loc(&store, &blocks[0]);
    assert!(matches!(l.form, Form::Framed { .. }));
    drop(store);

    // Damage in the middle of the compressed data: the frame fails its payload hash, and every member
    // either reads back exactly or is reported; at least one is.
    let mid = tempfile::tempdir().unwrap();
    copy_store(dir.path(), mid.path());
    flip_payload_byte(mid.path(), &l, u64::from(l.stored_len) / 2);
    let store = Store::open(mid.path()).unwrap();
    let problems = problems_of(&store);
    let frame_line = format!("frame in pack {} at offset {}: payload hashes to", l.pack, l.offset);
    assert!(problems.iter().any(|p| p.starts_with(&frame_line)), "{problems:#?}");
    let mut damaged = 0;
    for b in &blocks {
        match store.read_block(&b.0) {
            Ok(Some(got)) => {
                assert!(got == b.1, "{} read back wrong bytes", b.0);
                assert!(!reported(&problems, &b.0, ""), "{} reads fine but is reported", b.0);
            }
            Ok(None) => panic!("{} vanished", b.0),
            Err(_) => {
                damaged += 1;
                assert!(reported(&problems, &b.0, "frame"), "{} unreadable but not reported: {problems:#?}", b.0);
            }
        }
    }
    assert!(damaged > 0, "damage inside the compressed data spared every member");
    drop(store);

    // Damage to the frame header: every member is reported, with the frame.
    flip_payload_byte(dir.path(), &l, 1);
    let store = Store::open(dir.path()).unwrap();
    let problems = problems_of(&store);
    assert!(problems.iter().any(|p| p.starts_with(&frame_line)), "{problems:#?}");
    for b in &blocks {
        assert!(reported(&problems, &b.0, "its frame is damaged"), "{} not reported: {problems:#?}", b.0);
        assert!(store.read_block(&b.0).is_err());
    }
}

#[test]
fn delta_whose_base_is_missing_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v1 = blk(noise(41, 64 * 1024));
    add(&store, &[&v1]);
    let v2 = blk(edited(&v1.1, 4));
    add(&store, &[&v2]);
    assert_eq!(loc(&store, &v2).form, Form::Delta { base: v1.0, depth: 1 });
    {
        let txn = store.db().begin_write().unwrap();
        assert!(txn.open_table(BLOCKS).unwrap().remove(v1.0 .0.as_slice()).unwrap().is_some());
        txn.commit().unwrap();
    }
    let store = reopen(store, dir.path());
    let problems = problems_of(&store);
    assert!(
        reported(&problems, &v2.0, &format!("delta base {} is missing", v1.0)),
        "missing base not reported: {problems:#?}"
    );
    assert!(store.read_block(&v2.0).is_err());
}

/// Regression (review): a damaged index that makes a rebuilt block its own recipe, or a delta whose base
/// is rebuilt from that delta, must give an error, not recurse until the stack overflows.
#[test]
fn index_cycles_through_recipes_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v1 = blk(noise(43, 64 * 1024));
    add(&store, &[&v1]);
    let v2 = blk(edited(&v1.1, 4));
    add(&store, &[&v2]);
    assert_eq!(loc(&store, &v2).form, Form::Delta { base: v1.0, depth: 1 });
    let x = BlockHash([0x77; 32]);
    {
        let txn = store.db().begin_write().unwrap();
        {
            let mut t = txn.open_table(BLOCKS).unwrap();
            let own = BlockLoc {
                pack: 0,
                offset: 0,
                stored_len: 0,
                raw_len: 10,
                form: Form::Rebuilt { recipe: x, start: 0 },
            };
            t.insert(x.0.as_slice(), own.encode().as_slice()).unwrap();
            // v1, the base of v2, rebuilt from a recipe that is v2.
            let back = BlockLoc {
                pack: 0,
                offset: 0,
                stored_len: 0,
                raw_len: v1.1.len() as u32,
                form: Form::Rebuilt { recipe: v2.0, start: 0 },
            };
            t.insert(v1.0 .0.as_slice(), back.encode().as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    assert!(store.read_block(&x).is_err());
    assert!(store.read_block(&v2.0).is_err());
    assert!(store.read_block(&v1.0).is_err());
    assert!(!problems_of(&store).is_empty());
}

#[test]
fn damaged_content_block_is_reported_against_the_rebuilt_leaves() {
    let dir = tempfile::tempdir().unwrap();
    // One record per block, so the damage hits one content block and not its neighbours.
    let cfg = StorageConfig { frame_bytes: 0, ..Default::default() };
    let (store, added, _) = store_with_tarball(dir.path(), cfg);
    let recipe = recipe_of(&store, &added);
    let nar_leaves = leaves(&store, &added.root, added.nar_size);
    let content: Vec<BlockHash> =
        content_blocks(&store, &recipe).into_iter().filter(|(_, c)| *c == RAW_CODEC).map(|(h, _)| h).collect();
    assert!(content.len() > 1, "{content:?}");
    let victim = content[content.len() / 2];
    let l = store.block_loc(&victim).unwrap().unwrap();
    assert!(matches!(l.form, Form::Zstd | Form::Raw), "{l:?}");
    drop(store);
    flip_payload_byte(&dir.path().join("store"), &l, 0);
    let store = Store::open(&dir.path().join("store")).unwrap();
    let problems = problems_of(&store);
    assert!(reported(&problems, &victim, ""), "the content block is not reported: {problems:#?}");
    for h in &nar_leaves {
        assert!(reported(&problems, h, "recipe"), "rebuilt leaf {h} is not reported: {problems:#?}");
        assert!(store.read_block(h).is_err(), "rebuilt leaf {h} read from damaged content");
    }
    if let Ok(mut r) = DagReader::new(&store, added.root) {
        assert!(r.read_to_end(&mut Vec::new()).is_err(), "the NAR read back from damaged content");
    }
    // GC marks leaves by presence only, so damage inside a content leaf does not stop it; it must
    // still keep everything the recipe names.
    let r = store.gc().unwrap();
    assert_eq!(r.removed_blocks, 0, "{r:?}");
    assert!(store.block_loc(&recipe).unwrap().is_some() && store.block_loc(&victim).unwrap().is_some());
}

#[test]
fn missing_recipe_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (store, added, _) = store_with_tarball(dir.path(), StorageConfig::default());
    let recipe = recipe_of(&store, &added);
    let nar_leaves = leaves(&store, &added.root, added.nar_size);
    {
        let txn = store.db().begin_write().unwrap();
        assert!(txn.open_table(BLOCKS).unwrap().remove(recipe.0.as_slice()).unwrap().is_some());
        txn.commit().unwrap();
    }
    let store = reopen(store, &dir.path().join("store"));
    let problems = problems_of(&store);
    for h in &nar_leaves {
        assert!(
            reported(&problems, h, &format!("recipe {recipe} is missing")),
            "rebuilt leaf {h} not reported: {problems:#?}"
        );
        assert!(store.read_block(h).is_err());
    }
}

#[test]
fn damaged_normalized_form_is_reported_against_the_patched_block() {
    let b = two_builds(StorageConfig::default());
    let (leaf, base) = patched_leaves(&b.store, &b.nars[1].0)[0];
    let l = b.store.block_loc(&base).unwrap().unwrap();
    let dir = b.store_dir();
    drop(b.store);
    flip_payload_byte(&dir, &l, 0);
    let store = Store::open(&dir).unwrap();
    let problems = problems_of(&store);
    assert!(reported(&problems, &leaf, "normalized form"), "{problems:#?}");
    assert!(store.read_block(&leaf).is_err());
    let mut v = Vec::new();
    assert!(DagReader::new(&store, b.nars[1].0.root).unwrap().read_to_end(&mut v).is_err());
}

#[test]
fn missing_normalized_form_is_reported() {
    let b = two_builds(StorageConfig::default());
    let p = patched_leaves(&b.store, &b.nars[1].0);
    let (leaf, base) = p[0];
    {
        let txn = b.store.db().begin_write().unwrap();
        assert!(txn.open_table(BLOCKS).unwrap().remove(base.0.as_slice()).unwrap().is_some());
        txn.commit().unwrap();
    }
    let dir = b.store_dir();
    let store = reopen(b.store, &dir);
    let problems = problems_of(&store);
    assert!(reported(&problems, &leaf, &format!("normalized form {base} is missing")), "{problems:#?}");
    for (l, bb) in &p {
        if *bb == base {
            assert!(store.read_block(l).is_err());
        }
    }
}

#[test]
fn damaged_dictionary_is_reported_for_every_frame_that_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, later) = store_with_dictionary(dir.path());
    let d = store.dictionary().unwrap().unwrap();
    let dl = store.block_loc(&d).unwrap().unwrap();
    drop(store);
    flip_payload_byte(dir.path(), &dl, u64::from(dl.stored_len) / 2);
    let store = Store::open(dir.path()).unwrap();
    let problems = problems_of(&store);
    assert!(reported(&problems, &d, "hash to"), "the dictionary itself: {problems:#?}");
    for b in &later {
        assert!(reported(&problems, &b.0, "its dictionary is damaged"), "{} not reported: {problems:#?}", b.0);
        assert!(store.read_block(&b.0).is_err());
    }
}

#[test]
fn missing_dictionary_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, later) = store_with_dictionary(dir.path());
    let d = store.dictionary().unwrap().unwrap();
    {
        let txn = store.db().begin_write().unwrap();
        assert!(txn.open_table(BLOCKS).unwrap().remove(d.0.as_slice()).unwrap().is_some());
        txn.commit().unwrap();
    }
    let store = reopen(store, dir.path());
    let problems = problems_of(&store);
    for b in &later {
        assert!(reported(&problems, &b.0, &format!("dictionary {d} is missing")), "{problems:#?}");
    }
    // An ingest after it does not use the lost dictionary: it trains a new one.
    store.set_storage(StorageConfig {
        frame_bytes: 64 * 1024,
        max_delta_depth: 0,
        dict: true,
        ..Default::default()
    });
    let more: Vec<Blk> = (0..300).map(|i| blk(store_words(11_000 + i, 16 * 1024))).collect();
    add(&store, &more.iter().collect::<Vec<_>>());
    let d2 = store.dictionary().unwrap().unwrap();
    assert_ne!(d2, d);
    assert_eq!(dict_of(&store, more.last().unwrap()), Some(d2));
    assert_reads(&store, &more.iter().collect::<Vec<_>>());
}
