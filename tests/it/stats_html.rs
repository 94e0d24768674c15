//! The HTML report: `dedup-stats --html` on a store of real `nix-store --add` paths (two versions of a
//! package, so the by-name and sharing charts have something to show), `GET /stats` from a running
//! gateway with its headers, and both pages judged by headless Chromium (tests/browser: no console
//! error, no request leaving the page, every chart drawn, a screenshot that is not blank, no
//! horizontal overflow on a phone).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::*;
use crate::dedup::validate_report;
use crate::gateway::Server;

const CHARTS: [&str; 6] = [
    "chart-timeline",
    "chart-sharing",
    "chart-versions",
    "chart-block-size",
    "chart-reference-count",
    "chart-stored-form",
];

/// A package-like tree: a large library (its own chunks) and some text, versions sharing most of it.
fn package(root: &Path, lib_seed: u64, data_seed: u64, text_seed: u64) {
    std::fs::create_dir_all(root.join("lib")).unwrap();
    write_random(&root.join("lib/libthing.so"), 400 << 10, lib_seed);
    write_random(&root.join("lib/data.bin"), 200 << 10, data_seed);
    let mut rng = Xorshift::new(text_seed);
    std::fs::write(root.join("README"), nix_words(&mut rng, 300)).unwrap();
}

/// The npm tools in tests/browser (`npm ci` there; scripts/test runs it) and Chromium.
fn browser_tools() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "tests/browser/node_modules missing: run scripts/test (or `npm ci` in tests/browser)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} missing: scripts/test installs Debian's chromium");
    dir
}

/// Judge the page at `url` in Chromium; the screenshots go to target/test-artifacts/.
fn judge_in_chromium(url: &str, name: &str) -> serde_json::Value {
    let dir = browser_tools();
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    let o = Command::new("node")
        .arg(dir.join("check-report.mjs"))
        .arg(url)
        .arg(&artifacts)
        .arg(name)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("check-report.mjs printed no JSON ({e}): {stdout}\n{}", String::from_utf8_lossy(&o.stderr))
    });
    assert!(o.status.success() && v["ok"] == true, "Chromium judged {url}: {:#}", v["failures"]);
    for vp in v["viewports"].as_array().unwrap() {
        let shot = vp["screenshot"]["file"].as_str().unwrap();
        assert!(Path::new(shot).exists(), "no screenshot {shot}");
        eprintln!(
            "{name} {}: {} colours, {:.1} % not white, {shot}",
            vp["name"],
            vp["screenshot"]["colours"],
            vp["screenshot"]["notWhiteShare"].as_f64().unwrap() * 100.0
        );
    }
    v
}

/// `curl -s -i` (or `-I` for HEAD): (status, headers lower-cased, body).
fn fetch(url: &str, head: bool) -> (u16, String, String) {
    let o = Command::new("curl").args(["-s", if head { "-I" } else { "-i" }, url]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, headers.to_ascii_lowercase(), body.to_string())
}

fn assert_charts(html: &str, what: &str) {
    for id in CHARTS {
        assert!(html.contains(&format!("<svg id=\"{id}\" class=\"chart\"")), "{what}: no chart {id}");
    }
    assert!(!html.contains("NaN"), "{what}: NaN in the page");
    assert!(!html.contains("<script"), "{what}: a script in the page");
}

#[test]
fn html_report_and_live_stats_page_render_in_chromium() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    // Two versions of one package (the same library, new data and text) and an unrelated package.
    let (v1, v2, other) = (w.join("htmldemo-1.0"), w.join("htmldemo-1.1"), w.join("otherpkg-2.3"));
    package(&v1, 1, 2, 3);
    package(&v2, 1, 5, 3);
    std::fs::write(v2.join("README"), "version 1.1\n").unwrap();
    package(&other, 7, 8, 9);
    let store = TestStore::new();
    for p in [&v1, &v2, &other] {
        store.add(&[nix_add(p).to_str().unwrap()]);
    }
    // A file whose name is markup: what the page shows of it must stay text.
    let evil = w.join("\"><i id=evil>x<!--.tar");
    std::fs::write(&evil, b"some bytes of a file").unwrap();
    store.add(&["--file", evil.to_str().unwrap()]);

    // The data behind the page: its new keys follow the schema, and the timeline ends at the totals.
    let json: serde_json::Value =
        serde_json::from_str(&store.ok(&["dedup-stats", "--json", "--by-name", "--no-xz"])).unwrap();
    validate_report(&json.to_string());
    let last = json["timeline"]["points"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["streams"], json["streams"]);
    assert_eq!(last["logical_bytes"], json["logical_bytes"]);
    let names: Vec<&str> = json["sharing"]["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert!(
        names.iter().any(|n| n.ends_with("-htmldemo-1.0")) && names.iter().any(|n| n.ends_with("-htmldemo-1.1")),
        "{names:?}"
    );
    let (a, b) = (
        names.iter().position(|n| n.ends_with("-htmldemo-1.0")).unwrap(),
        names.iter().position(|n| n.ends_with("-htmldemo-1.1")).unwrap(),
    );
    let both = json["sharing"]["bytes"][a][b].as_u64().unwrap();
    assert!(both >= 400 << 10, "the two versions share their library: {both}");

    // dedup-stats --html.
    let file = w.join("report.html");
    let out = store.ok(&["dedup-stats", "--html", file.to_str().unwrap()]);
    assert!(out.contains("report.html"), "{out}");
    let html = std::fs::read_to_string(&file).unwrap();
    assert_charts(&html, "--html");
    assert!(html.contains("htmldemo"), "the package is named");
    assert!(!html.contains("<i id=evil>") && !html.contains("<!--"), "a file name opened markup");
    assert!(html.contains("&quot;&gt;&lt;i id=evil&gt;"), "the file's name is shown escaped");
    assert!(html.contains("class=\"bar-cost\""), "version 1.1's cost is drawn");
    judge_in_chromium(&format!("file://{}", file.display()), "dedup-stats-html");

    // GET /stats, live.
    let server = Server::start(&store, &[]);
    let url = format!("{}/stats", server.url);
    let (status, headers, body) = fetch(&url, false);
    assert_eq!(status, 200, "{headers}");
    assert!(headers.contains("content-type: text/html; charset=utf-8"), "{headers}");
    assert!(headers.contains("content-security-policy: default-src 'none'; style-src 'unsafe-inline'"), "{headers}");
    assert!(headers.contains("x-content-type-options: nosniff"), "{headers}");
    assert_charts(&body, "/stats");
    assert!(body.contains("Live from the gateway"), "the live page says what differs");
    let body_first = body;
    let (status, headers, body) = fetch(&url, true);
    assert_eq!(status, 200, "HEAD: {headers}");
    assert!(body.is_empty(), "HEAD has no body");
    assert!(headers.contains("content-length: "), "{headers}");
    judge_in_chromium(&url, "gateway-stats");
    // Within the TTL the page is the one computed first (the same "generated" second), not another.
    let generated =
        |html: &str| html.split("generated ").nth(1).and_then(|s| s.split(" (UTC)").next()).map(String::from);
    let (_, _, again) = fetch(&url, false);
    assert!(generated(&again).is_some() && generated(&again) == generated(&body_first), "the page was computed again");
    let o = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", &url])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "405");
    server.stop();
}
