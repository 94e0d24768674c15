//! Bridges between async bodies and the synchronous store: bounded channels, so memory stays flat
//! whatever the NAR size and a slow client slows the reader instead of filling RAM.

use std::io::{self, Read, Write};

use axum::body::Body;
use bytes::Bytes;
use tokio::sync::mpsc;

/// Chunks in flight per stream (each up to [`CHUNK`] bytes).
const DEPTH: usize = 8;
/// Bytes per chunk sent to the client.
pub const CHUNK: usize = 256 * 1024;

/// A response body fed by a blocking producer that writes into the returned [`ChannelWriter`].
pub fn body_from_blocking(produce: impl FnOnce(&mut ChannelWriter) -> io::Result<()> + Send + 'static) -> Body {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(DEPTH);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter { tx, buf: Vec::with_capacity(CHUNK) };
        let r = produce(&mut w).and_then(|()| w.flush());
        if let Err(e) = r {
            // The client sees a cut-off body; Nix then checks the hash and retries elsewhere.
            if e.kind() != io::ErrorKind::BrokenPipe {
                eprintln!("nixdag gateway: stream failed: {e}");
            }
            let _ = w.tx.blocking_send(Err(e));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    Body::from_stream(stream)
}

/// A response body fed by a blocking producer that hands over ready-made chunks through `send`
/// (no copying: leaf slices go to the socket as they are).
pub fn body_from_chunks(
    produce: impl FnOnce(&mut dyn FnMut(Bytes) -> io::Result<()>) -> io::Result<()> + Send + 'static,
) -> Body {
    body_from_blocking(move |w| {
        let tx = w.tx.clone();
        produce(&mut |b: Bytes| {
            tx.blocking_send(Ok(b)).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
        })
    })
}

/// The producer's end of a response body.
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
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
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(DEPTH);
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
