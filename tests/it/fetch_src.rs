//! The hashed mirror and `fetch-src` (docs/FETCH-SRC.md), judged by real Nix (`builtin:fetchurl` with
//! `hashed-mirrors`) and by curl doing what nixpkgs' `fetchurl` builder does. Sources are real crate
//! tarballs from crates.io and generated files; upstreams are the loopback [`Origin`].

use std::fs;
use std::path::Path;
use std::process::Command;

use nixdag::{HashAlgo, NixHash};

use crate::common::*;
use crate::gateway::{curl, curl_full, run, Server};
use crate::origin::{Origin, Route};

fn hash_of(algo: HashAlgo, bytes: &[u8]) -> NixHash {
    NixHash::digest_of(algo, bytes)
}

/// A loopback port nothing listens on.
pub(crate) fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A name no earlier run used, so that Nix's store never holds the output already.
pub(crate) fn unique(stem: &str) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{stem}-{t:x}-{}.tar.gz", std::process::id())
}

/// `nix-build` of `<nix/fetchurl.nix>` with a dead URL and the given hashed mirror.
pub(crate) fn nix_fetchurl(work: &Path, name: &str, attr: &str, hash: &str, mirror: &str) -> std::process::Output {
    let expr = format!(
        r#"import <nix/fetchurl.nix> {{ url = "http://127.0.0.1:{}/{name}"; name = "{name}"; {attr} = "{hash}"; }}"#,
        dead_port()
    );
    Command::new("nix-build")
        .env("XDG_CACHE_HOME", work.join("xdg"))
        .args(["--no-out-link", "-E", &expr, "--option", "hashed-mirrors", mirror])
        .output()
        .unwrap()
}

/// The flat fixed-output path Nix gives a file of this name: what `fetchurl` must produce.
pub(crate) fn add_fixed(work: &Path, algo: &str, name: &str, bytes: &[u8]) -> String {
    let dir = work.join(format!("fixed-{algo}"));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
    run(Command::new("nix-store").args(["--add-fixed", algo]).arg(dir.join(name))).trim().to_string()
}

#[test]
fn nix_builtin_fetchurl_gets_a_crate_tarball_from_the_gateway_under_sha256_sha512_and_sha1() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tarball = crate_tarball(w, "itoa", "1.0.11");
    let bytes = fs::read(&tarball).unwrap();
    let store = TestStore::new();
    store.add(&["--file", tarball.to_str().unwrap()]);
    let server = Server::start(&store, &[]);
    let dead_mirror = format!("http://127.0.0.1:{}/", dead_port());
    for (attr, algo) in [("sha256", HashAlgo::Sha256), ("sha512", HashAlgo::Sha512), ("sha1", HashAlgo::Sha1)] {
        let hex = hash_of(algo, &bytes).to_hex();
        let name = unique("itoa");
        // Without the gateway the URL is dead and the build fails: the gateway is what makes it work.
        let o = nix_fetchurl(w, &name, attr, &hex, &dead_mirror);
        assert!(!o.status.success(), "{attr}: fetchurl built with no source at all");
        let o = nix_fetchurl(w, &name, attr, &hex, &format!("{}/", server.url));
        assert!(o.status.success(), "{attr}: {}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8(o.stdout).unwrap().trim().to_string();
        assert_eq!(fs::read(&out).unwrap(), bytes, "{attr}: wrong bytes");
        assert_eq!(out, add_fixed(w, attr, &name, &bytes), "{attr}: not the path fetchurl should make");
        let asked = format!("GET /{attr}/{hex} 200");
        assert!(server.requests().iter().any(|l| l.contains(&asked)), "{attr}: {:?}", server.requests());
    }
}

#[test]
fn nixpkgs_fetchurl_sequence_every_hash_form_ranges_and_errors() {
    let store = TestStore::new();
    let work = tempfile::tempdir().unwrap();
    // A file whose SHA-256 in base64 holds a `/` (the case a mirror must not mistake for a path).
    let (file, bytes, sha) = (0u32..)
        .map(|i| {
            let b: Vec<u8> = format!("source tarball {i}\n").repeat(5000).into_bytes();
            let h = hash_of(HashAlgo::Sha256, &b);
            (work.path().join(format!("src-{i}.tar")), b, h)
        })
        .find(|(_, _, h)| h.to_base64().contains('/'))
        .unwrap();
    fs::write(&file, &bytes).unwrap();
    store.add(&["--file", file.to_str().unwrap()]);
    let server = Server::start(&store, &[]);
    let m = &server.url;
    // The builder's own steps: `curl --head --fail`, then a GET, for each form.
    let sha512 = hash_of(HashAlgo::Sha512, &bytes);
    let md5 = hash_of(HashAlgo::Md5, &bytes);
    let forms = [
        format!("{m}/sha256/{}", sha.to_nix32()),
        format!("{m}/sha256/{}", sha.to_hex()),
        format!("{m}//{}", sha.to_sri()),
        format!("{m}/{}", sha.to_sri()),
        format!("{m}/sha512/{}", sha512.to_nix32()),
        format!("{m}//{}", sha512.to_sri()),
        format!("{m}/md5/{}", md5.to_hex()),
    ];
    for url in &forms {
        let head = curl(&["--head", "--fail", url]);
        assert!(head.status.success(), "HEAD {url}: {}", String::from_utf8_lossy(&head.stderr));
        let (status, headers, body) = curl_full(&[url]);
        assert_eq!(status, 200, "{url}");
        assert!(headers.contains("content-type: application/octet-stream"), "{headers}");
        assert!(headers.contains(&format!("content-length: {}", bytes.len())), "{headers}");
        assert!(body == bytes, "{url}: wrong bytes");
    }
    // Ranges as for NARs.
    let (status, headers, body) = curl_full(&["-r", "100-199", &forms[0]]);
    assert_eq!(status, 206);
    assert!(headers.contains(&format!("content-range: bytes 100-199/{}", bytes.len())), "{headers}");
    assert_eq!(body, &bytes[100..200]);
    // Unknown: 404. Malformed: 400.
    let unknown = hash_of(HashAlgo::Sha256, b"nobody has this");
    assert_eq!(curl_full(&[&format!("{m}/sha256/{}", unknown.to_nix32())]).0, 404);
    assert_eq!(curl_full(&[&format!("{m}//{}", unknown.to_sri())]).0, 404);
    assert_eq!(curl_full(&[&format!("{m}/sha256/not-a-hash")]).0, 400);
    assert_eq!(curl_full(&[&format!("{m}//sha256-tooshort")]).0, 400);
}

#[test]
fn fetch_src_tries_mirrors_then_urls_resumes_and_refuses_wrong_bytes() {
    let store = TestStore::new();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let origin = Origin::start();
    let bytes: Vec<u8> = {
        let mut rng = Xorshift::new(7);
        let mut b = vec![0u8; 3 << 20];
        rng.fill(&mut b);
        b
    };
    let sha = hash_of(HashAlgo::Sha256, &bytes);
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let fetch = |args: &[&str]| store.output(&[&["fetch-src"][..], args].concat());

    // Wrong bytes at the URL: exit 3, both hashes named, nothing stored.
    fs::write(w.join("seed"), b"a store with something in it").unwrap();
    store.add(&["--file", w.join("seed").to_str().unwrap()]);
    let before = store.snapshot();
    origin.route("/wrong.tar.gz", Route::Bytes(b"not the file".repeat(1000)));
    let o = fetch(&["--hash", &sha.to_sri(), "--url", &format!("{}/wrong.tar.gz", origin.url)]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&sha.to_string()) && err.contains("got sha256:"), "{err}");
    assert_eq!(store.snapshot(), before, "a mismatch stored something");

    // Not anywhere: exit 2. Only unreachable: exit 4.
    let o = fetch(&["--hash", &sha.to_string(), "--url", &format!("{}/nothing", origin.url)]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let o = fetch(&["--hash", &sha.to_string(), "--url", &format!("{dead}/x.tar.gz")]);
    assert_eq!(o.status.code(), Some(4), "{}", String::from_utf8_lossy(&o.stderr));

    // A dead URL and a live mirror: from the mirror (mirrors are tried first, then the URLs).
    let mirror_path = format!("/sha256/{}", sha.to_hex());
    origin.route(&mirror_path, Route::Cut { body: bytes.clone(), cut_at: 1 << 20, cuts: 1 });
    let out = w.join("out.tar.gz");
    let o = fetch(&[
        "--hash",
        &format!("sha256:{}", sha.to_nix32()),
        "--mirror",
        &format!("{}/", origin.url),
        "--url",
        &format!("{dead}/x.tar.gz"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(fs::read(&out).unwrap() == bytes, "wrong bytes written");
    // ...and it was cut off once (a reset: the client has at most the bytes sent before it), then resumed
    // where it stopped.
    let log = origin.log();
    let resumed_at =
        log.iter().find_map(|l| l.strip_prefix(&format!("GET {mirror_path} from="))?.parse::<usize>().ok());
    assert!(resumed_at.is_some_and(|n| n > 0 && n <= 1 << 20), "no resume: {log:?}");
    assert_eq!(origin.requests_for(&mirror_path), 2, "{log:?}");
    store.verify();

    // Now it is in the store: found there, no request made.
    let n = origin.log().len();
    let out2 = w.join("again.tar.gz");
    let o = fetch(&["--hash", &sha.to_hex(), "--url", &format!("{dead}/x"), "-o", out2.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(fs::read(&out2).unwrap() == bytes);
    assert_eq!(origin.log().len(), n, "asked upstream for a file the store has");

    // A mirror that 404s and a URL that works: from the URL.
    let other: Vec<u8> = b"another release ".repeat(70_000);
    let other_sha = hash_of(HashAlgo::Sha512, &other);
    origin.route("/pkg-2.0.tar.gz", Route::Bytes(other.clone()));
    let o = fetch(&[
        "--hash",
        &other_sha.to_sri(),
        "--mirror",
        &origin.url,
        "--url",
        &format!("{}/pkg-2.0.tar.gz", origin.url),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line = String::from_utf8(o.stdout).unwrap();
    assert!(line.starts_with("pkg-2.0.tar.gz sha256:"), "{line}");
    assert_eq!(origin.requests_for(&format!("/sha512/{}", other_sha.to_hex())), 1);
    assert!(store.bytes(&["cat", "--file-hash", &other_sha.to_string()]) == other);
    store.verify();
}

#[test]
fn fetch_src_add_to_nix_store_makes_fetchurls_path_and_a_dead_url_then_builds() {
    require_nix();
    let store = TestStore::new();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tarball = crate_tarball(w, "itoa", "1.0.11");
    let bytes = fs::read(&tarball).unwrap();
    let origin = Origin::start();
    origin.route("/itoa.tar.gz", Route::Bytes(bytes.clone()));
    let sha = hash_of(HashAlgo::Sha256, &bytes);
    let name = unique("itoa-src");
    let out = store.ok(&[
        "fetch-src",
        "--hash",
        &sha.to_sri(),
        "--url",
        &format!("{}/itoa.tar.gz", origin.url),
        "--name",
        &name,
        "--add-to-nix-store",
    ]);
    let path = out.lines().last().unwrap().to_string();
    assert_eq!(path, add_fixed(w, "sha256", &name, &bytes));
    // The fixed-output derivation with a dead URL and no mirror now builds: its output is there.
    let o = nix_fetchurl(w, &name, "sha256", &sha.to_hex(), &format!("http://127.0.0.1:{}/", dead_port()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8(o.stdout).unwrap().trim(), path);
}

#[test]
fn fetch_src_list_prefetches_and_summarizes() {
    let store = TestStore::new();
    let work = tempfile::tempdir().unwrap();
    let origin = Origin::start();
    let files: Vec<Vec<u8>> = (0..6).map(|i| format!("release {i} ").repeat(20_000 + i * 1000).into_bytes()).collect();
    let mut list = String::from("# hash url...\n");
    for (i, f) in files.iter().enumerate() {
        origin.route(&format!("/f{i}.tar"), Route::Bytes(f.clone()));
        list.push_str(&format!("{} {}/f{i}.tar\n", hash_of(HashAlgo::Sha256, f).to_sri(), origin.url));
    }
    let missing = hash_of(HashAlgo::Sha256, b"gone");
    list.push_str(&format!("{} {}/gone.tar\n", missing, origin.url));
    let list_file = work.path().join("list");
    fs::write(&list_file, &list).unwrap();
    let o = store.output(&["fetch-src", "--list", list_file.to_str().unwrap(), "--jobs", "3", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["fetched"].as_array().unwrap().len(), 6, "{s}");
    assert_eq!(s["failed"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(s["failed"][0]["kind"], "not-found");
    // A second run finds them all present.
    let o = store.output(&["fetch-src", "--list", list_file.to_str().unwrap(), "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["present"].as_array().unwrap().len(), 6, "{s}");
    assert_eq!(s["fetched"].as_array().unwrap().len(), 0, "{s}");
    store.verify();
}

#[test]
fn tarball_mirror_pull_through_downloads_once_for_ten_clients() {
    let store = TestStore::new();
    let origin = Origin::start();
    let bytes: Vec<u8> = {
        let mut rng = Xorshift::new(11);
        let mut b = vec![0u8; 5 << 20];
        rng.fill(&mut b);
        b
    };
    let sha = hash_of(HashAlgo::Sha256, &bytes);
    let upstream_path = format!("/sha256/{}", sha.to_hex());
    origin.route(&upstream_path, Route::Bytes(bytes.clone()));
    // The first mirror is dead: it is skipped, and the live one answers.
    let dead = format!("http://127.0.0.1:{}/", dead_port());
    let server = Server::start(&store, &["--tarball-mirror", &dead, "--tarball-mirror", &origin.url]);
    let url = format!("{}/sha256/{}", server.url, sha.to_nix32());
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || curl_full(&[&url]))
        })
        .collect();
    for c in clients {
        let (status, _, body) = c.join().unwrap();
        assert_eq!(status, 200);
        assert!(body == bytes, "wrong bytes");
    }
    assert_eq!(origin.requests_for(&upstream_path), 1, "{:?}", origin.log());
    // Kept: served again with the upstream gone quiet.
    let (status, _, body) = curl_full(&[&url]);
    assert_eq!(status, 200);
    assert!(body == bytes);
    assert_eq!(origin.requests_for(&upstream_path), 1);
    // A hash no mirror has: 404, quickly.
    let t = std::time::Instant::now();
    let nobody = hash_of(HashAlgo::Sha256, b"nobody");
    assert_eq!(curl_full(&[&format!("{}/sha256/{}", server.url, nobody.to_hex())]).0, 404);
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "{:?}", t.elapsed());
    server.stop();
    store.verify();
}
