//! The disk budget (`serve --max-size`, `gc --max-size`): least recently served roots go first, closures
//! stay whole, pinned and uploaded paths stay, evicted paths come back through `serve --upstream`, and
//! `verify` passes throughout; with real Nix building the paths, substituting and uploading them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::gateway::{nix, run, Server};
use crate::warm::{build_chain, nix_cache, nix_key};
use crate::warm_server::CacheServer;

const MIB: u64 = 1 << 20;

/// Input-addressed paths built by real Nix, each holding `size` bytes of random data (nothing shared,
/// nothing compresses): `(attr, size, deps)`. Returns the store paths in the order given.
fn build_blobs(w: &Path, specs: &[(&str, u64, &[&str])]) -> Vec<PathBuf> {
    require_nix();
    let expr = w.join("blobs.nix");
    let mut attrs = String::new();
    for (name, size, deps) in specs {
        attrs.push_str(&format!("  {name} = mk \"ev-{name}\" {size} [ {} ];\n", deps.join(" ")));
    }
    fs::write(
        &expr,
        format!(
            r#"{{ salt }}:
let
  mk = name: size: deps: derivation {{
    inherit name; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "/bin/mkdir $out; echo ${{salt}} ${{toString deps}} > $out/refs; /usr/bin/head -c ${{toString size}} /dev/urandom > $out/data" ];
  }};
in rec {{
{attrs}}}
"#
        ),
    )
    .unwrap();
    let salt = format!("{:?}-{}", std::time::SystemTime::now(), std::process::id());
    let mut c = Command::new("nix-build");
    c.arg(&expr).args(["--argstr", "salt", &salt, "--no-out-link"]);
    for (name, _, _) in specs {
        c.args(["-A", name]);
    }
    run(&mut c).lines().map(PathBuf::from).collect()
}

fn nar_hash(p: &Path) -> String {
    nix_path_info(p).0
}

/// Whether the store holds the NAR of `p` (read beside a running `serve`).
fn stored(store: &TestStore, p: &Path) -> bool {
    store.output(&["cat", "--nar-hash", &nar_hash(p), "--range", "0-0"]).status.success()
}

/// Wait until the store fits `limit` (the gateway evicts in the background).
fn wait_under(store: &TestStore, limit: u64) {
    let t = Instant::now();
    loop {
        let s = store.stat("stored_bytes");
        if s <= limit {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "store still at {s} bytes, over {limit}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `nix-store -r` into a fresh Nix store through the gateway, trusting only the gateway's key.
fn substitute(w: &Path, server: &Server, tag: &str, path: &Path) {
    let fresh = w.join(format!("store-{tag}"));
    run(Command::new("nix-store")
        .env("XDG_CACHE_HOME", w.join(format!("xdg-{tag}")))
        .arg("--store")
        .arg(&fresh)
        .arg("-r")
        .arg(path)
        .args(["--option", "substituters", &server.url, "--option", "trusted-public-keys", &server.public_key]));
    let local = fresh.join(path.strip_prefix("/").unwrap());
    assert_eq!(fs::read(local.join("data")).unwrap(), fs::read(path.join("data")).unwrap(), "{tag}");
}

fn add_each(store: &TestStore, paths: &[&PathBuf]) {
    for p in paths {
        store.add(&[p.to_str().unwrap()]);
    }
}

/// The acceptance run: `serve --max-size` below what the store holds evicts the least recently served
/// paths (not the pinned one, not the ones clients fetched), ends under the limit; an evicted path
/// substitutes again through `--upstream`, a kept one from the store without asking the upstream;
/// `verify` passes.
#[test]
fn serve_max_size_evicts_the_least_recently_served_and_pulls_them_back() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let specs: Vec<(&str, u64, &[&str])> = vec![
        ("lib", 2_000_000, &[]),
        ("app", 1_000_000, &["lib"]),
        ("a0", 2_000_000, &[]),
        ("a1", 2_000_000, &[]),
        ("a2", 2_000_000, &[]),
        ("a3", 2_000_000, &[]),
        ("a4", 2_000_000, &[]),
        ("a5", 2_000_000, &[]),
    ];
    let p = build_blobs(w, &specs);
    let (lib, app, a) = (&p[0], &p[1], &p[2..]);
    let (sk, pk) = nix_key(w, "upstream-1");
    let refs: Vec<&Path> = p.iter().map(PathBuf::as_path).collect();
    nix_cache(w, &w.join("up"), &sk, "zstd", &refs);
    let up = CacheServer::start(w.join("up"));
    let store = TestStore::new();
    // Stored oldest first: lib, app, a0 … a5.
    add_each(&store, &p.iter().collect::<Vec<_>>());
    store.ok(&["pin", a[0].to_str().unwrap()]);
    assert_eq!(store.ok(&["pin"]).trim(), a[0].to_str().unwrap());
    let full = store.stat("stored_bytes");
    assert!(full > 14 * MIB, "{full}");
    // Clients fetch app (and so lib) and a1: served now, so the newest.
    let server = Server::start(&store, &["--upstream", &up.url, "--trusted-key", &pk]);
    substitute(w, &server, "app", app);
    substitute(w, &server, "a1", &a[1]);
    server.stop();
    assert!(up.nar_requests().is_empty(), "{:?}", up.requests());

    // Kept: a0 (pinned), lib, app, a1 (served). 5 MB over: a2, a3 and a4 (6 MB) go, a5 stays.
    let limit = store.stat("stored_bytes") - 5_000_000;
    let max = limit.to_string();
    let server = Server::start(&store, &["--upstream", &up.url, "--trusted-key", &pk, "--max-size", &max]);
    wait_under(&store, limit);
    for kept in [lib, app, &a[0], &a[1]] {
        assert!(stored(&store, kept), "{} was evicted", kept.display());
    }
    // The oldest unserved go first: a2, a3, a4; a5 was stored last.
    for gone in &a[2..5] {
        assert!(!stored(&store, gone), "{} was kept", gone.display());
    }
    assert!(stored(&store, &a[5]), "a5 was evicted before older paths");
    store.verify();
    // A kept path substitutes from the store: the upstream is not asked for it.
    substitute(w, &server, "a1-again", &a[1]);
    substitute(w, &server, "app-again", app);
    assert!(up.nar_requests().is_empty(), "{:?}", up.requests());
    // An evicted one comes back through the upstream.
    substitute(w, &server, "a2-again", &a[2]);
    let a2_nar = format!("/{}", crate::warm::nar_url(&w.join("up"), &a[2]));
    assert_eq!(up.nar_requests().iter().filter(|l| l.contains(&a2_nar)).count(), 1, "{:?}", up.requests());
    // Stored again, which is over budget again: something old goes, never the pinned or app's closure.
    wait_under(&store, limit);
    for kept in [lib, app, &a[0]] {
        assert!(stored(&store, kept), "{} was evicted", kept.display());
    }
    server.stop();
    assert!(store.stat("stored_bytes") <= limit);
    store.verify();
}

/// `gc --max-size`: a path a kept path references is not evicted before it, even when it is the
/// oldest; with a budget too small for anything, the referrer goes first, then its reference; a pinned
/// path keeps its closure until it is unpinned; an uploaded path is kept unless `--evict-uploads`.
#[test]
fn gc_max_size_keeps_closures_pins_and_uploads() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let specs: Vec<(&str, u64, &[&str])> = vec![
        ("lib", 2_000_000, &[]),
        ("b0", 2_000_000, &[]),
        ("b1", 2_000_000, &[]),
        ("b2", 2_000_000, &[]),
        ("app", 1_000_000, &["lib"]),
        ("plib", 1_000_000, &[]),
        ("ptop", 1_000_000, &["plib"]),
        ("up", 1_000_000, &[]),
    ];
    let p = build_blobs(w, &specs);
    let (lib, b, app, plib, ptop, upl) = (&p[0], &p[1..4], &p[4], &p[5], &p[6], &p[7]);
    let store = TestStore::new();
    // The uploaded one first (the oldest), through the gateway as `nix copy --to` sends it.
    let server = Server::start(&store, &["--allow-upload"]);
    crate::gateway::uploader_key(w);
    let dest = format!("{}?secret-key={}&compression=zstd", server.url, w.join("sk").display());
    run(nix(w, "upload").args(["copy", "--to", &dest]).arg(upl));
    server.stop();
    add_each(&store, &[lib, &b[0], &b[1], &b[2], app, plib, ptop]);
    store.ok(&["pin", ptop.to_str().unwrap()]);
    // lib is the oldest added path, but app (the newest) references it: b0, b1, b2 go instead.
    let total = store.stat("stored_bytes");
    let limit = total - 9 * MIB / 2;
    let out = store.ok(&["gc", "--max-size", &limit.to_string()]);
    assert!(store.stat("stored_bytes") <= limit, "{out}");
    assert!(stored(&store, lib) && stored(&store, app), "{out}");
    assert!(!stored(&store, &b[0]) && !stored(&store, &b[1]) && !stored(&store, &b[2]), "{out}");
    store.verify();
    // Nothing fits: everything not kept goes, app before lib (each evicted root is logged as it goes).
    let o = store.output(&["gc", "--max-size", "1K"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    let at = |p: &Path| {
        let hash = &p.file_name().unwrap().to_str().unwrap()[..32];
        log.find(hash).unwrap_or_else(|| panic!("{} not evicted: {log}", p.display()))
    };
    assert!(at(app) < at(lib), "lib evicted before app: {log}");
    assert!(!stored(&store, app) && !stored(&store, lib));
    assert!(String::from_utf8_lossy(&o.stdout).contains("still over budget"));
    // Pinned (with its closure) and uploaded are left.
    for kept in [ptop, plib, upl] {
        assert!(stored(&store, kept), "{} was evicted: {log}", kept.display());
    }
    store.verify();
    // Unpinned, the pin's closure goes; the upload only with --evict-uploads.
    store.ok(&["unpin", ptop.to_str().unwrap()]);
    store.ok(&["gc", "--max-size", "1K"]);
    assert!(!stored(&store, ptop) && !stored(&store, plib));
    assert!(stored(&store, upl));
    store.ok(&["gc", "--max-size", "1K", "--evict-uploads"]);
    assert!(!stored(&store, upl));
    assert_eq!(store.stat("nars"), 0);
    assert_eq!(store.stat("paths"), 0);
    store.verify();
    // A path the store lacks cannot be pinned.
    let err = store.fails(&["pin", lib.to_str().unwrap()]);
    assert!(err.contains("no store path"), "{err}");
}

/// Eviction beside ingest and download: `serve --max-size` (far below the corpus) with `--upstream`,
/// while `warm` fills the same store from the upstream and a client keeps downloading a kept path;
/// every download is whole, the store ends under the limit, `verify` passes, and every path evicted on
/// the way substitutes again through the gateway.
#[test]
fn eviction_while_warm_and_downloads_run_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let chain = build_chain(w, 12);
    let blobs = build_blobs(w, &[("big0", 3_000_000, &[]), ("big1", 3_000_000, &[]), ("big2", 3_000_000, &[])]);
    let (sk, pk) = nix_key(w, "upstream-1");
    let mut all: Vec<&Path> = blobs.iter().map(PathBuf::as_path).collect();
    all.push(&chain[11]);
    nix_cache(w, &w.join("up"), &sk, "xz", &all);
    let up = CacheServer::start(w.join("up"));
    let store = TestStore::new();
    store.add(&[blobs[0].to_str().unwrap()]);
    let limit = 6 * MIB;
    let server = Server::start(&store, &["--upstream", &up.url, "--trusted-key", &pk, "--max-size", "6M"]);
    // A client downloads big0 over and over while the rest arrives.
    let nar_url = {
        let hash = &blobs[0].file_name().unwrap().to_str().unwrap()[..32];
        let info = crate::gateway::curl_ok(&format!("{}/{hash}.narinfo", server.url));
        format!("{}/{}", server.url, info.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap())
    };
    let expected = nix_dump(&blobs[0]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let downloader = {
        let (stop, url) = (stop.clone(), nar_url.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let o = Command::new("curl").args(["-sS", "--fail", "--limit-rate", "4M"]).arg(&url).output().unwrap();
                assert!(o.status.success(), "download {n}: {}", String::from_utf8_lossy(&o.stderr));
                assert!(o.stdout == expected, "download {n} differs");
                n += 1;
            }
            n
        })
    };
    let mut args = vec!["warm", "--upstream", &up.url, "--trusted-key", &pk, "--jobs", "2"];
    let names: Vec<String> = all.iter().map(|p| p.to_str().unwrap().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let o = store.cmd().args(&args).stdin(Stdio::null()).output().unwrap();
    assert!(o.status.success(), "warm: {}", String::from_utf8_lossy(&o.stderr));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(downloader.join().unwrap() > 0);
    wait_under(&store, limit);
    assert!(stored(&store, &blobs[0]), "the path being downloaded was evicted");
    store.verify();
    // Whatever was evicted comes back through the gateway.
    for (i, p) in blobs.iter().enumerate() {
        substitute(w, &server, &format!("big{i}"), p);
    }
    let fresh = w.join("store-chain");
    run(Command::new("nix-store")
        .env("XDG_CACHE_HOME", w.join("xdg-chain"))
        .arg("--store")
        .arg(&fresh)
        .arg("-r")
        .arg(&chain[11])
        .args(["--option", "substituters", &server.url, "--option", "trusted-public-keys", &server.public_key]));
    server.stop();
    store.verify();
}
