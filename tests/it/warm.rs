//! `nixdag warm` against real binary caches: written by real Nix (`nix copy --to file://…`), served on
//! loopback by the test's own server (warm_server.rs), judged by real Nix substituting from the gateway.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::gateway::{closure_of, copy_from_gateway, curl_ok, nix, run, Server};
use crate::warm_server::{CacheServer, Fault};

/// A closure of `n` small input-addressed paths built by real Nix: `warm-i` references `warm-(i-1)`
/// and `warm-(i/2)`, so the closure of `warm-k` is `warm-0..=k`. Each holds the same 190 KB file (dedup
/// across paths) and a line of its own. Returns the paths by index.
pub fn build_chain(w: &Path, n: usize) -> Vec<PathBuf> {
    require_nix();
    let expr = w.join("chain.nix");
    fs::write(
        &expr,
        format!(
            r#"{{ salt }}:
let
  mk = i: deps: derivation {{
    name = "warm-${{toString i}}"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "/bin/mkdir $out; echo ${{salt}} ${{toString i}} ${{toString deps}} > $out/refs; /usr/bin/seq 1 30000 > $out/shared" ];
  }};
  ps = builtins.genList (i: mk i (if i == 0 then [ ] else [ (builtins.elemAt ps (i - 1)) (builtins.elemAt ps (i / 2)) ])) {n};
in builtins.elemAt ps ({n} - 1)
"#
        ),
    )
    .unwrap();
    let salt = format!("{:?}-{}", std::time::SystemTime::now(), std::process::id());
    let out = run(Command::new("nix-build").arg(&expr).args(["--argstr", "salt", &salt, "--no-out-link"]));
    let top = PathBuf::from(out.trim());
    let mut by_index = BTreeMap::new();
    for p in closure_of(&top) {
        let i: usize = p.rsplit("-warm-").next().unwrap().parse().unwrap();
        by_index.insert(i, PathBuf::from(p));
    }
    assert_eq!(by_index.len(), n);
    by_index.into_values().collect()
}

/// `n` independent paths `leaf-i` and a `top` referencing them all.
pub fn build_leaves(w: &Path, n: usize) -> (Vec<PathBuf>, PathBuf) {
    require_nix();
    let expr = w.join("leaves.nix");
    fs::write(
        &expr,
        format!(
            r#"{{ salt }}:
let
  leaf = i: derivation {{
    name = "leaf-${{toString i}}"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "/bin/mkdir $out; echo ${{salt}} ${{toString i}} > $out/id; /usr/bin/seq 1 20000 > $out/shared" ];
  }};
  leaves = builtins.genList leaf {n};
in derivation {{
  name = "top"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "echo ${{toString leaves}} > $out" ];
}}
"#
        ),
    )
    .unwrap();
    let salt = format!("{:?}-{}", std::time::SystemTime::now(), std::process::id());
    let out = run(Command::new("nix-build").arg(&expr).args(["--argstr", "salt", &salt, "--no-out-link"]));
    let top = PathBuf::from(out.trim());
    let mut leaves = BTreeMap::new();
    for p in closure_of(&top) {
        if let Some(i) = p.rsplit("-leaf-").next().filter(|_| p.contains("-leaf-")) {
            leaves.insert(i.parse::<usize>().unwrap(), PathBuf::from(p));
        }
    }
    (leaves.into_values().collect(), top)
}

/// A signing key made by real Nix: (secret key file, public key).
pub fn nix_key(w: &Path, name: &str) -> (PathBuf, String) {
    let (sk, pk) = (w.join(format!("{name}.sk")), w.join(format!("{name}.pk")));
    run(Command::new("nix-store").args(["--generate-binary-cache-key", name]).arg(&sk).arg(&pk));
    (sk, fs::read_to_string(pk).unwrap().trim().to_string())
}

/// A binary cache in `dir` holding the closure of `paths`, written by `nix copy`.
pub fn nix_cache(w: &Path, dir: &Path, sk: &Path, compression: &str, paths: &[&Path]) {
    let to = format!("file://{}?secret-key={}&compression={compression}", dir.display(), sk.display());
    let tag = format!("copy-{}", dir.file_name().unwrap().to_string_lossy());
    run(nix(w, &tag).args(["copy", "--to", &to]).args(paths));
}

/// The file a path's narinfo in the cache `dir` points at (`nar/…`).
pub fn nar_url(dir: &Path, path: &Path) -> String {
    let hash = &path.file_name().unwrap().to_str().unwrap()[..32];
    let info = fs::read_to_string(dir.join(format!("{hash}.narinfo"))).unwrap();
    info.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap().to_string()
}

fn hash_of(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap()[..32].to_string()
}

/// Run `nixdag warm --json`; returns the exit status's success and the summary.
fn warm(store: &TestStore, args: &[&str]) -> (bool, serde_json::Value, String) {
    let o = store.cmd().arg("warm").arg("--json").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("warm {args:?}: {e}: {}\n{stderr}", String::from_utf8_lossy(&o.stdout)));
    (o.status.success(), v, stderr)
}

/// The acceptance run: a 50-path closure from two upstreams (xz at priority 10 with only part of it,
/// zstd at priority 20 with all of it): every NAR fetched once from the preferred upstream that has it,
/// counts right; then stock Nix copies the whole closure from the gateway with no upstream behind it,
/// checking the gateway's signatures (`serve` ran on the store all along); a second warm asks the
/// upstreams nothing.
#[test]
fn warm_a_50_path_closure_from_two_upstreams_then_nix_copies_it_from_the_gateway() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let chain = build_chain(w, 50);
    let top = &chain[49];
    let (sk, pk) = nix_key(w, "upstream-1");
    nix_cache(w, &w.join("up1"), &sk, "xz", &[&chain[29]]);
    nix_cache(w, &w.join("up2"), &sk, "zstd", &[top]);
    let (up1, up2) = (CacheServer::start(w.join("up1")), CacheServer::start(w.join("up2")));
    up1.set_priority(10);
    up2.set_priority(20);
    let store = TestStore::new();
    // `serve` runs on the same store all along (no upstream behind it): warm works beside it.
    let server = Server::start(&store, &[]);
    // The less preferred upstream is named first: priority decides, not order.
    let (ok, s, err) = warm(
        &store,
        &["--upstream", &up2.url, "--upstream", &up1.url, "--trusted-key", &pk, "--jobs", "4", top.to_str().unwrap()],
    );
    assert!(ok, "{s}\n{err}");
    assert_eq!(s["paths"], 50, "{s}");
    assert_eq!(s["warmed"], 50, "{s}");
    assert_eq!(s["skipped"], 0, "{s}");
    assert_eq!(s["failed"].as_array().unwrap().len(), 0, "{s}");
    assert_eq!(s["from"][&up1.url], 30, "{s}");
    assert_eq!(s["from"][&up2.url], 20, "{s}");
    // Each NAR asked for once, from the preferred upstream that has it.
    let (n1, n2) = (up1.nar_requests(), up2.nar_requests());
    assert_eq!(n1.len(), 30, "{n1:?}");
    assert_eq!(n2.len(), 20, "{n2:?}");
    for (i, p) in chain.iter().enumerate() {
        let (server, dir) = if i < 30 { (&up1, w.join("up1")) } else { (&up2, w.join("up2")) };
        let url = format!("GET /{} 200", nar_url(&dir, p));
        assert_eq!(server.nar_requests().iter().filter(|l| **l == url).count(), 1, "{i}: {url}");
    }
    // Bytes: the shared 190 KB file is stored once.
    let (nar_bytes, added) = (s["nar_bytes"].as_u64().unwrap(), s["bytes_added"].as_u64().unwrap());
    assert!(s["bytes_downloaded"].as_u64().unwrap() > 0);
    assert!(added < nar_bytes / 10, "dedup: {added} of {nar_bytes}");
    assert_eq!(s["dedup_saving"].as_u64().unwrap(), nar_bytes - added);
    assert_eq!(store.stat("paths"), 50);
    store.verify();

    // Stock Nix takes the whole closure from the running gateway, trusting only the gateway's key.
    let other = w.join("other-store");
    copy_from_gateway(w, &server, &other, top);
    for p in closure_of(top) {
        run(Command::new("nix-store").arg("--store").arg(&other).args(["--verify-path", &p]));
    }
    // The upstream's signature is kept beside the gateway's.
    let narinfo = curl_ok(&format!("{}/{}.narinfo", server.url, hash_of(top)));
    let gw_name = server.public_key.split(':').next().unwrap();
    assert!(narinfo.contains("Sig: upstream-1:") && narinfo.contains(&format!("Sig: {gw_name}:")), "{narinfo}");
    server.stop();

    // Warm again: everything is stored, nothing is asked of the upstreams.
    let before = (up1.requests().len(), up2.requests().len());
    let (ok, s, err) =
        warm(&store, &["--upstream", &up1.url, "--upstream", &up2.url, "--trusted-key", &pk, top.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!((s["warmed"].as_u64(), s["skipped"].as_u64()), (Some(0), Some(50)), "{s}");
    // Only nix-cache-info (the priorities) is read again.
    let after = (up1.requests(), up2.requests());
    assert!(after.0[before.0..].iter().chain(&after.1[before.1..]).all(|l| l.contains("/nix-cache-info")), "{after:?}");
}

/// Killed half-way (SIGKILL) and run again, the warmer fetches only what is missing: no narinfo and no
/// NAR of a path stored by the first run is asked for again.
#[test]
fn warm_killed_half_way_fetches_only_what_is_left_when_run_again() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let chain = build_chain(w, 20);
    let top = &chain[19];
    let (sk, pk) = nix_key(w, "upstream-1");
    nix_cache(w, &w.join("up"), &sk, "xz", &[top]);
    let up = CacheServer::start(w.join("up"));
    up.nar_delay(Duration::from_millis(150));
    let store = TestStore::new();
    let args = ["warm", "--upstream", &up.url, "--trusted-key", &pk, "--jobs", "1", top.to_str().unwrap()];
    let mut child = store.cmd().args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t = Instant::now();
    while up.nar_requests().len() < 8 {
        assert!(t.elapsed() < Duration::from_secs(60), "warm made no progress: {:?}", up.requests());
        assert!(child.try_wait().unwrap().is_none(), "warm ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let first: HashSet<String> = up.nar_requests().into_iter().collect();
    let stored = store.stat("paths") as usize;
    assert!((6..20).contains(&stored), "stored {stored} before the kill");
    store.verify();
    let (n_before, i_before) = (up.nar_requests().len(), up.narinfo_requests().len());
    up.nar_delay(Duration::ZERO);
    let (ok, s, err) = warm(&store, &args[1..]);
    assert!(ok, "{err}");
    assert_eq!(s["skipped"].as_u64(), Some(stored as u64), "{s}");
    assert_eq!(s["warmed"].as_u64(), Some(20 - stored as u64), "{s}");
    let nars = &up.nar_requests()[n_before..];
    let infos = &up.narinfo_requests()[i_before..];
    assert_eq!(nars.len(), 20 - stored, "{nars:?}");
    assert_eq!(infos.len(), 20 - stored, "{infos:?}");
    // At most the NAR in flight at the kill is fetched twice.
    assert!(nars.iter().filter(|l| first.contains(*l)).count() <= 1, "{nars:?}");
    assert_eq!(store.stat("paths"), 20);
    store.verify();
}

/// A hostile or broken upstream: a narinfo signed by an untrusted key, a NAR with the wrong bytes, a
/// NAR that is gone (404), a connection reset mid-NAR. Each of those paths is refused (nothing of it
/// kept), the path referencing them fails with them, the others are stored; the summary names every
/// failure and the exit status says so; `verify` passes. Once the faults are gone a rerun stores all
/// but the untrusted path.
#[test]
fn warm_refuses_bad_upstream_data_and_keeps_the_rest() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (leaves, top) = build_leaves(w, 6);
    let (sk, pk) = nix_key(w, "upstream-1");
    let up_dir = w.join("up");
    nix_cache(w, &up_dir, &sk, "xz", &[&top]);
    // leaf-0's narinfo is replaced by one a stranger signed.
    let (stranger_sk, _) = nix_key(w, "stranger-1");
    nix_cache(w, &w.join("stranger"), &stranger_sk, "xz", &[&leaves[0]]);
    let info = format!("{}.narinfo", hash_of(&leaves[0]));
    fs::copy(w.join("stranger").join(&info), up_dir.join(&info)).unwrap();
    assert!(fs::read_to_string(up_dir.join(&info)).unwrap().contains("Sig: stranger-1:"));
    // leaf-1's narinfo loses FileHash and FileSize (they are not signed), so only the NarHash check
    // can catch the wrong NAR below (leaf NARs all have the same size).
    let info1 = up_dir.join(format!("{}.narinfo", hash_of(&leaves[1])));
    let text = fs::read_to_string(&info1).unwrap();
    fs::write(&info1, text.lines().filter(|l| !l.starts_with("File")).map(|l| format!("{l}\n")).collect::<String>())
        .unwrap();
    let up = CacheServer::start(up_dir.clone());
    // leaf-1 gets leaf-2's NAR file, leaf-2 is gone, leaf-3's download is cut by a reset.
    let nar = |i: usize| format!("/{}", nar_url(&up_dir, &leaves[i]));
    up.fault(&nar(1), Fault::Body(fs::read(up_dir.join(&nar(2)[1..])).unwrap()));
    up.fault(&nar(2), Fault::NotFound);
    up.fault(&nar(3), Fault::ResetMidBody);
    let store = TestStore::new();
    let mut args = vec!["--upstream".to_string(), up.url.clone(), "--trusted-key".into(), pk.clone()];
    args.push(top.to_str().unwrap().into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, s, err) = warm(&store, &args);
    assert!(!ok, "warm succeeded despite failures: {s}");
    assert!(err.contains("5 of 7 paths could not be warmed"), "{err}");
    assert_eq!(s["warmed"], 2, "{s}");
    let failed: BTreeMap<String, String> = s["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), f["reason"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(failed.len(), 5, "{failed:#?}");
    let why = |p: &Path| failed[p.to_str().unwrap()].clone();
    assert!(why(&leaves[0]).contains("not signed by a trusted key"), "{failed:#?}");
    assert!(why(&leaves[1]).contains("NarHash") || why(&leaves[1]).contains("hash mismatch"), "{failed:#?}");
    assert!(why(&leaves[2]).contains("404"), "{failed:#?}");
    assert!(why(&leaves[3]).contains("download failed") || why(&leaves[3]).contains("reset"), "{failed:#?}");
    assert!(why(&top).contains("which failed"), "{failed:#?}");
    // The untrusted path's NAR was never asked for.
    assert!(!up.nar_requests().iter().any(|l| l.contains(&nar(0))), "{:?}", up.nar_requests());
    assert_eq!(store.stat("paths"), 2);
    assert_eq!(store.stat("nars"), 2);
    store.verify();
    // The faults gone, a rerun stores the rest, but never the untrusted path.
    up.clear_faults();
    let (ok, s, _) = warm(&store, &args);
    assert!(!ok);
    assert_eq!((s["warmed"].as_u64(), s["skipped"].as_u64()), (Some(3), Some(2)), "{s}");
    assert_eq!(s["failed"].as_array().unwrap().len(), 2, "{s}");
    store.verify();
}

/// `--from-local-store`: the closure from this machine's Nix store, with the NarHash Nix recorded
/// checked; the gateway then serves it to stock Nix.
#[test]
fn warm_from_the_local_nix_store_serves_the_closure() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let chain = build_chain(w, 5);
    let store = TestStore::new();
    let (ok, s, err) = warm(&store, &["--from-local-store", chain[4].to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!((s["warmed"].as_u64(), s["from"]["local"].as_u64()), (Some(5), Some(5)), "{s}");
    let server = Server::start(&store, &[]);
    copy_from_gateway(w, &server, &w.join("other"), &chain[4]);
    server.stop();
}
