//! Nodes that fetch from each other (`/nixdag/fetch/1`), judged by stock Nix substituting through a
//! node's gateway: every node a separate `nixdag serve` on loopback, the data real store paths made
//! with `nix-store --add` from trees the test kit generates.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::gateway::{nix, run};

/// A running `nixdag serve` with peering.
pub(crate) struct Node {
    child: Child,
    pub(crate) url: String,
    pub(crate) key: String,
    pub(crate) ticket: String,
    pub(crate) id: String,
    store: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    pub(crate) fn start(store: &TestStore, extra: &[&str]) -> Node {
        let Served { child, lines, log } = spawn_serve(
            store
                .cmd()
                .args(["serve", "--listen", "127.0.0.1:0", "--peering", "--repack-idle", "0"])
                .args(extra)
                .env("NIXDAG_LOG", "info"),
            3,
        );
        let url = lines[0].rsplit(' ').next().unwrap().to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{lines:?}\n{}", log.lock().unwrap().join("\n"));
        let key = lines[1].rsplit(' ').next().unwrap().to_string();
        let ticket = lines[2].strip_prefix("peer endpoint ").expect("third line names the endpoint").to_string();
        let show = store.ok(&["peer", "show"]);
        let id = show.lines().next().unwrap().strip_prefix("endpoint-id: ").unwrap().to_string();
        Node { child, url, key, ticket, id, store: store.path().to_path_buf(), log }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The log once it holds `needle` (stderr is read by a thread), or as it is after 10 s.
    fn log_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `peer status --json` of this node (the file is rewritten every second: wait for a fresh one).
    fn status(&self) -> serde_json::Value {
        std::thread::sleep(Duration::from_millis(1100));
        let o =
            Command::new(bin()).arg("--store").arg(&self.store).args(["peer", "status", "--json"]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// This node's line about peer `id`.
    fn peer(&self, id: &str) -> serde_json::Value {
        let s = self.status();
        s["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["endpoint_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not in {s}"))
    }

    fn signal(&self, sig: &str) {
        Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` from a gateway: (status, body).
pub(crate) fn get(url: &str, path: &str) -> (u16, Vec<u8>) {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&buf[9..12]).parse().unwrap();
    (status, buf[head_end + 4..].to_vec())
}

/// Two versions of a package added to the local Nix store: v2 is v1 with a binary and some text
/// edited and a file added, so most of its blocks are v1's and the rest are near v1's.
fn two_versions(w: &Path) -> (PathBuf, PathBuf) {
    let v1 = w.join("pkg-1.0");
    nixdag_testkit::package_tree(&v1, 3 << 20, 41);
    let v2 = w.join("pkg-1.1");
    run(Command::new("cp").arg("-a").arg(&v1).arg(&v2));
    let tool = v2.join("bin/tool-0");
    let bytes = fs::read(&tool).unwrap();
    fs::write(&tool, nixdag_testkit::edited(&bytes, 5)).unwrap();
    let mut texts: Vec<PathBuf> =
        fs::read_dir(v2.join("lib/mod03")).unwrap().map(|e| e.unwrap().path()).collect::<Vec<_>>();
    texts.sort();
    for t in texts.iter().take(3) {
        let b = fs::read(t).unwrap();
        if b.len() > 16 {
            fs::write(t, nixdag_testkit::edited(&b, 9)).unwrap();
        }
    }
    fs::write(v2.join("lib/NEWS"), nixdag_testkit::store_words(77, 60_000)).unwrap();
    (nix_add(&v1), nix_add(&v2))
}

fn packs_bytes(store: &TestStore) -> u64 {
    fs::read_dir(store.path().join("packs")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

/// `nix copy` of `path` from `node`'s gateway into a fresh store, trusting only `key`.
fn nix_copy_from(w: &Path, tag: &str, node: &Node, key: &str, path: &Path) -> PathBuf {
    let other = w.join(format!("store-{tag}"));
    run(nix(w, tag)
        .args(["copy", "--store"])
        .arg(&other)
        .args(["--option", "trusted-public-keys", key, "--option", "require-sigs", "true"])
        .args(["--option", "substituters", ""])
        .args(["--from", &node.url])
        .arg(path));
    other
}

/// Nix's NarHash of `path` in the store at `root`.
pub(crate) fn nar_hash_in(w: &Path, root: &Path, path: &Path) -> String {
    let out = run(nix(w, "info").args(["path-info", "--json", "--store"]).arg(root).arg(path));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["narHash"].as_str().unwrap().to_string()
}

#[test]
fn a_new_version_substitutes_through_a_peer_and_only_its_new_blocks_travel() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (p1, p2) = two_versions(w);
    let (a_store, b_store) = (TestStore::new(), TestStore::new());
    a_store.add(&[p1.to_str().unwrap()]);
    let before = packs_bytes(&a_store);
    a_store.add(&[p2.to_str().unwrap()]);
    let v2_adds = packs_bytes(&a_store) - before;
    b_store.add(&[p1.to_str().unwrap()]);
    let a = Node::start(&a_store, &["--open"]);
    let b = Node::start(&b_store, &["--peer", &a.ticket, "--trusted-key", &a.key]);

    // Stock Nix trusting only A's key gets v2 through B, byte-exact and with A's signature only.
    let other = nix_copy_from(w, "v2", &b, &a.key, &p2);
    assert_eq!(nar_hash_in(w, &other, &p2), nix_path_info(&p2).0);
    // The signatures Nix got are A's, exactly: B added none (and replaced none).
    let sig_lines = |node: &Node| {
        let hash_part = p2.file_name().unwrap().to_str().unwrap().split('-').next().unwrap().to_string();
        let (status, text) = get(&node.url, &format!("/{hash_part}.narinfo"));
        assert_eq!(status, 200);
        let text = String::from_utf8(text).unwrap();
        text.lines().filter(|l| l.starts_with("Sig: ")).map(String::from).collect::<Vec<_>>()
    };
    let a_sigs = sig_lines(&a);
    assert_eq!(a_sigs.len(), 1);
    let sigs = run(nix(w, "sigs").args(["path-info", "--sigs", "--store"]).arg(&other).arg(&p2));
    assert!(sigs.contains(a_sigs[0].strip_prefix("Sig: ").unwrap()), "{sigs} lacks A's {a_sigs:?}");
    let n = sigs.split_whitespace().skip(1).filter(|f| !f.starts_with("ca:")).count();
    assert_eq!(n, 1, "one signature: {sigs}");
    // B now holds v2 itself, recorded as foreign: served with A's signature only.
    assert_eq!(b_store.bytes(&["cat", "--nar-hash", &nix_path_info(&p2).0]), nix_dump(&p2));
    assert_eq!(sig_lines(&b), a_sigs, "B must never sign a peer's narinfo");

    // Bytes on the wire: about what v2 adds in A's store, far below v2's NAR.
    let peer = b.peer(&a.id);
    let received = peer["bytes_received"].as_u64().unwrap();
    let nar = nix_dump(&p2);
    let mut xz = Command::new("xz").args(["-6", "-c"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = xz.stdin.take().unwrap();
    let feed = std::thread::spawn(move || stdin.write_all(&nar).unwrap());
    let xz_len = xz.wait_with_output().unwrap().stdout.len();
    feed.join().unwrap();
    eprintln!(
        "v1->v2 over the peer wire: {received} bytes received; v2 adds {v2_adds} stored bytes at A; v2 NAR {} bytes, xz -6 {xz_len}",
        nix_dump(&p2).len()
    );
    assert!(received as f64 <= 1.1 * v2_adds as f64 + 256.0 * 1024.0, "{received} > bound of {v2_adds}");
    assert!(received < xz_len as u64, "{received} bytes on the wire, xz NAR is {xz_len}");
    assert_eq!(peer["reachable"], true);
    assert!(peer["last_seen"].as_u64().is_some());
    b_store.verify();
    // Recorded as foreign (foreign-paths-0): after a restart without peers, still A's signature only.
    b.signal("TERM");
    drop(b);
    let b = Node::start(&b_store, &[]);
    assert_eq!(sig_lines(&b), a_sigs, "a peer's narinfo stays unsigned by B across restarts");
}

#[test]
fn blocks_come_from_every_peer_that_holds_them_and_bad_or_stalled_peers_are_left() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (p1, p2) = two_versions(w);
    let (a_store, b_store, c_store) = (TestStore::new(), TestStore::new(), TestStore::new());
    a_store.add(&[p2.to_str().unwrap()]);
    b_store.add(&[p1.to_str().unwrap()]);
    let a = Node::start(&a_store, &["--open"]);
    let b = Node::start(&b_store, &["--open"]);
    // C holds nothing: v2's blocks shared with v1 may come from A or B, the rest only from A.
    let c = Node::start(&c_store, &["--peer", &a.ticket, "--peer", &b.ticket, "--trusted-key", &a.key]);
    let other = nix_copy_from(w, "split", &c, &a.key, &p2);
    assert_eq!(nar_hash_in(w, &other, &p2), nix_path_info(&p2).0);
    let status = c.status();
    let from = |id: &str| {
        status["peers"].as_array().unwrap().iter().find(|p| p["endpoint_id"] == id).unwrap()["bytes_received"]
            .as_u64()
            .unwrap()
    };
    eprintln!("C received {} bytes from A, {} from B", from(&a.id), from(&b.id));
    assert!(from(&a.id) > 50_000 && from(&b.id) > 50_000, "both peers sent blocks: {status}");
    c_store.verify();

    // A stalled peer (SIGSTOP) mid-transfer: D fetches from A and E; A never answers its share.
    let (d_store, e_store) = (TestStore::new(), TestStore::new());
    e_store.add(&[p2.to_str().unwrap()]);
    let e = Node::start(&e_store, &["--open"]);
    let d = Node::start(
        &d_store,
        &["--peer", &a.ticket, "--peer", &e.ticket, "--trusted-key", &a.key, "--peer-timeout", "2"],
    );
    let hash_part = p2.file_name().unwrap().to_str().unwrap().split('-').next().unwrap().to_string();
    let (status, _) = get(&d.url, &format!("/{hash_part}.narinfo"));
    assert_eq!(status, 200, "narinfo via peers");
    a.signal("STOP");
    let t = Instant::now();
    let nar_hash = to_nix32(&nix_path_info(&p2).0);
    let nar_url = format!("/nar/{}.nar", nar_hash.strip_prefix("sha256:").unwrap());
    let (status, body) = get(&d.url, &nar_url);
    a.signal("CONT");
    assert_eq!(status, 200, "{}", d.log());
    assert_eq!(body, nix_dump(&p2));
    eprintln!("with A stalled the NAR took {:?}", t.elapsed());
    assert!(d.log_with("abandoned").contains("abandoned"), "{}", d.log());
    // A path no peer has, with a peer stalled: 404 within the deadline, not a hang.
    a.signal("STOP");
    let t = Instant::now();
    let (status, _) = get(&d.url, "/0123456789abcdfghijklmnpqrsvwxyz.narinfo");
    let took = t.elapsed();
    a.signal("CONT");
    assert_eq!(status, 404);
    assert!(took < Duration::from_millis(1000), "a miss took {took:?} with a stalled peer (deadline 300 ms)");
}

#[test]
fn with_no_peer_reachable_a_miss_is_404_within_the_deadline() {
    let store = TestStore::new();
    // An id no endpoint has, at a port nothing listens on.
    let dead = format!("{}@127.0.0.1:9", "a".repeat(64));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = format!("{}@{}", "b".repeat(64), sock.local_addr().unwrap());
    let node = Node::start(&store, &["--peer", &dead, "--peer", &silent, "--peer-deadline", "100"]);
    for _ in 0..3 {
        let t = Instant::now();
        let (status, _) = get(&node.url, "/0123456789abcdfghijklmnpqrsvwxyz.narinfo");
        assert_eq!(status, 404);
        assert!(t.elapsed() < Duration::from_millis(600), "took {:?}", t.elapsed());
    }
    let s = node.status();
    assert_eq!(s["peers"].as_array().unwrap().len(), 2, "{s}");
    assert!(s["peers"].as_array().unwrap().iter().all(|p| p["reachable"] == false), "{s}");
}

#[test]
fn a_peer_not_allowed_gets_nothing_on_the_fetch_protocol() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let dir = w.join("pkg");
    nixdag_testkit::package_tree(&dir, 600_000, 3);
    let p = nix_add(&dir);
    let (a_store, b_store) = (TestStore::new(), TestStore::new());
    a_store.add(&[p.to_str().unwrap()]);
    // A allows one id, not B's.
    let someone = "c".repeat(64);
    let a = Node::start(&a_store, &["--allow-peer", &someone]);
    let b = Node::start(&b_store, &["--peer", &a.ticket, "--trusted-key", &a.key]);
    let hash_part = p.file_name().unwrap().to_str().unwrap().split('-').next().unwrap().to_string();
    let (status, _) = get(&b.url, &format!("/{hash_part}.narinfo"));
    assert_eq!(status, 404);
    let log = a.log_with("refused a peer that is not allowed");
    assert!(log.contains("refused a peer that is not allowed"), "{log}");
    assert_eq!(b.peer(&a.id)["bytes_received"], 0);
    // And a node that does not trust A's key serves nothing A says, even from an open A.
    let open_a = {
        drop(a);
        Node::start(&a_store, &["--open"])
    };
    let untrusting = Node::start(&TestStore::new(), &["--peer", &open_a.ticket]);
    let (status, _) = get(&untrusting.url, &format!("/{hash_part}.narinfo"));
    assert_eq!(status, 404, "a narinfo signed by no trusted key is not served");
    let log = untrusting.log_with("signed by no trusted key");
    assert!(log.contains("signed by no trusted key"), "{log}");
}

/// A peer written against iroh alone, speaking `/nixdag/fetch/1` from its documented bytes
/// (docs/PEERS.md): it names the right root for a NAR, then answers every block with bytes of the
/// right length that are not the block.
#[derive(Debug, Clone)]
struct Forger {
    root: Vec<u8>,
    size: u64,
}

impl iroh::protocol::ProtocolHandler for Forger {
    async fn accept(&self, conn: iroh::endpoint::Connection) -> Result<(), iroh::protocol::AcceptError> {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let req = recv.read_to_end(1 << 16).await.unwrap_or_default();
            let mut out = Vec::new();
            match req.first() {
                // NAR: 01, the CID's length and bytes, the size.
                Some(2) => {
                    out.push(1);
                    out.push(self.root.len() as u8);
                    out.extend_from_slice(&self.root);
                    out.extend_from_slice(&self.size.to_le_bytes());
                }
                // BLOCKS: per block 03 RAW, u32 length, bytes (forged).
                Some(4) => {
                    let count = u16::from_le_bytes([req[2], req[3]]) as usize;
                    for i in 0..count {
                        out.push(3);
                        out.extend_from_slice(&1000u32.to_le_bytes());
                        out.extend(std::iter::repeat_n(i as u8, 1000));
                    }
                }
                // NARINFO and the rest: 00, not here.
                _ => out.push(0),
            }
            let _ = send.write_all(&out).await;
            let _ = send.finish();
        }
        Ok(())
    }
}

#[test]
fn forged_and_damaged_blocks_are_dropped_and_fetched_from_another_peer() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let dir = w.join("pkg");
    nixdag_testkit::package_tree(&dir, 1_500_000, 8);
    let p = nix_add(&dir);
    let (a_store, b_store, c_first) = (TestStore::new(), TestStore::new(), TestStore::new());
    let (nar_hash, root, size) = a_store.add(&[p.to_str().unwrap()]);
    b_store.add(&[p.to_str().unwrap()]);
    // A's copy of an incompressible block (kept raw in the packs) is damaged: A must not send it.
    let tool = fs::read(dir.join("bin/tool-0")).unwrap();
    assert!(corrupt_in_packs(&a_store, &tool[300_000..300_064]), "the binary is stored as it is");
    let a = Node::start(&a_store, &["--open"]);
    let b = Node::start(&b_store, &["--open"]);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let forger = Forger { root: cid::Cid::try_from(root.as_str()).unwrap().to_bytes(), size };
    let (router, forger_peer) = rt.block_on(async {
        let ep = iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
            .secret_key(iroh::SecretKey::from_bytes(&[42; 32]))
            .relay_mode(iroh::RelayMode::Disabled)
            .clear_address_lookup()
            .clear_ip_transports()
            .portmapper_config(iroh::endpoint::PortmapperConfig::Disabled)
            .net_report_config(iroh::NetReportConfig::minimal())
            .bind_addr("127.0.0.1:0")
            .unwrap()
            .bind()
            .await
            .unwrap();
        let at = ep.bound_sockets()[0];
        let peer = format!("{}@{at}", ep.id());
        (iroh::protocol::Router::builder(ep).accept(b"/nixdag/fetch/1", forger).spawn(), peer)
    });
    let forger_id = forger_peer.split('@').next().unwrap().to_string();
    // Which peer gets which blocks depends on who connects first: on a busy machine A and B can take
    // every block before the forger's worker asks for one. Each attempt must be byte-exact and verify;
    // an attempt in which the forger was given no block is tried again on a fresh node C (at most 4).
    let hash_part = p.file_name().unwrap().to_str().unwrap().split('-').next().unwrap().to_string();
    let mut caught = false;
    for attempt in 1..=4 {
        let fresh;
        let c_store = if attempt == 1 {
            &c_first
        } else {
            fresh = TestStore::new();
            &fresh
        };
        let c = Node::start(
            c_store,
            &[
                "--peer",
                &forger_peer,
                "--peer",
                &a.ticket,
                "--peer",
                &b.ticket,
                "--trusted-key",
                &a.key,
                "--trusted-key",
                &b.key,
            ],
        );
        assert_eq!(get(&c.url, &format!("/{hash_part}.narinfo")).0, 200);
        let (status, body) = get(&c.url, &format!("/nar/{}.nar", to_nix32(&nar_hash).strip_prefix("sha256:").unwrap()));
        assert_eq!(status, 200, "{}", c.log());
        assert!(body == nix_dump(&p), "the NAR is byte-exact");
        // A never sends its damaged copy: C saw no bad block from A. (Whether A was asked for that block
        // at all depends on how the work was split between A and B; when it was, A says it refused.)
        let c_log = c.log();
        assert!(!c_log.lines().any(|l| l.contains("bad block") && l.contains(&a.id[..10])), "{c_log}");
        c_store.verify();
        let log = c.log_with("bad block");
        if log.contains("bad block") && log.contains(&forger_id[..10]) {
            let s = c.status();
            assert!(s["bad_blocks"].as_u64().unwrap() >= 1, "{s}");
            caught = true;
            break;
        }
        eprintln!("attempt {attempt}: the forger was given no block; again on a fresh node\n{log}");
    }
    assert!(caught, "in 4 attempts the forger was never asked for a block");
    rt.block_on(async { router.shutdown().await.ok() });
}

/// The NAR streams to the client while its blocks arrive: the client has its first bytes while the
/// fetch is still under way (the only peer is stopped right then, and nothing is stored yet), and the
/// rest follows when the peer resumes, checked whole.
#[test]
fn a_nar_from_a_peer_streams_to_the_client_while_its_blocks_arrive() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tree = w.join("big-1.0");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("data"), nixdag_testkit::std_rng_bytes(7, 48 << 20)).unwrap();
    let p = nix_add(&tree);
    let (a_store, b_store) = (TestStore::new(), TestStore::new());
    a_store.add(&[p.to_str().unwrap()]);
    let a = Node::start(&a_store, &["--open"]);
    let b = Node::start(&b_store, &["--peer", &a.ticket, "--trusted-key", &a.key]);
    let hash_part = &p.file_name().unwrap().to_str().unwrap()[..32];
    assert_eq!(get(&b.url, &format!("/{hash_part}.narinfo")).0, 200, "{}", b.log());
    let nar_hash = to_nix32(&nix_path_info(&p).0);
    let nar_url = format!("/nar/{}.nar", nar_hash.strip_prefix("sha256:").unwrap());

    let addr = b.url.strip_prefix("http://").unwrap().to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET {nar_url} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1 << 16];
    // The headers and the first bytes of the body.
    while !got.windows(4).any(|w| w == b"\r\n\r\n") || got.len() < (1 << 16) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the gateway closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    a.signal("STOP");
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got[..200.min(got.len())]));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(b_store.stat("nars"), 0, "the first bytes came before the NAR was fetched whole");
    a.signal("CONT");
    s.read_to_end(&mut got).unwrap();
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got[head_end..] == nix_dump(&p)[..], "the streamed NAR differs ({} bytes)", got.len() - head_end);
    assert_eq!(b_store.stat("nars"), 1, "{}", b.log());
    drop((a, b));
    b_store.verify();
}

#[test]
fn a_source_file_only_a_peer_holds_reaches_nix_fetchurl_and_fetch_src() {
    use crate::fetch_src::{add_fixed, nix_fetchurl, unique};
    use nixdag::{HashAlgo, NixHash};
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tarball = crate_tarball(w, "itoa", "1.0.11");
    let bytes = fs::read(&tarball).unwrap();
    let sha256 = NixHash::digest_of(HashAlgo::Sha256, &bytes);
    let sha512 = NixHash::digest_of(HashAlgo::Sha512, &bytes);
    let (a_store, b_store, c_store) = (TestStore::new(), TestStore::new(), TestStore::new());
    a_store.add(&["--file", tarball.to_str().unwrap()]);
    // C's id, before C runs anything but `peer show`: A serves B and C only.
    let c_id = c_store.ok(&["peer", "show"]).lines().next().unwrap().strip_prefix("endpoint-id: ").unwrap().to_string();
    let id_of = |s: &TestStore| {
        s.ok(&["peer", "show"]).lines().next().unwrap().strip_prefix("endpoint-id: ").unwrap().to_string()
    };
    let (b_id, e_store) = (id_of(&b_store), TestStore::new());
    let e_id = id_of(&e_store);
    let a = Node::start(&a_store, &["--allow-peer", &b_id, "--allow-peer", &c_id, "--allow-peer", &e_id]);
    let b = Node::start(&b_store, &["--peer", &a.ticket]);

    // Stock Nix, its URL dead, gets the file from B's hashed mirror, which B fetched from A: under
    // sha512 too (the wire's FILE_BY), and the output path is the one `nix-store --add-fixed` gives.
    let name = unique("itoa");
    let want = add_fixed(w, "sha512", &name, &bytes);
    run(Command::new("nix-store").arg("--delete").arg(&want));
    let o = nix_fetchurl(w, &name, "sha512", &sha512.to_hex(), &format!("{}/", b.url));
    assert!(o.status.success(), "nix-build: {}\n{}", String::from_utf8_lossy(&o.stderr), b.log());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), want);
    assert_eq!(b_store.bytes(&["cat", "--file-hash", &sha256.to_string()]), bytes);
    b_store.verify();

    // fetch-src on C, where no serve runs: C's own endpoint, with C's key (A allows C's id), asks A.
    let out = w.join("from-peer.tar.gz");
    let o = c_store
        .cmd()
        .args(["fetch-src", "--hash", &sha256.to_string(), "--peer", &a.ticket, "-o"])
        .arg(&out)
        .args(["--mirror", &format!("http://127.0.0.1:{}/", crate::fetch_src::dead_port())])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "fetch-src: {err}");
    assert!(err.contains("from peers"), "{err}");
    assert_eq!(fs::read(&out).unwrap(), bytes);
    assert_eq!(c_store.bytes(&["cat", "--file-hash", &sha256.to_string()]), bytes);

    // A node A does not allow gets nothing from it: "not found" (exit 2), nothing kept.
    let d_store = TestStore::new();
    let o = d_store.cmd().args(["fetch-src", "--hash", &sha256.to_string(), "--peer", &a.ticket]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let o = d_store.cmd().args(["cat", "--file-hash", &sha256.to_string()]).output().unwrap();
    assert!(!o.status.success());

    // fetch-src on E's store while E serves with A as its peer: only one endpoint may hold E's key, so
    // the command asks through E's gateway, which fetches from A.
    drop(b);
    let e = Node::start(&e_store, &["--peer", &a.ticket]);
    let o = e_store.cmd().args(["fetch-src", "--hash", &sha256.to_string()]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "fetch-src: {err}\n{}", e.log());
    assert!(err.contains("through the running serve"), "{err}");
    assert!(e.log_with("fetched from peers").contains("fetched from peers"), "{}", e.log());
    assert_eq!(e_store.bytes(&["cat", "--file-hash", &sha256.to_string()]), bytes);
}
