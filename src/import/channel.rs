//! Bytes that arrive on an async task (a request body, a download) read by a blocking ingest.
//!
//! The ingest is synchronous (hashing, chunking, compressing, fsync) and runs on a blocking thread; the
//! bytes come from tokio. A bounded channel between them keeps memory at `depth` pieces, and makes a slow
//! ingest slow the sender down instead of buffering.

use std::io::{self, Read};

use bytes::Bytes;
use tokio::sync::mpsc;

/// The sending half: send `Ok(bytes)`, or an `Err` that the reader returns (a cut-off upload), then drop.
pub type ChannelSender = mpsc::Sender<io::Result<Bytes>>;

/// A blocking reader of what the sender sends; EOF when the sender is dropped.
pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

/// A channel of at most `depth` pieces in flight.
pub fn channel(depth: usize) -> (ChannelSender, ChannelReader) {
    let (tx, rx) = mpsc::channel(depth);
    (tx, ChannelReader { rx, cur: Bytes::new() })
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
