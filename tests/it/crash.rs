//! Crash consistency: SIGKILL `add` and `gc` at random moments. After each kill `verify` passes (so no
//! root points at a missing block) and the interrupted work then completes.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

/// A tree sharing a base with its siblings, plus bytes of its own.
fn variant(dir: &Path, base: &[u8], trial: u64) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("shared"), base).unwrap();
    write_random(&dir.join("own"), 12 << 20, 1000 + trial);
    fs::write(dir.join("trial"), trial.to_string()).unwrap();
}

fn seed() -> u64 {
    let s = std::env::var("NIXDAG_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("crash test seed: {s} (rerun with NIXDAG_CRASH_SEED={s})");
    s
}

/// Spawn `nixdag ARGS`, kill it after `delay`, and report whether it had already finished.
fn kill_after(store: &TestStore, args: &[&str], delay: Duration) -> bool {
    let mut child = store.cmd().args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while start.elapsed() < delay {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill(); // SIGKILL
    child.wait().unwrap();
    false
}

#[test]
fn sigkill_during_add_never_breaks_the_store() {
    let mut rng = Xorshift::new(seed());
    let work = tempfile::tempdir().unwrap();
    let base = Xorshift::new(9).bytes(8 << 20);
    let store = TestStore::new();
    // Kill moments are drawn across the duration of a full add, re-measured on every trial (the
    // re-add after a kill does all the work again, since nothing of the killed add was committed).
    let probe = work.path().join("probe");
    variant(&probe, &base, 0);
    let t = Instant::now();
    store.add(&[probe.to_str().unwrap()]);
    let mut full = t.elapsed().as_millis() as u64 + 1;
    let (mut killed, mut trials) = (0, 0u64);
    while killed < 20 {
        trials += 1;
        assert!(trials <= 60, "only {killed} of {trials} kills landed during an add");
        // Two paths per add: a multi-path add commits each path deferred and syncs once at the end, so
        // kills also land between a visible-but-not-durable commit and the sync.
        let (a, b) = (work.path().join(format!("t{trials}a")), work.path().join(format!("t{trials}b")));
        variant(&a, &base, 2 * trials);
        variant(&b, &base, 2 * trials + 1);
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        let delay = Duration::from_millis(rng.below(full * 9 / 10));
        if !kill_after(&store, &["add", a, b], delay) {
            killed += 1;
        }
        store.verify();
        let t = Instant::now();
        let out = store.ok(&["add", a, b]);
        full = t.elapsed().as_millis() as u64 + 1;
        for (line, dir) in out.lines().zip([a, b]) {
            assert_eq!(line.split_whitespace().nth(1).unwrap(), nix_hash(Path::new(dir)), "trial {trials}");
        }
        fs::remove_dir_all(a).unwrap();
        fs::remove_dir_all(b).unwrap();
    }
    eprintln!("{killed} of {trials} adds were killed mid-way");
    assert_eq!(store.stat("nars"), 2 * trials + 1);
}

#[test]
fn sigkill_during_gc_never_loses_a_needed_block() {
    let mut rng = Xorshift::new(seed() ^ 0xdead);
    let work = tempfile::tempdir().unwrap();
    let base = Xorshift::new(10).bytes(4 << 20);
    let store = TestStore::new();
    let mut kept = Vec::new();
    for trial in 0..8u64 {
        let dir = work.path().join(format!("g{trial}"));
        variant(&dir, &base, 500 + trial);
        let (hash, _, _) = store.add(&[dir.to_str().unwrap()]);
        // Forget every other one so gc has blocks to sweep and packs to compact.
        if trial % 2 == 0 {
            store.ok(&["forget", "--nar-hash", &hash]);
        } else {
            kept.push((dir, hash));
        }
    }
    // A gc here marks, sweeps and compacts ~100 MiB of packs: a few hundred ms. Kill it anywhere in
    // that window; every kill that lands must leave a consistent store.
    let mut killed = 0;
    for _ in 0..10 {
        if !kill_after(&store, &["gc"], Duration::from_millis(rng.below(400))) {
            killed += 1;
        }
        store.verify();
    }
    eprintln!("{killed} of 10 gc runs were killed mid-way");
    store.ok(&["gc"]);
    store.verify();
    for (dir, hash) in &kept {
        let restored = work.path().join(format!("r-{}", &hash[7..15]));
        store.ok(&["restore", "--nar-hash", hash, restored.to_str().unwrap()]);
        assert_eq!(nix_hash(&restored), nix_hash(dir));
    }
}

/// SIGKILL `repack` at random moments while it converts queued tarballs: after each kill `verify` passes
/// and every tarball reads back byte for byte; a final repack finishes the queue.
#[test]
fn sigkill_during_repack_never_breaks_the_store() {
    let mut rng = Xorshift::new(seed() ^ 0xbeef);
    let t = crate::storage::versions();
    let work = tempfile::tempdir().unwrap();
    let store = TestStore::new();
    let mut files = Vec::new();
    for (i, (tree, tool)) in [(&t.v1, "xz"), (&t.v2, "xz"), (&t.v1, "bzip2"), (&t.v2, "bzip2")].into_iter().enumerate()
    {
        let ext = if tool == "xz" { "tar.xz" } else { "tar.bz2" };
        let f = work.path().join(format!("pkg-{i}.{ext}"));
        crate::storage::tarball(tree, tool, &f);
        store.add(&["--file", f.to_str().unwrap()]);
        files.push(f);
    }
    let check = |when: &str| {
        store.verify();
        for f in &files {
            let want = fs::read(f).unwrap();
            let sha = data_encoding::HEXLOWER.encode(&<sha2::Sha256 as sha2::Digest>::digest(&want));
            let got = store.bytes(&["cat", "--file-hash", &format!("sha256:{sha}")]);
            assert!(got == want, "{when}: {} reads back differently", f.display());
        }
    };
    // Time a whole repack on a copy, then kill real ones anywhere in that span.
    let copy = work.path().join("copy");
    assert!(std::process::Command::new("cp").arg("-a").arg(store.path()).arg(&copy).status().unwrap().success());
    let started = Instant::now();
    let st = std::process::Command::new(bin()).arg("--store").arg(&copy).arg("repack").output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let full = started.elapsed().as_millis() as u64 + 1;
    let mut killed = 0;
    for trial in 0..8 {
        if store.stat("repack_queued") == 0 {
            break;
        }
        if !kill_after(&store, &["repack"], Duration::from_millis(rng.below(full))) {
            killed += 1;
        }
        check(&format!("after kill {trial}"));
    }
    eprintln!("{killed} repacks were killed mid-way");
    store.ok(&["repack"]);
    assert_eq!(store.stat("repack_queued"), 0);
    check("after the last repack");
}
