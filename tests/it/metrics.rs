//! `GET /metrics` (Prometheus text format, read by the Prometheus project's own Python parser),
//! `GET /healthz`, `--metrics-listen`, and the request log in JSON.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::common::*;
use crate::gateway::Server;

/// `curl -s URL` → (status, body bytes).
fn get_bytes(url: &str) -> (u16, Vec<u8>) {
    let o = Command::new("curl").args(["-s", "-w", "\n%{http_code}", url]).output().unwrap();
    let out = o.stdout;
    let nl = out.iter().rposition(|b| *b == b'\n').unwrap();
    (std::str::from_utf8(&out[nl + 1..]).unwrap().parse().unwrap(), out[..nl].to_vec())
}

/// `curl -s URL` → (status, body as text).
fn get(url: &str) -> (u16, String) {
    let (code, body) = get_bytes(url);
    (code, String::from_utf8_lossy(&body).into_owned())
}

/// Samples parsed by `prometheus_client.parser.text_string_to_metric_families` (pip
/// `prometheus_client`, installed by scripts/test): `(name, labels, value)`.
fn parse(text: &str) -> Vec<(String, serde_json::Map<String, serde_json::Value>, f64)> {
    let script = "import json, sys\n\
                  from prometheus_client.parser import text_string_to_metric_families\n\
                  out = []\n\
                  for fam in text_string_to_metric_families(sys.stdin.read()):\n\
                  \x20   for s in fam.samples:\n\
                  \x20       out.append([s.name, s.labels, s.value])\n\
                  print(json.dumps(out))\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "not Prometheus text format: {}\n{text}", String::from_utf8_lossy(&o.stderr));
    let v: Vec<(String, serde_json::Map<String, serde_json::Value>, f64)> = serde_json::from_slice(&o.stdout).unwrap();
    v
}

/// The value of the sample `name` whose labels include `labels` (0 when absent: counters start there).
fn value(
    samples: &[(String, serde_json::Map<String, serde_json::Value>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).and_then(|x| x.as_str()) == Some(*v)))
        .map(|s| s.2)
        .unwrap_or(0.0)
}

fn store_with_a_path() -> (TestStore, String, std::path::PathBuf, tempfile::TempDir) {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("metrics-demo-1.0");
    std::fs::create_dir_all(&dir).unwrap();
    write_random(&dir.join("blob"), 200 << 10, 77);
    let path = nix_add(&dir);
    let store = TestStore::new();
    store.add(&[path.to_str().unwrap()]);
    let hash = path.file_name().unwrap().to_str().unwrap()[..32].to_string();
    (store, hash, path, work)
}

#[test]
fn metrics_count_the_requests_made() {
    let (store, hash, _path, _work) = store_with_a_path();
    let server = Server::start(&store, &[]);
    let (code, text) = get(&format!("{}/metrics", server.url));
    assert_eq!(code, 200);
    let m0 = parse(&text);
    assert_eq!(value(&m0, "nixdag_store_logical_bytes", &[]), store.stat("logical_bytes") as f64);
    assert_eq!(value(&m0, "nixdag_store_unique_bytes", &[]), store.stat("unique_bytes") as f64);
    assert!(value(&m0, "nixdag_store_stored_bytes", &[]) > 0.0);

    let missing = "00000000000000000000000000000000";
    for _ in 0..2 {
        assert_eq!(get(&format!("{}/{hash}.narinfo", server.url)).0, 200);
    }
    assert_eq!(get(&format!("{}/{missing}.narinfo", server.url)).0, 404);
    let (_, narinfo) = get(&format!("{}/{hash}.narinfo", server.url));
    let url = narinfo.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap().to_string();
    let (code, nar) = get_bytes(&format!("{}/{url}", server.url));
    assert_eq!(code, 200);
    assert_eq!(get(&format!("{}/healthz", server.url)), (200, "ok\n".to_string()));

    let m1 = parse(&get(&format!("{}/metrics", server.url)).1);
    let req = |m: &_, route, status| value(m, "nixdag_http_requests_total", &[("route", route), ("status", status)]);
    assert_eq!(req(&m1, "narinfo", "200") - req(&m0, "narinfo", "200"), 3.0);
    assert_eq!(req(&m1, "narinfo", "404") - req(&m0, "narinfo", "404"), 1.0);
    assert_eq!(req(&m1, "nar", "200"), 1.0);
    assert_eq!(req(&m1, "healthz", "200"), 1.0);
    assert_eq!(req(&m1, "metrics", "200"), 1.0, "the first scrape is counted once it is answered");
    // Found in the store, or answered from the gateway's narinfo cache after the first time.
    let hits = |m: &_| {
        value(m, "nixdag_narinfo_hits_total", &[("source", "store")]) + value(m, "nixdag_narinfo_cache_hits_total", &[])
    };
    assert_eq!(hits(&m1) - hits(&m0), 3.0);
    assert_eq!(value(&m1, "nixdag_narinfo_misses_total", &[]) - value(&m0, "nixdag_narinfo_misses_total", &[]), 1.0);
    assert_eq!(value(&m1, "nixdag_http_request_duration_seconds_count", &[("route", "narinfo")]), 4.0);
    assert_eq!(value(&m1, "nixdag_http_request_duration_seconds_bucket", &[("route", "narinfo"), ("le", "+Inf")]), 4.0);
    assert!(value(&m1, "nixdag_served_bytes_total", &[]) >= nar.len() as f64, "bytes served");
    assert_eq!(value(&m1, "nixdag_http_response_bytes_total", &[("route", "nar")]), nar.len() as f64);
    // The access log (on in Server::start) has one line per request, as before.
    assert!(
        server.requests().iter().any(|l| l.contains(&format!("GET /{missing}.narinfo 404"))),
        "{:?}",
        server.requests()
    );
    server.stop();
}

/// `serve` with extra arguments; returns the child and its stdout lines read so far (`n` of them).
fn serve(store: &TestStore, args: &[&str], n: usize, envs: &[(&str, &str)]) -> (Child, Vec<String>) {
    let mut child = store
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..n {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        lines.push(l.trim().to_string());
    }
    (child, lines)
}

#[test]
fn metrics_on_their_own_address_and_json_request_logs() {
    let (store, hash, _path, _work) = store_with_a_path();
    let (child, lines) = serve(
        &store,
        &["--metrics-listen", "127.0.0.1:0", "--log-format", "json", "--access-log"],
        3,
        &[("NIXDAG_LOG", "warn")],
    );
    let main = lines[0].rsplit(' ').next().unwrap().to_string();
    let metrics = lines.iter().find_map(|l| l.strip_prefix("nixdag metrics on ")).expect("a metrics line").to_string();
    assert_eq!(get(&format!("{main}/{hash}.narinfo")).0, 200);
    assert_eq!(get(&format!("{main}/metrics")).0, 404, "the main listener must not serve /metrics");
    let (code, text) = get(&metrics);
    assert_eq!(code, 200);
    let m = parse(&text);
    assert_eq!(value(&m, "nixdag_http_requests_total", &[("route", "narinfo"), ("status", "200")]), 1.0);
    assert_eq!(get(&metrics.replace("/metrics", "/healthz")).0, 200);
    // The report page lists every stored path: it goes where the metrics go.
    assert_eq!(get(&format!("{main}/stats")).0, 404, "the main listener must not serve /stats either");
    let (code, page) = get(&metrics.replace("/metrics", "/stats"));
    assert_eq!(code, 200);
    assert!(page.contains("<svg id=\"chart-timeline\""), "{page}");
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    // NIXDAG_LOG=warn leaves the request lines (turned on by --access-log), each a JSON object; the
    // only other lines are the plain `nixdag: …` notes some commands print outside the log.
    let reqs: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| !l.starts_with("nixdag: "))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let narinfo = reqs.iter().find(|r| r["route"] == "narinfo").unwrap_or_else(|| panic!("{err}"));
    assert_eq!(narinfo["method"], "GET");
    assert_eq!(narinfo["status"], 200);
    assert_eq!(narinfo["level"], "INFO");
    assert!(narinfo["duration_ms"].as_f64().is_some() && narinfo["bytes"].as_i64().unwrap() > 0, "{narinfo}");
}
