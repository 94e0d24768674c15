//! Who may fetch, part two: invites (`nixdag peer invite`, `/nixdag/invite/1`) and LAN discovery (mDNS).
//! Every node is a real `nixdag serve`; the judge of "allowed" is a stock iroh-blobs client holding the
//! new node's own key (read from its store). The discovery test runs two nodes in network namespaces it
//! makes itself (`unshare -n`), joined by a veth pair: no traffic leaves them or loopback.

use std::fs;

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iroh::SecretKey;
use iroh_blobs::store::mem::MemStore;
use iroh_blobs::ticket::BlobTicket;

use crate::common::*;
use crate::peers::{client, connect, runtime, store_with_nar, PeerServer};

/// The endpoint key `serve` made in `store`.
fn key_of(store: &TestStore) -> SecretKey {
    let hex = fs::read_to_string(store.path().join("keys/peer.secret")).unwrap();
    let bytes: [u8; 32] = data_encoding::HEXLOWER.decode(hex.trim().as_bytes()).unwrap().try_into().unwrap();
    SecretKey::from_bytes(&bytes)
}

/// Whether a stock iroh-blobs client with `key` gets the whole NAR behind `ticket`.
fn fetches(key: &SecretKey, ticket: &BlobTicket) -> bool {
    runtime().block_on(async {
        let ep = client(key.clone()).await;
        let ok = match connect(&ep, ticket.addr()).await {
            Ok(conn) => {
                let local = MemStore::new();
                let got =
                    tokio::time::timeout(Duration::from_secs(10), local.remote().fetch(conn, ticket.hash_and_format()))
                        .await
                        .expect("answered promptly");
                got.is_ok()
            }
            Err(_) => false,
        };
        ep.close().await;
        ok
    })
}

/// A node that presents `invite`; returns once it logged the inviting node's verdict.
fn present(store: &TestStore, invite: &str, verdict: &str) -> PeerServer {
    let node = PeerServer::start(store, &["--invite", invite]);
    let log = node.log_with(verdict);
    assert!(log.contains(verdict), "expected {verdict:?}: {log}");
    node
}

fn invites(store: &TestStore) -> serde_json::Value {
    serde_json::from_str(&store.ok(&["peer", "invites", "--json"])).unwrap()
}

fn invite_id(ticket: &str) -> String {
    ticket.split('.').nth(1).unwrap().to_string()
}

#[test]
fn an_invite_admits_its_stated_number_of_nodes_then_stops_and_expired_or_revoked_ones_are_refused() {
    let (a_store, _work, nar_hash) = store_with_nar();
    // A serves nobody: no allow list, not open. Invites are made while it runs.
    let a = PeerServer::start(&a_store, &["--peering"]);
    let blob: BlobTicket = a_store.ok(&["peer", "ticket", "--nar-hash", &nar_hash]).trim().parse().unwrap();
    let once = a_store.ok(&["peer", "invite", "--uses", "1"]).trim().to_string();
    assert!(once.starts_with("nixdaginvite1."), "{once}");
    let token = once.split('.').nth(2).unwrap();
    let path = a_store.path().join("peer/invites.json");
    let stored = fs::read_to_string(&path).unwrap();
    assert!(!stored.contains(token), "the token is stored hashed, never in clear");
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

    // B presents it: admitted, and then allowed to fetch (with no token: a stock client holding B's key).
    let b_store = TestStore::new();
    let b = present(&b_store, &once, "invite accepted");
    let b_key = key_of(&b_store);
    b.stop();
    assert!(fetches(&b_key, &blob), "the invited node fetches");
    let list = invites(&a_store);
    assert_eq!(list["invites"][0]["used"], 1, "{list}");
    assert_eq!(list["invites"][0]["admitted"][0], b_key.public().to_string(), "{list}");
    let text = a_store.ok(&["peer", "invite", "--list"]);
    assert!(text.contains(&invite_id(&once)) && text.contains("used up"), "{text}");

    // C presents the same invite: used up, refused, and still not allowed.
    let c_store = TestStore::new();
    let c = present(&c_store, &once, "invite refused: the invite is used up");
    let c_key = key_of(&c_store);
    c.stop();
    assert!(!fetches(&c_key, &blob), "a second node with a one-use invite fetched");
    let log = a.log_with("refused: the invite is used up");
    assert!(log.contains(&format!("peer={}", c_key.public())), "{log}");

    // Expired: an invite of one second, presented after two.
    let short = a_store.ok(&["peer", "invite", "--expires", "1s", "--uses", "5"]).trim().to_string();
    std::thread::sleep(Duration::from_millis(2100));
    let c = present(&c_store, &short, "invite refused: the invite expired");
    c.stop();
    assert!(!fetches(&c_key, &blob));

    // Revoked before use: refused.
    let revoked = a_store.ok(&["peer", "invite", "--uses", "5"]).trim().to_string();
    a_store.ok(&["peer", "revoke", &invite_id(&revoked)]);
    let c = present(&c_store, &revoked, "invite refused: the invite was revoked");
    c.stop();
    assert!(!fetches(&c_key, &blob));
    let e = a_store.fails(&["peer", "revoke", "0011223344556677"]);
    assert!(e.contains("no invite"), "{e}");
    for bad in [&["--expires", "0s"][..], &["--expires", "2w"], &["--uses", "0"]] {
        let o = a_store.output(&[&["peer", "invite"][..], bad].concat());
        assert!(!o.status.success(), "{bad:?} accepted");
    }
    let e = TestStore::new().fails(&["serve", "--listen", "127.0.0.1:0", "--invite", "nonsense"]);
    assert!(e.contains("not an invite"), "{e}");
    let e = TestStore::new().fails(&["serve", "--listen", "127.0.0.1:0", "--peer", "nixdaginvite1.zz"]);
    assert!(e.contains("not an invite"), "{e}");

    // Persistent: after a restart of A, B is still allowed without presenting anything.
    a.stop();
    let a = PeerServer::start(&a_store, &["--peering"]);
    let blob: BlobTicket = a_store.ok(&["peer", "ticket", "--nar-hash", &nar_hash]).trim().parse().unwrap();
    assert!(fetches(&b_key, &blob), "admission survives a restart");
    // Revoking B's invite (while A runs) withdraws B's access at its next connection.
    a_store.ok(&["peer", "revoke", &invite_id(&once)]);
    assert!(!fetches(&b_key, &blob), "revoking the invite withdraws what it granted");
    a.stop();
}

/// Run `args` inside the network namespace of process `pid`.
fn in_ns(pid: u32, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.args(["-t", &pid.to_string(), "-n", "--"]).args(args);
    c
}

fn sh(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{c:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A network namespace held open by a sleeping process (`unshare -n`), killed on drop.
struct Netns(Child);

impl Netns {
    fn new() -> Netns {
        Netns(Command::new("unshare").args(["-n", "sleep", "600"]).spawn().unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `nixdag serve` inside a namespace: (child, gateway URL inside it, signing key line, log).
struct NsNode {
    child: Child,
    url: String,
    key: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl NsNode {
    fn start(ns: &Netns, store: &TestStore, extra: &[&str]) -> NsNode {
        let store_dir = store.path().to_str().unwrap().to_string();
        let mut args = vec![bin(), "--store", &store_dir, "serve", "--listen", "127.0.0.1:0", "--repack-idle", "0"];
        args.extend_from_slice(extra);
        let Served { child, lines, log } = spawn_serve(in_ns(ns.pid(), &args).env("NIXDAG_LOG", "info"), 3);
        assert!(lines[2].starts_with("peer endpoint "), "{lines:?}: {}", log.lock().unwrap().join("\n"));
        let url = lines[0].rsplit(' ').next().unwrap().to_string();
        let key = lines[1].rsplit(' ').next().unwrap().to_string();
        NsNode { child, url, key, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for NsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Two nodes in namespaces of their own, joined by a veth pair, each started with no `--peer`: B finds A
/// by mDNS, lists it in `peer status`, and stock Nix substitutes through B's gateway a path only A holds.
/// A must still allow B (here `--open`): discovery grants nothing, shown by a third node that A does not
/// allow and that finds A too but gets nothing from it.
#[test]
fn nodes_in_separate_network_namespaces_find_each_other_with_no_peer_option() {
    require_nix();
    if !is_root() {
        eprintln!("skipped: making network namespaces and a veth pair needs root");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let dir = w.join("pkg");
    nixdag_testkit::package_tree(&dir, 400_000, 17);
    let p = nix_add(&dir);
    let (a_store, b_store) = (TestStore::new(), TestStore::new());
    a_store.add(&[p.to_str().unwrap()]);

    let (na, nb) = (Netns::new(), Netns::new());
    // Wait until unshare has exec'd sleep in its new namespace.
    let deadline = Instant::now() + Duration::from_secs(5);
    let host_ns = fs::read_link("/proc/self/ns/net").unwrap();
    for ns in [&na, &nb] {
        while fs::read_link(format!("/proc/{}/ns/net", ns.pid())).ok().as_ref() == Some(&host_ns) {
            assert!(Instant::now() < deadline, "unshare -n did not make a namespace");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let (va, vb) = (format!("nxa{}", na.pid()), format!("nxb{}", na.pid()));
    sh(Command::new("ip").args(["link", "add", &va, "type", "veth", "peer", "name", &vb]));
    sh(Command::new("ip").args(["link", "set", &va, "netns", &na.pid().to_string()]));
    sh(Command::new("ip").args(["link", "set", &vb, "netns", &nb.pid().to_string()]));
    for (ns, dev, ip) in [(&na, &va, "10.77.0.1/24"), (&nb, &vb, "10.77.0.2/24")] {
        sh(&mut in_ns(ns.pid(), &["ip", "link", "set", "lo", "up"]));
        sh(&mut in_ns(ns.pid(), &["ip", "addr", "add", ip, "dev", dev]));
        sh(&mut in_ns(ns.pid(), &["ip", "link", "set", dev, "up"]));
        // mDNS goes to 224.0.0.251: route multicast over the veth (there is no default route).
        sh(&mut in_ns(ns.pid(), &["ip", "route", "add", "224.0.0.0/4", "dev", dev]));
    }

    let a = NsNode::start(&na, &a_store, &["--open", "--peer-listen", "10.77.0.1:0"]);
    let b = NsNode::start(&nb, &b_store, &["--peering", "--peer-listen", "10.77.0.2:0", "--trusted-key", &a.key]);
    let a_id = a_store.ok(&["peer", "show"]).lines().next().unwrap().strip_prefix("endpoint-id: ").unwrap().to_string();

    // B finds A with no --peer: A appears in B's `peer status`.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s: serde_json::Value = serde_json::from_str(&b_store.ok(&["peer", "status", "--json"])).unwrap();
        if s["peers"].as_array().unwrap().iter().any(|p| p["endpoint_id"] == a_id.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "B never found A: {s}\nB: {}\nA: {}", b.log(), a.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(b.log().contains("discovered peer on the LAN"), "{}", b.log());

    // Stock Nix, in B's namespace, trusting only A's key, substitutes the path through B's gateway.
    let other = w.join("store-b");
    let cache = format!("XDG_CACHE_HOME={}", w.join("xdg").display());
    let (ns_b, other_s, p_s) = (nb.pid(), other.to_str().unwrap().to_string(), p.to_str().unwrap().to_string());
    sh(&mut in_ns(
        ns_b,
        &[
            "env",
            &cache,
            "nix",
            "--extra-experimental-features",
            "nix-command",
            "copy",
            "--store",
            &other_s,
            "--option",
            "trusted-public-keys",
            &a.key,
            "--option",
            "require-sigs",
            "true",
            "--option",
            "substituters",
            "",
            "--from",
            &b.url,
            &p_s,
        ],
    ));
    let info = sh(Command::new("nix")
        .args(["--extra-experimental-features", "nix-command", "path-info", "--json", "--store"])
        .arg(&other)
        .arg(&p));
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v[0]["narHash"].as_str().unwrap(), nix_path_info(&p).0, "the path arrived byte-exact");
    let s: serde_json::Value = serde_json::from_str(&b_store.ok(&["peer", "status", "--json"])).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let s2: serde_json::Value = serde_json::from_str(&b_store.ok(&["peer", "status", "--json"])).unwrap();
    let a_line = s2["peers"].as_array().unwrap().iter().find(|p| p["endpoint_id"] == a_id.as_str()).cloned();
    let a_line = a_line.unwrap_or_else(|| panic!("{s} {s2}"));
    assert_eq!(a_line["reachable"], true, "{s2}");
    assert!(a_line["bytes_received"].as_u64().unwrap() > 100_000, "the NAR came from A: {s2}");
    b_store.verify();
    drop(b);

    // Discovery grants nothing: A restarted with an allow list that does not name C; C (in B's namespace,
    // on a fresh store) finds A, and A refuses it.
    drop(a);
    let someone = "c".repeat(64);
    let a = NsNode::start(&na, &a_store, &["--allow-peer", &someone, "--peer-listen", "10.77.0.1:0"]);
    let c_store = TestStore::new();
    let c = NsNode::start(&nb, &c_store, &["--peering", "--peer-listen", "10.77.0.2:0", "--trusted-key", &a.key]);
    let hash_part = p.file_name().unwrap().to_str().unwrap().split('-').next().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.log().contains("discovered peer on the LAN") {
        assert!(Instant::now() < deadline, "C never found A: {}", c.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let code = sh(&mut in_ns(
        ns_b,
        &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("{}/{hash_part}.narinfo", c.url)],
    ));
    assert_eq!(code, "404", "a node found but not allowed got A's narinfo");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.log().contains("refused a peer that is not allowed") {
        assert!(Instant::now() < deadline, "A did not refuse C: {}", a.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}
