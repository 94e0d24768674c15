//! `nixdag dedup-stats`: what is stored, what is shared, what it saves, as tables a person reads at a
//! glance, or as JSON (docs/STATS.md). The report itself is `crate::stats`; this file only prints it.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use crate::stats::{self, human_bytes as human, Bucket, FormRow, Options, Report, SortBy, XzOptions};
use crate::store::Store;

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Print the whole report as JSON (schema: docs/dedup-stats.schema.json)
    #[arg(long)]
    json: bool,
    /// Write the report as one self-contained HTML page (charts as inline SVG; implies --by-name)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["json", "path"])]
    html: Option<std::path::PathBuf>,
    /// Per-path rows shown [default: 15 in the table, all with --json]
    #[arg(long, value_name = "N")]
    top: Option<usize>,
    /// Order of the per-path rows
    #[arg(long, value_enum, default_value_t = Sort::Unique)]
    sort: Sort,
    /// Group by package name across versions: what each further version cost
    #[arg(long)]
    by_name: bool,
    /// One store path (or its hash part, a file name, a NarHash) in detail
    #[arg(long, value_name = "P")]
    path: Option<String>,
    /// Skip the standard-cache estimate (it xz-compresses a sample of NARs)
    #[arg(long)]
    no_xz: bool,
    /// NARs in the xz sample at most
    #[arg(long, value_name = "N", default_value_t = 20)]
    xz_sample_nars: usize,
    /// Bytes xz-compressed at most, all sampled NARs together (K, M, G suffixes)
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    xz_sample_bytes: u64,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Sort {
    /// Bytes only that path holds
    Unique,
    /// Bytes it shares with other paths
    Shared,
    /// Its size
    Size,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mul) = match s.trim().to_ascii_uppercase().chars().last() {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().map(|n| n.saturating_mul(mul)).map_err(|e| format!("{s:?}: {e}"))
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1} %", 100.0 * part as f64 / whole as f64)
    }
}

fn times(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "-".into())
}

/// A path shortened to its name for a table cell (as the HTML report shortens it); a NAR without a store
/// path by the start of its hash.
fn short(name: &str, width: usize) -> String {
    if let Some(h) = name.strip_prefix("nar sha256:") {
        return format!("nar {}…", &h[..h.len().min(12)]);
    }
    crate::stats::short_name(name, width)
}

/// A bar of `width` cells for `part / whole`.
fn bar(part: u64, whole: u64, width: usize) -> String {
    let cells = if whole == 0 { 0 } else { ((part as f64 / whole as f64) * width as f64).round() as usize };
    "█".repeat(cells.min(width))
}

pub fn run(store: &Store, args: StatsArgs) -> Result<()> {
    let opts = Options {
        top: args.top.or(if args.json { None } else { Some(15) }),
        sort: match args.sort {
            Sort::Unique => SortBy::Unique,
            Sort::Shared => SortBy::Shared,
            Sort::Size => SortBy::Size,
        },
        by_name: args.by_name || args.html.is_some(),
        path: args.path.clone(),
        xz: (!args.no_xz).then_some(XzOptions {
            max_nars: args.xz_sample_nars,
            max_bytes: args.xz_sample_bytes,
            ..XzOptions::default()
        }),
    };
    let r = stats::report(store, &opts)?;
    if let Some(file) = &args.html {
        let page = stats::html::render(&r, &stats::html::Page::default());
        std::fs::write(file, page).with_context(|| format!("writing {}", file.display()))?;
        println!("wrote {}", file.display());
        return Ok(());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    if r.path_detail.is_some() {
        print_detail(&r);
        return Ok(());
    }
    print_totals(&r);
    print_paths(&r, args.sort);
    if let Some(groups) = &r.by_name {
        print_by_name(groups);
    }
    print_histograms(&r);
    for i in &r.incomplete {
        println!("incomplete: {i} (run `nixdag verify`)");
    }
    Ok(())
}

fn print_totals(r: &Report) {
    let s = &r.store;
    println!(
        "== totals: {} NARs, {} files, {} store paths, {} blocks in {} packs",
        s.nars, s.files, s.paths, s.blocks, s.packs
    );
    println!("{:<34} {:>12} {:>10}", "", "bytes", "of logical");
    let line = |what: &str, b: u64| println!("{:<34} {:>12} {:>10}", what, human(b), pct(b, s.logical_bytes));
    line("logical (NARs and files, whole)", s.logical_bytes);
    line("unique blocks (each block once)", s.unique_bytes);
    line("stored on disk (packs + index)", s.stored_bytes);
    line("  packs", s.pack_bytes);
    line("  index", s.index_bytes);
    if let Some(e) = &r.nix_cache_estimate {
        line("standard Nix cache (xz per NAR)*", e.estimated_total_bytes);
    }
    let t = &r.totals;
    println!(
        "dedup {}   compression {}   overall {}   saving {}",
        times(t.dedup_ratio),
        times(t.compression_ratio),
        times(t.overall_ratio),
        t.saving.map(|v| format!("{:.1} %", 100.0 * v)).unwrap_or_else(|| "-".into())
    );
    if let Some(e) = &r.nix_cache_estimate {
        let n = &e.nars;
        let err = match n.estimated_xz_bytes_standard_error {
            Some(0) if n.sampled_partially == 0 && n.sampled_nars == n.population_nars => {
                "exact: every NAR compressed whole".to_string()
            }
            Some(se) => format!("± {} (one standard error)", human(se)),
            None => "error unknown: fewer than 2 NARs sampled".to_string(),
        };
        println!(
            "* estimated: xz -{} of {} NARs ({} of {}{}), ratio {:.3}, NARs {} {}{}",
            n.preset,
            n.sampled_nars,
            human(n.sampled_bytes),
            human(n.population_bytes),
            if n.sampled_partially > 0 {
                format!(", {} of them only their start", n.sampled_partially)
            } else {
                String::new()
            },
            n.ratio,
            human(n.estimated_xz_bytes),
            err,
            if e.file_bytes > 0 {
                format!(", plus {} of files as they are", human(e.file_bytes))
            } else {
                String::new()
            },
        );
        if let Some(share) = e.stored_share {
            println!("  this store is {:.1} % of that", 100.0 * share);
        }
    }
    if s.repack_queued > 0 {
        println!("{} compressed files wait for `nixdag repack` to be kept as content plus a recipe", s.repack_queued);
    }
}

fn print_paths(r: &Report, sort: Sort) {
    if r.per_path.is_empty() {
        return;
    }
    let by = match sort {
        Sort::Unique => "bytes only it holds",
        Sort::Shared => "bytes shared",
        Sort::Size => "size",
    };
    println!();
    println!("== per path: {} of {}, by {by}", r.per_path.len(), r.streams);
    println!("{:<44} {:>10} {:>10} {:>10}  shares most with", "path", "size", "shared", "only it");
    for p in &r.per_path {
        let partners: Vec<String> =
            p.shares_most_with.iter().map(|q| format!("{} ({})", short(&q.name, 30), human(q.bytes))).collect();
        println!(
            "{:<44} {:>10} {:>10} {:>10}  {}",
            short(&p.name, 44),
            human(p.size),
            human(p.shared_bytes),
            human(p.unique_bytes),
            partners.join(", ")
        );
    }
}

fn print_by_name(groups: &[stats::NameGroup]) {
    println!();
    println!("== by name: what each further version cost (blocks no older version holds)");
    println!("{:<32} {:<20} {:>10} {:>10} {:>8}", "package", "version", "size", "cost", "of size");
    let single = groups.iter().filter(|g| g.versions.len() < 2).count();
    for g in groups.iter().filter(|g| g.versions.len() >= 2) {
        for (i, v) in g.versions.iter().enumerate() {
            let name = if i == 0 { short(&g.name, 32) } else { String::new() };
            let cost = if i == 0 { "(first)".to_string() } else { human(v.cost_bytes) };
            let share = if i == 0 {
                String::new()
            } else {
                v.cost_share.map(|s| format!("{:.1} %", 100.0 * s)).unwrap_or_default()
            };
            println!("{:<32} {:<20} {:>10} {:>10} {:>8}", name, short(&v.version, 20), human(v.size), cost, share);
        }
    }
    if single > 0 {
        println!("({single} names with one version not shown; --json lists them)");
    }
}

fn print_buckets(title: &str, buckets: &[Bucket]) {
    let total: u64 = buckets.iter().map(|b| b.blocks).sum();
    println!("{title:<16} {:>10} {:>10}", "blocks", "bytes");
    for b in buckets.iter().filter(|b| b.blocks > 0) {
        println!("{:<16} {:>10} {:>10}  {}", b.label, b.blocks, human(b.bytes), bar(b.blocks, total, 30));
    }
}

fn print_forms(rows: &[FormRow]) {
    let total: u64 = rows.iter().map(|f| f.blocks).sum();
    println!("{:<16} {:>10} {:>10} {:>10}", "stored form", "blocks", "raw", "stored");
    for f in rows.iter().filter(|f| f.blocks > 0) {
        println!(
            "{:<16} {:>10} {:>10} {:>10}  {}",
            f.form,
            f.blocks,
            human(f.raw_bytes),
            human(f.stored_bytes),
            bar(f.blocks, total, 30)
        );
    }
}

fn print_histograms(r: &Report) {
    let h = &r.histograms;
    println!();
    println!("== blocks");
    print_buckets("size", &h.block_size);
    println!();
    print_buckets("held by streams", &h.reference_count);
    println!();
    print_forms(&h.stored_form);
    let f = &r.store.forms;
    if f.frames > 0 || f.delta_blocks > 0 {
        println!(
            "{} frames ({} with a dictionary), delta chains up to {} deep",
            f.frames, f.frames_with_dict, f.max_delta_depth
        );
    }
}

fn print_detail(r: &Report) {
    let Some(d) = &r.path_detail else { return };
    let p = &d.row;
    println!("== {}", p.name);
    for n in d.names.iter().skip(1) {
        println!("   also {n}");
    }
    println!("{} {}   root {}", p.kind, p.hash, d.root);
    println!("package {:?} version {:?}", d.package, d.version);
    println!(
        "size {}   {} blocks ({} interior nodes), {} of block bytes",
        human(p.size),
        p.blocks,
        d.interior_nodes,
        human(p.block_bytes)
    );
    println!(
        "shared with others {} ({})   only it {} ({})",
        human(p.shared_bytes),
        pct(p.shared_bytes, p.block_bytes),
        human(p.unique_bytes),
        pct(p.unique_bytes, p.block_bytes)
    );
    if !p.shares_most_with.is_empty() {
        println!();
        println!("{:<60} {:>10}", "shares most with", "bytes");
        for q in &p.shares_most_with {
            println!("{:<60} {:>10}", short(&q.name, 60), human(q.bytes));
        }
    }
    println!();
    print_buckets("held by streams", &d.reference_count);
    println!();
    print_forms(&d.stored_form);
}
