//! One store, many processes: the CLI works on the store a running `serve` has open, and what it adds
//! is served at once.

use std::fs;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest;

use crate::common::*;
use crate::gateway::{build_closure, closure_of, copy_from_gateway, curl_full, run, Server};

/// With `serve` running, `nixdag add` of a real store path finishes, and stock Nix substitutes it through
/// the running gateway at once (no restart).
#[test]
fn with_serve_running_cli_add_is_substitutable_at_once() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let top = build_closure(w, 200_000);
    let store = TestStore::new();
    let server = Server::start(&store, &[]);
    let t = Instant::now();
    let added = store.ok(&["add", "--closure", top.to_str().unwrap()]);
    assert_eq!(added.lines().count(), 2, "{added}");
    assert!(t.elapsed() < Duration::from_secs(60), "add took {:?} beside serve", t.elapsed());
    // Readers and writers work beside the server too.
    store.verify();
    assert_eq!(store.stat("nars"), 2);
    let other = w.join("other-store");
    copy_from_gateway(w, &server, &other, &top);
    for p in closure_of(&top) {
        run(Command::new("nix-store").arg("--store").arg(&other).args(["--verify-path", &p]));
    }
    // forget and gc from the CLI: the gateway stops serving what is gone.
    let hash = nix_path_info(&top).0;
    store.ok(&["forget", "--nar-hash", &hash]);
    store.ok(&["gc"]);
    store.verify();
    server.stop();
}

/// `gc` and `verify` run (as other processes) while a 1 GiB NAR download is in flight: the download is
/// byte-exact and verify passes.
#[test]
fn gc_and_verify_beside_a_1_gib_download() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let big = w.join("big");
    fs::create_dir_all(&big).unwrap();
    write_random(&big.join("data"), 1 << 30, 11);
    let other = w.join("other");
    fs::create_dir_all(&other).unwrap();
    write_random(&other.join("data"), 8 << 20, 12);
    let store = TestStore::new();
    let (big_hash, _, big_size) = store.add(&[big.to_str().unwrap()]);
    let (other_hash, _, _) = store.add(&[other.to_str().unwrap()]);
    fs::remove_file(big.join("data")).unwrap();
    let server = Server::start(&store, &[]);
    let name = big_hash.trim_start_matches("sha256:").to_string();
    let url = format!("{}/nar/{name}.nar", server.url);
    // A download slow enough to be under way while gc and verify run.
    let mut curl = Command::new("curl")
        .args(["-sS", "--fail", "--limit-rate", "48M", &url])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = curl.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = out.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
        (n, data_encoding::HEXLOWER.encode(&h.finalize()))
    });
    std::thread::sleep(Duration::from_millis(500));
    store.ok(&["forget", "--nar-hash", &other_hash]);
    let gc = store.ok(&["gc"]);
    store.verify();
    let still_running = curl.try_wait().unwrap().is_none();
    assert!(curl.wait().unwrap().success(), "download failed");
    let (n, hex) = reader.join().unwrap();
    assert_eq!(n, big_size);
    assert_eq!(to_nix32(&format!("sha256:{hex}")), big_hash, "downloaded bytes differ");
    assert!(still_running, "the download ended before gc and verify did; gc said: {gc}");
    server.stop();
    store.verify();
}

/// `--no-wait` against a store another process holds alone exits non-zero at once, saying so.
#[test]
fn add_no_wait_on_a_busy_store_fails_clearly() {
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("f");
    write_random(&f, 10_000, 13);
    let store = TestStore::new();
    store.add(&["--file", f.to_str().unwrap()]);
    // Hold the store alone, as an index compaction does.
    let lock = fs::OpenOptions::new().write(true).open(store.path().join("lock")).unwrap();
    fs2::FileExt::lock_exclusive(&lock).unwrap();
    let t = Instant::now();
    let err = store.fails(&["--no-wait", "add", "--file", f.to_str().unwrap()]);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(err.contains("is busy") && err.contains("--no-wait"), "{err}");
    let err = store.fails(&["--no-wait", "verify"]);
    assert!(err.contains("is busy"), "{err}");
    // Without --no-wait it waits, and finishes once the store is released.
    let mut waiting = store.cmd().args(["add", "--file", f.to_str().unwrap()]).stdout(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(waiting.try_wait().unwrap().is_none(), "add did not wait");
    fs2::FileExt::unlock(&lock).unwrap();
    assert!(waiting.wait().unwrap().success());
    let _ = curl_full;
}
