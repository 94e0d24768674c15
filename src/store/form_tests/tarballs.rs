//! Compressed tarballs kept as content + recipe (`Form::Rebuilt`): rebuilt byte for byte, at the ingest
//! or by a later repack, and stored as they are when no known compressor made them.

use nixdag_testkit::{tar_of, tar_stream, tarball_content};

use super::super::rebuilt::RecipeBlock;
use super::streams::*;
use super::*;
use crate::chunk::ChunkerConfig;
use crate::import::{add_file, add_path};

/// A recipe proven ahead (`proven.rs`, as `add`'s helper thread does) is used by the ingest, which then
/// only decompresses: the tarball is stored exactly as when the ingest analyzes it itself, for a NAR of
/// the file, the file itself, and a file whose proof says "not rebuildable".
#[test]
fn a_recipe_proven_ahead_is_used_and_gives_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let file = write_file(&src, "source-2.0.tar.gz", &gzip(&tarball_content(2), 9, 8));
    let nar_file = write_file(&src, "source.nar", &dump(&file));
    let plain = tempfile::tempdir().unwrap();
    let (a, b) = (Store::open(&plain.path().join("a")).unwrap(), Store::open(&dir.path().join("b")).unwrap());
    a.set_storage(inline_tarballs());
    b.set_storage(inline_tarballs());
    let want = add_path(&a, &file, ChunkerConfig::default(), None).unwrap();
    // The helper's proof for the NAR (its contents) is taken by an ingest of the NAR stream.
    crate::import::prove_ahead(&b, &nar_file, true).unwrap();
    assert_eq!(b.proven().state_len(), 1);
    let got =
        crate::import::add_nar(&b, std::fs::File::open(&nar_file).unwrap(), ChunkerConfig::default(), None).unwrap();
    assert_eq!(b.proven().state_len(), 0, "the proof was used");
    assert_eq!((got.root, got.nar_hash), (want.root, want.nar_hash));
    assert_eq!(recipe_of(&b, &got), recipe_of(&a, &want));
    assert_stream(&b, got.root, &dump(&file));
    assert_clean(&b);
    // A file proven not rebuildable (no known compressor made it) is stored whole without analysis.
    let mut odd = gzip(&tarball_content(3), 9, 8);
    odd[8] = 0; // XFL says "not level 9": no level-9 candidate is tried, and the others differ
    let odd_file = write_file(&src, "odd.tar.gz", &odd);
    crate::import::prove_ahead(&b, &odd_file, false).unwrap();
    assert_eq!(b.proven().state_len(), 1);
    let before = b.stats().unwrap().forms.rebuilt_blocks;
    crate::import::add_file(&b, &odd[..], "odd.tar.gz", Vec::new(), ChunkerConfig::default(), None).unwrap();
    assert_eq!(b.proven().state_len(), 0);
    assert_eq!(b.stats().unwrap().forms.rebuilt_blocks, before);
    assert_clean(&b);
}

#[test]
fn gzipped_tarball_is_rebuilt_from_its_content_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (store, added, nar) = store_with_tarball(dir.path(), StorageConfig::default());
    let recipe = recipe_of(&store, &added);
    assert_stream(&store, added.root, &nar);
    let s = store.stats().unwrap();
    assert!(s.forms.rebuilt_blocks > 0, "{:?}", s.forms);
    assert_eq!(s.forms.rebuilt_raw_bytes, nar.len() as u64, "the NAR's leaves are all rebuilt: {:?}", s.forms);
    // The content is kept decompressed: its DAG is the tar stream.
    let rb = RecipeBlock::decode(&store.read_block(&recipe).unwrap().unwrap()).unwrap();
    assert!(read_all(&store, rb.content_root) == tarball_content(1));
    assert!(nar.starts_with(&rb.prefix) && nar.ends_with(&rb.suffix));
    assert_clean(&store);

    let store = reopen(store, &dir.path().join("store"));
    assert_eq!(recipe_of(&store, &added), recipe);
    assert_stream(&store, added.root, &nar);
    // Leaves out of order too (each regenerates or reuses the output).
    for h in leaves(&store, &added.root, added.nar_size).iter().rev() {
        let b = store.read_block(h).unwrap().unwrap();
        assert_eq!(BlockHash::of(&b), *h);
    }
    assert!(store.stats().unwrap().forms.rebuilt_blocks > 0);
    assert_clean(&store);
}

#[test]
fn gzipped_tarball_added_as_a_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let gz = gzip(&tarball_content(2), 9, 8);
    let added = add_file(&store, &gz[..], "source-2.0.tar.gz", vec![], ChunkerConfig::default(), None).unwrap();
    assert_eq!((added.size, added.sha256), (gz.len() as u64, sha256(&gz)));
    assert_stream(&store, added.root, &gz);
    assert_eq!(store.repack_queue().unwrap(), vec![(added.root, crate::store::tables::REPACK_FILE)]);
    assert_eq!(repack_all(&store).converted, 1);
    assert_stream(&store, added.root, &gz);
    // A repacked file's leaves are rebuilt.
    let forms = forms_of(&store, &leaves(&store, &added.root, added.size));
    assert!(forms.iter().all(|f| matches!(f, Form::Rebuilt { .. })), "{forms:?}");
    let store = reopen(store, dir.path());
    let (_, entry) = store
        .file(&crate::nix::hash::NixHash {
            algo: crate::nix::hash::HashAlgo::Sha256,
            digest: added.sha256.to_vec(),
        })
        .unwrap()
        .unwrap();
    assert!(read_all(&store, entry.root_cid().unwrap()) == gz);
    assert_clean(&store);
}

#[test]
fn a_slightly_edited_tarball_costs_far_fewer_pack_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, first, _) = store_with_tarball(dir.path(), StorageConfig::default());
    let after_first = store.stats().unwrap().pack_bytes;
    let v2 = edited(&tarball_content(1), 7);
    let file = write_file(&dir.path().join("src"), "source-1.1.tar.gz", &gzip(&v2, 9, 8));
    let nar2 = dump(&file);
    let second = add_path(&store, &file, ChunkerConfig::default(), None).unwrap();
    repack_all(&store);
    let after_second = store.stats().unwrap().pack_bytes;
    let (c1, c2) = (after_first, after_second - after_first);
    eprintln!("pack bytes: first tarball {c1}, edited one {c2}");
    assert!(c2 * 5 < c1, "the first tarball took {c1} pack bytes, the edited one {c2}");
    let r2 = recipe_of(&store, &second);
    assert_ne!(r2, recipe_of(&store, &first));
    assert_stream(&store, second.root, &nar2);
    let store = reopen(store, &dir.path().join("store"));
    assert_stream(&store, second.root, &nar2);
    assert_clean(&store);
}

#[test]
fn tarballs_on_converts_during_the_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let (store, added, nar) = store_with_tarball(dir.path(), inline_tarballs());
    assert!(store.repack_queue().unwrap().is_empty(), "an inline conversion queues nothing");
    recipe_of(&store, &added);
    assert_stream(&store, added.root, &nar);
    assert_clean(&store);
}

#[test]
fn a_repack_frees_the_old_records_and_keeps_the_store_clean() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let gz = gzip(&tarball_content(6), 9, 8);
    let added = add_file(&store, &gz[..], "source-6.0.tar.gz", vec![], ChunkerConfig::default(), None).unwrap();
    let before = store.stats().unwrap();
    assert_eq!(before.repack_queued, 1);
    let r = repack_all(&store);
    let after = store.stats().unwrap();
    // The raw records are dead once the leaves are slices of the recipe's output, and the pack is
    // compacted without them: what remains is the content and the recipe.
    assert!(r.compaction.disk_bytes_freed as usize >= gz.len() / 2, "{r:?}");
    assert_eq!(after.repack_queued, 0);
    assert_eq!(after.forms.rebuilt_raw_bytes, gz.len() as u64, "{:?}", after.forms);
    assert_stream(&store, added.root, &gz);
    assert_clean(&store);
    // Nothing left to do: a second repack changes nothing, and adding the file again queues nothing.
    let again = crate::import::repack(&store, None, &mut |_, _, _| panic!("nothing is queued")).unwrap();
    assert_eq!((again.converted, again.kept, again.gone), (0, 0, 0));
    add_file(&store, &gz[..], "source-6.0.tar.gz", vec![], ChunkerConfig::default(), None).unwrap();
    assert!(store.repack_queue().unwrap().is_empty());
    let store = reopen(store, dir.path());
    assert_stream(&store, added.root, &gz);
    assert_clean(&store);
}

#[test]
fn a_forgotten_tarball_is_gone_for_the_repack() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let file = write_file(dir.path(), "source-7.0.tar.gz", &gzip(&tarball_content(7), 9, 8));
    let added = add_path(&store, &file, ChunkerConfig::default(), None).unwrap();
    assert!(store.forget_nar(&added.nar_hash).unwrap());
    store.gc().unwrap();
    assert!(store.repack_queue().unwrap().is_empty(), "gc drops the queue entry of a collected stream");
    // A queue entry left by an older build (or a crash between forget and gc) is gone for the repack.
    {
        let txn = store.db().begin_write().unwrap();
        txn.open_table(crate::store::tables::REPACK)
            .unwrap()
            .insert(added.root.to_bytes().as_slice(), crate::store::tables::REPACK_NAR)
            .unwrap();
        txn.commit().unwrap();
    }
    let mut seen = Vec::new();
    let r = crate::import::repack(&store, None, &mut |root, _, outcome| seen.push((*root, outcome))).unwrap();
    assert_eq!(seen, vec![(added.root, crate::import::RepackOutcome::Gone)]);
    assert_eq!((r.converted, r.gone), (0, 1));
    assert!(store.repack_queue().unwrap().is_empty());
    assert_eq!(block_count(&store), 0);
    assert_clean(&store);
}

/// A source tarball that ships another tarball the store also keeps: whichever is repacked first,
/// one's content holds the other's leaves, so reading it regenerates one inside the other. Both read
/// back, before and after a reopen, and `verify` finds nothing wrong.
#[test]
fn a_tarball_shipping_a_tarball_the_store_keeps_reads_back_after_repacks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let inner = gzip(&tar_stream(8, 12, 40_000), 9, 8);
    let outer =
        gzip(&tar_of(&[("pkg-2.0/README", &store_words(9, 3000)), ("pkg-2.0/vendor/dep-1.0.tar.gz", &inner)]), 9, 8);
    // The inner one as a store path: a NAR cuts a file's contents as a tar stream cuts a member's.
    let inner_path = write_file(dir.path(), "dep-1.0.tar.gz", &inner);
    let inner_nar = dump(&inner_path);
    let a = add_path(&store, &inner_path, ChunkerConfig::default(), None).unwrap();
    let b = add_file(&store, &outer[..], "pkg-2.0.tar.gz", vec![], ChunkerConfig::default(), None).unwrap();
    let r = repack_all(&store);
    assert_eq!(r.converted, 2, "{r:?}");
    // The outer content's member is the inner file, chunked as the inner file's own stream is, so it
    // reuses that stream's (now rebuilt) leaves.
    let outer_recipe = match forms_of(&store, &leaves(&store, &b.root, b.size))[0] {
        Form::Rebuilt { recipe, .. } => recipe,
        other => panic!("{other:?}"),
    };
    let inner_leaves = leaves(&store, &a.root, a.nar_size);
    let content: Vec<BlockHash> = content_blocks(&store, &outer_recipe).into_iter().map(|(h, _)| h).collect();
    assert!(inner_leaves.iter().any(|h| content.contains(h)), "no nesting to test");
    assert_stream(&store, a.root, &inner_nar);
    assert_stream(&store, b.root, &outer);
    assert_clean(&store);
    let store = reopen(store, dir.path());
    assert_stream(&store, b.root, &outer);
    assert_stream(&store, a.root, &inner_nar);
    assert_clean(&store);
}

#[test]
fn tarballs_off_keeps_no_rebuilt_forms() {
    let dir = tempfile::tempdir().unwrap();
    let (store, added, nar) =
        store_with_tarball(dir.path(), StorageConfig { tarballs: Tarballs::Off, ..Default::default() });
    let forms = forms_of(&store, &leaves(&store, &added.root, added.nar_size));
    assert!(!forms.iter().any(|f| matches!(f, Form::Rebuilt { .. })), "{forms:?}");
    assert_eq!(store.stats().unwrap().forms.rebuilt_blocks, 0);
    assert_stream(&store, added.root, &nar);
    // add_file too.
    let gz = gzip(&tarball_content(3), 9, 8);
    let f = add_file(&store, &gz[..], "x.tar.gz", vec![], ChunkerConfig::default(), None).unwrap();
    assert_stream(&store, f.root, &gz);
    assert_eq!(store.stats().unwrap().forms.rebuilt_blocks, 0);
    assert_clean(&store);
}

#[test]
fn gzip_from_an_unknown_compressor_is_stored_as_it_is() {
    // Stored (level 0) deflate blocks and memLevel 1 are not among the analyzer's candidates.
    for (level, mem_level) in [(0, 8), (6, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let file = write_file(dir.path(), "odd.tar.gz", &gzip(&tarball_content(4), level, mem_level));
        let nar = dump(&file);
        let added = add_path(&store, &file, ChunkerConfig::default(), None).unwrap();
        let r = repack_all(&store);
        assert_eq!((r.converted, r.kept), (0, 1), "{r:?}");
        let forms = forms_of(&store, &leaves(&store, &added.root, added.nar_size));
        assert!(
            !forms.iter().any(|f| matches!(f, Form::Rebuilt { .. })),
            "level {level} mem {mem_level}: {forms:?}"
        );
        assert_eq!(store.stats().unwrap().forms.rebuilt_blocks, 0);
        assert_stream(&store, added.root, &nar);
        assert_clean(&store);
        // Content blocks the failed analysis stored are garbage; GC removes them and nothing else.
        store.gc().unwrap();
        assert_stream(&store, added.root, &nar);
        let gz = std::fs::read(&file).unwrap();
        let f = add_file(&store, &gz[..], "odd.tar.gz", vec![], ChunkerConfig::default(), None).unwrap();
        let forms = forms_of(&store, &leaves(&store, &f.root, f.size));
        assert!(!forms.iter().any(|f| matches!(f, Form::Rebuilt { .. })), "{forms:?}");
        let store = reopen(store, dir.path());
        assert_stream(&store, added.root, &nar);
        assert_stream(&store, f.root, &gz);
        assert_clean(&store);
    }
}
