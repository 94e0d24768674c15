//! The report as one self-contained HTML page (`dedup-stats --html`, the gateway's `GET /stats`): a
//! renderer over [`Report`], the same data `--json` prints, so nothing is computed twice.
//!
//! The page loads nothing: no script, no external style sheet, font or image; charts are inline SVG
//! (`svg.rs`) and the style sheet is inline. So it can be mailed, archived, opened from `file://`, and
//! served under `Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'`. Every stored
//! name (store paths, file names: a file's name is whatever its adder chose) is escaped, in text and in
//! attributes, so none can inject markup. It reads on a phone (viewport, one column, tables that scroll
//! inside their box, SVG that scales) and on paper (`@media print`).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::svg::{self, esc, short};
use super::{human_bytes, NameGroup, Report};

/// Ids of the page's charts (each an `<svg class="chart">`), in page order; tests look them up.
pub const CHART_IDS: [&str; 6] = [
    "chart-timeline",
    "chart-sharing",
    "chart-versions",
    "chart-block-size",
    "chart-reference-count",
    "chart-stored-form",
];

/// Packages (with two versions or more) in the per-version chart, and their version rows at most:
/// beyond that the chart would be longer than the rest of the page (`--json` lists them all).
const VERSION_GROUPS: usize = 12;
const VERSION_ROWS: usize = 80;

/// What the page says about where it comes from.
#[derive(Debug, Clone)]
pub struct Page {
    /// When the report was computed.
    pub generated: SystemTime,
    /// A sentence under the title (how the live page differs from the command's), if any.
    pub note: Option<String>,
}

impl Default for Page {
    fn default() -> Self {
        Page { generated: SystemTime::now(), note: None }
    }
}

const STYLE: &str = r#"
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--bg:#fff;--logical:#0969da;--unique:#1a7f37;--stored:#8250df;--bar:#54aeff;--cost:#0550ae}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:60rem;margin:0 auto;padding:1rem}
h1{font-size:1.4rem;margin:.2rem 0}
h2{font-size:1.1rem;margin:1.6rem 0 .4rem;border-bottom:1px solid var(--line);padding-bottom:.2rem}
p,li{overflow-wrap:anywhere}
.meta,.note{color:var(--muted);font-size:.85rem}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{padding:.25rem .5rem;border-bottom:1px solid var(--line);text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left;overflow-wrap:anywhere}
td.path{font-family:ui-monospace,monospace;font-size:.8rem;overflow-wrap:anywhere;min-width:8rem}
.ratios{display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;margin:.6rem 0}
.ratios b{font-size:1.2rem}
svg.chart{display:block;width:100%;height:auto;margin:.3rem 0}
svg text{font:12px system-ui,sans-serif;fill:var(--fg)}
svg .tick,svg .value{fill:var(--muted);font-size:11px}
svg .group{font-weight:600}
svg .empty{fill:var(--muted);font-style:italic}
svg .grid{stroke:var(--line);stroke-width:1}
svg .axis{stroke:var(--muted);stroke-width:1}
svg .bar{fill:var(--bar)}
svg .bar-size{fill:#c8e1ff}
svg .bar-cost{fill:var(--cost)}
svg .line-logical{fill:none;stroke:var(--logical);stroke-width:2.5}
svg .line-unique{fill:none;stroke:var(--unique);stroke-width:2.5}
svg .line-stored{stroke:var(--stored);stroke-width:1.5;stroke-dasharray:6 4}
svg .saved{fill:var(--unique);fill-opacity:.12;stroke:none}
svg .cell-text{font-size:10px;fill:#000}
svg .self{fill:#eaeef2}
.s0{fill:#f6f8fa}.s1{fill:#dafbe1}.s2{fill:#aceebb}.s3{fill:#8ddb8c}.s4{fill:#6fdd8b}.s5{fill:#4ac26b}.s6{fill:#2da44e}.s7{fill:#1a7f37}.s8{fill:#116329}.s9{fill:#044f1e}
svg .s6+text,svg .s7+text,svg .s8+text,svg .s9+text{fill:#fff}
.legend{display:flex;flex-wrap:wrap;gap:.2rem 1rem;font-size:.85rem;margin:.2rem 0}
.key{display:inline-block;width:.9rem;height:.9rem;vertical-align:-.1rem;margin-right:.3rem;border-radius:2px}
ol.names{font-size:.8rem;font-family:ui-monospace,monospace;padding-left:2rem;margin:.3rem 0}
.warn{color:#9a6700}
@media (max-width:40rem){
 body{font-size:14px}main{padding:.6rem}th,td{padding:.2rem .3rem}
 svg.chart text{font-size:17px}svg.chart .tick,svg.chart .value{font-size:15px}svg.chart .cell-text{font-size:13px}
}
@media print{
 body{font-size:10pt;color:#000;background:#fff}
 main{max-width:none;padding:0}
 .scroll{overflow:visible}
 section{break-inside:avoid}
 h2{break-after:avoid}
 svg.chart{max-height:24cm}
}
"#;

/// The page.
pub fn render(r: &Report, page: &Page) -> String {
    let mut o = String::with_capacity(64 << 10);
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    o.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    o.push_str("<meta name=\"color-scheme\" content=\"light\">\n");
    o.push_str("<title>nixdag store report</title>\n<style>");
    o.push_str(STYLE);
    o.push_str("</style>\n</head>\n<body>\n<main>\n<h1>nixdag store report</h1>\n");
    let _ = writeln!(o, "<p class=\"meta\">generated {} (UTC); report version {}</p>", utc(page.generated), r.report_version);
    if let Some(n) = &page.note {
        let _ = writeln!(o, "<p class=\"note\">{}</p>", esc(n));
    }
    totals(&mut o, r);
    timeline(&mut o, r);
    sharing(&mut o, r);
    versions(&mut o, r);
    paths(&mut o, r);
    histograms(&mut o, r);
    if !r.incomplete.is_empty() {
        o.push_str("<section id=\"incomplete\"><h2>Incomplete streams</h2>\n<p class=\"warn\">These DAGs could not be walked whole (a missing or damaged block); run <code>nixdag verify</code>.</p><ul>\n");
        for i in &r.incomplete {
            let _ = writeln!(o, "<li>{}</li>", esc(i));
        }
        o.push_str("</ul></section>\n");
    }
    o.push_str("</main>\n</body>\n</html>\n");
    o
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.1} %", 100.0 * part as f64 / whole as f64)
    }
}

fn times(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite()).map(|v| format!("{v:.2}×")).unwrap_or_else(|| "–".into())
}

fn totals(o: &mut String, r: &Report) {
    let s = &r.store;
    o.push_str("<section id=\"totals\"><h2>Totals</h2>\n");
    let _ = writeln!(
        o,
        "<p>{} NARs, {} files, {} store paths; {} blocks in {} packs.</p>",
        s.nars, s.files, s.paths, s.blocks, s.packs
    );
    o.push_str("<div class=\"scroll\"><table id=\"totals-table\">\n<thead><tr><th></th><th>bytes</th><th>of logical</th></tr></thead><tbody>\n");
    let mut row = |what: &str, b: u64, extra: &str| {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td title=\"{b} bytes\">{}</td><td>{}</td></tr>{extra}",
            esc(what),
            human_bytes(b),
            pct(b, s.logical_bytes)
        );
    };
    row("logical (NARs and files, whole)", s.logical_bytes, "");
    row("unique blocks (each block once)", s.unique_bytes, "");
    row("stored on disk (packs + index)", s.stored_bytes, "");
    row("  packs", s.pack_bytes, "");
    row("  index", s.index_bytes, "");
    if let Some(e) = &r.nix_cache_estimate {
        row("standard Nix cache (xz per NAR), estimated", e.estimated_total_bytes, "");
    }
    o.push_str("</tbody></table></div>\n");
    let t = &r.totals;
    let saving = t.saving.filter(|v| v.is_finite()).map(|v| format!("{:.1} %", 100.0 * v)).unwrap_or_else(|| "–".into());
    let _ = writeln!(
        o,
        "<div class=\"ratios\"><span>dedup <b>{}</b></span><span>compression <b>{}</b></span><span>overall <b>{}</b></span><span>saving <b>{saving}</b></span></div>",
        times(t.dedup_ratio),
        times(t.compression_ratio),
        times(t.overall_ratio)
    );
    match &r.nix_cache_estimate {
        Some(e) => {
            let n = &e.nars;
            let err = match n.estimated_xz_bytes_standard_error {
                Some(0) if n.sampled_partially == 0 && n.sampled_nars == n.population_nars => {
                    "exact: every NAR compressed whole".to_string()
                }
                Some(se) => format!("± {} (one standard error)", human_bytes(se)),
                None => "error unknown: fewer than 2 NARs sampled".to_string(),
            };
            let _ = write!(
                o,
                "<p class=\"note\" id=\"xz-estimate\">Standard cache estimated from xz -{} of {} of {} NARs ({} of {}{}): ratio {:.3}, NARs {} {err}",
                n.preset,
                n.sampled_nars,
                n.population_nars,
                human_bytes(n.sampled_bytes),
                human_bytes(n.population_bytes),
                if n.sampled_partially > 0 { format!(", {} of them only their start", n.sampled_partially) } else { String::new() },
                if n.ratio.is_finite() { n.ratio } else { 0.0 },
                human_bytes(n.estimated_xz_bytes),
            );
            if e.file_bytes > 0 {
                let _ = write!(o, ", plus {} of files as they are", human_bytes(e.file_bytes));
            }
            if let Some(share) = e.stored_share.filter(|v| v.is_finite()) {
                let _ = write!(o, ". This store is {:.1} % of that", 100.0 * share);
            }
            o.push_str(".</p>\n");
        }
        None => o.push_str("<p class=\"note\" id=\"xz-estimate\">No standard-cache estimate (xz sample skipped).</p>\n"),
    }
    if s.repack_queued > 0 {
        let _ = writeln!(o, "<p class=\"note\">{} compressed files wait for <code>nixdag repack</code>.</p>", s.repack_queued);
    }
    o.push_str("</section>\n");
}

fn legend(o: &mut String, keys: &[(&str, &str)]) {
    o.push_str("<div class=\"legend\">");
    for (colour, what) in keys {
        let _ = write!(o, "<span><span class=\"key\" style=\"background:{colour}\"></span>{}</span>", esc(what));
    }
    o.push_str("</div>\n");
}

fn timeline(o: &mut String, r: &Report) {
    o.push_str("<section id=\"timeline\"><h2>Savings over the ingest timeline</h2>\n");
    legend(o, &[("var(--logical)", "logical bytes"), ("var(--unique)", "unique blocks"), ("var(--stored)", "stored on disk now")]);
    o.push_str(&svg::timeline("chart-timeline", "logical and unique bytes as streams were added", &r.timeline, r.store.stored_bytes));
    o.push_str("<p class=\"note\">x axis: streams (NARs and files) in the order their ingest wrote their root block to the packs (pack id, then offset); the index keeps no ingest time, and a compaction moves the records it keeps to a newer pack, so a stream whose pack was compacted appears later than it came. The shaded band is what storing each block once saved. Blocks no stream links (internal) are not in the unique line.");
    if r.timeline.unordered > 0 {
        let _ = write!(o, " {} streams whose root has no record of its own (rebuilt) are placed first.", r.timeline.unordered);
    }
    o.push_str("</p></section>\n");
}

fn sharing(o: &mut String, r: &Report) {
    let m = &r.sharing;
    o.push_str("<section id=\"sharing\"><h2>Who shares with whom</h2>\n");
    let _ = writeln!(
        o,
        "<p class=\"note\">The {} streams with most shared bytes. A cell is the bytes two streams both hold, as a share of the smaller one's blocks (darker: more); blocks that more than 64 streams hold are left out, as in “shares most with”.</p>",
        m.names.len()
    );
    o.push_str(&svg::matrix("chart-sharing", "sharing matrix of the most shared streams", m));
    if !m.names.is_empty() {
        o.push_str("<ol class=\"names\">");
        for n in &m.names {
            let _ = write!(o, "<li title=\"{}\">{}</li>", esc(n), esc(&short(n, 80)));
        }
        o.push_str("</ol>\n");
    }
    o.push_str("</section>\n");
}

fn versions(o: &mut String, r: &Report) {
    o.push_str("<section id=\"versions\"><h2>Per-version cost by package</h2>\n");
    legend(o, &[("#c8e1ff", "size"), ("var(--cost)", "cost: bytes no older version holds")]);
    let Some(groups) = &r.by_name else {
        o.push_str(&svg::versions("chart-versions", "per-version cost", &[]));
        o.push_str("<p class=\"note\">Not computed (the report was made without <code>--by-name</code>).</p></section>\n");
        return;
    };
    let multi: Vec<&NameGroup> = groups.iter().filter(|g| g.versions.len() >= 2).collect();
    let mut shown = Vec::new();
    let mut rows = 0;
    for g in multi.iter().take(VERSION_GROUPS) {
        if rows > 0 && rows + g.versions.len() > VERSION_ROWS {
            break;
        }
        rows += g.versions.len();
        shown.push(*g);
    }
    o.push_str(&svg::versions("chart-versions", "what each version of a package cost", &shown));
    let _ = write!(
        o,
        "<p class=\"note\">Versions oldest first (Nix's <code>compareVersions</code>); a version's cost is the raw bytes of its blocks no older version of the package holds. {} of {} packages with two versions or more shown",
        shown.len(),
        multi.len()
    );
    let single = groups.len() - multi.len();
    if single > 0 {
        let _ = write!(o, "; {single} with one version");
    }
    o.push_str(" (<code>dedup-stats --by-name --json</code> lists all).</p></section>\n");
}

fn paths(o: &mut String, r: &Report) {
    o.push_str("<section id=\"paths\"><h2>Per path</h2>\n");
    let _ = writeln!(o, "<p class=\"note\">{} of {} streams; “only it” is what forgetting it would free (before compression).</p>", r.per_path.len(), r.streams);
    o.push_str("<div class=\"scroll\"><table id=\"paths-table\"><thead><tr><th>path</th><th>size</th><th>shared</th><th>only it</th><th>shares most with</th></tr></thead><tbody>\n");
    for p in &r.per_path {
        let partners: Vec<String> =
            p.shares_most_with.iter().map(|q| format!("{} ({})", esc(&short(&q.name, 40)), human_bytes(q.bytes))).collect();
        let _ = writeln!(
            o,
            "<tr><td class=\"path\" title=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"path\">{}</td></tr>",
            esc(&p.name),
            esc(&short(&p.name, 60)),
            human_bytes(p.size),
            human_bytes(p.shared_bytes),
            human_bytes(p.unique_bytes),
            partners.join("<br>")
        );
    }
    o.push_str("</tbody></table></div></section>\n");
}

fn histograms(o: &mut String, r: &Report) {
    let h = &r.histograms;
    o.push_str("<section id=\"histograms\"><h2>Blocks</h2>\n<h3>By size</h3>\n");
    o.push_str(&svg::histogram("chart-block-size", "blocks by raw size", &h.block_size));
    o.push_str("<h3>By how many streams hold them</h3>\n");
    o.push_str(&svg::histogram("chart-reference-count", "blocks by reference count", &h.reference_count));
    o.push_str("<p class=\"note\">0: internal blocks no stream's DAG links (normalized forms of patched blocks, tarball contents under their recipes, dictionaries).</p>\n<h3>By stored form</h3>\n");
    o.push_str(&svg::forms("chart-stored-form", "blocks by stored form", &h.stored_form));
    o.push_str("<p class=\"note\">Raw bytes → stored bytes (a frame's payload counted once).</p></section>\n");
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (Howard Hinnant's days-to-civil algorithm: no date crate for one line).
fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests;
