//! Background upkeep of the disk budget: which roots the doors serve (kept in memory and written in one
//! transaction every few seconds, never one write per request), which are being read right now, and the
//! eviction that runs when the store is over `--max-size`: checked every few seconds and at once after
//! an ingest.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::dag::Cid;
use crate::store::{EvictPolicy, Store};

/// How often served times are written, and the budget checked.
const TICK: Duration = Duration::from_secs(5);
/// After an eviction that could not bring the store under budget (everything left is kept), it is not
/// tried again until the store has grown or this long has passed: each try walks every root.
const STUCK_RETRY: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which roots are served and read: shared by the doors (through the service) and the upkeep thread.
#[derive(Default)]
pub(super) struct Usage {
    /// Roots served since the last flush, with when.
    touched: Mutex<HashMap<Cid, u64>>,
    /// Roots with a reader open now, and how many.
    reading: Mutex<HashMap<Cid, usize>>,
}

impl Usage {
    /// A door serves `root` now (a narinfo naming it was answered: its NAR is asked for next).
    pub(super) fn touch(&self, root: Cid) {
        lock(&self.touched).insert(root, crate::store::now_ms());
    }

    /// A door serves `root` now, and reads it until the returned guard is dropped.
    pub(super) fn open(self: &Arc<Self>, root: Cid) -> Reading {
        self.touch(root);
        *lock(&self.reading).entry(root).or_insert(0) += 1;
        Reading { usage: self.clone(), root }
    }

    /// Whether a reader of `root` is open, or it was served since the last flush: eviction keeps it,
    /// so a download is never cut by it, and a NAR served between two downloads of it is not taken for
    /// one last served when the flushed time says.
    pub(super) fn busy(&self, root: &Cid) -> bool {
        lock(&self.reading).contains_key(root) || lock(&self.touched).contains_key(root)
    }

    /// Write the served times gathered since the last call, in one transaction.
    pub(super) fn flush(&self, store: &Store) {
        let batch: Vec<(Cid, u64)> = lock(&self.touched).drain().collect();
        if let Err(e) = store.record_served(&batch) {
            tracing::error!("recording which NARs were served: {e}");
            // Put them back, unless newer times came meanwhile.
            let mut t = lock(&self.touched);
            for (c, at) in batch {
                t.entry(c).or_insert(at);
            }
        }
    }
}

/// An open reader of a root (see [`Usage::open`]).
pub(crate) struct Reading {
    usage: Arc<Usage>,
    root: Cid,
}

impl Drop for Reading {
    fn drop(&mut self) {
        let mut r = lock(&self.usage.reading);
        if let Some(n) = r.get_mut(&self.root) {
            *n -= 1;
            if *n == 0 {
                r.remove(&self.root);
            }
        }
    }
}

/// Called after an eviction removed roots (the gateway drops its cached narinfos).
pub(super) type Hook = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Signal {
    stop: bool,
    nudged: bool,
}

/// The running upkeep thread.
pub(super) struct Upkeep {
    signal: Arc<(Mutex<Signal>, Condvar)>,
    thread: JoinHandle<()>,
}

impl Upkeep {
    pub(super) fn start(
        store: Arc<Store>,
        usage: Arc<Usage>,
        budget: Option<EvictPolicy>,
        hooks: Arc<Mutex<Vec<Hook>>>,
    ) -> Upkeep {
        let signal = Arc::new((Mutex::new(Signal::default()), Condvar::new()));
        let s = signal.clone();
        let thread = std::thread::Builder::new()
            .name("nixdag-upkeep".into())
            .spawn(move || run(&store, &usage, budget, &hooks, &s))
            .expect("spawning the upkeep thread");
        Upkeep { signal, thread }
    }

    /// Something was stored: check the budget now rather than at the next tick.
    pub(super) fn nudge(&self) {
        lock(&self.signal.0).nudged = true;
        self.signal.1.notify_all();
    }

    /// Write what is pending and stop (an eviction under way finishes first).
    pub(super) fn stop(self) {
        lock(&self.signal.0).stop = true;
        self.signal.1.notify_all();
        let _ = self.thread.join();
    }
}

fn run(
    store: &Store,
    usage: &Usage,
    budget: Option<EvictPolicy>,
    hooks: &Mutex<Vec<Hook>>,
    signal: &(Mutex<Signal>, Condvar),
) {
    let mut stuck: Option<(u64, Instant)> = None;
    loop {
        {
            let g = lock(&signal.0);
            let (mut g, _) =
                signal.1.wait_timeout_while(g, TICK, |s| !s.stop && !s.nudged).unwrap_or_else(|p| p.into_inner());
            g.nudged = false;
            if g.stop {
                drop(g);
                usage.flush(store);
                return;
            }
        }
        usage.flush(store);
        let Some(policy) = budget else { continue };
        let stored = match store.stored_bytes() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("disk budget: {e}");
                continue;
            }
        };
        if stored <= policy.max_size {
            stuck = None;
            continue;
        }
        if let Some((at, when)) = stuck {
            if stored <= at && when.elapsed() < STUCK_RETRY {
                continue;
            }
        }
        match store.evict(&policy, &|root| usage.busy(root)) {
            Ok(r) => {
                if r.evicted_nars + r.evicted_files > 0 {
                    for h in lock(hooks).iter() {
                        h();
                    }
                }
                tracing::info!(
                    "disk budget {}: {} -> {} bytes; evicted {} NARs ({} paths) and {} files; freed {} bytes",
                    policy.max_size,
                    r.stored_before,
                    r.stored_after,
                    r.evicted_nars,
                    r.evicted_paths,
                    r.evicted_files,
                    r.gc.disk_bytes_freed
                );
                if r.over_budget {
                    tracing::warn!(
                        "still over the disk budget ({} of {} bytes): the rest is pinned, uploaded, referenced \
                         by those, being read, or in packs another process appends to",
                        r.stored_after,
                        policy.max_size
                    );
                    stuck = Some((r.stored_after, Instant::now()));
                } else {
                    stuck = None;
                }
            }
            Err(e) => {
                tracing::error!("disk budget: eviction failed: {e}");
                stuck = Some((stored, Instant::now()));
            }
        }
    }
}
