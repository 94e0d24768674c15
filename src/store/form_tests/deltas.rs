//! Blocks stored as deltas on similar stored blocks: they read back, chains stop at the configured depth,
//! a base is usable as soon as it is committed, and concurrent ingests writing the same block do not break
//! the deltas made against its first copy.

use super::*;

#[test]
fn similar_block_is_stored_as_a_delta_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v1 = blk(noise(7, 64 * 1024));
    add(&store, &[&v1]);
    let v2 = blk(edited(&v1.1, 1));
    add(&store, &[&v2]);
    let store = reopen(store, dir.path());
    let l2 = loc(&store, &v2);
    assert_eq!(l2.form, Form::Delta { base: v1.0, depth: 1 }, "{l2:?}");
    assert!(l2.stored_len < l2.raw_len / 10, "a delta of 4 small edits is {} bytes", l2.stored_len);
    assert_eq!(loc(&store, &v1).form, Form::Raw);
    // Each on its own: the delta first (which reads its base), then the base.
    assert_reads(&store, &[&v2, &v1]);
    assert_clean(&store);
    let s = store.stats().unwrap();
    assert_eq!((s.forms.delta_blocks, s.forms.max_delta_depth), (1, 1));
}

#[test]
fn delta_chains_stop_at_the_configured_depth() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.set_storage(deltas(2));
    let mut versions = vec![blk(noise(11, 64 * 1024))];
    for i in 1..4u64 {
        let next = blk(edited(&versions.last().unwrap().1, 100 + i));
        versions.push(next);
    }
    for v in &versions {
        add(&store, &[v]);
    }
    let store = reopen(store, dir.path());
    let forms: Vec<Form> = versions.iter().map(|v| loc(&store, v).form).collect();
    for (v, f) in versions.iter().zip(&forms) {
        assert!(f.depth() <= 2, "{} has depth {}: {forms:?}", v.0, f.depth());
    }
    assert_eq!(forms[1], Form::Delta { base: versions[0].0, depth: 1 }, "{forms:?}");
    assert_eq!(forms[2], Form::Delta { base: versions[1].0, depth: 2 }, "{forms:?}");
    assert!(matches!(forms[3], Form::Delta { .. }), "v4 resembles v1..v3: {forms:?}");
    // A block at the deepest allowed depth is never offered as a base.
    assert!(!similar_targets(&store).contains(&versions[2].0));
    assert_reads(&store, &versions.iter().rev().collect::<Vec<_>>());
    assert_clean(&store);

    // A shallower setting later: a candidate that is already too deep is replaced by its base.
    store.set_storage(deltas(1));
    let v5 = blk(edited(&versions[1].1, 200));
    add(&store, &[&v5]);
    let f5 = loc(&store, &v5).form;
    assert!(f5.depth() <= 1, "{f5:?}");
    assert_eq!(f5, Form::Delta { base: versions[0].0, depth: 1 }, "v5 resembles v2, whose base is v1");
    let store = reopen(store, dir.path());
    assert_reads(&store, &[&v5]);
    assert_clean(&store);
    assert_eq!(store.stats().unwrap().forms.max_delta_depth, 2);
}

/// Two ingests that both write the same new block (documented: "the later commit's location wins")
/// must not change the form of a block other blocks depend on: here the later commit stores v1 as a
/// delta of depth 1, while v2 is a delta of depth 1 on v1's first, raw copy. With `delta_first`, v2 is
/// committed before the second copy of v1, else after it (v2 was compressed against the first copy
/// either way).
fn later_copy_of_a_base(delta_first: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v0 = blk(noise(101, 64 * 1024));
    let v1 = blk(edited(&v0.1, 11));
    let v2 = blk(edited(&v1.1, 12));
    // X writes v1 while nothing resembling it is stored: v1 alone.
    let mut x = store.begin_ingest();
    x.put(v1.0, &v1.1).unwrap();
    add(&store, &[&v0]);
    // Y writes v1 too (it is not committed yet), now as a delta on v0.
    let mut y = store.begin_ingest();
    y.put(v1.0, &v1.1).unwrap();
    x.commit(&[nar_of(&v1).1]).unwrap();
    assert_eq!(loc(&store, &v1).form.depth(), 0);
    // Z stores v2 as a delta on v1's committed, raw copy.
    let mut z = store.begin_ingest();
    z.put(v2.0, &v2.1).unwrap();
    if delta_first {
        z.commit(&[nar_of(&v2).1]).unwrap();
        assert_eq!(loc(&store, &v2).form, Form::Delta { base: v1.0, depth: 1 });
        y.commit(&[nar_of(&v1).1]).unwrap();
    } else {
        y.commit(&[nar_of(&v1).1]).unwrap();
        z.commit(&[nar_of(&v2).1]).unwrap();
    }
    let (f1, f2) = (loc(&store, &v1).form, loc(&store, &v2).form);
    let store = reopen(store, dir.path());
    let r = store.verify().unwrap();
    assert!(r.ok(), "v1 is stored as {f1:?}, v2 as {f2:?}: {:#?}", r.problems);
    assert!(f2.depth() > f1.depth() || !matches!(f2, Form::Delta { base, .. } if base == v1.0));
    assert_reads(&store, &[&v0, &v1, &v2]);
}

#[test]
fn a_later_copy_of_a_block_does_not_break_deltas_committed_on_the_first() {
    later_copy_of_a_base(true);
}

#[test]
fn a_later_copy_of_a_block_does_not_break_deltas_compressed_against_the_first() {
    later_copy_of_a_base(false);
}

/// A committed record is readable at once, by the next ingest too (as a delta base): it once sat in the
/// pack's write buffer after a deferred commit, and similar blocks were silently stored whole (the full
/// corpus took 15.0 % instead of 14.2 %).
#[test]
fn a_committed_block_is_readable_at_once_and_serves_as_a_delta_base() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v1 = blk(noise(131, 64 * 1024));
    add(&store, &[&v1]);
    assert!(store.read_block(&v1.0).unwrap().unwrap() == v1.1);
    let v2 = blk(edited(&v1.1, 13));
    add(&store, &[&v2]);
    assert_eq!(loc(&store, &v2).form, Form::Delta { base: v1.0, depth: 1 });
    let store = reopen(store, dir.path());
    assert_reads(&store, &[&v1, &v2]);
    assert_clean(&store);
}
