//! The cache warmer (`nixdag warm`): fill the store with store paths and their closures ahead of the
//! clients that will ask for them, from upstream binary caches or from this machine's Nix store.
//!
//! Two passes over the closure. Discovery walks References from the roots, `jobs` lookups at a time:
//! a path this store has (its NAR whole) is skipped and its references are read from its own narinfo,
//! so a rerun after a kill asks upstreams only about what is missing; any other is looked up in the
//! [`Source`] (narinfo signature checked there). Then the fetch pass stores paths dependencies first,
//! `jobs` at a time, each NAR downloaded once and committed with its narinfo in one ingest (so a kill
//! loses at most the paths in flight): a path is never stored before what it references, and a path
//! whose reference failed fails too. A failure of one path never stops the others; each is reported.
//!
//! `source.rs` has the [`Source`] trait and the upstream caches as one, `local.rs` this machine's Nix store
//! as the other, `plan.rs` the two passes.

mod local;
mod plan;
mod source;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use self::local::LocalStore;
pub use self::source::{Source, UpstreamSource};
use crate::nix::store_path::StorePath;
use crate::service::Service;

/// What happened to one path.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Stored now.
    Warmed {
        /// Where it came from (an upstream URL, or `local`).
        from: String,
        /// Its NAR's size.
        nar_size: u64,
        /// Bytes of new blocks it added (the rest was in the store already).
        added: u64,
    },
    /// In the store already.
    Present,
    /// Not stored, and why.
    Failed(String),
}

/// Progress, as it happens. Called from worker threads.
pub trait Observer: Sync {
    /// Discovery is over: `total` paths in the closures, `present` of them stored already, `to_fetch`
    /// to store (`nar_bytes` of NARs in all).
    fn planned(&self, _total: usize, _present: usize, _to_fetch: usize, _nar_bytes: u64) {}
    /// A path is settled.
    fn done(&self, _path: &StorePath, _outcome: &Outcome) {}
}

/// An observer that says nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// Byte counters a progress display can read while the warmer runs.
#[derive(Debug, Default)]
pub struct Meter {
    /// Bytes received from upstreams (compressed, as sent).
    pub downloaded: Arc<AtomicU64>,
}

impl Meter {
    /// Bytes received so far.
    pub fn downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }
}

/// The end of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Paths in the closures of the roots (those found, and those that failed).
    pub paths: usize,
    /// Paths stored by this run.
    pub warmed: usize,
    /// Paths in the store already.
    pub skipped: usize,
    /// Paths that could not be stored, with the reason.
    pub failed: Vec<Failure>,
    /// Paths stored from each source.
    pub from: std::collections::BTreeMap<String, usize>,
    /// Bytes received from upstreams (compressed, as sent).
    pub bytes_downloaded: u64,
    /// Size of the NARs stored by this run.
    pub nar_bytes: u64,
    /// Bytes of new blocks those NARs added (before the store's compression).
    pub bytes_added: u64,
    /// `nar_bytes - bytes_added`: what was in the store already, shared with other paths.
    pub dedup_saving: u64,
    /// Wall time.
    pub seconds: f64,
}

/// A path that was not stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    /// The store path.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// Store `roots` and their closures from `source`, `jobs` paths at a time.
pub fn warm(
    service: &Arc<Service>,
    source: &dyn Source,
    roots: &[StorePath],
    jobs: usize,
    observer: &dyn Observer,
) -> Summary {
    let started = std::time::Instant::now();
    let plan = plan::discover(service, source, roots, jobs.max(1));
    let outcomes = plan::fetch(service, source, plan, jobs.max(1), observer);
    let mut s = Summary { paths: outcomes.len(), ..Summary::default() };
    for (path, outcome) in outcomes {
        match outcome {
            Outcome::Warmed { from, nar_size, added } => {
                s.warmed += 1;
                s.nar_bytes += nar_size;
                s.bytes_added += added;
                *s.from.entry(from).or_default() += 1;
            }
            Outcome::Present => s.skipped += 1,
            Outcome::Failed(reason) => s.failed.push(Failure { path: path.to_absolute(), reason }),
        }
    }
    s.failed.sort_by(|a, b| a.path.cmp(&b.path));
    s.dedup_saving = s.nar_bytes.saturating_sub(s.bytes_added);
    s.bytes_downloaded = source.meter().downloaded();
    s.seconds = started.elapsed().as_secs_f64();
    s
}
