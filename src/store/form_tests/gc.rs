//! GC keeps every block a live block needs to be read (delta bases down a chain, the live members of a
//! frame, dictionaries, a tarball's recipe and content, normalized forms) and drops it with the last user.

use nixdag_testkit::tarball_content;

use super::streams::*;
use super::*;
use crate::chunk::ChunkerConfig;
use crate::import::add_path;

#[test]
fn gc_keeps_a_base_a_live_delta_needs_and_drops_it_with_the_delta() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v1 = blk(noise(51, 64 * 1024));
    let n1 = add(&store, &[&v1])[0];
    let v2 = blk(edited(&v1.1, 5));
    let n2 = add(&store, &[&v2])[0];
    assert_eq!(loc(&store, &v2).form, Form::Delta { base: v1.0, depth: 1 });

    assert!(store.forget_nar(&n1).unwrap());
    let r = store.gc().unwrap();
    assert_eq!(r.removed_blocks, 0, "{r:?}");
    assert!(store.block_loc(&v1.0).unwrap().is_some(), "v1 is v2's base and must stay");
    let store = reopen(store, dir.path());
    assert_reads(&store, &[&v2, &v1]);
    assert_clean(&store);

    assert!(store.forget_nar(&n2).unwrap());
    let r = store.gc().unwrap();
    assert_eq!(r.removed_blocks, 2, "{r:?}");
    assert!(store.block_loc(&v1.0).unwrap().is_none());
    assert!(store.block_loc(&v2.0).unwrap().is_none());
    for h in similar_targets(&store) {
        assert!(store.block_loc(&h).unwrap().is_some(), "similar-0 offers removed block {h} as a base");
    }
    assert!(similar_targets(&store).is_empty());
    assert_clean(&store);
    assert_eq!(store.stats().unwrap().blocks, 0);
}

#[test]
fn gc_keeps_every_base_down_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.set_storage(deltas(3));
    let mut versions = vec![blk(noise(61, 64 * 1024))];
    for i in 1..3u64 {
        let next = blk(edited(&versions.last().unwrap().1, 300 + i));
        versions.push(next);
    }
    let nars: Vec<NarHash> = versions.iter().map(|v| add(&store, &[v])[0]).collect();
    assert_eq!(loc(&store, &versions[2]).form.depth(), 2);
    // Only the deepest stays a root: its base and its base's base are kept.
    store.forget_nar(&nars[0]).unwrap();
    store.forget_nar(&nars[1]).unwrap();
    let r = store.gc().unwrap();
    assert_eq!(r.removed_blocks, 0, "{r:?}");
    let store = reopen(store, dir.path());
    assert_reads(&store, &[&versions[2]]);
    assert_clean(&store);
    for h in similar_targets(&store) {
        assert!(store.block_loc(&h).unwrap().is_some(), "similar-0 offers removed block {h}");
    }
}

#[test]
fn compaction_keeps_live_members_of_a_partly_dead_frame() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Filler: incompressible blocks in records of their own, all to be forgotten.
    store.set_storage(StorageConfig::per_block());
    let filler: Vec<Blk> = (0..6).map(|i| blk(noise(70 + i, 64 * 1024))).collect();
    let filler_nars = add(&store, &filler.iter().collect::<Vec<_>>());
    // One frame of six members, four of them to be forgotten.
    store.set_storage(StorageConfig::default());
    let members: Vec<Blk> = (0..6).map(|i| blk(store_words(80 + i, 15_000))).collect();
    let member_nars = add(&store, &members.iter().collect::<Vec<_>>());
    let before = loc(&store, &members[0]);
    assert!(matches!(before.form, Form::Framed { .. }));
    assert!(members.iter().all(|m| (loc(&store, m).pack, loc(&store, m).offset) == (before.pack, before.offset)));
    assert!(filler.iter().all(|f| loc(&store, f).pack == before.pack), "one pack holds everything");

    for n in filler_nars.iter().chain(&member_nars[..4]) {
        assert!(store.forget_nar(n).unwrap());
    }
    let r = store.gc().unwrap();
    assert_eq!(r.removed_blocks, 10, "{r:?}");
    assert_eq!(r.packs_compacted, 1, "{r:?}");
    let survivors = [&members[4], &members[5]];
    let (a, b) = (loc(&store, survivors[0]), loc(&store, survivors[1]));
    assert_ne!(a.pack, before.pack, "the frame moved to another pack");
    assert_eq!((a.pack, a.offset, a.stored_len), (b.pack, b.offset, b.stored_len), "members move together");
    assert_eq!((a.form, b.form), (loc_form_of(&before, &members, 4), loc_form_of(&before, &members, 5)));
    assert!(!dir.path().join("packs").join(format!("{:08}.pack", before.pack)).exists());
    assert_reads(&store, &survivors);
    assert_clean(&store);
    for m in &members[..4] {
        assert!(store.block_loc(&m.0).unwrap().is_none());
    }
    let store = reopen(store, dir.path());
    assert_reads(&store, &survivors);
    assert_clean(&store);
    let s = store.stats().unwrap();
    assert_eq!((s.blocks, s.forms.framed_blocks, s.forms.frames), (2, 2, 1));
}

#[test]
fn gc_keeps_recipe_and_content_while_the_tarball_lives() {
    let dir = tempfile::tempdir().unwrap();
    let (store, added, nar) = store_with_tarball(dir.path(), StorageConfig::default());
    let recipe = recipe_of(&store, &added);
    let content = content_blocks(&store, &recipe);
    let before = block_count(&store);
    let r = store.gc().unwrap();
    assert_eq!(r.removed_blocks, 0, "{r:?}");
    assert_eq!(block_count(&store), before);
    assert!(store.block_loc(&recipe).unwrap().is_some(), "the recipe was collected");
    for (h, _) in &content {
        assert!(store.block_loc(h).unwrap().is_some(), "content block {h} was collected");
    }
    let store = reopen(store, &dir.path().join("store"));
    assert_stream(&store, added.root, &nar);
    assert_clean(&store);

    assert!(store.forget_nar(&added.nar_hash).unwrap());
    let r = store.gc().unwrap();
    assert!(r.removed_blocks > content.len() as u64, "{r:?}");
    assert!(store.block_loc(&recipe).unwrap().is_none());
    for (h, _) in &content {
        assert!(store.block_loc(h).unwrap().is_none(), "content block {h} outlived its tarball");
    }
    assert_eq!(block_count(&store), 0);
    assert_clean(&store);
}

#[test]
fn gc_keeps_the_content_another_tarball_shares() {
    let dir = tempfile::tempdir().unwrap();
    let (store, first, _) = store_with_tarball(dir.path(), StorageConfig::default());
    let file =
        write_file(&dir.path().join("src"), "source-1.1.tar.gz", &gzip(&edited(&tarball_content(1), 8), 9, 8));
    let nar2 = dump(&file);
    let second = add_path(&store, &file, ChunkerConfig::default(), None).unwrap();
    repack_all(&store);
    let r2 = recipe_of(&store, &second);
    assert!(store.forget_nar(&first.nar_hash).unwrap());
    store.gc().unwrap();
    let store = reopen(store, &dir.path().join("store"));
    assert_stream(&store, second.root, &nar2);
    for (h, _) in content_blocks(&store, &r2) {
        assert!(store.block_loc(&h).unwrap().is_some());
    }
    assert_clean(&store);
    assert!(store.forget_nar(&second.nar_hash).unwrap());
    store.gc().unwrap();
    assert_eq!(block_count(&store), 0);
    assert_clean(&store);
}

#[test]
fn gc_keeps_normalized_forms_while_a_rebuild_needs_them() {
    let b = two_builds(StorageConfig::default());
    let store = &b.store;
    let p1 = patched_leaves(store, &b.nars[0].0);
    let p2 = patched_leaves(store, &b.nars[1].0);
    assert!(store.forget_nar(&b.nars[0].0.nar_hash).unwrap());
    let r = store.gc().unwrap();
    assert!(r.removed_blocks > 0, "the first build's patch records are garbage: {r:?}");
    for (leaf, base) in &p2 {
        assert!(store.block_loc(base).unwrap().is_some(), "normalized form {base} of {leaf} was collected");
    }
    for (leaf, _) in &p1 {
        assert!(store.block_loc(leaf).unwrap().is_none(), "patched leaf {leaf} of the forgotten build survived");
    }
    let dir = b.store_dir();
    let second = b.nars[1].clone();
    let store = reopen(b.store, &dir);
    assert_stream(&store, second.0.root, &second.1);
    assert_clean(&store);
    assert!(store.forget_nar(&second.0.nar_hash).unwrap());
    store.gc().unwrap();
    for (_, base) in &p2 {
        assert!(store.block_loc(base).unwrap().is_none());
    }
    assert_eq!(block_count(&store), 0);
    assert_clean(&store);
}

#[test]
fn gc_keeps_a_dictionary_while_a_frame_or_the_store_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, trained, later) = store_with_dictionary(dir.path());
    let d = store.dictionary().unwrap().unwrap();
    // No longer the store's dictionary (as after a newer one was trained), but live frames use it.
    {
        let txn = store.db().begin_write().unwrap();
        txn.open_table(META).unwrap().remove(super::super::tables::META_DICT).unwrap();
        txn.commit().unwrap();
    }
    let trained_nars: Vec<NarHash> = trained.iter().map(|b| nar_of(b).0).collect();
    for n in &trained_nars {
        assert!(store.forget_nar(n).unwrap());
    }
    store.gc().unwrap();
    assert!(store.block_loc(&d).unwrap().is_some(), "frames of `later` need the dictionary");
    let store = reopen(store, dir.path());
    assert_reads(&store, &later.iter().collect::<Vec<_>>());
    assert_clean(&store);
    // Nothing needs it any more: it goes.
    for b in &later {
        assert!(store.forget_nar(&nar_of(b).0).unwrap());
    }
    store.gc().unwrap();
    assert!(store.block_loc(&d).unwrap().is_none());
    assert_eq!(store.stats().unwrap().blocks, 0);
    assert_clean(&store);
}

#[test]
fn gc_keeps_the_stores_dictionary_before_any_frame_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, trained, later) = store_with_dictionary(dir.path());
    let d = store.dictionary().unwrap().unwrap();
    for b in trained.iter().chain(&later) {
        assert!(store.forget_nar(&nar_of(b).0).unwrap());
    }
    store.gc().unwrap();
    assert!(store.block_loc(&d).unwrap().is_some());
    assert_clean(&store);
    let next = blk(store_words(12_345, 40_000));
    add(&store, &[&next]);
    assert_eq!(dict_of(&store, &next), Some(d));
    let store = reopen(store, dir.path());
    assert_reads(&store, &[&next]);
}
