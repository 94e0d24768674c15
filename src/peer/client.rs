//! The node's peers asked by a command that runs while no `serve` does (`fetch-src --peer`): an endpoint
//! of its own with the node's key (so the peers' allow lists know it), that dials out and serves nothing.
//!
//! While a `serve` with peering runs on the same store, its endpoint holds the key: a second endpoint
//! with the same id would take packets meant for the first. Commands then ask through that `serve`'s
//! gateway instead ([`super::EndpointRecord::gateway`]).

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use iroh::EndpointAddr;

use super::fetch::{FetchConfig, FetchError, Fetcher};
use super::{endpoint, key, PeerError, PeerStats};
use crate::fetch::Nearby;
use crate::nix::hash::NixHash;
use crate::store::Store;

/// A client-only endpoint and its fetcher.
pub struct PeerClient {
    runtime: Option<tokio::runtime::Runtime>,
    endpoint: iroh::Endpoint,
    fetcher: Arc<Fetcher>,
    count: usize,
}

impl PeerClient {
    /// Bind an endpoint with the key of the store in `store_dir` and ask `peers`. It binds loopback when
    /// every peer is on loopback, else every interface (it accepts no connection either way).
    pub fn start(store_dir: &Path, peers: Vec<EndpointAddr>, cfg: FetchConfig) -> Result<PeerClient, PeerError> {
        let secret = key::load_or_create(store_dir)?;
        let local_only = peers.iter().all(|p| p.ip_addrs().all(|a| a.ip().is_loopback()));
        let ip = if local_only { Ipv4Addr::LOCALHOST } else { Ipv4Addr::UNSPECIFIED };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("nixdag-peer-client")
            .enable_all()
            .build()
            .map_err(PeerError::Runtime)?;
        let endpoint = runtime.block_on(endpoint::bind(secret, SocketAddr::from((ip, 0)), &peers))?;
        let count = peers.len();
        let stats = Arc::new(PeerStats::default());
        let fetcher = Fetcher::new(endpoint.clone(), peers, stats, cfg, runtime.handle().clone());
        Ok(PeerClient { runtime: Some(runtime), endpoint, fetcher, count })
    }
}

impl Nearby for PeerClient {
    fn label(&self) -> String {
        format!("peers ({} asked)", self.count)
    }

    fn open(&self, store: &Arc<Store>, hash: &NixHash) -> Result<Option<crate::fetch::FileStream>, String> {
        match self.fetcher.stream_file(store.clone(), hash) {
            Ok(found) => Ok(found.map(|(s, size)| (Box::new(s) as Box<dyn Read + Send>, size))),
            Err(FetchError::Store(e)) => Err(format!("the store: {e}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Drop for PeerClient {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            let ep = self.endpoint.clone();
            // Dropped where a runtime may be running (the command's own): its own thread may block.
            let closed = std::thread::spawn(move || {
                let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), ep.close()).await });
                rt.shutdown_background();
            });
            let _ = closed.join();
        }
    }
}
