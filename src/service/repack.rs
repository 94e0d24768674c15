//! The background repack: converts the tarballs ingests queued (`nixdag repack`) whenever the queue has
//! stopped growing, so a program that embeds the service, not only `nixdag serve`, gets it.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::store::Store;

/// A running background repack.
pub(super) struct Background {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl Background {
    pub(super) fn start(store: Arc<Store>, idle: Duration) -> Background {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = run(store, idle, stop.clone());
        Background { stop, thread }
    }

    /// Ask it to stop after the stream under way, and wait.
    pub(super) fn stop(self) {
        *self.stop.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.stop.1.notify_all();
        let _ = self.thread.join();
    }
}

/// Convert queued tarballs one at a time whenever the queue has not grown for `idle`, until `stop`.
/// Uploads go on meanwhile: a repack commits like any ingest, and a crash mid-way loses only its work.
fn run(store: Arc<Store>, idle: Duration, stop: Arc<(Mutex<bool>, Condvar)>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let (lock, cvar) = &*stop;
        let mut last = usize::MAX;
        loop {
            let stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
            let (stopped, _) = cvar.wait_timeout_while(stopped, idle, |s| !*s).unwrap_or_else(|p| p.into_inner());
            if *stopped {
                return;
            }
            drop(stopped);
            let queued = match store.repack_queue() {
                Ok(q) => q.len(),
                Err(e) => {
                    tracing::error!("background repack: {e}");
                    continue;
                }
            };
            // Still growing (an upload or warm-up is under way): wait for it to settle.
            if queued == 0 || queued > last {
                last = queued;
                continue;
            }
            for _ in 0..queued {
                if *lock.lock().unwrap_or_else(|p| p.into_inner()) {
                    return;
                }
                let mut log = |root: &crate::dag::Cid, bytes: u64, outcome| {
                    tracing::info!("background repack: {root} ({bytes} bytes): {outcome:?}");
                };
                match crate::import::repack(&store, Some(1), &mut log) {
                    Ok(r) if r.left == 0 => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!("background repack: {e}");
                        break;
                    }
                }
            }
            last = store.repack_queue().map(|q| q.len()).unwrap_or(usize::MAX);
        }
    })
}
