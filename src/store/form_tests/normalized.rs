//! Store-path hash parts normalized out (`Form::Patched`): two builds differing only in those share their
//! normalized blocks, and `normalize` off keeps none.

use super::streams::*;
use super::*;

#[test]
fn rebuilds_differing_in_hash_parts_share_normalized_blocks() {
    let b = two_builds(StorageConfig::default());
    let store = &b.store;
    for (a, nar) in &b.nars {
        assert_stream(store, a.root, nar);
    }
    let p1 = patched_leaves(store, &b.nars[0].0);
    let p2 = patched_leaves(store, &b.nars[1].0);
    assert!(!p2.is_empty());
    let leaves2 = leaves(store, &b.nars[1].0.root, b.nars[1].0.nar_size);
    let leaves1 = leaves(store, &b.nars[0].0.root, b.nars[0].0.nar_size);
    for h in &leaves2 {
        if !leaves1.contains(h) {
            assert!(p2.iter().any(|(l, _)| l == h), "leaf {h} of the rebuild is new and not patched");
        }
    }
    let bases = |p: &[(BlockHash, BlockHash)]| {
        let mut v: Vec<BlockHash> = p.iter().map(|(_, b)| *b).collect();
        v.sort_by_key(|h| h.0);
        v
    };
    assert_eq!(bases(&p1), bases(&p2), "the rebuild's patched leaves use the first build's normalized blocks");
    for (_, base) in &p2 {
        let f = store.block_loc(base).unwrap().unwrap().form;
        assert!(!matches!(f, Form::Patched { .. } | Form::Rebuilt { .. }), "{f:?}");
    }
    let s = store.stats().unwrap();
    assert!(s.forms.patched_blocks > 0, "{:?}", s.forms);
    let nar_bytes = (b.nars[0].1.len() + b.nars[1].1.len()) as u64;
    assert!(s.forms.patched_stored_bytes * 20 < nar_bytes, "patch records are small: {:?}", s.forms);
    assert_clean(store);
    let dir = b.store_dir();
    let nars = b.nars.clone();
    let store = reopen(b.store, &dir);
    for (a, nar) in &nars {
        assert_stream(&store, a.root, nar);
    }
    assert_clean(&store);
}

#[test]
fn normalize_off_keeps_no_patched_forms() {
    let b = two_builds(StorageConfig { normalize: false, ..Default::default() });
    for (a, nar) in &b.nars {
        assert!(patched_leaves(&b.store, a).is_empty());
        assert_stream(&b.store, a.root, nar);
    }
    assert_eq!(b.store.stats().unwrap().forms.patched_blocks, 0);
    assert_clean(&b.store);
}
