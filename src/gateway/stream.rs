//! Bridges between async bodies and the synchronous store: bounded channels, so memory stays flat
//! whatever the NAR size and a slow client slows the reader instead of filling RAM.

use std::io::{self, Read, Write};

use axum::body::Body;
use bytes::Bytes;
use tokio::sync::mpsc;

/// Batches queued per stream: with [`BATCH`] this bounds a stream's buffered bytes (about
/// (DEPTH + 1) × BATCH), so 32 concurrent 1 GiB downloads stay far under 200 MiB.
const DEPTH: usize = 2;
/// Bytes per chunk sent to the client.
pub const CHUNK: usize = 256 * 1024;

/// Request-body frames queued for the ingest thread (frames are small; a few MiB at most).
const UPLOAD_DEPTH: usize = 64;

/// Bytes gathered before a batch crosses to the async side: one wake-up per batch rather than per
/// leaf (thread hand-offs showed up as a fifth of the serving CPU when every 64 KiB leaf crossed alone).
const BATCH: usize = 512 * 1024;

type Batch = io::Result<Vec<Bytes>>;

/// A response body fed by a blocking producer that writes into the returned [`ChannelWriter`].
pub fn body_from_blocking(produce: impl FnOnce(&mut ChannelWriter) -> io::Result<()> + Send + 'static) -> Body {
    let (tx, rx) = mpsc::channel::<Batch>(DEPTH);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter { tx, buf: Vec::with_capacity(CHUNK), batch: Vec::new(), batched: 0 };
        let r = produce(&mut w).and_then(|()| w.flush());
        if let Err(e) = r {
            // The client sees a cut-off body; Nix then checks the hash and retries elsewhere.
            if e.kind() != io::ErrorKind::BrokenPipe {
                eprintln!("nixdag gateway: stream failed: {e}");
            }
            let _ = w.tx.blocking_send(Err(e));
        }
    });
    // Unpack batches into the body's chunks.
    let stream = futures_util::stream::unfold((rx, std::collections::VecDeque::new()), |(mut rx, mut q)| async move {
        loop {
            if let Some(b) = q.pop_front() {
                return Some((Ok(b), (rx, q)));
            }
            match rx.recv().await? {
                Ok(batch) => q.extend(batch),
                Err(e) => return Some((Err(e), (rx, q))),
            }
        }
    });
    Body::from_stream(stream)
}

/// A response body fed by a blocking producer that hands over ready-made chunks through `send`
/// (no copying: leaf slices go to the socket as they are).
pub fn body_from_chunks(
    produce: impl FnOnce(&mut dyn FnMut(Bytes) -> io::Result<()>) -> io::Result<()> + Send + 'static,
) -> Body {
    body_from_blocking(move |w| produce(&mut |b: Bytes| w.push(b)))
}

/// The producer's end of a response body.
pub struct ChannelWriter {
    tx: mpsc::Sender<Batch>,
    buf: Vec<u8>,
    batch: Vec<Bytes>,
    batched: usize,
}

impl ChannelWriter {
    /// Queue a ready chunk; a full batch is sent.
    fn push(&mut self, b: Bytes) -> io::Result<()> {
        self.batched += b.len();
        self.batch.push(b);
        if self.batched >= BATCH {
            self.send_batch()?;
        }
        Ok(())
    }

    fn send_batch(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batched = 0;
        self.tx
            .blocking_send(Ok(std::mem::take(&mut self.batch)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
            self.push(chunk)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
            self.batch.push(chunk);
        }
        self.send_batch()
    }
}

/// A blocking reader over a request body that an async task pumps in.
pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

/// Start pumping `body` into a channel; returns the reader for a blocking consumer and the pump future.
pub fn reader_from_body(body: Body) -> (ChannelReader, impl std::future::Future<Output = ()>) {
    use futures_util::StreamExt;
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(UPLOAD_DEPTH);
    let pump = async move {
        let mut stream = body.into_data_stream();
        while let Some(frame) = stream.next().await {
            let failed = frame.is_err();
            let item = frame.map_err(|e| io::Error::new(io::ErrorKind::UnexpectedEof, format!("upload cut off: {e}")));
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    };
    (ChannelReader { rx, cur: Bytes::new() }, pump)
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}
