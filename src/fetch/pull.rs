//! The gateway's pull-through hashed mirror (`serve --tarball-mirror URL`): a file missing here is
//! fetched from the upstream mirrors, checked against its hash, kept, then served.
//!
//! Concurrent requests for one hash share one download. A mirror that failed to answer (unreachable,
//! timed out, 5xx) is skipped for [`DEAD_FOR`] so that requests do not wait on it again; one that said
//! "not here" is not held against it. Downloads run on a runtime of their own, so a client that goes
//! away does not cancel a download others wait for, and the serving threads never do upstream work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, Semaphore};

use super::{FetchError, FetchOptions, Fetcher, Miss, Progress, Source};
use crate::dag::Cid;
use crate::nix::hash::NixHash;
use crate::store::Store;

/// How long a mirror that failed to answer is skipped.
const DEAD_FOR: Duration = Duration::from_secs(30);
/// How long a request waits for one of the download slots before it is told to come back (503).
const SLOT_WAIT: Duration = Duration::from_secs(60);

/// A stored file: its SHA-256, root and size (what [`crate::service::Service::file`] returns).
pub type FileFound = ([u8; 32], Cid, u64);

type Flight = Arc<OnceCell<Result<FileFound, Arc<FetchError>>>>;

/// Upstream hashed mirrors for a gateway.
pub struct MirrorPull {
    fetcher: Fetcher,
    store: Arc<Store>,
    mirrors: Vec<String>,
    /// `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    flights: Mutex<HashMap<NixHash, Flight>>,
    dead: Mutex<HashMap<String, Instant>>,
    slots: Arc<Semaphore>,
}

impl MirrorPull {
    /// Pull from `mirrors` (tried in order) into `store`, at most `at_once` downloads at a time.
    pub fn new(
        store: Arc<Store>,
        mirrors: Vec<String>,
        opts: FetchOptions,
        at_once: usize,
    ) -> Result<Arc<MirrorPull>, FetchError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("nixdag-mirror")
            .enable_all()
            .build()
            .map_err(|e| FetchError::Io { context: "starting the mirror runtime".into(), source: e })?;
        Ok(Arc::new(MirrorPull {
            fetcher: Fetcher::new(opts)?,
            store,
            mirrors,
            runtime: Some(runtime),
            flights: Mutex::new(HashMap::new()),
            dead: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(at_once.max(1))),
        }))
    }

    /// The file with `hash`, fetched from a mirror into the store unless another request is already
    /// fetching it (then this waits for that one).
    pub async fn fetch(self: &Arc<Self>, hash: &NixHash) -> Result<FileFound, Arc<FetchError>> {
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            flights.entry(hash.clone()).or_default().clone()
        };
        let me = self.clone();
        let wanted = hash.clone();
        let result = flight
            .get_or_init(|| async move {
                let failed = |e: std::io::Error| Err(Arc::new(FetchError::Io { context: "the mirror download".into(), source: e }));
                let Some(rt) = me.runtime.as_ref() else { return failed(std::io::Error::other("shutting down")) };
                let job = rt.spawn({
                    let me = me.clone();
                    async move { me.download(&wanted).await.map_err(Arc::new) }
                });
                job.await.unwrap_or_else(|e| failed(std::io::Error::other(e)))
            })
            .await
            .clone();
        // The next request after this one asks the store (a success) or the mirrors again (a failure).
        self.flights.lock().unwrap_or_else(|p| p.into_inner()).remove(hash);
        result
    }

    async fn download(&self, hash: &NixHash) -> Result<FileFound, FetchError> {
        let _slot = match tokio::time::timeout(SLOT_WAIT, self.slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(e)) => {
                return Err(FetchError::Io { context: "waiting for a download slot".into(), source: std::io::Error::other(e) })
            }
            Err(_) => return Err(FetchError::Busy),
        };
        // Another request may have stored it while this one waited.
        if let Some((sha, entry)) = self.store.file(hash)? {
            return Ok((sha, entry.root_cid()?, entry.size));
        }
        let now = Instant::now();
        let live: Vec<Source> = {
            let dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
            self.mirrors
                .iter()
                .filter(|m| dead.get(*m).is_none_or(|until| *until <= now))
                .map(|m| Source::Mirror(m.clone()))
                .collect()
        };
        let name = format!("{}-{}", hash.algo, hash.to_hex());
        let result = self.fetcher.fetch(&self.store, hash, &live, &name, None, &Progress::default()).await;
        if let Err(FetchError::Failed { misses, .. }) = &result {
            let mut dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
            for (url, miss) in misses {
                if matches!(miss, Miss::Network(_)) {
                    if let Some(m) = self.mirrors.iter().find(|m| url.starts_with(m.trim_end_matches('/'))) {
                        tracing::warn!("mirror {m} failed ({miss}); skipping it for {}s", DEAD_FOR.as_secs());
                        dead.insert(m.clone(), Instant::now() + DEAD_FOR);
                    }
                }
            }
        }
        let added = result?.added;
        Ok((added.sha256, added.root, added.size))
    }
}

impl std::fmt::Debug for MirrorPull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorPull").field("mirrors", &self.mirrors).finish_non_exhaustive()
    }
}

impl Drop for MirrorPull {
    fn drop(&mut self) {
        // Dropping a runtime from inside another one panics; let its threads go in the background.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
