//! The page: every chart present, every name escaped, an empty store rendered without a `NaN`.

use std::collections::BTreeSet;

use super::*;
use crate::stats::tests::build;
use crate::stats::{report, Options, XzOptions};
use crate::store::Store;

/// Every tag name the page opens or closes: what a name smuggled into the page would add to.
fn tags(html: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = html.as_bytes();
    for (i, _) in html.match_indices('<') {
        let rest = &b[i + 1..];
        let rest = rest.strip_prefix(b"/").unwrap_or(rest);
        let name: String = rest.iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'!').map(|c| *c as char).collect();
        out.insert(name.to_ascii_lowercase());
    }
    out
}

/// The tags the renderer writes, and only those.
const ALLOWED: [&str; 31] = [
    "!doctype", "html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3", "p", "section", "div",
    "span", "b", "table", "thead", "tbody", "tr", "th", "td", "ol", "ul", "li", "code", "br", "svg", "rect",
    "text", "line",
];

fn page_of(store: &Store) -> String {
    let opts = Options { by_name: true, top: Some(15), xz: Some(XzOptions::default()), ..Options::default() };
    let r = report(store, &opts).unwrap();
    render(&r, &Page::default())
}

fn assert_every_chart(html: &str) {
    for id in CHART_IDS {
        let open = format!("<svg id=\"{id}\" class=\"chart\" viewBox=\"0 0 ");
        let at = html.find(&open).unwrap_or_else(|| panic!("no <svg id={id}> chart"));
        let close = html[at..].find("</svg>").unwrap_or_else(|| panic!("chart {id} is not closed"));
        assert!(html[at..at + close].contains("width=\"100%\""), "chart {id} does not scale");
    }
}

#[test]
fn hostile_names_are_escaped_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let evil = [
        "<script>alert(1)</script>-1.0.tar",
        "x\"><img src=x onerror=alert(1)>-1.1.tar",
        "a'b&c<svg onload=alert(1)>-1.0.tar",
        "</title></style><iframe src=//evil>-2.tar",
    ];
    // Overlapping leaves, so every name is in the per-path table, the sharing matrix, the timeline's
    // hover text and the by-name chart.
    let streams: Vec<(&str, Vec<u32>)> =
        evil.iter().enumerate().map(|(i, n)| (*n, (i as u32 * 10..i as u32 * 10 + 30).collect())).collect();
    build(&store, &streams);
    let html = page_of(&store);
    let found = tags(&html);
    let allowed: BTreeSet<String> =
        ALLOWED.iter().map(|s| s.to_string()).chain(["polyline", "polygon"].map(String::from)).collect();
    assert!(found.is_subset(&allowed), "unexpected tags: {:?}", found.difference(&allowed).collect::<Vec<_>>());
    for bad in ["<script", "<img", "<iframe", "<svg onload", "onerror=alert(1)>"] {
        assert!(!html.contains(bad), "{bad:?} reached the page");
    }
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the name is shown, escaped");
    assert!(html.contains("x&quot;&gt;&lt;img"), "quotes in a name are escaped");
    assert!(html.contains("a&#39;b&amp;c"), "apostrophes and ampersands are escaped");
    assert!(!html.contains("<svg id=\"chart-sharing\" class=\"chart\" viewBox=\"0 0 640 60\""), "the matrix is not empty");
    assert_every_chart(&html);
}

#[test]
fn escape_covers_markup_quotes_and_control_characters() {
    assert_eq!(svg::esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    assert_eq!(svg::esc("a\u{0}b\u{1b}c"), "a\u{fffd}b\u{fffd}c");
}

#[test]
fn every_chart_is_present_with_two_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    build(
        &store,
        &[
            ("pkg-1.0.tar", (0..100).collect()),
            ("pkg-1.1.tar", (0..60).chain(100..140).collect()),
            ("other-2.tar", (50..70).chain(200..210).collect()),
        ],
    );
    let html = page_of(&store);
    assert_every_chart(&html);
    // Each chart has something in it: the timeline's lines, the matrix's cells, the versions' bars.
    for needle in ["class=\"line-logical\"", "class=\"line-unique\"", "class=\"cell s", "class=\"bar-cost\"", "class=\"bar\""] {
        assert!(html.contains(needle), "no {needle} in the page");
    }
    assert!(html.contains("<meta name=\"viewport\""), "phones need the viewport");
    assert!(html.contains("@media print"), "paper needs its rules");
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href=\"http"), "the page loads nothing");
    assert!(!html.contains("NaN") && !html.contains("inf\""), "a number is not finite");
}

#[test]
fn an_empty_store_renders_without_nan() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let html = page_of(&store);
    assert_every_chart(&html);
    for bad in ["NaN", "inf", "Infinity"] {
        assert!(!html.contains(bad), "{bad} in the page of an empty store");
    }
    assert!(html.contains("nothing stored"));
}

#[test]
fn utc_dates() {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    assert_eq!(utc(t), "2023-11-14 22:13:20");
    assert_eq!(utc(UNIX_EPOCH + std::time::Duration::from_secs(951_782_400)), "2000-02-29 00:00:00");
}
