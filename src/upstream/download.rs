//! A NAR download as the synchronous stream the ingest reads: the body pulled piece by piece (each
//! within the idle timeout), decompressed as it arrives, cut off past the signed NarSize and, when the
//! narinfo gives them, checked against FileSize and FileHash. The NarHash is checked by the ingest
//! itself (`import::add_nar` with the narinfo), which commits nothing when it differs.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sha2::Digest;

use super::cache::nar_location;
use super::{Upstream, UpstreamError};
use crate::nix::compression::Decoder;
use crate::nix::hash::HashAlgo;
use crate::nix::narinfo::NarInfo;

/// The decompressed NAR of one download. Read it from a thread outside the runtime (it blocks on the
/// runtime for each piece of the body).
pub struct NarDownload {
    decoder: Decoder<RawBody>,
    produced: u64,
    nar_size: u64,
}

impl NarDownload {
    /// Start downloading `info`'s NAR from `upstream` (`info` checked by [`super::Upstreams::lookup`]);
    /// `received` counts compressed bytes as they arrive (for progress).
    pub fn open(
        upstream: &Upstream,
        info: &NarInfo,
        rt: &tokio::runtime::Handle,
        received: Option<Arc<AtomicU64>>,
    ) -> Result<NarDownload, UpstreamError> {
        let (_, compression) = nar_location(info)?;
        let (url, resp) = rt.block_on(upstream.nar(info))?;
        // A compressed NAR is never much larger than the NAR (xz and zstd add a few bytes per block).
        let limit = info.file_size.unwrap_or(info.nar_size + info.nar_size / 16 + (1 << 20));
        let file_hash = info
            .file_hash
            .as_ref()
            .filter(|h| h.algo == HashAlgo::Sha256)
            .map(|h| (sha2::Sha256::new(), h.digest.clone()));
        let raw = RawBody {
            resp,
            rt: rt.clone(),
            url,
            idle: upstream.idle_timeout(),
            pending: Bytes::new(),
            received: 0,
            limit,
            exact: info.file_size,
            file_hash,
            counter: received,
            done: false,
        };
        let decoder = Decoder::new(compression, raw).map_err(|e| UpstreamError::BadNarUrl {
            url: info.url.clone().unwrap_or_default(),
            why: format!("starting decompression: {e}"),
        })?;
        Ok(NarDownload { decoder, produced: 0, nar_size: info.nar_size })
    }
}

impl Read for NarDownload {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.decoder.read(out)?;
        self.produced += n as u64;
        if self.produced > self.nar_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: the NAR is longer than its signed NarSize {}", self.decoder.get_mut().url, self.nar_size),
            ));
        }
        if n == 0 && !out.is_empty() {
            self.decoder.get_mut().finish()?;
        }
        Ok(n)
    }
}

/// The compressed body, as it arrives.
struct RawBody {
    resp: reqwest::Response,
    rt: tokio::runtime::Handle,
    url: String,
    idle: std::time::Duration,
    pending: Bytes,
    received: u64,
    limit: u64,
    exact: Option<u64>,
    file_hash: Option<(sha2::Sha256, Vec<u8>)>,
    counter: Option<Arc<AtomicU64>>,
    done: bool,
}

impl RawBody {
    fn err(&self, kind: io::ErrorKind, what: String) -> io::Error {
        io::Error::new(kind, format!("{}: {what}", self.url))
    }

    /// At the end of the decompressed stream: the rest of the body (a decoder may stop before the
    /// file's end) must be empty, and the file must have its signed size and hash.
    fn finish(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while self.read(&mut buf)? > 0 {}
        if let Some(n) = self.exact.filter(|n| *n != self.received) {
            return Err(self.err(io::ErrorKind::InvalidData, format!("FileSize is {n}, got {} bytes", self.received)));
        }
        if let Some((sha, want)) = self.file_hash.take() {
            if sha.finalize().as_slice() != want.as_slice() {
                return Err(self.err(io::ErrorKind::InvalidData, "the file does not match its FileHash".into()));
            }
        }
        Ok(())
    }
}

impl Read for RawBody {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            if self.done {
                return Ok(0);
            }
            let next = self.rt.block_on(async { tokio::time::timeout(self.idle, self.resp.chunk()).await });
            match next {
                Err(_) => {
                    return Err(
                        self.err(io::ErrorKind::TimedOut, format!("no data for {} s", self.idle.as_secs()))
                    )
                }
                Ok(Err(e)) => return Err(self.err(io::ErrorKind::ConnectionAborted, format!("download failed: {e}"))),
                Ok(Ok(None)) => self.done = true,
                Ok(Ok(Some(b))) => {
                    self.received += b.len() as u64;
                    if self.received > self.limit {
                        return Err(self.err(
                            io::ErrorKind::InvalidData,
                            format!("the NAR file is larger than {} bytes", self.limit),
                        ));
                    }
                    if let Some((sha, _)) = &mut self.file_hash {
                        sha.update(&b);
                    }
                    if let Some(c) = &self.counter {
                        c.fetch_add(b.len() as u64, Ordering::Relaxed);
                    }
                    self.pending = b;
                }
            }
        }
        let n = out.len().min(self.pending.len());
        out[..n].copy_from_slice(&self.pending[..n]);
        bytes::Buf::advance(&mut self.pending, n);
        Ok(n)
    }
}
