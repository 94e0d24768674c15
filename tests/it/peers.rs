//! Peers judged by a client that is not ours: written only against iroh and iroh-blobs' public API
//! (nothing of nixdag's `peer` module), it fetches from a running `nixdag serve --peering` a block, a
//! verified byte range of a block, and a whole NAR by the ticket `nixdag peer ticket` printed, and
//! compares the bytes with `nixdag cat`. Loopback only: the endpoints have no relay and no lookup.

use std::fs;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bao_tree::ChunkRanges;
use iroh::endpoint::{presets, Connection, PortmapperConfig};
use iroh::{Endpoint, EndpointAddr, NetReportConfig, RelayMode, SecretKey};
use iroh_blobs::hashseq::HashSeq;
use iroh_blobs::protocol::{ChunkRangesExt, GetRequest};
use iroh_blobs::store::mem::MemStore;
use iroh_blobs::ticket::BlobTicket;
use iroh_blobs::{BlobFormat, Hash, HashAndFormat};

use crate::common::*;

/// `nixdag serve` with peering; its third stdout line is `peer endpoint <ticket>`.
pub(crate) struct PeerServer {
    pub(crate) child: Child,
    pub(crate) endpoint_line: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl PeerServer {
    pub(crate) fn start(store: &TestStore, extra: &[&str]) -> PeerServer {
        let Served { child, lines, log } =
            spawn_serve(store.cmd().args(["serve", "--listen", "127.0.0.1:0"]).args(extra), 3);
        let endpoint_line = lines[2].strip_prefix("peer endpoint ").expect("third line names the endpoint").into();
        PeerServer { child, endpoint_line, log }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The log once it holds `needle` (stderr is read by a thread, so a line may come a moment after
    /// the event), or as it is after 10 s.
    pub(crate) fn log_with(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait: a clean exit.
    pub(crate) fn stop(mut self) {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stored NAR of several leaves, some incompressible (raw records), some text (zstd frames).
pub(crate) fn store_with_nar() -> (TestStore, tempfile::TempDir, String) {
    let store = TestStore::new();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    fs::create_dir(&tree).unwrap();
    write_random(&tree.join("random"), 1_500_000, 12);
    let text: String = (0..40_000).map(|i| format!("line {i} of some text that compresses\n")).collect();
    fs::write(tree.join("text"), text).unwrap();
    let (nar_hash, _root, _size) = store.add(&[tree.to_str().unwrap()]);
    (store, work, nar_hash)
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A client endpoint on loopback: no relay, no address lookup, no probes.
pub(crate) async fn client(secret: SecretKey) -> Endpoint {
    Endpoint::builder(presets::Minimal)
        .secret_key(secret)
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .clear_ip_transports()
        .portmapper_config(PortmapperConfig::Disabled)
        .net_report_config(NetReportConfig::minimal())
        .bind_addr("127.0.0.1:0")
        .unwrap()
        .bind()
        .await
        .unwrap()
}

pub(crate) fn secret(seed: u8) -> SecretKey {
    SecretKey::from_bytes(&[seed; 32])
}

pub(crate) async fn connect(ep: &Endpoint, addr: &EndpointAddr) -> anyhow::Result<Connection> {
    Ok(tokio::time::timeout(Duration::from_secs(10), ep.connect(addr.clone(), iroh_blobs::ALPN)).await??)
}

/// The CID text of a raw block, for `nixdag cat`.
pub(crate) fn raw_cid(hash: &Hash) -> String {
    let mh = multihash::Multihash::<64>::wrap(0x1e, hash.as_bytes()).unwrap();
    cid::Cid::new_v1(0x55, mh).to_string()
}

pub(crate) fn ticket_addr(ticket: &str) -> EndpointAddr {
    use iroh_tickets::Ticket;
    iroh_tickets::endpoint::EndpointTicket::decode_string(ticket).unwrap().endpoint_addr().clone()
}

#[test]
fn a_stock_iroh_blobs_client_fetches_a_block_a_range_and_a_nar_by_ticket() {
    let (store, _work, nar_hash) = store_with_nar();
    let me = secret(7);
    let server = PeerServer::start(&store, &["--allow-peer", &me.public().to_string()]);

    // `peer show` names the live endpoint: its last line is the ticket serve printed.
    let show = store.ok(&["peer", "show"]);
    assert_eq!(show.lines().last().unwrap(), server.endpoint_line, "{show}");
    let addr = ticket_addr(&server.endpoint_line);
    assert!(show.contains(&addr.id.to_string()), "{show}");
    assert!(addr.ip_addrs().all(|a: &SocketAddr| a.ip().is_loopback()), "loopback by default: {addr:?}");
    let key = store.path().join("keys/peer.secret");
    assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);

    let ticket: BlobTicket = store.ok(&["peer", "ticket", "--nar-hash", &nar_hash]).trim().parse().unwrap();
    assert_eq!(ticket.format(), BlobFormat::HashSeq);
    assert_eq!(ticket.addr(), &addr);
    let nar = store.bytes(&["cat", "--nar-hash", &nar_hash]);

    let rt = runtime();
    rt.block_on(async {
        let ep = client(me).await;
        let conn = connect(&ep, ticket.addr()).await.unwrap();

        // The whole NAR: the HashSeq and every child, each bao-verified by the client's store.
        let local = MemStore::new();
        let stats = local.remote().fetch(conn.clone(), ticket.hash_and_format()).await.unwrap();
        let seq = HashSeq::try_from(local.get_bytes(ticket.hash()).await.unwrap()).unwrap();
        let leaves: Vec<Hash> = seq.iter().collect();
        assert!(leaves.len() >= 4, "a NAR of several leaves: {}", leaves.len());
        let mut got = Vec::new();
        for h in &leaves {
            got.extend_from_slice(&local.get_bytes(*h).await.unwrap());
        }
        assert_eq!(got.len(), nar.len());
        assert!(got == nar, "the leaves concatenated are the NAR `nixdag cat` prints");
        eprintln!(
            "peers: NAR of {} bytes in {} leaves fetched in {:?} ({} bytes read)",
            nar.len(),
            leaves.len(),
            stats.elapsed,
            stats.total_bytes_read()
        );

        // One block whole, into an empty store, as a raw blob.
        let leaf = leaves[1];
        let block = store.bytes(&["cat", &raw_cid(&leaf)]);
        let one = MemStore::new();
        one.remote().fetch(conn.clone(), HashAndFormat::raw(leaf)).await.unwrap();
        assert!(one.get_bytes(leaf).await.unwrap() == block);

        // A byte range of a block: only the chunks under it travel, verified against the block's hash.
        let (a, b) = (10_000u64, 30_000u64);
        assert!(block.len() as u64 > 2 * b, "the block is larger than the range");
        let part = MemStore::new();
        let stats = part
            .remote()
            .execute_get(conn.clone(), GetRequest::blob_ranges(leaf, ChunkRanges::bytes(a..b)))
            .await
            .unwrap();
        assert!(stats.payload_bytes_read < block.len() as u64 / 2, "{stats:?}");
        let range = part.export_ranges(leaf, a..b).concatenate().await.unwrap();
        assert!(range == block[a as usize..b as usize]);
        assert!(!part.remote().local(HashAndFormat::raw(leaf)).await.unwrap().is_complete());

        // A hash the node does not have: nothing, and no harm to the connection's other streams.
        let none = MemStore::new();
        let missing = Hash::new(b"not stored");
        assert!(none.remote().fetch(conn.clone(), HashAndFormat::raw(missing)).await.is_err());
        conn.close(0u32.into(), b"done");
        ep.close().await;
    });

    // A clean exit removes the record: `peer show` then names the id alone.
    server.stop();
    assert!(!store.path().join("peer/endpoint.json").exists());
    let show = store.ok(&["peer", "show"]);
    let last = ticket_addr(show.lines().last().unwrap());
    assert_eq!(last.id, addr.id, "the same key across restarts");
    assert_eq!(last.ip_addrs().count(), 0);
}

#[test]
fn a_peer_not_allowed_gets_nothing() {
    let (store, _work, nar_hash) = store_with_nar();
    let allowed = secret(1);
    let stranger = secret(2);
    let stranger_id = stranger.public();
    let server = PeerServer::start(&store, &["--allow-peer", &allowed.public().to_string()]);
    let ticket: BlobTicket = store.ok(&["peer", "ticket", "--nar-hash", &nar_hash]).trim().parse().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let ep = client(stranger).await;
        // The handshake may complete before the node closes the connection: either way, no bytes.
        if let Ok(conn) = connect(&ep, ticket.addr()).await {
            let local = MemStore::new();
            let got =
                tokio::time::timeout(Duration::from_secs(10), local.remote().fetch(conn, ticket.hash_and_format()))
                    .await
                    .expect("refused promptly");
            assert!(got.is_err(), "a stranger fetched: {got:?}");
            let info = local.remote().local(ticket.hash_and_format()).await.unwrap();
            assert_eq!(info.local_bytes(), 0, "no byte of the HashSeq arrived");
        }
        ep.close().await;

        // The allowed one, on the same node, gets it.
        let ep = client(allowed).await;
        let conn = connect(&ep, ticket.addr()).await.unwrap();
        let local = MemStore::new();
        local.remote().fetch(conn, ticket.hash_and_format()).await.unwrap();
        ep.close().await;
    });
    let refused = format!("peer={}", stranger_id);
    let log = server.log_with(&refused);
    assert!(log.contains("refused a peer") && log.contains(&refused), "the node says whom it refused: {log}");
    server.stop();
}

#[test]
fn peering_is_off_by_default() {
    let store = TestStore::new();
    let server = crate::gateway::Server::start(&store, &[]);
    assert!(!store.path().join("peer/endpoint.json").exists());
    assert!(!store.path().join("keys/peer.secret").exists());
    server.stop();
}

#[test]
fn file_tickets_are_a_raw_blob_for_one_leaf_and_a_hash_seq_for_more() {
    let store = TestStore::new();
    let work = tempfile::tempdir().unwrap();
    let small = work.path().join("small.bin");
    let large = work.path().join("large.bin");
    write_random(&small, 9_000, 5);
    write_random(&large, 1_000_000, 6);
    let (small_sha, _, _) = store.add(&["--file", small.to_str().unwrap()]);
    let (large_sha, _, _) = store.add(&["--file", large.to_str().unwrap()]);
    let me = secret(9);
    let server = PeerServer::start(&store, &["--peering", "--allow-peer", &me.public().to_string()]);
    let rt = runtime();
    for (sha, path, format) in [(&small_sha, &small, BlobFormat::Raw), (&large_sha, &large, BlobFormat::HashSeq)] {
        let ticket: BlobTicket = store.ok(&["peer", "ticket", "--file-hash", sha]).trim().parse().unwrap();
        assert_eq!(ticket.format(), format, "{sha}");
        let want = fs::read(path).unwrap();
        assert!(store.bytes(&["cat", "--file-hash", sha]) == want);
        let got = rt.block_on(async {
            let ep = client(me.clone()).await;
            let conn = connect(&ep, ticket.addr()).await.unwrap();
            let local = MemStore::new();
            local.remote().fetch(conn, ticket.hash_and_format()).await.unwrap();
            let got = match format {
                BlobFormat::Raw => local.get_bytes(ticket.hash()).await.unwrap().to_vec(),
                BlobFormat::HashSeq => {
                    let seq = HashSeq::try_from(local.get_bytes(ticket.hash()).await.unwrap()).unwrap();
                    let mut v = Vec::new();
                    for h in seq.iter() {
                        v.extend_from_slice(&local.get_bytes(h).await.unwrap());
                    }
                    v
                }
            };
            ep.close().await;
            got
        });
        assert!(got == want, "{sha}: the fetched bytes are the file");
    }
    server.stop();
}

/// A block damaged on disk is not served: the stock client's fetch of the NAR fails, every leaf that did
/// arrive is right, and of the damaged block (the node logs which) not one byte arrives.
#[test]
fn a_damaged_block_is_never_served_to_a_peer() {
    let store = TestStore::new();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    fs::create_dir(&tree).unwrap();
    write_random(&tree.join("random"), 1_000_000, 31);
    let (nar_hash, _, _) = store.add(&[tree.to_str().unwrap()]);
    let content = fs::read(tree.join("random")).unwrap();
    assert!(corrupt_in_packs(&store, &content[600_000..600_064]), "payload bytes not found in the packs");
    let server = PeerServer::start(&store, &["--open"]);
    let ticket: BlobTicket = store.ok(&["peer", "ticket", "--nar-hash", &nar_hash]).trim().parse().unwrap();
    let rt = runtime();
    let (seq, complete) = rt.block_on(async {
        let ep = client(secret(4)).await;
        let conn = connect(&ep, ticket.addr()).await.unwrap();
        let local = MemStore::new();
        // The HashSeq alone first (it is whole): a stream reset can cut off the tail of a blob the
        // client was still reading, and the list of leaves must be complete to judge them.
        local.remote().fetch(conn.clone(), HashAndFormat::raw(ticket.hash())).await.unwrap();
        let got = local.remote().fetch(conn, ticket.hash_and_format()).await;
        assert!(got.is_err(), "a damaged NAR was fetched");
        let seq: Vec<Hash> = HashSeq::try_from(local.get_bytes(ticket.hash()).await.unwrap()).unwrap().iter().collect();
        let mut complete = Vec::new();
        for h in &seq {
            if local.remote().local(HashAndFormat::raw(*h)).await.unwrap().is_complete() {
                assert_eq!(Hash::new(local.get_bytes(*h).await.unwrap()), *h, "a leaf arrived wrong");
                complete.push(*h);
            }
        }
        ep.close().await;
        (seq, complete)
    });
    let log = server.log_with("serving blob ");
    let damaged = log
        .lines()
        .find_map(|l| l.split("serving blob ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .map(|hex| hex.parse::<Hash>().unwrap())
        .unwrap_or_else(|| panic!("the node names the block it could not serve: {log}"));
    let at = seq.iter().position(|h| *h == damaged).expect("the damaged block is a leaf of the NAR");
    assert!(
        !complete.contains(&damaged),
        "the damaged leaf ({at} of {}) arrived; complete: {complete:?}; node log: {log}",
        seq.len()
    );
    server.stop();
}

/// The allow file is read again when it changes: an id added is served at its next connection, an id
/// removed is refused, with no restart.
#[test]
fn the_allow_file_takes_effect_without_a_restart() {
    let (store, work, nar_hash) = store_with_nar();
    let allow = work.path().join("allowed-peers");
    fs::write(&allow, "# nobody yet\n").unwrap();
    let me = secret(11);
    let server = PeerServer::start(&store, &["--allow-peers-file", allow.to_str().unwrap()]);
    let ticket: BlobTicket = store.ok(&["peer", "ticket", "--nar-hash", &nar_hash]).trim().parse().unwrap();
    let rt = runtime();
    let fetch = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let ep = client(me.clone()).await;
            let ok = match connect(&ep, ticket.addr()).await {
                Ok(conn) => {
                    let local = MemStore::new();
                    let got = tokio::time::timeout(
                        Duration::from_secs(10),
                        local.remote().fetch(conn, ticket.hash_and_format()),
                    )
                    .await
                    .expect("answered promptly");
                    got.is_ok()
                }
                Err(_) => false,
            };
            ep.close().await;
            ok
        })
    };
    assert!(!fetch(&rt), "refused while not in the file");
    fs::write(&allow, format!("# a peer\n{}\n", me.public())).unwrap();
    assert!(fetch(&rt), "served once the file names it");
    fs::write(&allow, "# revoked\n").unwrap();
    assert!(!fetch(&rt), "refused again once the file no longer names it");
    server.stop();
}

/// Bad peer options and unknown roots are one-line errors, before anything is served.
#[test]
fn bad_peer_options_are_one_line_errors() {
    let store = TestStore::new();
    let e = store.fails(&["serve", "--listen", "127.0.0.1:0", "--peer", "nonsense"]);
    assert!(e.contains("invalid peer \"nonsense\""), "{e}");
    let e = store.fails(&["serve", "--listen", "127.0.0.1:0", "--allow-peer", "abc"]);
    assert!(e.contains("invalid peer \"abc\""), "{e}");
    let missing = store.path().join("no-such-file");
    let e = store.fails(&["serve", "--listen", "127.0.0.1:0", "--allow-peers-file", missing.to_str().unwrap()]);
    assert!(e.contains("allow file"), "{e}");
    let o = store.output(&["serve", "--open", "--allow-peer", &secret(1).public().to_string()]);
    assert!(!o.status.success(), "--open with an allow list is refused");
    let e = store.fails(&["peer", "ticket", "--nar-hash", "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]);
    assert!(e.contains("no NAR with hash"), "{e}");
}
