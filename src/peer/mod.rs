//! Peers: a door beside the HTTP gateway that serves the store's blocks over iroh.
//!
//! When peering is on, `serve` starts one iroh endpoint (its key in the store, [`key`]), offline
//! ([`endpoint`]: no relay, no DNS, loopback by default), that speaks the stock iroh-blobs protocol:
//! every block is a blob named by the BLAKE3 digest of its CID, served with bao-verified ranges
//! computed from the bytes the store returns ([`blobs`]); a stored NAR or file is one HashSeq blob
//! of its leaves ([`seqs`]). Only the endpoint ids the node trusts are served ([`access`]).
//! docs/PEERS.md describes the wire and the choices.
//!
//! The endpoint runs on a multi-thread tokio runtime of its own: the gateway runs one single-threaded
//! runtime per core, and iroh's socket actors want a runtime that is always polled.

pub mod access;
pub mod blobs;
pub mod endpoint;
pub mod fetch;
mod error;
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
pub use self::endpoint::EndpointRecord;
pub use self::error::PeerError;
pub use self::fetch::{FetchConfig, Fetcher, PeerMisses};
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
    /// How long fetching from them may wait.
    pub fetch: fetch::FetchConfig,
}

/// A running peer door. [`Peering::stop`] ends it; dropping it without does the same, less politely.
pub struct Peering {
    runtime: Option<tokio::runtime::Runtime>,
    router: Router,
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
        let (router, addr, ep) = runtime.block_on(async {
            let ep = endpoint::bind(secret, cfg.listen, &cfg.peers).await?;
            let blobs = blobs::spawn(blobs::Source::new(store));
            let handler = Gate::new(cfg.access.clone(), BlobsProtocol::new(&blobs, None));
            let fetch = Gate::new(cfg.access.clone(), FetchProtocol::new(service.clone(), stats.clone()));
            let router =
                Router::builder(ep.clone()).accept(iroh_blobs::ALPN, handler).accept(wire::ALPN, fetch).spawn();
            let addr = endpoint::dialable_addr(&ep).await;
            Ok::<_, PeerError>((router, addr, ep))
        })?;
        if !cfg.peers.is_empty() {
            let fetcher = Fetcher::new(ep, cfg.peers.clone(), stats.clone(), cfg.fetch, runtime.handle().clone());
            service.set_miss_source(Arc::new(PeerMisses(fetcher)));
        }
        for p in &cfg.peers {
            stats.known(p.id);
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
        let peering = Peering { runtime: Some(runtime), router, addr, peers: cfg.peers, store_dir, stats };
        EndpointRecord::of(&peering.addr).write(&peering.store_dir)?;
        Ok(peering)
    }

    /// The endpoint's id and direct addresses.
    pub fn addr(&self) -> &EndpointAddr {
        &self.addr
    }

    /// The peers named on the command line.
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

impl Drop for Peering {
    fn drop(&mut self) {
        self.shutdown();
    }
}
