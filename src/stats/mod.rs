//! The `dedup-stats` report: what the store holds, what it shares, what each further version of a
//! package costs, and what a standard Nix cache would store instead (docs/STATS.md, and its JSON Schema
//! docs/dedup-stats.schema.json).
//!
//! Cost: one pass over the index ([`Store::census`]: every block's size and form, every stream), then
//! one walk of each stream's DAG that reads only its interior nodes (about one block in 174; leaves are
//! named by their links and sized from the census), each interior node read once however many streams
//! link it. Blocks are numbered by their place in the census (which redb gives in key order, so a
//! binary search finds one), and each stream's blocks are kept as a list of those numbers: memory is
//! about 48 bytes a block plus 4 bytes a reference. The optional xz sample (`xz.rs`) is the only part
//! that reads leaves.

pub mod html;
pub mod names;
mod svg;
pub mod xz;

use std::collections::{HashMap, HashSet};

use crate::dag::cid::{block_hash, DAG_PB_CODEC, RAW_CODEC};
use crate::dag::unixfs::decode_file_node;
use crate::dag::{BlockHash, BlockSource, Cid};
use crate::store::tables::RecordKind;
use crate::store::{Census, CensusRoot, Store, StoreError, StoreStats};

pub(crate) use self::svg::short as short_name;
pub use self::xz::{XzEstimate, XzOptions};

/// Version of the report's JSON layout (`report_version`); raised when a key changes meaning or goes.
pub const REPORT_VERSION: u32 = 1;

/// Blocks held by more streams than this are left out of "shares most with": they are shared with
/// nearly everything (an empty file's chunk, a common license), say nothing about which paths are
/// related, and would make that part quadratic in the number of streams.
const PARTNER_MAX_REFS: u32 = 64;

/// Streams in the sharing matrix: enough to show which packages belong together, few enough that a
/// phone shows the matrix's labels.
pub const SHARING_TOP: usize = 12;

/// Points of the timeline at most: the report (and the HTML page's SVG) stays small on a store of a
/// hundred thousand streams, and a chart has no more pixels than that anyway.
pub const TIMELINE_POINTS: usize = 200;

/// Why there is no report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    /// The index could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `--path` matched nothing.
    #[error("no stored path, file or NAR matches {0:?}")]
    NoSuchPath(String),
    /// `--path` matched several streams.
    #[error("{given:?} matches {count} stored streams; name one by its store path or hash")]
    Ambiguous {
        /// What was given.
        given: String,
        /// How many matched.
        count: usize,
    },
    /// The xz sample failed.
    #[error(transparent)]
    Xz(#[from] xz::XzError),
}

/// How to order the per-path rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    /// Bytes only this stream holds, largest first.
    #[default]
    Unique,
    /// Bytes shared with other streams, largest first.
    Shared,
    /// Size, largest first.
    Size,
}

/// What to put in the report.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Per-path rows kept (after sorting); all when `None`.
    pub top: Option<usize>,
    /// Their order.
    pub sort: SortBy,
    /// Group by package name across versions.
    pub by_name: bool,
    /// One stream in detail.
    pub path: Option<String>,
    /// The xz sample; none when `None`.
    pub xz: Option<XzOptions>,
}

/// The report. The first keys are [`StoreStats`]'s, flattened, so `logical_bytes`, `unique_bytes`,
/// `stored_bytes`, `blocks`, `nars` and `files` stay where `dedup-stats --json` always had them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The store-wide figures.
    #[serde(flatten)]
    pub store: StoreStats,
    /// [`REPORT_VERSION`].
    pub report_version: u32,
    /// Ratios and what the blocks under no stream hold.
    pub totals: Totals,
    /// The same NARs in a standard Nix cache (xz per NAR), estimated from a sample; null with `--no-xz`.
    pub nix_cache_estimate: Option<NixCacheEstimate>,
    /// Streams in the store (rows before `--top`).
    pub streams: u64,
    /// Per stored stream (NAR or file), sorted and cut as asked.
    pub per_path: Vec<PathRow>,
    /// Per package name across versions (`--by-name`), else null.
    pub by_name: Option<Vec<NameGroup>>,
    /// Histograms of block size, reference count and stored form.
    pub histograms: Histograms,
    /// One stream in detail (`--path`), else null.
    pub path_detail: Option<PathDetail>,
    /// How logical and unique bytes grew as streams were added, in the order the packs recorded them.
    pub timeline: Timeline,
    /// Which of the most shared streams share bytes with which.
    pub sharing: Sharing,
    /// Streams whose DAG could not be walked whole (a missing or damaged block): `verify` says more.
    pub incomplete: Vec<String>,
}

/// Store-wide ratios. A ratio is null when its denominator is 0.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Totals {
    /// `logical_bytes / unique_bytes`: what storing each block once saves.
    pub dedup_ratio: Option<f64>,
    /// `unique_bytes / pack_bytes`: what the stored forms (frames, deltas, patches, rebuilds) save.
    pub compression_ratio: Option<f64>,
    /// `logical_bytes / stored_bytes`: both together, the index included.
    pub overall_ratio: Option<f64>,
    /// `1 − stored_bytes / logical_bytes`: the share of the logical bytes not on disk.
    pub saving: Option<f64>,
    /// Raw bytes of blocks under no stream: normalized forms of patched blocks, tarball contents under
    /// their recipes, dictionaries, or garbage `gc` has not collected yet.
    pub internal_bytes: u64,
    /// Their number.
    pub internal_blocks: u64,
}

/// [`XzEstimate`] of the NARs, with the files and the comparison beside it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NixCacheEstimate {
    /// The NARs, xz each, from the sample.
    #[serde(flatten)]
    pub nars: XzEstimate,
    /// Flat files as a hashed mirror keeps them: as they are.
    pub file_bytes: u64,
    /// `estimated_xz_bytes + file_bytes`.
    pub estimated_total_bytes: u64,
    /// `stored_bytes / estimated_total_bytes`: this store's size as a share of a standard cache's.
    pub stored_share: Option<f64>,
}

/// One stored stream. Bytes are raw bytes of distinct DAG blocks (leaves and interior nodes), as
/// `unique_bytes` counts them; `size` is the stream's own length.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PathRow {
    /// Its store path (the first, when several are recorded with one NAR), file name, or NarHash.
    pub name: String,
    /// `nar` or `file`.
    pub kind: &'static str,
    /// `sha256:<nix32>` of the NAR or the file.
    pub hash: String,
    /// Its bytes.
    pub size: u64,
    /// Distinct blocks in its DAG.
    pub blocks: u64,
    /// Their raw bytes.
    pub block_bytes: u64,
    /// Of those, bytes other streams hold too.
    pub shared_bytes: u64,
    /// Bytes only it holds: what forgetting it would free (before compression).
    pub unique_bytes: u64,
    /// The streams it shares most bytes with, most first (up to 3; all in `path_detail`).
    pub shares_most_with: Vec<Partner>,
}

/// A stream another shares bytes with.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Partner {
    /// Its name, as in [`PathRow::name`].
    pub name: String,
    /// Raw bytes of the blocks both hold.
    pub bytes: u64,
}

/// The versions of one package.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NameGroup {
    /// The package name (`hello`, `hello-man` for an output).
    pub name: String,
    /// Sum of the versions' sizes.
    pub size: u64,
    /// Raw bytes of the distinct blocks of all versions together.
    pub block_bytes: u64,
    /// Versions, oldest first (`builtins.compareVersions` order).
    pub versions: Vec<VersionCost>,
}

/// What one version cost beside the older ones.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionCost {
    /// The version (empty when the name has none).
    pub version: String,
    /// Its stream's name (store path or file).
    pub path: String,
    /// Its size.
    pub size: u64,
    /// Raw bytes of its distinct blocks.
    pub block_bytes: u64,
    /// Raw bytes of its blocks no older version of the name holds: what this version added.
    pub cost_bytes: u64,
    /// `cost_bytes / size`.
    pub cost_share: Option<f64>,
}

/// The three histograms.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Histograms {
    /// Blocks by raw size.
    pub block_size: Vec<Bucket>,
    /// Blocks by the number of streams whose DAG holds them (0: internal blocks).
    pub reference_count: Vec<Bucket>,
    /// Blocks by stored form.
    pub stored_form: Vec<FormRow>,
}

/// One bucket: blocks whose value is in `min..=max` (`max` null: no upper bound).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Bucket {
    /// Human label.
    pub label: String,
    /// Lowest value.
    pub min: u64,
    /// Highest value.
    pub max: Option<u64>,
    /// Blocks.
    pub blocks: u64,
    /// Their raw bytes.
    pub bytes: u64,
}

/// Blocks of one stored form.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FormRow {
    /// `raw`, `zstd`, `framed`, `delta`, `patched` or `rebuilt` (docs/FORMAT.md, "Block forms").
    pub form: &'static str,
    /// Blocks.
    pub blocks: u64,
    /// Their raw bytes.
    pub raw_bytes: u64,
    /// Payload bytes of their records (frames counted once; 0 for rebuilt blocks, which have none).
    pub stored_bytes: u64,
}

/// One stream in detail.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PathDetail {
    /// Its row, with every partner.
    pub row: PathRow,
    /// Every name it is recorded under.
    pub names: Vec<String>,
    /// Its root CID.
    pub root: String,
    /// Its package name and version, as `--by-name` groups it.
    pub package: String,
    /// Its version.
    pub version: String,
    /// Its blocks by stored form.
    pub stored_form: Vec<FormRow>,
    /// Its blocks by reference count.
    pub reference_count: Vec<Bucket>,
    /// Interior (dag-pb) nodes among its blocks.
    pub interior_nodes: u64,
}

/// The store's growth: streams in the order their ingest wrote their root block to the packs (pack id,
/// then offset; see [`crate::store::CensusRoot::written_at`]), each point the totals after that many.
/// The index records no time or sequence per manifest, and `served-0`'s time is replaced by the last
/// time a root was served, so the packs' append order is the most honest order it has.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Timeline {
    /// Streams whose root has no record of its own (a rebuilt block): placed first, by name.
    pub unordered: u64,
    /// Up to [`TIMELINE_POINTS`] points, evenly spaced in streams, the last one all streams.
    pub points: Vec<TimelinePoint>,
}

/// The totals after the first `streams` streams.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TimelinePoint {
    /// Streams added so far.
    pub streams: u64,
    /// The last of them (as [`PathRow::name`]).
    pub name: String,
    /// Their sizes added up.
    pub logical_bytes: u64,
    /// Raw bytes of the distinct blocks of their DAGs (internal blocks, which no DAG links, are not
    /// counted, so the last point can be below the store's `unique_bytes`).
    pub unique_bytes: u64,
}

/// Shared bytes between pairs of the streams that share most: `bytes[i][j]` is the raw bytes of the
/// blocks both `names[i]` and `names[j]` hold, leaving out blocks more than 64 streams hold (as "shares
/// most with" does); `bytes[i][i]` is stream `i`'s own block bytes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sharing {
    /// Up to [`SHARING_TOP`] streams, most shared bytes first (streams sharing nothing left out).
    pub names: Vec<String>,
    /// The matrix, symmetric.
    pub bytes: Vec<Vec<u64>>,
}

/// The walk's result: each stream's distinct blocks, as census numbers.
struct Walked {
    /// `blocks[offsets[r]..offsets[r + 1]]` are stream `r`'s.
    offsets: Vec<usize>,
    blocks: Vec<u32>,
    /// Interior nodes per stream.
    interior: Vec<u64>,
    incomplete: Vec<String>,
}

impl Walked {
    fn of(&self, r: usize) -> &[u32] {
        &self.blocks[self.offsets[r]..self.offsets[r + 1]]
    }
}

/// The census number of `hash`, if the index has it.
fn find(census: &Census, hash: &BlockHash) -> Option<u32> {
    census.blocks.binary_search_by(|b| b.hash.0.cmp(&hash.0)).ok().map(|i| i as u32)
}

/// Walk every stream's DAG once, reading each interior node once.
fn walk_all(store: &Store, census: &Census) -> Walked {
    let n = census.blocks.len();
    // Which stream last counted each block: a per-stream "seen" set without clearing one.
    let mut mark = vec![u32::MAX; n];
    let mut children: HashMap<u32, Box<[Cid]>> = HashMap::new();
    let mut w = Walked { offsets: vec![0], blocks: Vec::new(), interior: Vec::new(), incomplete: Vec::new() };
    for (r, root) in census.roots.iter().enumerate() {
        let mut stack = vec![root.root];
        let mut interior = 0;
        let mut problem = None;
        while let Some(cid) = stack.pop() {
            let Ok(hash) = block_hash(&cid) else {
                problem = Some(format!("unreadable CID {cid}"));
                continue;
            };
            let Some(i) = find(census, &hash) else {
                problem = Some(format!("block {cid} is missing"));
                continue;
            };
            if mark[i as usize] == r as u32 {
                continue;
            }
            mark[i as usize] = r as u32;
            w.blocks.push(i);
            match cid.codec() {
                RAW_CODEC => {}
                DAG_PB_CODEC => {
                    interior += 1;
                    if let Some(c) = children.get(&i) {
                        stack.extend(c.iter().copied());
                        continue;
                    }
                    let node = store
                        .get_block(&hash)
                        .map_err(|e| e.to_string())
                        .and_then(|b| b.ok_or_else(|| format!("block {cid} is missing")))
                        .and_then(|b| decode_file_node(hash, &b).map_err(|e| e.to_string()));
                    match node {
                        Ok(node) => {
                            stack.extend(node.links.iter().copied());
                            children.insert(i, node.links.into_boxed_slice());
                        }
                        Err(e) => problem = Some(e),
                    }
                }
                codec => problem = Some(format!("block {cid} has codec {codec:#x}, which no NAR DAG uses")),
            }
        }
        if let Some(p) = problem {
            w.incomplete.push(format!("{} {}: {p}", label(root), root.hash));
        }
        w.offsets.push(w.blocks.len());
        w.interior.push(interior);
    }
    w
}

/// What a stream is called in the report.
fn label(root: &CensusRoot) -> String {
    root.names.first().cloned().unwrap_or_else(|| format!("nar {}", root.hash))
}

/// Bytes for people: `1.2 MiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn form_name(k: RecordKind) -> &'static str {
    match k {
        RecordKind::Raw => "raw",
        RecordKind::Zstd => "zstd",
        RecordKind::Frame => "framed",
        RecordKind::Delta => "delta",
        RecordKind::Patched => "patched",
        RecordKind::Rebuilt => "rebuilt",
    }
}

const FORMS: [RecordKind; 6] =
    [RecordKind::Raw, RecordKind::Zstd, RecordKind::Frame, RecordKind::Delta, RecordKind::Patched, RecordKind::Rebuilt];

fn form_rows(census: &Census, blocks: impl Iterator<Item = u32>) -> Vec<FormRow> {
    let mut rows: Vec<FormRow> =
        FORMS.iter().map(|k| FormRow { form: form_name(*k), blocks: 0, raw_bytes: 0, stored_bytes: 0 }).collect();
    for i in blocks {
        let b = &census.blocks[i as usize];
        let row = &mut rows[FORMS.iter().position(|k| *k == b.kind).unwrap_or(0)];
        row.blocks += 1;
        row.raw_bytes += u64::from(b.raw_len);
        row.stored_bytes += u64::from(b.stored);
    }
    rows
}

/// Power-of-two size buckets from ≤ 512 B to > 1 MiB.
fn size_buckets() -> Vec<Bucket> {
    let human = |v: u64| if v >= 1 << 20 { format!("{} MiB", v >> 20) } else if v >= 1024 { format!("{} KiB", v >> 10) } else { format!("{v} B") };
    let mut out = vec![Bucket { label: "≤ 512 B".into(), min: 0, max: Some(512), blocks: 0, bytes: 0 }];
    let mut lo = 512u64;
    while lo < 1 << 20 {
        let hi = lo * 2;
        out.push(Bucket { label: format!("{}–{}", human(lo), human(hi)), min: lo + 1, max: Some(hi), blocks: 0, bytes: 0 });
        lo = hi;
    }
    out.push(Bucket { label: "> 1 MiB".into(), min: (1 << 20) + 1, max: None, blocks: 0, bytes: 0 });
    out
}

/// Reference-count buckets: 0, 1, 2, 3–4, 5–8, … 65+.
fn ref_buckets() -> Vec<Bucket> {
    let mut out = vec![
        Bucket { label: "0 (internal)".into(), min: 0, max: Some(0), blocks: 0, bytes: 0 },
        Bucket { label: "1".into(), min: 1, max: Some(1), blocks: 0, bytes: 0 },
        Bucket { label: "2".into(), min: 2, max: Some(2), blocks: 0, bytes: 0 },
    ];
    let mut lo = 3u64;
    while lo <= 33 {
        let hi = (lo - 1) * 2;
        out.push(Bucket { label: format!("{lo}–{hi}"), min: lo, max: Some(hi), blocks: 0, bytes: 0 });
        lo = hi + 1;
    }
    out.push(Bucket { label: format!("{lo}+"), min: lo, max: None, blocks: 0, bytes: 0 });
    out
}

fn add_to(buckets: &mut [Bucket], value: u64, bytes: u64) {
    if let Some(b) = buckets.iter_mut().find(|b| value >= b.min && b.max.is_none_or(|m| value <= m)) {
        b.blocks += 1;
        b.bytes += bytes;
    }
}

/// Build the report.
pub fn report(store: &Store, opts: &Options) -> Result<Report, StatsError> {
    let mut census = store.census()?;
    if !census.blocks.is_sorted_by(|a, b| a.hash.0 <= b.hash.0) {
        census.blocks.sort_by_key(|b| b.hash.0);
    }
    let walked = walk_all(store, &census);
    let mut refs = vec![0u32; census.blocks.len()];
    for &i in &walked.blocks {
        refs[i as usize] += 1;
    }
    let raw = |i: u32| u64::from(census.blocks[i as usize].raw_len);
    let names: Vec<String> = census.roots.iter().map(label).collect();

    // Per stream.
    let mut rows: Vec<PathRow> = census
        .roots
        .iter()
        .enumerate()
        .map(|(r, root)| {
            let (mut shared, mut unique) = (0, 0);
            for &i in walked.of(r) {
                if refs[i as usize] > 1 {
                    shared += raw(i);
                } else {
                    unique += raw(i);
                }
            }
            PathRow {
                name: names[r].clone(),
                kind: if root.is_nar { "nar" } else { "file" },
                hash: root.hash.clone(),
                size: root.size,
                blocks: walked.of(r).len() as u64,
                block_bytes: shared + unique,
                shared_bytes: shared,
                unique_bytes: unique,
                shares_most_with: Vec::new(),
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..rows.len()).collect();
    let key = |r: &PathRow| match opts.sort {
        SortBy::Unique => r.unique_bytes,
        SortBy::Shared => r.shared_bytes,
        SortBy::Size => r.size,
    };
    order.sort_by(|&a, &b| key(&rows[b]).cmp(&key(&rows[a])).then_with(|| rows[a].name.cmp(&rows[b].name)));
    order.truncate(opts.top.unwrap_or(usize::MAX));

    // The stream `--path` names.
    let detail_of = match &opts.path {
        Some(p) => Some(find_stream(&census, p)?),
        None => None,
    };

    // The streams of the sharing matrix: those with most shared bytes.
    let mut top_shared: Vec<usize> = (0..rows.len()).filter(|&r| rows[r].shared_bytes > 0).collect();
    top_shared.sort_by(|&a, &b| {
        rows[b].shared_bytes.cmp(&rows[a].shared_bytes).then_with(|| rows[a].name.cmp(&rows[b].name))
    });
    top_shared.truncate(SHARING_TOP);

    // Who holds each moderately shared block, for "shares most with" of the rows shown and the matrix.
    let mut holders: HashMap<u32, Vec<u32>> = HashMap::new();
    if !order.is_empty() || detail_of.is_some() || !top_shared.is_empty() {
        for r in 0..census.roots.len() {
            for &i in walked.of(r) {
                let c = refs[i as usize];
                if c > 1 && c <= PARTNER_MAX_REFS {
                    holders.entry(i).or_default().push(r as u32);
                }
            }
        }
    }
    // Stream r's partners: (stream, bytes of the blocks both hold).
    let partner_bytes = |r: usize| -> HashMap<u32, u64> {
        let mut bytes: HashMap<u32, u64> = HashMap::new();
        for &i in walked.of(r) {
            if let Some(h) = holders.get(&i) {
                for &o in h {
                    if o as usize != r {
                        *bytes.entry(o).or_default() += raw(i);
                    }
                }
            }
        }
        bytes
    };
    let partners_of = |r: usize| -> Vec<Partner> {
        let mut v: Vec<Partner> = partner_bytes(r)
            .into_iter()
            .map(|(o, b)| Partner { name: names[o as usize].clone(), bytes: b })
            .collect();
        v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
        v
    };
    let sharing = {
        let mut bytes = vec![vec![0u64; top_shared.len()]; top_shared.len()];
        for (a, &r) in top_shared.iter().enumerate() {
            bytes[a][a] = rows[r].block_bytes;
            let with = partner_bytes(r);
            for (b, &o) in top_shared.iter().enumerate() {
                if let Some(&n) = with.get(&(o as u32)) {
                    bytes[a][b] = n;
                }
            }
        }
        Sharing { names: top_shared.iter().map(|&r| names[r].clone()).collect(), bytes }
    };
    let path_detail = detail_of.map(|r| {
        let mut row = rows[r].clone();
        row.shares_most_with = partners_of(r);
        row.shares_most_with.truncate(50);
        let root = &census.roots[r];
        let nv = name_version(root);
        let mut reference_count = ref_buckets();
        for &i in walked.of(r) {
            add_to(&mut reference_count, u64::from(refs[i as usize]), raw(i));
        }
        PathDetail {
            row,
            names: root.names.clone(),
            root: root.root.to_string(),
            package: nv.name,
            version: nv.version,
            stored_form: form_rows(&census, walked.of(r).iter().copied()),
            reference_count,
            interior_nodes: walked.interior[r],
        }
    });
    for &r in &order {
        let mut p = partners_of(r);
        p.truncate(3);
        rows[r].shares_most_with = p;
    }
    let streams = rows.len() as u64;
    let mut slots: Vec<Option<PathRow>> = rows.into_iter().map(Some).collect();
    let per_path: Vec<PathRow> = order.iter().filter_map(|&r| slots[r].take()).collect();

    let by_name = opts.by_name.then(|| by_name(&census, &walked, &raw, &names));
    let timeline = timeline(&census, &walked, &raw, &names);

    // Histograms, over every block of the census.
    let mut block_size = size_buckets();
    let mut reference_count = ref_buckets();
    let (mut internal_blocks, mut internal_bytes) = (0, 0);
    for (i, b) in census.blocks.iter().enumerate() {
        add_to(&mut block_size, u64::from(b.raw_len), u64::from(b.raw_len));
        add_to(&mut reference_count, u64::from(refs[i]), u64::from(b.raw_len));
        if refs[i] == 0 {
            internal_blocks += 1;
            internal_bytes += u64::from(b.raw_len);
        }
    }
    let stored_form = form_rows(&census, 0..census.blocks.len() as u32);

    let s = &census.stats;
    let totals = Totals {
        dedup_ratio: ratio(s.logical_bytes, s.unique_bytes),
        compression_ratio: ratio(s.unique_bytes, s.pack_bytes),
        overall_ratio: ratio(s.logical_bytes, s.stored_bytes),
        saving: ratio(s.stored_bytes, s.logical_bytes).map(|r| 1.0 - r),
        internal_bytes,
        internal_blocks,
    };
    let nix_cache_estimate = match opts.xz {
        Some(xo) => {
            let nars: Vec<(String, Cid, u64)> =
                census.roots.iter().filter(|r| r.is_nar).map(|r| (r.hash.clone(), r.root, r.size)).collect();
            let file_bytes = census.roots.iter().filter(|r| !r.is_nar).map(|r| r.size).sum::<u64>();
            let nars = xz::estimate(store, &nars, xo)?;
            let total = nars.estimated_xz_bytes + file_bytes;
            Some(NixCacheEstimate {
                stored_share: ratio(s.stored_bytes, total),
                estimated_total_bytes: total,
                file_bytes,
                nars,
            })
        }
        None => None,
    };
    Ok(Report {
        store: census.stats.clone(),
        report_version: REPORT_VERSION,
        totals,
        nix_cache_estimate,
        streams,
        per_path,
        by_name,
        histograms: Histograms { block_size, reference_count, stored_form },
        path_detail,
        timeline,
        sharing,
        incomplete: walked.incomplete,
    })
}

/// Streams in pack order, with the running totals sampled at up to [`TIMELINE_POINTS`] points.
fn timeline(census: &Census, walked: &Walked, raw: &dyn Fn(u32) -> u64, names: &[String]) -> Timeline {
    let mut order: Vec<usize> = (0..census.roots.len()).collect();
    // `None` sorts first: streams without a position of their own, by name.
    order.sort_by(|&a, &b| {
        census.roots[a].written_at.cmp(&census.roots[b].written_at).then_with(|| names[a].cmp(&names[b]))
    });
    let n = order.len();
    let step = n.div_ceil(TIMELINE_POINTS).max(1);
    let mut seen = vec![false; census.blocks.len()];
    let (mut logical, mut unique) = (0u64, 0u64);
    let mut points = Vec::with_capacity(n.min(TIMELINE_POINTS));
    for (k, &r) in order.iter().enumerate() {
        logical += census.roots[r].size;
        for &i in walked.of(r) {
            if !std::mem::replace(&mut seen[i as usize], true) {
                unique += raw(i);
            }
        }
        if (k + 1) % step == 0 || k + 1 == n {
            points.push(TimelinePoint {
                streams: k as u64 + 1,
                name: names[r].clone(),
                logical_bytes: logical,
                unique_bytes: unique,
            });
        }
    }
    Timeline { unordered: census.roots.iter().filter(|r| r.written_at.is_none()).count() as u64, points }
}

/// A stream's package name and version: from its first store path, else its file name.
fn name_version(root: &CensusRoot) -> names::NameVersion {
    match root.names.first() {
        Some(n) if root.is_nar => names::parse_store_name(names::store_path_name(n)),
        Some(n) => names::parse_file_name(n),
        None => names::NameVersion { name: format!("nar {}", root.hash), version: String::new() },
    }
}

/// The stream `given` names: a store path (absolute, base name or hash part), a file name, or a hash.
fn find_stream(census: &Census, given: &str) -> Result<usize, StatsError> {
    let g = given.trim_end_matches('/');
    let matches = |r: &CensusRoot| {
        r.hash == g
            || r.hash.strip_prefix("sha256:") == Some(g)
            || r.names.iter().any(|n| {
                n == g
                    || n.rsplit('/').next() == Some(g)
                    || n.rsplit('/').next().and_then(|b| b.split_once('-')).map(|(h, _)| h) == Some(g)
            })
    };
    let hits: Vec<usize> = census.roots.iter().enumerate().filter(|(_, r)| matches(r)).map(|(i, _)| i).collect();
    match hits.len() {
        0 => Err(StatsError::NoSuchPath(given.to_string())),
        1 => Ok(hits[0]),
        count => Err(StatsError::Ambiguous { given: given.to_string(), count }),
    }
}

/// Group streams by package name; within a group, order by version and charge each version the bytes
/// of its blocks no older version holds.
fn by_name(census: &Census, walked: &Walked, raw: &dyn Fn(u32) -> u64, names: &[String]) -> Vec<NameGroup> {
    let mut groups: HashMap<String, Vec<(String, usize)>> = HashMap::new();
    for (r, root) in census.roots.iter().enumerate() {
        let nv = name_version(root);
        groups.entry(nv.name).or_default().push((nv.version, r));
    }
    let mut out: Vec<NameGroup> = groups
        .into_iter()
        .map(|(name, mut members)| {
            members.sort_by(|a, b| names::compare_versions(&a.0, &b.0).then_with(|| names[a.1].cmp(&names[b.1])));
            let mut seen: HashSet<u32> = HashSet::new();
            let mut versions = Vec::new();
            for (version, r) in members {
                let (mut block_bytes, mut cost) = (0, 0);
                for &i in walked.of(r) {
                    block_bytes += raw(i);
                    if seen.insert(i) {
                        cost += raw(i);
                    }
                }
                let size = census.roots[r].size;
                versions.push(VersionCost {
                    version,
                    path: names[r].clone(),
                    size,
                    block_bytes,
                    cost_bytes: cost,
                    cost_share: ratio(cost, size),
                });
            }
            NameGroup {
                name,
                size: versions.iter().map(|v| v.size).sum(),
                block_bytes: seen.iter().map(|&i| raw(i)).sum(),
                versions,
            }
        })
        .collect();
    // Packages with most versions first, then the largest.
    out.sort_by(|a, b| {
        b.versions.len().cmp(&a.versions.len()).then(b.size.cmp(&a.size)).then_with(|| a.name.cmp(&b.name))
    });
    out
}

#[cfg(test)]
mod tests;
