//! Dedup that survives rebuilds: a package rebuilt only because a dependency's hash changed differs from
//! its previous build only in the store-path hash parts it embeds (its dependency's and its own). Real
//! `nix-build` makes such a pair from tests/fixtures/rebuilds; the tests check that the pair has exactly that
//! shape, then measure what the rebuild costs in a nixdag store with and without hash normalization.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::*;

/// One package built twice by real Nix, against version 1 and version 2 of its dependency.
pub struct RebuildPair {
    /// `app` built against `dep[0]`, then against `dep[1]`.
    pub app: [PathBuf; 2],
    /// The two versions of the dependency.
    pub dep: [PathBuf; 2],
    /// `nix-store -q --references` of each `app` (its `dep` and itself).
    pub app_refs: [Vec<PathBuf>; 2],
    /// `nix-store -q --references` of each `dep` (itself: `bin/x` names nothing, so possibly empty).
    pub dep_refs: [Vec<PathBuf>; 2],
    /// `nix-store --dump` of each `app`, written into `work`.
    pub app_nar: [PathBuf; 2],
}

/// The expression: tests/fixtures/rebuilds/default.nix, with attributes `dep` and `app`.
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rebuilds")
}

fn run(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{c:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn nix_build(attr: &str, dep_version: &str) -> PathBuf {
    let out = run(Command::new("nix-build").arg(fixture()).args([
        "-A",
        attr,
        "--argstr",
        "depVersion",
        dep_version,
        "--no-out-link",
    ]));
    let path = PathBuf::from(out.trim());
    assert!(path.starts_with("/nix/store"), "nix-build -A {attr}: unexpected output {out:?}");
    path
}

fn references(path: &Path) -> Vec<PathBuf> {
    run(Command::new("nix-store").args(["-q", "--references"]).arg(path)).lines().map(PathBuf::from).collect()
}

/// Build `app` against `dep` version 1 and 2 in the real /nix/store (deterministic, so a second run finds
/// them already built), and dump both NARs into `work`.
pub fn build_rebuild_pair(work: &Path) -> RebuildPair {
    require_nix();
    let build = |v: &str| (nix_build("dep", v), nix_build("app", v));
    let ((dep1, app1), (dep2, app2)) = (build("1"), build("2"));
    let app_nar = [work.join("app-1.nar"), work.join("app-2.nar")];
    fs::write(&app_nar[0], nix_dump(&app1)).unwrap();
    fs::write(&app_nar[1], nix_dump(&app2)).unwrap();
    RebuildPair {
        app_refs: [references(&app1), references(&app2)],
        dep_refs: [references(&dep1), references(&dep2)],
        app: [app1, app2],
        dep: [dep1, dep2],
        app_nar,
    }
}

/// The pair, built once per test run.
fn pair() -> &'static RebuildPair {
    static PAIR: OnceLock<(tempfile::TempDir, RebuildPair)> = OnceLock::new();
    &PAIR
        .get_or_init(|| {
            let work = tempfile::tempdir().unwrap();
            let pair = build_rebuild_pair(work.path());
            (work, pair)
        })
        .1
}

const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
const STORE_DIR: &[u8] = b"/nix/store/";

/// The 32-character hash part of a store path.
fn hash_part(p: &Path) -> String {
    let name = p.file_name().unwrap().to_str().unwrap();
    assert!(name.len() > 33 && name.as_bytes()[32] == b'-', "not a store path: {}", p.display());
    name[..32].to_string()
}

/// Whether `b[s..s + 32]` is the hash part of a `/nix/store/<hash>-…` path.
fn is_hash_part_at(b: &[u8], s: usize) -> bool {
    s >= STORE_DIR.len()
        && s + 33 <= b.len()
        && &b[s - STORE_DIR.len()..s] == STORE_DIR
        && b[s..s + 32].iter().all(|c| NIX32.contains(c))
        && b[s + 32] == b'-'
}

/// Walk two equally long byte strings in parallel: every differing byte must lie in a 32-byte window that is
/// the hash part of a `/nix/store/<hash>-…` path in both. Returns each (old hash, new hash) substitution with
/// the number of windows where it occurs.
fn hash_substitutions(a: &[u8], b: &[u8]) -> BTreeMap<(String, String), usize> {
    assert_eq!(a.len(), b.len(), "the two NARs differ in length");
    let mut subs = BTreeMap::new();
    let mut covered = 0; // bytes before this are inside an already checked window
    for i in 0..a.len() {
        if a[i] == b[i] || i < covered {
            continue;
        }
        let s =
            (i.saturating_sub(31)..=i).find(|&s| is_hash_part_at(a, s) && is_hash_part_at(b, s)).unwrap_or_else(|| {
                let lo = i.saturating_sub(48);
                let hi = (i + 48).min(a.len());
                panic!(
                    "byte {i} differs outside any store-path hash part:\n  {:?}\n  {:?}",
                    String::from_utf8_lossy(&a[lo..hi]),
                    String::from_utf8_lossy(&b[lo..hi])
                )
            });
        let key =
            (String::from_utf8(a[s..s + 32].to_vec()).unwrap(), String::from_utf8(b[s..s + 32].to_vec()).unwrap());
        *subs.entry(key).or_insert(0) += 1;
        covered = s + 32;
    }
    subs
}

/// Offsets of every occurrence of `needle` in `hay`.
fn occurrences(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect()
}

/// The fixture has the shape the dedup measurement relies on; needs only Nix (and nixdag's round trip).
#[test]
fn rebuild_fixture_differs_only_in_hashes() {
    require_nix();
    let p = pair();
    let [app1, app2] = &p.app;
    let [dep1, dep2] = &p.dep;
    assert_ne!(dep1, dep2, "the two dep versions must have different store paths");
    assert_ne!(app1, app2, "app must be rebuilt when dep changes");
    assert_eq!(app1.file_name().unwrap().len(), app2.file_name().unwrap().len());

    // References as Nix scanned them: the dependency and the path itself.
    for (refs, app, dep) in [(&p.app_refs[0], app1, dep1), (&p.app_refs[1], app2, dep2)] {
        let got: BTreeSet<&PathBuf> = refs.iter().collect();
        assert_eq!(got, BTreeSet::from([app, dep]), "references of {}", app.display());
    }
    for (refs, dep) in [(&p.dep_refs[0], dep1), (&p.dep_refs[1], dep2)] {
        assert!(refs.iter().all(|r| r == dep), "dep must reference nothing but itself: {refs:?}");
    }

    // The NARs differ, and only inside hash parts, and only by dep1 → dep2 and app1 → app2.
    let (nar1, nar2) = (fs::read(&p.app_nar[0]).unwrap(), fs::read(&p.app_nar[1]).unwrap());
    assert!(nar1 != nar2);
    let subs = hash_substitutions(&nar1, &nar2);
    let pairs: BTreeSet<(String, String)> = subs.keys().cloned().collect();
    let expected = BTreeSet::from([(hash_part(dep1), hash_part(dep2)), (hash_part(app1), hash_part(app2))]);
    assert_eq!(pairs, expected, "the substituted hashes are exactly the references'");
    let windows: usize = subs.values().sum();
    let differing = nar1.iter().zip(&nar2).filter(|(a, b)| a != b).count();
    eprintln!(
        "rebuild fixture: NAR {} bytes, {differing} bytes differ, in {windows} hash parts ({} of dep, {} of app itself)",
        nar1.len(),
        subs[&(hash_part(dep1), hash_part(dep2))],
        subs[&(hash_part(app1), hash_part(app2))],
    );

    // Every file big enough to be chunked on its own names a reference at least every 16 KiB (nixdag's
    // smallest CDC chunk), so without normalization no chunk of it can be shared between the builds.
    for file in ["lib/libapp.so.1.2.3", "share/app/catalog.txt"] {
        let bytes = fs::read(app1.join(file)).unwrap();
        assert!(bytes.len() >= 1 << 20, "{file} should be large");
        let mut at: Vec<usize> =
            [hash_part(dep1), hash_part(app1)].iter().flat_map(|h| occurrences(&bytes, h.as_bytes())).collect();
        at.sort();
        at.insert(0, 0);
        at.push(bytes.len());
        let gap = at.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(gap <= 16 * 1024, "{file}: {gap} bytes without a reference");
        eprintln!("  {file}: {} bytes, {} references, largest gap {gap}", bytes.len(), at.len() - 2);
    }

    // nixdag stores both byte-exactly (whatever its storage options).
    let store = TestStore::new();
    for (app, nar) in [(app1, &nar1), (app2, &nar2)] {
        let (hash, _, size) = store.add(&[app.to_str().unwrap()]);
        let (nix_nar_hash, nix_size) = nix_path_info(app);
        assert_eq!(hash, to_nix32(&nix_nar_hash), "NarHash of {}", app.display());
        assert_eq!(size, nix_size);
        assert!(store.bytes(&["cat", "--nar-hash", &hash]) == *nar, "NAR of {}", app.display());
    }
    store.verify();
}

/// What adding the rebuild (`app[1]`) to a store that holds `app[0]` cost.
#[derive(Debug)]
struct RebuildCost {
    /// Blocks of the rebuild's DAG (counted in a store that holds it alone).
    blocks: u64,
    /// Of those, blocks whose content the store already had from the first build: the blocks that were
    /// not new, plus the new blocks kept as patches of a normalized block the first build stored.
    shared_blocks: u64,
    /// Growth of the pack files: what the rebuild really cost on disk (the index file is left out: it
    /// moves in redb's allocation steps).
    pack_bytes: u64,
    /// `pack_bytes` of the first build alone, for scale.
    first_pack_bytes: u64,
}

/// Add app, then its rebuild, to a fresh store with `extra` options; checks both NARs read back byte-exact
/// and that `verify` passes.
fn rebuild_cost(extra: &[&str]) -> RebuildCost {
    let p = pair();
    let add = |store: &TestStore, app: &Path| {
        let mut args = extra.to_vec();
        args.push(app.to_str().unwrap());
        let (hash, _, _) = store.add(&args);
        assert!(
            store.bytes(&["cat", "--nar-hash", &hash]) == nix_dump(app),
            "{extra:?}: NAR of {} is not what nix-store --dump gives",
            app.display()
        );
    };
    let alone = TestStore::new();
    add(&alone, &p.app[1]);
    let blocks = alone.stat("blocks");
    let store = TestStore::new();
    add(&store, &p.app[0]);
    let first = store.stats();
    add(&store, &p.app[1]);
    let second = store.stats();
    store.verify();
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    let patched = |v: &serde_json::Value| v["forms"]["patched_blocks"].as_u64().unwrap();
    // Blocks with content of their own (not patch records) that the rebuild added.
    let new_content = (n(&second, "blocks") - patched(&second)) - (n(&first, "blocks") - patched(&first));
    RebuildCost {
        blocks,
        shared_blocks: blocks.saturating_sub(new_content),
        pack_bytes: n(&second, "pack_bytes") - n(&first, "pack_bytes"),
        first_pack_bytes: n(&first, "pack_bytes"),
    }
}

/// The lever: with store-path hashes replaced by placeholders before chunking, the rebuild shares its blocks.
/// Deltas are off in both stores: they would make the rebuild cheap without this lever too (measured in
/// docs/STORAGE.md), and here the lever is measured alone.
#[test]
fn rebuild_shares_blocks_with_normalization() {
    require_nix();
    let nar_size = fs::metadata(&pair().app_nar[1]).unwrap().len();
    let off = rebuild_cost(&["--storage", "delta=0,normalize=off"]);
    let on = rebuild_cost(&["--storage", "delta=0"]);
    for (name, c) in [("normalize=off", &off), ("normalize=on", &on)] {
        eprintln!(
            "rebuild of a {nar_size} byte NAR, {name}: {} of {} blocks shared; pack bytes +{} (first build {})",
            c.shared_blocks, c.blocks, c.pack_bytes, c.first_pack_bytes
        );
    }
    // The fixture works: without normalization nearly every chunk of the rebuild holds a changed hash (only
    // the 512 KiB of share/app/assets.dat and some NAR framing can be shared), so most blocks are new.
    assert!(off.shared_blocks * 4 < off.blocks, "without normalization few blocks should be shared: {off:?}");
    assert!(off.pack_bytes * 2 > off.first_pack_bytes, "without normalization the rebuild costs much: {off:?}");
    // With it every chunk's normalized form is the first build's; only patch records (~630 hash parts of
    // 32 bytes) and the new DAG nodes are new.
    assert!(on.shared_blocks + 2 >= on.blocks, "with normalization all leaves should be shared: {on:?}");
    assert!(
        on.pack_bytes * 20 < off.pack_bytes,
        "with normalization the rebuild cost {} pack bytes, not < 1/20 of {} without",
        on.pack_bytes,
        off.pack_bytes
    );
}
