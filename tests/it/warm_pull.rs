//! `serve --upstream`: a pull-through cache in front of real binary caches (written by real Nix, served
//! by warm_server.rs), judged by stock Nix and curl.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::Digest;

use crate::common::*;
use crate::gateway::{build_closure, closure_of, curl_full, run, Server};
use crate::warm::{build_chain, nix_cache, nix_key};
use crate::warm_server::CacheServer;

fn hash_of(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap()[..32].to_string()
}

/// `nix-store -r` into a fresh store through the gateway, trusting only the gateway's key.
fn substitute(w: &Path, server: &Server, tag: &str, path: &Path) -> std::path::PathBuf {
    let fresh = w.join(format!("store-{tag}"));
    let mut c = Command::new("nix-store");
    c.env("XDG_CACHE_HOME", w.join(format!("xdg-{tag}"))).arg("--store").arg(&fresh).arg("-r").arg(path).args([
        "--option",
        "substituters",
        &server.url,
        "--option",
        "trusted-public-keys",
        &server.public_key,
    ]);
    run(&mut c);
    for p in closure_of(path) {
        run(Command::new("nix-store").arg("--store").arg(&fresh).args(["--verify-path", &p]));
    }
    fresh
}

/// A fresh Nix client substitutes a closure the store lacks through `serve --upstream` (the upstream's
/// narinfos checked against the trusted key, the gateway's signature added); the bytes are right; a
/// second client is served from the store without a single upstream request.
#[test]
fn serve_pulls_a_closure_through_from_an_upstream_once() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let chain = build_chain(w, 4);
    let top = &chain[3];
    let (sk, pk) = nix_key(w, "upstream-1");
    nix_cache(w, &w.join("up"), &sk, "xz", &[top]);
    let up = CacheServer::start(w.join("up"));
    let store = TestStore::new();
    let server = Server::start(&store, &["--upstream", &up.url, "--trusted-key", &pk]);
    let fresh = substitute(w, &server, "first", top);
    let local = fresh.join(top.strip_prefix("/").unwrap());
    assert_eq!(fs::read(local.join("refs")).unwrap(), fs::read(top.join("refs")).unwrap());
    assert_eq!(up.nar_requests().len(), 4, "{:?}", up.requests());
    // Stored now: a second client causes no upstream request at all.
    let seen = up.requests().len();
    substitute(w, &server, "second", top);
    assert_eq!(up.requests().len(), seen, "{:?}", &up.requests()[seen..]);
    server.stop();
    assert_eq!(store.stat("paths"), 4);
    store.verify();
}

/// Ten clients asking at once for the NAR of a path the store lacks cause one upstream download; all
/// ten get the right bytes, and get them as the download goes (the first byte long before the last).
#[test]
fn ten_clients_for_one_missing_nar_make_one_upstream_download() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let top = build_closure(w, 4 << 20);
    let (sk, pk) = nix_key(w, "upstream-1");
    nix_cache(w, &w.join("up"), &sk, "zstd", &[&top]);
    let up = CacheServer::start(w.join("up"));
    // About 4 MB at 2 MB/s: two seconds of download.
    up.throttle(2 << 20);
    let store = TestStore::new();
    let server = Server::start(&store, &["--upstream", &up.url, "--trusted-key", &pk]);
    let (st, _, narinfo) = curl_full(&[&format!("{}/{}.narinfo", server.url, hash_of(&top))]);
    assert_eq!(st, 200);
    let narinfo = String::from_utf8(narinfo).unwrap();
    let gw_name = server.public_key.split(':').next().unwrap();
    assert!(narinfo.contains(&format!("Sig: {gw_name}:")) && narinfo.contains("Sig: upstream-1:"), "{narinfo}");
    let url = narinfo.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap().to_string();
    let nar_hash = narinfo.lines().find_map(|l| l.strip_prefix("NarHash: ")).unwrap().to_string();
    let nar_url = format!("{}/{url}", server.url);
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let u = nar_url.clone();
            std::thread::spawn(move || {
                let out = tempfile::NamedTempFile::new().unwrap();
                let o = Command::new("curl")
                    .args(["-sS", "--fail", "-w", "%{time_starttransfer} %{time_total}", "-o"])
                    .arg(out.path())
                    .arg(&u)
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                let times = String::from_utf8(o.stdout).unwrap();
                let (first, total) = times.split_once(' ').unwrap();
                let body = fs::read(out.path()).unwrap();
                let hex = data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(&body));
                (hex, first.parse::<f64>().unwrap(), total.parse::<f64>().unwrap())
            })
        })
        .collect();
    for c in clients {
        let (hex, first, total) = c.join().unwrap();
        assert_eq!(to_nix32(&format!("sha256:{hex}")), nar_hash);
        assert!(total > 1.0 && first < total / 2.0, "first byte after {first} s of {total} s");
    }
    assert_eq!(up.nar_requests().len(), 1, "{:?}", up.requests());
    // The next client reads the store.
    let (st, _, body) = curl_full(&[&nar_url]);
    assert_eq!(st, 200);
    assert_eq!(to_nix32(&format!("sha256:{}", data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(&body)))), nar_hash);
    assert_eq!(up.nar_requests().len(), 1);
    server.stop();
    store.verify();
}

/// With the only upstream hung (it accepts connections and never answers) `serve` starts, answers a
/// local path at once and a missing one (404) within the deadline; the next miss does not wait on the
/// hung upstream again. An upstream that refuses connections is no worse.
#[test]
fn with_the_only_upstream_down_serve_answers_local_paths_at_once_and_misses_in_time() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let chain = build_chain(w, 2);
    let store = TestStore::new();
    store.add(&[chain[0].to_str().unwrap()]);
    let up = CacheServer::start(w.join("empty"));
    up.set_down(true);
    let (_, pk) = nix_key(w, "upstream-1");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for upstream in [up.url.clone(), closed] {
        let t = Instant::now();
        let server =
            Server::start(&store, &["--upstream", &upstream, "--trusted-key", &pk, "--upstream-deadline", "2"]);
        assert!(t.elapsed() < Duration::from_secs(10), "serve took {:?} to start", t.elapsed());
        let t = Instant::now();
        let (st, _, _) = curl_full(&[&format!("{}/{}.narinfo", server.url, hash_of(&chain[0]))]);
        assert_eq!(st, 200);
        assert!(t.elapsed() < Duration::from_secs(1), "local path took {:?}", t.elapsed());
        for attempt in 0..2 {
            let t = Instant::now();
            let (st, _, _) = curl_full(&[&format!("{}/{}.narinfo", server.url, hash_of(&chain[1]))]);
            assert_eq!(st, 404);
            assert!(t.elapsed() < Duration::from_secs(4), "{upstream}: miss {attempt} took {:?}", t.elapsed());
        }
        server.stop();
    }
    store.verify();
}

/// An upstream whose NAR does not match its signed narinfo: the client's download is cut, nothing of
/// the path is kept, `verify` passes.
#[test]
fn a_pulled_nar_that_does_not_match_is_not_kept() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (leaves, _) = crate::warm::build_leaves(w, 2);
    let (sk, pk) = nix_key(w, "upstream-1");
    let dir = w.join("up");
    nix_cache(w, &dir, &sk, "xz", &[&leaves[0], &leaves[1]]);
    // leaf-1's narinfo without FileHash/FileSize (unsigned fields), and leaf-0's NAR file in its place.
    let info = dir.join(format!("{}.narinfo", hash_of(&leaves[1])));
    let text = fs::read_to_string(&info).unwrap();
    fs::write(&info, text.lines().filter(|l| !l.starts_with("File")).map(|l| format!("{l}\n")).collect::<String>())
        .unwrap();
    let up = CacheServer::start(dir.clone());
    let wrong = fs::read(dir.join(crate::warm::nar_url(&dir, &leaves[0]))).unwrap();
    let nar_size = text.lines().find_map(|l| l.strip_prefix("NarSize: ")).unwrap().parse::<u64>().unwrap();
    up.fault(&format!("/{}", crate::warm::nar_url(&dir, &leaves[1])), crate::warm_server::Fault::Body(wrong));
    let store = TestStore::new();
    let server = Server::start(&store, &["--upstream", &up.url, "--trusted-key", &pk]);
    let (st, _, narinfo) = curl_full(&[&format!("{}/{}.narinfo", server.url, hash_of(&leaves[1]))]);
    assert_eq!(st, 200);
    let narinfo = String::from_utf8(narinfo).unwrap();
    let url = narinfo.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap();
    let o = Command::new("curl").args(["-sS", "--fail"]).arg(format!("{}/{url}", server.url)).output().unwrap();
    assert!(!o.status.success(), "a NAR that failed its hash check was served whole");
    assert!((o.stdout.len() as u64) < nar_size, "{} bytes", o.stdout.len());
    // Give the ingest its end, then look: nothing of it was kept.
    std::thread::sleep(Duration::from_millis(300));
    server.stop();
    assert_eq!(store.stat("paths"), 0);
    assert_eq!(store.stat("nars"), 0);
    store.verify();
}
