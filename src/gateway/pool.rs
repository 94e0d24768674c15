//! A small thread pool for lookups (narinfos, listings, completeness checks), apart from the blocking
//! pool that streams bodies, so a flood of downloads never delays the answer to "do you have it?".

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use super::error::AppError;

type Job = Box<dyn FnOnce() + Send>;

/// Fixed threads fed from a bounded queue; a full queue is answered 503, not waited on.
pub struct Lookups {
    tx: SyncSender<Job>,
}

impl Lookups {
    /// `threads` workers and room for `queue` waiting jobs.
    pub fn new(threads: usize, queue: usize) -> Self {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("nixdag-lookup-{i}")).spawn(move || worker(&rx));
            if let Err(e) = spawned {
                tracing::error!("cannot start lookup thread: {e}");
            }
        }
        Lookups { tx }
    }

    /// Run `f` on the pool and wait (asynchronously) for its answer.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
    ) -> Result<T, AppError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(AppError::Busy("too many lookups waiting")),
            Err(TrySendError::Disconnected(_)) => return Err(AppError::internal("lookup pool stopped")),
        }
        // The sender is dropped without an answer only when the job panicked (redb does on some index
        // damage): a fault of ours, logged with a hint, not a hang.
        rx.await.map_err(|_| {
            AppError::internal("a lookup failed unexpectedly; the index may be damaged: run `nixdag verify`")
        })?
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}
