//! The report on stores built here block by block, where every number is known in advance.

use super::*;
use crate::dag::DagBuilder;
use crate::store::{FileEntry, Manifest};

/// Store one stream per entry of `streams` (each a list of leaf numbers; leaf `n` is 40 bytes that
/// depend only on `n`) as a flat file named `name`, in one ingest. Returns the root CIDs.
pub(super) fn build(store: &Store, streams: &[(&str, Vec<u32>)]) -> Vec<Cid> {
    let mut ingest = store.begin_ingest();
    let mut manifests = Vec::new();
    let mut roots = Vec::new();
    for (name, leaves) in streams {
        let mut b = DagBuilder::new(&mut ingest);
        let mut size = 0u64;
        let mut sha = sha2::Sha256::default();
        for n in leaves {
            let leaf = leaf(*n);
            size += leaf.len() as u64;
            sha2::Digest::update(&mut sha, &leaf);
            b.push_leaf(&leaf).unwrap();
        }
        let (dag, _) = b.finish().unwrap();
        let sha256: [u8; 32] = sha2::Digest::finalize(sha).into();
        let entry = FileEntry { root: dag.root.to_string(), size, name: name.to_string(), urls: vec![] };
        manifests.push(Manifest::File { sha256, entry, aliases: vec![] });
        roots.push(dag.root);
    }
    ingest.commit(&manifests).unwrap();
    roots
}

fn leaf(n: u32) -> Vec<u8> {
    format!("leaf {n:010} of a synthetic store, 40 B").into_bytes()
}

fn row<'a>(r: &'a Report, name: &str) -> &'a PathRow {
    r.per_path.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no row {name}"))
}

#[test]
fn shares_and_version_costs_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // pkg-1.0: leaves 0..100; pkg-1.1: 0..60 and 100..140 (40 new); other-2: 50..70 and 200..210.
    let v1: Vec<u32> = (0..100).collect();
    let v2: Vec<u32> = (0..60).chain(100..140).collect();
    let other: Vec<u32> = (50..70).chain(200..210).collect();
    build(&store, &[("pkg-1.1.tar", v2.clone()), ("pkg-1.0.tar", v1.clone()), ("other-2.tar", other)]);
    let opts = Options { by_name: true, xz: Some(XzOptions::default()), ..Options::default() };
    let r = report(&store, &opts).unwrap();
    assert!(r.incomplete.is_empty(), "{:?}", r.incomplete);
    assert_eq!(r.streams, 3);
    let l = leaf(0).len() as u64;
    // Each stream of ≤ 174 leaves is one interior node over its leaves: its bytes are leaves + node.
    let node_bytes = |root_row: &PathRow, leaves: u64| root_row.block_bytes - leaves * l;
    let a = row(&r, "pkg-1.0.tar");
    assert_eq!(a.blocks, 101);
    // Shared: 0..60 with pkg-1.1 (and 50..60, also with other-2), 60..70 with other-2.
    assert_eq!(a.shared_bytes, 70 * l);
    assert_eq!(a.unique_bytes, 30 * l + node_bytes(a, 100));
    assert_eq!(a.shares_most_with[0].name, "pkg-1.1.tar");
    assert_eq!(a.shares_most_with[0].bytes, 60 * l);
    assert_eq!(a.shares_most_with[1].bytes, 20 * l);
    let b = row(&r, "pkg-1.1.tar");
    let groups = r.by_name.as_ref().unwrap();
    let pkg = groups.iter().find(|g| g.name == "pkg").unwrap();
    assert_eq!(pkg.versions.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(), ["1.0", "1.1"]);
    // Version 1.1 cost its 40 new leaves and its own interior node.
    assert_eq!(pkg.versions[1].cost_bytes, 40 * l + node_bytes(b, 100));
    assert_eq!(pkg.versions[0].cost_bytes, pkg.versions[0].block_bytes);
    // Reference counts: leaves 50..60 are in three streams.
    let three = r.histograms.reference_count.iter().find(|b| b.min == 3).unwrap();
    assert_eq!(three.blocks, 10);
    let total_blocks: u64 = r.histograms.block_size.iter().map(|b| b.blocks).sum();
    assert_eq!(total_blocks, r.store.blocks);
    let form_blocks: u64 = r.histograms.stored_form.iter().map(|f| f.blocks).sum();
    assert_eq!(form_blocks, r.store.blocks);
    // No NARs: nothing to sample, an exact (empty) estimate, files counted as they are.
    let e = r.nix_cache_estimate.as_ref().unwrap();
    assert_eq!(e.nars.sampled_nars, 0);
    assert_eq!(e.file_bytes, r.store.logical_bytes);
    // Sorted by bytes only it holds, largest first.
    assert!(r.per_path.windows(2).all(|w| w[0].unique_bytes >= w[1].unique_bytes));
    // One path in detail.
    let d = report(&store, &Options { path: Some("pkg-1.1.tar".into()), ..Options::default() }).unwrap();
    let d = d.path_detail.unwrap();
    assert_eq!(d.package, "pkg");
    assert_eq!(d.interior_nodes, 1);
    assert!(matches!(
        report(&store, &Options { path: Some("nothing".into()), ..Options::default() }),
        Err(StatsError::NoSuchPath(_))
    ));
}

/// The report of a store of many tiny blocks (200 000 by default; `NIXDAG_STATS_BLOCKS` sets another
/// number, e.g. 1000000 to measure what docs/STATS.md states) stays quick: one index pass and one walk.
#[test]
fn many_tiny_blocks_report_quickly() {
    let n: u32 = std::env::var("NIXDAG_STATS_BLOCKS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // 50 streams, each a run of leaves overlapping its neighbour by half: versions of one package.
    let per = (n / 50).max(2);
    let t = std::time::Instant::now();
    let streams: Vec<(String, Vec<u32>)> =
        (0..50u32).map(|s| (format!("pkg-{s}.tar"), (s * per..s * per + per + per / 2).collect())).collect();
    let refs: Vec<(&str, Vec<u32>)> = streams.iter().map(|(n, l)| (n.as_str(), l.clone())).collect();
    build(&store, &refs);
    let built = t.elapsed();
    let t = std::time::Instant::now();
    let opts = Options { by_name: true, top: Some(20), xz: Some(XzOptions::default()), ..Options::default() };
    let r = report(&store, &opts).unwrap();
    let took = t.elapsed();
    eprintln!("{} blocks: built in {built:.1?}, reported in {took:.2?}", r.store.blocks);
    assert!(r.store.blocks as u32 >= n);
    assert!(r.incomplete.is_empty());
    assert_eq!(r.per_path.len(), 20);
    assert!(took < std::time::Duration::from_secs(60), "report took {took:?}");
}
