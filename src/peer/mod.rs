//! Peers: a door beside the HTTP gateway that serves the store's blocks over iroh.
//!
//! When peering is on, `serve` starts one iroh endpoint (its key in the store, [`key`]), offline
//! ([`endpoint`]: no relay, no DNS, loopback by default), that speaks the stock iroh-blobs protocol:
//! every block is a blob named by the BLAKE3 digest of its CID, served with bao-verified ranges
//! computed from the bytes the store returns ([`blobs`]); a stored NAR or file is one HashSeq blob
//! of its leaves ([`seqs`]). Only the endpoint ids the node trusts are served ([`access`]); an
//! invite ([`invite`], `/nixdag/invite/1`) adds a new node to them. Nodes found on the LAN by mDNS
//! ([`discovery`]) become peers to ask, never peers to serve.
//! docs/PEERS.md describes the wire and the choices.
//!
//! The endpoint runs on a multi-thread tokio runtime of its own: the gateway runs one single-threaded
//! runtime per core, and iroh's socket actors want a runtime that is always polled.

pub mod access;
pub mod blobs;
mod client;
pub mod discovery;
pub mod endpoint;
pub mod fetch;
mod error;
pub mod invite;
pub mod key;
pub mod provide;
pub mod seqs;
pub mod stats;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use iroh::protocol::Router;
use iroh::EndpointAddr;
use iroh_blobs::BlobsProtocol;

pub use self::access::{Access, Gate};
pub use self::client::PeerClient;
pub use self::endpoint::EndpointRecord;
pub use self::error::PeerError;
pub use self::fetch::{FetchConfig, Fetcher, PeerMisses};
pub use self::invite::InviteTicket;
pub use self::provide::FetchProtocol;
pub use self::stats::{PeerStats, StatusFile};
use crate::service::Service;

/// How the peer door is set up.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Where the endpoint binds (UDP); loopback unless the operator says otherwise.
    pub listen: SocketAddr,
    /// Who may fetch.
    pub access: Access,
    /// Peers named on the command line (`--peer`, `--peers-file`): asked for what the store lacks.
    pub peers: Vec<EndpointAddr>,
    /// Invites to present to the nodes that made them (`--invite`, or an invite given to `--peer`); each
    /// inviting node is also a peer to ask.
    pub invites: Vec<InviteTicket>,
    /// Announce the endpoint on the LAN and ask the nodes found there (mDNS; `--no-discovery` turns it
    /// off, and it is off on a loopback endpoint, which no other machine can dial).
    pub discovery: bool,
    /// How long fetching from them may wait.
    pub fetch: fetch::FetchConfig,
    /// The node's HTTP gateway, recorded for other commands on this store: they ask the peers through it
    /// (`fetch-src`), since only one endpoint may hold the node's key.
    pub gateway: Option<SocketAddr>,
}

/// A running peer door. [`Peering::stop`] ends it; dropping it without does the same, less politely.
pub struct Peering {
    runtime: Option<tokio::runtime::Runtime>,
    router: Router,
    /// Kept so the announcement lives as long as the door (the endpoint holds a clone too).
    _mdns: Option<iroh_mdns_address_lookup::MdnsAddressLookup>,
    addr: EndpointAddr,
    peers: Vec<EndpointAddr>,
    store_dir: PathBuf,
    stats: Arc<PeerStats>,
}

impl Peering {
    /// Start the endpoint and serve the service's store (stock iroh-blobs and `/nixdag/fetch/1`, both
    /// behind the access rule); when peers are named, make them the service's [`MissSource`]
    /// (`crate::service::MissSource`). Records the endpoint in the store for `nixdag peer show`, and
    /// keeps `STORE/peer/status.json` for `nixdag peer status`.
    pub fn start(service: &Arc<Service>, cfg: PeerConfig) -> Result<Peering, PeerError> {
        let store = service.store().clone();
        let store_dir = store.dir().to_path_buf();
        let secret = key::load_or_create(&store_dir)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nixdag-peer")
            .enable_all()
            .build()
            .map_err(PeerError::Runtime)?;
        let stats = Arc::new(PeerStats::default());
        let mut peers = cfg.peers.clone();
        for inv in &cfg.invites {
            if !peers.iter().any(|p| p.id == inv.addr.id) {
                peers.push(inv.addr.clone());
            }
        }
        let (router, addr, ep) = runtime.block_on(async {
            let ep = endpoint::bind(secret, cfg.listen, &peers).await?;
            let blobs = blobs::spawn(blobs::Source::new(store));
            let handler = Gate::new(cfg.access.clone(), BlobsProtocol::new(&blobs, None));
            let fetch = Gate::new(cfg.access.clone(), FetchProtocol::new(service.clone(), stats.clone()));
            // Not gated: whoever presents an invite is not allowed yet (invite.rs bounds what it costs).
            let invites = invite::InviteProtocol::new(store_dir.clone());
            let router = Router::builder(ep.clone())
                .accept(iroh_blobs::ALPN, handler)
                .accept(wire::ALPN, fetch)
                .accept(invite::ALPN, invites)
                .spawn();
            let addr = endpoint::dialable_addr(&ep).await;
            Ok::<_, PeerError>((router, addr, ep))
        })?;
        // A fetcher whenever there is someone to ask, or may be (discovery): its peer list grows as nodes
        // are found.
        let mut mdns = None;
        if !peers.is_empty() || cfg.discovery {
            let fetcher =
                Fetcher::new(ep.clone(), peers.clone(), stats.clone(), cfg.fetch, runtime.handle().clone());
            service.set_miss_source(Arc::new(PeerMisses(fetcher.clone())));
            // Best effort: a machine without multicast still serves and fetches from its named peers.
            if cfg.discovery {
                match runtime.block_on(discovery::start(&ep, fetcher)) {
                    Ok(m) => mdns = Some(m),
                    Err(e) => tracing::warn!("{e}; going on without LAN discovery"),
                }
            }
        }
        for p in &peers {
            stats.known(p.id);
        }
        for inv in cfg.invites.clone() {
            runtime.spawn(present_invite(ep.clone(), inv));
        }
        // The status file, rewritten every second while the endpoint runs.
        let (dir, s) = (store_dir.clone(), stats.clone());
        runtime.spawn(async move {
            loop {
                if let Err(e) = s.snapshot().write(&dir) {
                    tracing::warn!("{e}");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let peering = Peering { runtime: Some(runtime), router, _mdns: mdns, addr, peers, store_dir, stats };
        EndpointRecord::of(&peering.addr, cfg.gateway).write(&peering.store_dir)?;
        Ok(peering)
    }

    /// The endpoint's id and direct addresses.
    pub fn addr(&self) -> &EndpointAddr {
        &self.addr
    }

    /// The peers named on the command line (and the nodes that invited this one).
    pub fn peers(&self) -> &[EndpointAddr] {
        &self.peers
    }

    /// The live counters behind [`Peering::status`] (for the gateway's `/metrics`).
    pub fn stats(&self) -> Arc<PeerStats> {
        self.stats.clone()
    }

    /// What is known about each peer now.
    pub fn status(&self) -> StatusFile {
        self.stats.snapshot()
    }

    /// Close connections, stop the endpoint, remove the endpoint record.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        EndpointRecord::remove_own(&self.store_dir);
        if let Some(rt) = self.runtime.take() {
            let router = self.router.clone();
            let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(3), router.shutdown()).await });
            rt.shutdown_timeout(Duration::from_secs(1));
        }
        StatusFile::remove_own(&self.store_dir);
    }
}

/// Present an invite to the node that made it, until it answers: a node that is down now may be up
/// later (every 5 s, for 10 minutes). The verdict is logged; a refused invite is not presented again.
async fn present_invite(ep: iroh::Endpoint, inv: InviteTicket) {
    const TRIES: u32 = 120;
    for attempt in 1..=TRIES {
        match invite::present(&ep, &inv, Duration::from_secs(10)).await {
            Ok(invite::Verdict::Admitted) => {
                tracing::info!(peer = %inv.addr.id, invite = %inv.id, "invite accepted: admitted by the inviting node");
                return;
            }
            Ok(v) => {
                tracing::error!(peer = %inv.addr.id, invite = %inv.id, "invite {}", v.describe());
                return;
            }
            Err(e) if attempt < TRIES => {
                tracing::warn!(peer = %inv.addr.id, invite = %inv.id, "presenting the invite: {e}; trying again in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => tracing::error!(peer = %inv.addr.id, invite = %inv.id, "presenting the invite: {e}; giving up"),
        }
    }
}

impl Drop for Peering {
    fn drop(&mut self) {
        self.shutdown();
    }
}
