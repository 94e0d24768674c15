//! The narinfo-miss hook: where the service turns when its store lacks a path. [`Fallback`] is the one
//! seam (upstream caches here; other sources, such as peers, fit the same two calls), and
//! [`UpstreamFallback`] is `serve --upstream`: a pull-through cache over [`Upstreams`].
//!
//! A miss asks the upstreams (in parallel, within a deadline, so a slow or dead upstream never holds a
//! request longer); a path none has is remembered as missing for a short while. A narinfo found is
//! answered at once (signature checked against the trusted keys first), and its NAR is pulled when a
//! client asks for it: one download per NAR however many clients ask, streamed to each of them while
//! it is being stored ([`super::flight`]). Once stored, the path is served from the store like any other.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::flight::{Flights, Pulled};
use super::Service;
use crate::nix::hash::NarHash;
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePathHash;
use crate::upstream::{as_stored, Lookup, NarDownload, Upstreams};

/// What the service asks when its store lacks something.
pub trait Fallback: Send + Sync {
    /// A verified narinfo for a path the store lacks, or `None` (no source has it, or none answered
    /// within the deadline). Called on a lookup thread; may block up to the deadline.
    fn narinfo(&self, hash: &StorePathHash) -> Option<NarInfo>;
    /// The NAR with this hash, which the store lacks, as it is being stored: `None` when no narinfo
    /// this fallback answered names it.
    fn nar(&self, service: &Arc<Service>, hash: &NarHash) -> Option<Pulled>;
}

/// How `serve --upstream` treats its upstreams.
#[derive(Debug, Clone, Copy)]
pub struct PullConfig {
    /// Longest a narinfo miss waits for the upstreams.
    pub deadline: Duration,
    /// How long "no upstream has it" is remembered.
    pub negative_ttl: Duration,
    /// Longest a client's NAR stream waits for the download to make progress.
    pub idle: Duration,
}

/// Entries kept in the bounded maps below before they are cleared (a few MiB at most).
const MAX_REMEMBERED: usize = 16_384;

/// A pull-through cache over upstream binary caches.
pub struct UpstreamFallback {
    upstreams: Arc<Upstreams>,
    rt: tokio::runtime::Handle,
    cfg: PullConfig,
    /// Narinfos answered, by NarHash: what a NAR request may pull, and from where.
    answered: Mutex<HashMap<NarHash, (usize, NarInfo)>>,
    /// Paths no upstream had, until when.
    missing: Mutex<HashMap<StorePathHash, Instant>>,
    /// Downloads under way.
    flights: Flights,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl UpstreamFallback {
    /// Upstreams asked through `rt` (a runtime of their own: lookups block on it from other threads).
    pub fn new(upstreams: Arc<Upstreams>, rt: tokio::runtime::Handle, cfg: PullConfig) -> Self {
        UpstreamFallback {
            upstreams,
            rt,
            cfg,
            answered: Mutex::default(),
            missing: Mutex::default(),
            flights: Flights::default(),
        }
    }
}

impl Fallback for UpstreamFallback {
    fn narinfo(&self, hash: &StorePathHash) -> Option<NarInfo> {
        if lock(&self.missing).get(hash).is_some_and(|until| Instant::now() < *until) {
            return None;
        }
        let lookup = self.rt.block_on(async { tokio::time::timeout(self.cfg.deadline, self.upstreams.lookup(hash)).await });
        match lookup {
            Ok(Lookup::Found { upstream, info }) => {
                let mut answered = lock(&self.answered);
                if answered.len() >= MAX_REMEMBERED {
                    answered.clear();
                }
                answered.insert(info.nar_hash, (upstream, (*info).clone()));
                Some(as_stored(*info))
            }
            Ok(Lookup::Missing) => {
                self.remember_missing(hash);
                None
            }
            Ok(Lookup::Refused(why)) => {
                tracing::warn!("upstream narinfo of {hash} refused: {why}");
                self.remember_missing(hash);
                None
            }
            Ok(Lookup::Failed(why)) => {
                tracing::warn!("no upstream answered for {hash}: {why}");
                None
            }
            Err(_) => {
                tracing::warn!("no upstream answered for {hash} within {:?}", self.cfg.deadline);
                None
            }
        }
    }

    fn nar(&self, service: &Arc<Service>, hash: &NarHash) -> Option<Pulled> {
        if let Some(p) = self.flights.join(hash, self.cfg.idle) {
            return Some(p);
        }
        let (upstream, info) = lock(&self.answered).get(hash).cloned()?;
        let up = self.upstreams.list()[upstream].clone();
        let rt = self.rt.clone();
        let from = up.url().to_string();
        self.flights.start(service, as_stored(info.clone()), from, self.cfg.idle, false, move || {
            NarDownload::open(&up, &info, &rt, None).map(|d| Box::new(d) as Box<dyn Read + Send>).map_err(|e| e.to_string())
        })
    }
}

impl UpstreamFallback {
    fn remember_missing(&self, hash: &StorePathHash) {
        let mut missing = lock(&self.missing);
        if missing.len() >= MAX_REMEMBERED {
            let now = Instant::now();
            missing.retain(|_, until| *until > now);
        }
        if missing.len() < MAX_REMEMBERED {
            missing.insert(*hash, Instant::now() + self.cfg.negative_ttl);
        }
    }
}

