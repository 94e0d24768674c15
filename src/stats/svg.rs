//! The HTML report's charts, as inline SVG written by hand: a page that must load nothing from the
//! network cannot use a charting library's script, and these five shapes (bars, a line chart, a heat
//! map) are a few rectangles and lines each. Every chart has a `viewBox` and `width="100%"`, so it
//! scales to a phone's width and to paper; hover details are SVG `<title>`s (no script).
//!
//! Every number written goes through [`num`] (finite, or 0: no `NaN` or `inf` ever reaches the SVG),
//! every text through [`esc`].

use std::fmt::Write as _;

use super::{human_bytes, Bucket, FormRow, NameGroup, Sharing, Timeline};

/// Text for HTML and SVG, element content or a quoted attribute: `& < > " '` as entities, and control
/// characters (which a file name may hold) as U+FFFD, so no stored name can open a tag or an attribute.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A coordinate: one decimal, and 0 for anything not finite (an empty store divides by zero).
fn num(v: f64) -> String {
    if v.is_finite() {
        let s = format!("{v:.1}");
        s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
    } else {
        "0".into()
    }
}

/// `part / whole`, 0 when `whole` is 0.
fn frac(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// A store path shortened for a label: its hash part cut to 7 characters (the name is what a reader
/// knows it by), the end kept when still longer than `width`.
pub(crate) fn short(name: &str, width: usize) -> String {
    let base = name.strip_prefix("/nix/store/").unwrap_or(name);
    let base = match base.split_once('-') {
        Some((h, rest)) if h.len() == 32 => format!("{}…-{rest}", &h[..7]),
        _ => base.to_string(),
    };
    let n = base.chars().count();
    if n <= width {
        base
    } else {
        let tail: String = base.chars().skip(n - (width.max(2) - 1)).collect();
        format!("…{tail}")
    }
}

/// One SVG element being written.
struct Svg {
    out: String,
}

impl Svg {
    /// `<svg id=… class="chart">` of `w × h` user units, described by `label` for screen readers.
    fn new(id: &str, w: f64, h: f64, label: &str) -> Svg {
        Svg::sized(id, w, h, label, None)
    }

    /// As [`Svg::new`], at most `max_width` CSS pixels wide.
    fn sized(id: &str, w: f64, h: f64, label: &str, max_width: Option<f64>) -> Svg {
        let mut out = String::with_capacity(4096);
        let style = max_width.map(|m| format!(r#" style="max-width:{}px""#, num(m))).unwrap_or_default();
        let _ = write!(
            out,
            r#"<svg id="{}" class="chart" viewBox="0 0 {} {}" width="100%"{style} role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
            esc(id),
            num(w),
            num(h),
            esc(label)
        );
        Svg { out }
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, class: &str, title: Option<&str>) {
        let _ = write!(
            self.out,
            r#"<rect x="{}" y="{}" width="{}" height="{}" class="{class}">"#,
            num(x),
            num(y),
            num(w.max(0.0)),
            num(h.max(0.0))
        );
        if let Some(t) = title {
            let _ = write!(self.out, "<title>{}</title>", esc(t));
        }
        self.out.push_str("</rect>");
    }

    fn text(&mut self, x: f64, y: f64, anchor: &str, class: &str, text: &str) {
        let _ = write!(
            self.out,
            r#"<text x="{}" y="{}" text-anchor="{anchor}" class="{class}">{}</text>"#,
            num(x),
            num(y),
            esc(text)
        );
    }

    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, class: &str) {
        let _ = write!(
            self.out,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" class="{class}"/>"#,
            num(x1),
            num(y1),
            num(x2),
            num(y2)
        );
    }

    fn poly(&mut self, element: &str, points: &[(f64, f64)], class: &str, title: &str) {
        let pts: Vec<String> = points.iter().map(|(x, y)| format!("{},{}", num(*x), num(*y))).collect();
        let _ = write!(
            self.out,
            r#"<{element} points="{}" class="{class}"><title>{}</title></{element}>"#,
            pts.join(" "),
            esc(title)
        );
    }

    fn finish(mut self) -> String {
        self.out.push_str("</svg>");
        self.out
    }
}

/// Width of every chart, in user units (the page scales it).
const W: f64 = 640.0;

/// Horizontal bars, one a row: `(label, value, text at the bar's end, hover text)`.
fn bars(id: &str, label: &str, rows: &[(String, u64, String, String)]) -> String {
    // Room at the right for the longest value text, at the phone's larger font (≈ 8.5 units a
    // character), so that no text runs off the chart.
    let longest = rows.iter().map(|r| r.2.chars().count()).max().unwrap_or(0);
    let (row_h, left, right) = (22.0, 150.0, (longest as f64 * 8.5 + 12.0).clamp(120.0, 320.0));
    let h = (rows.len().max(1) as f64) * row_h + 8.0;
    let mut s = Svg::new(id, W, h, label);
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0);
    if rows.is_empty() {
        s.text(W / 2.0, 18.0, "middle", "empty", "nothing stored");
    }
    for (i, (name, v, end, hover)) in rows.iter().enumerate() {
        let y = 4.0 + i as f64 * row_h;
        s.text(left - 6.0, y + 15.0, "end", "label", name);
        let w = frac(*v, max) * (W - left - right);
        s.rect(left, y + 3.0, w.max(if *v > 0 { 1.0 } else { 0.0 }), row_h - 6.0, "bar", Some(hover.as_str()));
        s.text(left + w + 6.0, y + 15.0, "start", "value", end);
    }
    s.finish()
}

/// A histogram of buckets: bars by blocks, bytes beside them.
pub(crate) fn histogram(id: &str, label: &str, buckets: &[Bucket]) -> String {
    let rows: Vec<(String, u64, String, String)> = buckets
        .iter()
        .filter(|b| b.blocks > 0)
        .map(|b| {
            let end = format!("{} blocks, {}", b.blocks, human_bytes(b.bytes));
            (b.label.clone(), b.blocks, end.clone(), format!("{}: {end}", b.label))
        })
        .collect();
    bars(id, label, &rows)
}

/// Blocks by stored form: bars by blocks, raw and stored bytes beside them.
pub(crate) fn forms(id: &str, label: &str, rows: &[FormRow]) -> String {
    let rows: Vec<(String, u64, String, String)> = rows
        .iter()
        .filter(|f| f.blocks > 0)
        .map(|f| {
            let end = format!("{} blocks, {} → {}", f.blocks, human_bytes(f.raw_bytes), human_bytes(f.stored_bytes));
            (f.form.to_string(), f.blocks, end.clone(), format!("{}: {end}", f.form))
        })
        .collect();
    bars(id, label, &rows)
}

/// Round `max` up to 1, 2 or 5 times a power of ten (or of 1024 for bytes), for the axis' top.
fn nice_top(max: u64) -> u64 {
    let mut unit = 1u64;
    while unit.saturating_mul(1024) <= max && unit < 1 << 50 {
        unit *= 1024;
    }
    let m = max.div_ceil(unit).max(1);
    let step = [1u64, 2, 4, 5, 8, 10, 16, 20, 32, 40, 50, 64, 100, 128, 200, 256, 400, 500, 512, 800, 1024]
        .into_iter()
        .find(|s| *s >= m)
        .unwrap_or(1024);
    step.saturating_mul(unit)
}

/// Logical and unique bytes against streams added, in pack order; `stored_now` as a dashed line.
pub(crate) fn timeline(id: &str, label: &str, t: &Timeline, stored_now: u64) -> String {
    let (h, left, right, top, bottom) = (300.0, 78.0, 16.0, 16.0, 40.0);
    let mut s = Svg::new(id, W, h, label);
    let n = t.points.last().map(|p| p.streams).unwrap_or(0);
    let max = t.points.iter().map(|p| p.logical_bytes.max(p.unique_bytes)).max().unwrap_or(0).max(stored_now);
    let ymax = nice_top(max);
    let (pw, ph) = (W - left - right, h - top - bottom);
    let x = |k: u64| left + frac(k, n) * pw;
    let y = |b: u64| top + ph - frac(b, ymax) * ph;
    for i in 0..=4u64 {
        let v = ymax / 4 * i;
        s.line(left, y(v), W - right, y(v), "grid");
        s.text(left - 6.0, y(v) + 4.0, "end", "tick", &human_bytes(v).replace(".0 ", " "));
    }
    s.line(left, top + ph, W - right, top + ph, "axis");
    s.text(left, h - 8.0, "start", "tick", "0");
    s.text(W - right, h - 8.0, "end", "tick", &format!("{n} streams"));
    s.text(left + pw / 2.0, h - 8.0, "middle", "tick", "streams, in pack order →");
    if t.points.is_empty() {
        s.text(left + pw / 2.0, top + ph / 2.0, "middle", "empty", "nothing stored");
        return s.finish();
    }
    let line = |f: &dyn Fn(&super::TimelinePoint) -> u64| -> Vec<(f64, f64)> {
        std::iter::once((x(0), y(0))).chain(t.points.iter().map(|p| (x(p.streams), y(f(p))))).collect()
    };
    let logical = line(&|p| p.logical_bytes);
    let unique = line(&|p| p.unique_bytes);
    // The band between them is what dedup saved.
    let band: Vec<(f64, f64)> = logical.iter().copied().chain(unique.iter().rev().copied()).collect();
    let last = t.points.last().map(|p| (p.logical_bytes, p.unique_bytes)).unwrap_or((0, 0));
    s.poly(
        "polygon",
        &band,
        "saved",
        &format!("saved by dedup: {}", human_bytes(last.0.saturating_sub(last.1))),
    );
    s.poly("polyline", &logical, "line-logical", &format!("logical: {}", human_bytes(last.0)));
    s.poly("polyline", &unique, "line-unique", &format!("unique blocks: {}", human_bytes(last.1)));
    s.line(left, y(stored_now), W - right, y(stored_now), "line-stored");
    s.text(left + 6.0, y(stored_now) - 5.0, "start", "tick", &format!("stored on disk now: {}", human_bytes(stored_now)));
    s.finish()
}

/// A heat map of [`Sharing`]: cell `(i, j)` coloured by the bytes both hold as a share of the smaller
/// one's blocks; rows and columns numbered (the page lists the names under it, where they can wrap).
pub(crate) fn matrix(id: &str, label: &str, m: &Sharing) -> String {
    let k = m.names.len();
    if k == 0 {
        let mut s = Svg::new(id, W, 60.0, label);
        s.text(W / 2.0, 30.0, "middle", "empty", "no stream shares bytes with another");
        return s.finish();
    }
    // As wide as its cells (at most 12 × 48 units), and at most 1.25 times that on a wide screen: a
    // matrix of three streams fills a phone's width, and does not fill a desktop's with huge cells.
    let (left, top, cell) = (34.0, 26.0, 48.0);
    let (w, h) = (left + cell * k as f64 + 8.0, top + cell * k as f64 + 8.0);
    let mut s = Svg::sized(id, w, h, label, Some(w * 1.25));
    for i in 0..k {
        let c = left + cell * i as f64 + cell / 2.0;
        s.text(c, top - 8.0, "middle", "tick", &(i + 1).to_string());
        s.text(left - 6.0, top + cell * i as f64 + cell / 2.0 + 4.0, "end", "tick", &(i + 1).to_string());
    }
    for i in 0..k {
        for j in 0..k {
            let both = m.bytes[i].get(j).copied().unwrap_or(0);
            let smaller = m.bytes[i][i].min(m.bytes.get(j).and_then(|r| r.get(j)).copied().unwrap_or(0));
            let f = frac(both, smaller).min(1.0);
            // Ten classes of shade: a class per step keeps the colours in the style sheet.
            let shade = if i == j { "self".to_string() } else { format!("s{}", (f * 9.0).round() as u32) };
            let (a, b) = (short(&m.names[i], 60), short(&m.names[j], 60));
            let title = if i == j {
                format!("{a}: {} of blocks", human_bytes(both))
            } else {
                format!("{a} and {b}: {} in common ({:.0} % of the smaller)", human_bytes(both), f * 100.0)
            };
            let (x, y) = (left + cell * j as f64, top + cell * i as f64);
            s.rect(x, y, cell - 1.0, cell - 1.0, &format!("cell {shade}"), Some(title.as_str()));
            if i != j && both > 0 {
                s.text(x + cell / 2.0, y + cell / 2.0 + 4.0, "middle", "cell-text", &format!("{:.0}%", f * 100.0));
            }
        }
    }
    s.finish()
}

/// Per-version cost: for each package with two versions or more, a row per version, its size as a
/// pale bar and the bytes no older version holds (its cost) as a dark one over it.
pub(crate) fn versions(id: &str, label: &str, groups: &[&NameGroup]) -> String {
    let (row_h, head_h, left, right) = (20.0, 22.0, 150.0, 170.0);
    let rows: usize = groups.iter().map(|g| g.versions.len()).sum();
    let h = rows as f64 * row_h + groups.len() as f64 * head_h + 8.0;
    let mut s = Svg::new(id, W, h.max(40.0), label);
    if groups.is_empty() {
        s.text(W / 2.0, 24.0, "middle", "empty", "no package has two versions stored");
        return s.finish();
    }
    let max = groups.iter().flat_map(|g| g.versions.iter().map(|v| v.size)).max().unwrap_or(0);
    let pw = W - left - right;
    let mut y = 4.0;
    for g in groups {
        s.text(4.0, y + 15.0, "start", "group", &short(&g.name, 60));
        y += head_h;
        for (i, v) in g.versions.iter().enumerate() {
            let version = if v.version.is_empty() { "(no version)".to_string() } else { short(&v.version, 22) };
            s.text(left - 6.0, y + 14.0, "end", "label", &version);
            let (ws, wc) = (frac(v.size, max) * pw, frac(v.cost_bytes, max) * pw);
            let share = v.cost_share.filter(|f| f.is_finite()).map(|f| format!("{:.1} %", f * 100.0)).unwrap_or_default();
            let title = format!(
                "{} {}: size {}, cost {} ({share}){}",
                short(&g.name, 60),
                v.version,
                human_bytes(v.size),
                human_bytes(v.cost_bytes),
                if i == 0 { ", the first version: all its blocks" } else { "" }
            );
            s.rect(left, y + 3.0, ws, row_h - 6.0, "bar-size", Some(title.as_str()));
            s.rect(left, y + 3.0, wc, row_h - 6.0, "bar-cost", Some(title.as_str()));
            let end = if i == 0 {
                format!("{} (first)", human_bytes(v.cost_bytes))
            } else {
                format!("{} · {share}", human_bytes(v.cost_bytes))
            };
            s.text(left + ws + 6.0, y + 14.0, "start", "value", &end);
            y += row_h;
        }
    }
    s.finish()
}
