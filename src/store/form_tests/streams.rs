//! Helpers for the tests that go through whole streams, NARs and files, rather than blocks: reading a
//! stream back, a gzipped tarball stored as content + recipe (`Form::Rebuilt`), and a package built twice
//! against dependencies of different hashes (`Form::Patched`).

use std::io::Read;
use std::os::raw::c_int;
use std::path::{Path, PathBuf};

use nixdag_testkit::{store_words, tarball_content};

use super::super::rebuilt::RecipeBlock;
use super::*;
use crate::chunk::ChunkerConfig;
use crate::dag::cid::{block_hash, Cid};
use crate::dag::{walk, DagReader, WalkMode};
use crate::import::{add_path, NarAdded};

/// `data` gzipped by the C zlib's own gzip wrapper (`windowBits` 31: header with mtime 0, XFL, OS).
pub(super) fn gzip(data: &[u8], level: i32, mem_level: i32) -> Vec<u8> {
    use libz_sys as z;
    let mut strm = crate::recompress::zlib::new_stream();
    // SAFETY: a fresh boxed stream; input and output pointers describe live buffers of the given
    // lengths for the one deflate call; the stream is ended once.
    unsafe {
        let rc = z::deflateInit2_(
            &mut *strm,
            level,
            z::Z_DEFLATED,
            31,
            mem_level,
            z::Z_DEFAULT_STRATEGY,
            z::zlibVersion(),
            std::mem::size_of::<z::z_stream>() as c_int,
        );
        assert_eq!(rc, z::Z_OK);
        let bound = z::deflateBound(&mut *strm, data.len() as z::uLong) as usize + 1024;
        let mut out = vec![0u8; bound];
        strm.next_in = data.as_ptr() as *mut u8;
        strm.avail_in = data.len() as z::uInt;
        strm.next_out = out.as_mut_ptr();
        strm.avail_out = out.len() as z::uInt;
        assert_eq!(z::deflate(&mut *strm, z::Z_FINISH), z::Z_STREAM_END);
        let n = strm.total_out as usize;
        z::deflateEnd(&mut *strm);
        out.truncate(n);
        assert_eq!(&out[..3], &[0x1f, 0x8b, 8]);
        out
    }
}

/// The NAR of `path`, as `nix-store --dump` writes it.
pub(super) fn dump(path: &Path) -> Vec<u8> {
    let mut nar = Vec::new();
    crate::nix::nar::dump_path(path, &mut nar).unwrap();
    nar
}

pub(super) fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Raw leaves under `root`, in stream order (the first occurrence of each).
pub(super) fn leaves(store: &Store, root: &Cid, size: u64) -> Vec<BlockHash> {
    blocks_under(store, root, size).into_iter().filter(|(_, c)| *c == RAW_CODEC).map(|(h, _)| h).collect()
}

/// Every block under `root` with its codec.
fn blocks_under(store: &Store, root: &Cid, size: u64) -> Vec<(BlockHash, u64)> {
    let mut seen = crate::dag::reader::Seen::new();
    let mut out = Vec::new();
    walk(store, root, Some(size), &mut seen, WalkMode::NodesOnly, &mut |cid, _| {
        out.push((block_hash(cid).unwrap(), cid.codec()));
        Ok(())
    })
    .unwrap();
    out
}

pub(super) fn read_all(store: &Store, root: Cid) -> Vec<u8> {
    let mut v = Vec::new();
    DagReader::new(store, root).unwrap().read_to_end(&mut v).unwrap();
    v
}

/// The stream under `root` reads back as `want`, whole and leaf by leaf through `read_block`.
pub(super) fn assert_stream(store: &Store, root: Cid, want: &[u8]) {
    assert!(read_all(store, root) == want, "the stream does not read back byte-exact");
    let mut cat = Vec::new();
    for h in leaves(store, &root, want.len() as u64) {
        cat.extend_from_slice(&store.read_block(&h).unwrap().unwrap_or_else(|| panic!("leaf {h} is gone")));
    }
    assert!(cat == want, "the leaves, read one by one, do not make up the stream");
}

pub(super) fn forms_of(store: &Store, hs: &[BlockHash]) -> Vec<Form> {
    hs.iter().map(|h| store.block_loc(h).unwrap().unwrap_or_else(|| panic!("{h} not indexed")).form).collect()
}

pub(super) fn block_count(store: &Store) -> u64 {
    store.stats().unwrap().blocks
}

/// The recipe every leaf of `nar` names (asserting they are all rebuilt, from one recipe).
pub(super) fn recipe_of(store: &Store, nar: &NarAdded) -> BlockHash {
    let forms = forms_of(store, &leaves(store, &nar.root, nar.nar_size));
    let mut recipes: Vec<BlockHash> = forms
        .iter()
        .map(|f| match f {
            Form::Rebuilt { recipe, .. } => *recipe,
            other => panic!("a leaf of the tarball's NAR is {other:?}, not rebuilt"),
        })
        .collect();
    recipes.dedup();
    assert_eq!(recipes.len(), 1, "{forms:?}");
    recipes[0]
}

/// Every block of the recipe's content DAG.
pub(super) fn content_blocks(store: &Store, recipe: &BlockHash) -> Vec<(BlockHash, u64)> {
    let rb = RecipeBlock::decode(&store.read_block(recipe).unwrap().unwrap()).unwrap();
    blocks_under(store, &rb.content_root, rb.content_size)
}

/// Convert every queued tarball (`tarballs=later`).
pub(super) fn repack_all(store: &Store) -> crate::import::RepackReport {
    let r = crate::import::repack(store, None, &mut |_, _, _| {}).unwrap();
    assert!(store.repack_queue().unwrap().is_empty(), "{r:?}");
    r
}

/// A store holding one gzipped tarball added as a path (and, with `tarballs=later`, repacked);
/// returns it, its NAR, and the NAR's bytes.
pub(super) fn store_with_tarball(dir: &Path, cfg: StorageConfig) -> (Store, NarAdded, Vec<u8>) {
    let store = Store::open(&dir.join("store")).unwrap();
    store.set_storage(cfg);
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let file = write_file(&src, "source-1.0.tar.gz", &gzip(&tarball_content(1), 9, 8));
    let nar = dump(&file);
    let added = add_path(&store, &file, ChunkerConfig::default(), None).unwrap();
    assert_eq!((added.nar_size, added.nar_hash), (nar.len() as u64, NarHash(sha256(&nar))));
    if cfg.tarballs == Tarballs::Later {
        // Stored as it is and queued; readable before the repack as after it.
        assert_eq!(store.repack_queue().unwrap(), vec![(added.root, crate::store::tables::REPACK_NAR)]);
        assert_eq!(store.stats().unwrap().forms.rebuilt_blocks, 0);
        assert_stream(&store, added.root, &nar);
        let r = repack_all(&store);
        assert_eq!((r.converted, r.kept, r.gone, r.converted_bytes), (1, 0, 0, nar.len() as u64), "{r:?}");
    }
    (store, added, nar)
}

pub(super) fn inline_tarballs() -> StorageConfig {
    StorageConfig { tarballs: Tarballs::Now, ..Default::default() }
}

pub(super) fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

// ---------------------------------------------------------------------------------------------------
// Store-path hash parts normalized out (`Form::Patched`).

const H1: &str = "0123456789abcdfghijklmnpqrsvwxyz";
const H2: &str = "zyxwvsrqpnmlkjihgfdcba9876543210";

/// A tree of four ~50 KiB files with a reference to `/nix/store/<hash>-…` every ~4 KiB, and a
/// symlink into the store.
fn tree(dir: &Path, hash: &str) -> PathBuf {
    let root = dir.join(format!("out-{}", &hash[..4]));
    std::fs::create_dir_all(root.join("bin")).unwrap();
    for i in 0..4u64 {
        let mut f = Vec::new();
        for j in 0..13u64 {
            f.extend_from_slice(&store_words(500 + i * 100 + j, 4000));
            f.extend_from_slice(format!("\nexec /nix/store/{hash}-dep-{j}/bin/tool \"$@\"\n").as_bytes());
        }
        std::fs::write(root.join("bin").join(format!("prog{i}")), f).unwrap();
    }
    std::os::unix::fs::symlink(format!("/nix/store/{hash}-dep-0/lib"), root.join("lib")).unwrap();
    root
}

/// One package built twice, against dependencies whose store paths have the hash part [`H1`], then
/// [`H2`]: the store holding both builds, and their NARs.
pub(super) struct Rebuilds {
    pub(super) dir: tempfile::TempDir,
    pub(super) store: Store,
    pub(super) nars: [(NarAdded, Vec<u8>); 2],
}

impl Rebuilds {
    pub(super) fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

/// [`Rebuilds`] in a new store with the settings `cfg`.
pub(super) fn two_builds(cfg: StorageConfig) -> Rebuilds {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    store.set_storage(cfg);
    let add = |h: &str| {
        let t = tree(dir.path(), h);
        let nar = dump(&t);
        let a = add_path(&store, &t, ChunkerConfig::default(), None).unwrap();
        (a, nar)
    };
    let nars = [add(H1), add(H2)];
    assert_ne!(nars[0].1, nars[1].1);
    assert_eq!(nars[0].1.len(), nars[1].1.len());
    Rebuilds { dir, store, nars }
}

/// The normalized bases of the patched leaves of `nar`, with those leaves.
pub(super) fn patched_leaves(store: &Store, nar: &NarAdded) -> Vec<(BlockHash, BlockHash)> {
    leaves(store, &nar.root, nar.nar_size)
        .into_iter()
        .filter_map(|h| match store.block_loc(&h).unwrap().unwrap().form {
            Form::Patched { base } => Some((h, base)),
            _ => None,
        })
        .collect()
}
