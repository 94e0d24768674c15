//! Bridges between async bodies and the synchronous store.
//!
//! Responses are *pulled*: a body's reader task reads its next batch (up to [`BATCH`] bytes) only when
//! there is room for it (a few batches ahead of the socket), each batch by a short task on the blocking
//! pool that returns at once. No thread ever waits on a client (the old design parked a blocking thread
//! per slow reader on a full channel, and ~530 readers that never read froze every other request).
//! Reading runs ahead of sending, so the two overlap on two cores.
//!
//! Every batch holds bytes of a [`Budget`]: one per client address and one for the whole gateway. The
//! bytes are returned when the socket has taken the last piece of the batch, so what slow clients can
//! make the gateway hold is bounded by the budget, not by how many there are.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Bytes per chunk handed to the socket.
pub const CHUNK: usize = 256 * 1024;

/// Bytes one blocking read produces: one wake-up per batch rather than per leaf (thread hand-offs
/// showed up as a fifth of the serving CPU when every 64 KiB leaf crossed alone).
pub const BATCH: usize = 512 * 1024;

/// Request-body frames queued for the ingest thread (frames are small; a few MiB at most).
const UPLOAD_DEPTH: usize = 64;
/// How much of a refused upload is still read (and dropped) so that the refusal reaches the client.
const LINGER_BYTES: u64 = 64 << 20;
/// How long a refused upload is still read; a client that sends slower than this gets the reset.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Bytes response bodies may hold in memory: in all, and per client address.
#[derive(Clone)]
pub struct Budget {
    global: Arc<Semaphore>,
    per_address: usize,
    addresses: Arc<Mutex<HashMap<IpAddr, Arc<Semaphore>>>>,
}

/// One batch's share of a [`Budget`]; dropping it returns the bytes.
pub struct Held {
    _global: OwnedSemaphorePermit,
    _address: OwnedSemaphorePermit,
}

impl Budget {
    /// A budget of `global` bytes in all and `per_address` bytes for any one client address.
    pub fn new(global: usize, per_address: usize) -> Self {
        Budget {
            global: Arc::new(Semaphore::new(global.max(BATCH))),
            per_address: per_address.max(BATCH),
            addresses: Arc::default(),
        }
    }

    fn address(&self, addr: IpAddr) -> Arc<Semaphore> {
        let mut map = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        // Forget addresses that hold nothing, so the map does not grow with every client ever seen.
        if map.len() > 1024 {
            let full = self.per_address;
            map.retain(|_, s| s.available_permits() < full || Arc::strong_count(s) > 1);
        }
        map.entry(addr).or_insert_with(|| Arc::new(Semaphore::new(self.per_address))).clone()
    }

    /// Whether a new body could start now; if not, the caller answers 503 with `Retry-After` instead of
    /// queueing the client. Only the global budget decides: when one address has used up its own share,
    /// its bodies wait for each other (it slows only itself), so 32 parallel downloads from one CI
    /// runner all proceed.
    pub fn has_room(&self) -> bool {
        self.global.available_permits() >= BATCH
    }

    async fn hold(&self, addr: IpAddr) -> Option<Held> {
        let address = self.address(addr).acquire_many_owned(BATCH as u32).await.ok()?;
        let global = self.global.clone().acquire_many_owned(BATCH as u32).await.ok()?;
        Some(Held { _global: global, _address: address })
    }
}

/// The source of a response body: fills `out` with at most `max` bytes per call; an empty `out` means
/// the end. Runs on the blocking pool, one call at a time.
pub trait Produce: Send + 'static {
    /// The next pieces of the body.
    fn next_batch(&mut self, max: usize, out: &mut Vec<Bytes>) -> io::Result<()>;
}

/// A piece of a batch that returns the batch's budget once the last piece is dropped.
struct Budgeted {
    bytes: Bytes,
    _held: Arc<Held>,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Batches read ahead of the one being sent.
const AHEAD: usize = 2;

/// A response body pulled from `producer`: a task reads batches on the blocking pool, each only once
/// there is room for it (at most [`AHEAD`] waiting), holding [`BATCH`] bytes of `budget` per batch until
/// the socket has taken it. While the client does not read, the task waits for room, holding no thread.
pub fn pulled<P: Produce>(producer: P, budget: Budget, client: IpAddr) -> Body {
    let (tx, rx) = mpsc::channel::<io::Result<Vec<Bytes>>>(AHEAD);
    tokio::spawn(async move {
        let mut producer = producer;
        loop {
            // Room first (the client went away: stop), then budget, then one short blocking read.
            let Ok(slot) = tx.reserve().await else { return };
            let Some(held) = budget.hold(client).await else { return };
            let read = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                let r = producer.next_batch(BATCH, &mut out).map(|()| out);
                (producer, r)
            });
            let (back, r) = match read.await {
                Ok(x) => x,
                Err(e) => {
                    slot.send(Err(io::Error::other(format!("reader task failed: {e}"))));
                    return;
                }
            };
            producer = back;
            match r {
                Ok(batch) if batch.is_empty() => return,
                Ok(batch) => {
                    let held = Arc::new(held);
                    let batch =
                        batch.into_iter().map(|bytes| Bytes::from_owner(Budgeted { bytes, _held: held.clone() }));
                    slot.send(Ok(batch.collect()));
                }
                // The client sees a cut-off body (its length or hash check fails); nothing more is read.
                Err(e) => {
                    slot.send(Err(e));
                    return;
                }
            }
        }
    });
    Body::from_stream(Batches { rx, queue: VecDeque::new(), done: false })
}

/// The receiving end: batches unpacked into the body's pieces.
struct Batches {
    rx: mpsc::Receiver<io::Result<Vec<Bytes>>>,
    queue: VecDeque<Bytes>,
    done: bool,
}

impl futures_util::Stream for Batches {
    type Item = io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        loop {
            if let Some(b) = self.queue.pop_front() {
                return Poll::Ready(Some(Ok(b)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(batch))) => self.queue.extend(batch),
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Start pumping `body` into a channel; returns the reader for a blocking consumer and the pump future.
pub fn reader_from_body(body: Body) -> (crate::import::ChannelReader, impl std::future::Future<Output = ()>) {
    use futures_util::StreamExt;
    let (tx, reader) = crate::import::channel(UPLOAD_DEPTH);
    let pump = async move {
        let mut stream = body.into_data_stream();
        while let Some(frame) = stream.next().await {
            let failed = frame.is_err();
            let item = frame.map_err(|e| io::Error::new(io::ErrorKind::UnexpectedEof, format!("upload cut off: {e}")));
            if failed {
                return;
            }
            if tx.send(item).await.is_err() {
                // The consumer refused the upload early (bad compression, too large). Closing now, with the
                // client's bytes unread in the socket, makes the kernel send a reset that can destroy our
                // error reply before the client reads it; so read on and discard, within a bound, as nginx's
                // lingering close does.
                let mut left = LINGER_BYTES;
                let drain = async {
                    while let Some(Ok(b)) = stream.next().await {
                        left = left.saturating_sub(b.len() as u64);
                        if left == 0 {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(LINGER_TIME, drain).await;
                return;
            }
        }
    };
    (reader, pump)
}

