//! `serve --local-nix-store`: this machine's Nix store as a source, with the signatures Nix records, so a
//! LAN shares what any machine already holds and nobody needs new trust. Judged by stock Nix clients
//! that trust only the key the paths were signed with upstream.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::gateway::{build_closure, closure_of, nix, run};
use crate::peer_fetch::{get, nar_hash_in, Node};

/// A signing key made by real Nix: (secret key file, public key).
fn key(w: &Path, name: &str) -> (std::path::PathBuf, String) {
    let (sk, pk) = (w.join(format!("{name}.sk")), w.join(format!("{name}.pk")));
    run(Command::new("nix-store").args(["--generate-binary-cache-key", name]).arg(&sk).arg(&pk));
    (sk, std::fs::read_to_string(pk).unwrap().trim().to_string())
}

/// `path`'s closure copied into a fresh local store rooted at `root` (Nix's chroot store: a machine's
/// own Nix store for the test), each path signed there with `sk`, as if it came from a cache with that key.
fn signed_store(w: &Path, root: &Path, path: &Path, sk: &Path) {
    run(nix(w, "seed").args(["copy", "--no-check-sigs", "--to"]).arg(root).arg(path));
    run(nix(w, "seed").args(["store", "sign", "--recursive", "--store"]).arg(root).arg("--key-file").arg(sk).arg(path));
}

fn hash_part(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap()[..32].to_string()
}

/// `nix copy --from url` of `path` into a fresh store at `dest`, trusting only `pk`.
fn copy_trusting(w: &Path, tag: &str, url: &str, pk: &str, dest: &Path, path: &Path) -> std::process::Output {
    nix(w, tag)
        .args(["copy", "--store"])
        .arg(dest)
        .args(["--option", "trusted-public-keys", pk, "--option", "require-sigs", "true"])
        .args(["--option", "substituters", ""])
        .args(["--from", url])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn a_path_signed_upstream_reaches_a_client_through_a_peer_with_no_new_trust() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let top = build_closure(w, 300_000);
    let (sk, pk) = key(w, "upstream-k-1");
    let machine_a = w.join("machine-a");
    signed_store(w, &machine_a, &top, &sk);

    // A offers its own Nix store; B knows A as a peer and trusts K for narinfos from peers, nothing else.
    let (store_a, store_b) = (TestStore::new(), TestStore::new());
    let local = format!("--local-nix-store={}", machine_a.display());
    let a = Node::start(&store_a, &[&local, "--open"]);
    let b = Node::start(&store_b, &["--peer", &a.ticket, "--trusted-key", &pk, "--peer-deadline", "500"]);

    let client = w.join("client");
    let o = copy_trusting(w, "client", &b.url, &pk, &client, &top);
    assert!(o.status.success(), "{}\nA: {}\nB: {}", String::from_utf8_lossy(&o.stderr), a.log(), b.log());
    for p in closure_of(&top) {
        let p = Path::new(&p);
        assert_eq!(nar_hash_in(w, &client, p), nar_hash_in(w, &machine_a, p), "{}", p.display());
        // B passed on K's signature and added none of its own: it does not vouch for what a peer sent.
        let (status, body) = get(&b.url, &format!("/{}.narinfo", hash_part(p)));
        assert_eq!(status, 200);
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("Sig: upstream-k-1:"), "{text}");
        // Exactly the signatures A sent (K's, and A's for its own machine): B added none.
        let sigs = |t: &str| t.lines().filter(|l| l.starts_with("Sig: ")).map(String::from).collect::<Vec<_>>();
        let from_a = String::from_utf8(get(&a.url, &format!("/{}.narinfo", hash_part(p))).1).unwrap();
        assert_eq!(sigs(&text), sigs(&from_a), "B's narinfo:\n{text}\nA's:\n{from_a}");
    }
    // The NARs were ingested on A (from its Nix store) and on B (from A), and both stores are whole.
    assert!(store_a.stat("nars") >= 2, "{}", store_a.ok(&["dedup-stats"]));
    assert!(store_b.stat("nars") >= 2, "{}", store_b.ok(&["dedup-stats"]));
    drop((a, b));
    store_a.verify();
    store_b.verify();
}

#[test]
fn the_local_nix_store_is_offered_with_its_signatures_and_only_while_a_path_is_there() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let top = build_closure(w, 100_000);
    let (sk, pk) = key(w, "upstream-k-2");
    let machine = w.join("machine");
    signed_store(w, &machine, &top, &sk);
    let store = TestStore::new();
    let local = format!("--local-nix-store={}", machine.display());
    let node = Node::start(&store, &[&local]);

    // Its narinfo carries the upstream signature (kept) and the gateway's (it vouches for its machine).
    let (status, body) = get(&node.url, &format!("/{}.narinfo", hash_part(&top)));
    assert_eq!(status, 200, "{}", node.log());
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("Sig: upstream-k-2:"), "{text}");
    assert_eq!(store.stat("nars"), 0, "nothing is ingested before a NAR is asked for");

    // A client trusting only the upstream key substitutes the closure; the NARs are ingested on the way.
    let client = w.join("client");
    let o = copy_trusting(w, "c1", &node.url, &pk, &client, &top);
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stderr), node.log());
    assert_eq!(nar_hash_in(w, &client, &top), nar_hash_in(w, &machine, &top));
    assert_eq!(store.stat("nars"), 2);

    // A path the machine's Nix store never had is not offered.
    assert_eq!(get(&node.url, "/0123456789abcdfghijklmnpqrsvwxyz.narinfo").0, 404);

    // Deleted from the machine's Nix store: no longer offered (once the gateway's 10 s narinfo cache
    // lets go of the answer), though its blocks are still stored.
    run(Command::new("nix-store").arg("--store").arg(&machine).arg("--delete").arg(&top));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while get(&node.url, &format!("/{}.narinfo", hash_part(&top))).0 != 404 {
        assert!(std::time::Instant::now() < deadline, "still offered after its deletion\n{}", node.log());
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    // Its dependency is still there, and still offered.
    let dep = closure_of(&top).into_iter().find(|p| p.ends_with("-nixdag-test-dep")).unwrap();
    assert_eq!(get(&node.url, &format!("/{}.narinfo", hash_part(Path::new(&dep)))).0, 200);
    drop(node);
    store.verify();
}
