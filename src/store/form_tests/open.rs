//! Opening a store: a format-1 store is upgraded, a store of a later format refused, and a store opened
//! read-only reads every form and writes nothing.

use super::*;

#[test]
fn format_1_store_is_upgraded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.set_storage(StorageConfig::per_block());
    let a = blk(store_words(90, 30_000));
    add(&store, &[&a]);
    assert_eq!(format_of(&store), 3);
    // What a version-1 store looks like: format 1, no similarity index.
    {
        let txn = store.db().begin_write().unwrap();
        txn.open_table(META).unwrap().insert("format", 1u32.to_le_bytes().as_slice()).unwrap();
        assert!(txn.delete_table(SIMILAR).unwrap());
        txn.commit().unwrap();
    }
    let store = reopen(store, dir.path());
    assert_eq!(format_of(&store), 3);
    {
        let txn = store.db().begin_read().unwrap();
        assert_eq!(txn.open_table(SIMILAR).unwrap().len().unwrap(), 0);
    }
    assert_eq!(loc(&store, &a).form, Form::Zstd);
    assert_reads(&store, &[&a]);
    assert_clean(&store);
    // The upgraded store takes the new forms.
    let v1 = blk(noise(91, 64 * 1024));
    add(&store, &[&v1]);
    let v2 = blk(edited(&v1.1, 9));
    add(&store, &[&v2]);
    assert_eq!(loc(&store, &v2).form, Form::Delta { base: v1.0, depth: 1 });
    let store = reopen(store, dir.path());
    assert_reads(&store, &[&a, &v1, &v2]);
    assert_clean(&store);
}

#[test]
fn format_4_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = blk(store_words(92, 10_000));
    add(&store, &[&a]);
    {
        let txn = store.db().begin_write().unwrap();
        txn.open_table(META).unwrap().insert("format", 4u32.to_le_bytes().as_slice()).unwrap();
        txn.commit().unwrap();
    }
    drop(store);
    match Store::open(dir.path()) {
        Err(StoreError::Version { got: 4, expected: 3, .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a format-4 store was opened"),
    }
}

/// Commands that only read open the index read-only: every form reads back, several readers share the
/// store, nothing can be written through it, and a directory that holds no store is an error (a reader
/// never creates a store: a mistyped `--store` must not be reported consistent).
#[test]
fn a_store_opened_read_only_reads_everything_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v1 = blk(noise(141, 64 * 1024));
    let framed: Vec<Blk> = (0..4).map(|i| blk(store_words(150 + i, 12_000))).collect();
    add(&store, &[&v1]);
    let v2 = blk(edited(&v1.1, 14));
    add(&store, &[&v2]);
    add(&store, &framed.iter().collect::<Vec<_>>());
    drop(store);
    let index = std::fs::read(dir.path().join("index.redb")).unwrap();

    let a = Store::open_read_only(dir.path()).unwrap();
    let b = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(loc(&a, &v2).form, Form::Delta { base: v1.0, depth: 1 });
    let all: Vec<&Blk> = [&v1, &v2].into_iter().chain(&framed).collect();
    assert_reads(&a, &all);
    assert_reads(&b, &all);
    assert_clean(&a);
    let extra = blk(store_words(160, 5000));
    let mut ingest = a.begin_ingest();
    ingest.put(extra.0, &extra.1).unwrap();
    let (h, m) = nar_of(&extra);
    let err = ingest.commit(&[m]).unwrap_err().to_string();
    assert!(err.contains("read-only"), "{err}");
    assert!(a.nar(&h).unwrap().is_none());
    drop((a, b));
    assert!(std::fs::read(dir.path().join("index.redb")).unwrap() == index, "the index file changed");

    // Nothing there: an error, and nothing created.
    let fresh = tempfile::tempdir().unwrap();
    let missing = fresh.path().join("new");
    assert!(matches!(Store::open_read_only(&missing), Err(StoreError::NotAStore { .. })));
    assert!(!missing.exists());
}
