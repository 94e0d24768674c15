//! `PUT /nix-cache-info`, `PUT /nar/…` and `PUT /<hash>.narinfo`: what `nix copy --to http://…` sends.
//!
//! A NAR upload is decompressed, validated and chunked while it streams in; the SHA-256 of the bytes
//! received must equal the hash in its name (Nix names uploads by their file hash) before the ingest
//! commits, so a truncated or corrupted upload leaves nothing behind. A narinfo is accepted only when its
//! NAR is present with the same NarHash and NarSize, and every signature by a key we know verifies.

use std::io::{self, BufReader, Read};
use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::Digest;

use super::error::AppError;
use super::http_path::NarCompression;
use super::stream::reader_from_body;
use crate::import::ChannelReader;
use super::Gateway;
use crate::nix::compression::Decoder;
use crate::nix::hash::NarHash;
use crate::nix::nar::NarErrorKind;
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePathHash;
use crate::store::StoreError;

/// Nix's narinfos are a few KiB; anything this large is not one.
const MAX_NARINFO: usize = 1 << 20;

pub(super) fn put_cache_info(gw: &Gateway, headers: &HeaderMap, client: IpAddr) -> Result<Response, AppError> {
    gw.cfg.uploads.authorize(headers, client)?;
    // Our nix-cache-info is fixed by configuration; accept the upload so `nix copy --to` proceeds.
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The raw upload, hashed as it passes; at its end the hash must match the name.
struct Checked {
    inner: ChannelReader,
    sha: sha2::Sha256,
    /// Bytes received so far (the expansion limit compares the NAR against them).
    received: u64,
    expected: NarHash,
    /// The hash was compared already (a reader may be asked for more after its end, and must say 0 again).
    finished: bool,
}

impl Checked {
    /// Read whatever the decoder left unread and compare hashes (once).
    fn finish(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let mut buf = [0u8; 8192];
        while self.read(&mut buf)? > 0 {}
        let got = NarHash(self.sha.finalize_reset().into());
        if got != self.expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("upload hash mismatch: named {}, content is {}", self.expected, got),
            ));
        }
        Ok(())
    }
}

impl Read for Checked {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.sha.update(&out[..n]);
        self.received += n as u64;
        Ok(n)
    }
}

/// The decompressed NAR (the decoder every NAR download shares); when it ends, the raw upload is
/// drained and its hash checked, so a mismatch fails the ingest before it commits.
struct Decoded(Decoder<Checked>);

impl Decoded {
    fn raw(&mut self) -> &mut Checked {
        self.0.get_mut()
    }
}

/// The decompressed NAR within the upload limits: at most `max_size` bytes, and at most `max_ratio`
/// times what was received (plus 1 MiB of slack, so tiny NARs are not judged by their ratio).
struct Limited {
    inner: Decoded,
    produced: u64,
    max_size: u64,
    max_ratio: u64,
}

/// The error a limit raises; the handler answers it with 413.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct OverLimit(String);

impl Read for Limited {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.produced += n as u64;
        if self.produced > self.max_size {
            return Err(io::Error::other(OverLimit(format!("NAR over the upload limit of {} bytes", self.max_size))));
        }
        let received = self.inner.raw().received;
        if self.produced > (1 << 20) + received.saturating_mul(self.max_ratio) {
            return Err(io::Error::other(OverLimit(format!(
                "upload expands more than {}-fold ({} bytes from {received})",
                self.max_ratio, self.produced
            ))));
        }
        Ok(n)
    }
}

impl Read for Decoded {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(out)?;
        if n == 0 && !out.is_empty() {
            self.raw().finish()?;
        }
        Ok(n)
    }
}

/// Wait (without a thread) for an ingest slot: uploads cost CPU and a blocking thread each.
async fn upload_slot(gw: &Gateway) -> Result<tokio::sync::OwnedSemaphorePermit, AppError> {
    match tokio::time::timeout(Duration::from_secs(60), gw.uploads.clone().acquire_owned()).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(AppError::internal(e)),
        Err(_) => Err(AppError::Busy("too many uploads at once")),
    }
}

/// Whether an ingest failed on an upload limit (then 413), with the message.
fn over_limit(e: &StoreError) -> Option<String> {
    let io = match e {
        StoreError::Nar(n) => match n.kind() {
            NarErrorKind::Io(io) => io,
            _ => return None,
        },
        StoreError::Io { source, .. } => source,
        _ => return None,
    };
    io.get_ref().and_then(|i| i.downcast_ref::<OverLimit>()).map(|o| o.0.clone())
}

pub(super) async fn put_nar(
    gw: &Gateway,
    headers: &HeaderMap,
    client: IpAddr,
    file_hash: NarHash,
    compression: NarCompression,
    body: Body,
) -> Result<Response, AppError> {
    let policy = &gw.cfg.uploads;
    policy.authorize(headers, client)?;
    let declared = headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > policy.max_nar_size) {
        return Err(AppError::TooLarge(format!("upload of {n} bytes (limit {})", policy.max_nar_size)));
    }
    let _slot = upload_slot(gw).await?;
    let (reader, pump) = reader_from_body(body);
    let service = gw.service.clone();
    let (max_size, max_ratio) = (policy.max_nar_size, policy.max_expansion);
    let ingest = tokio::task::spawn_blocking(move || {
        let raw =
            Checked { inner: reader, sha: sha2::Sha256::new(), received: 0, expected: file_hash, finished: false };
        let decoded = Decoder::new(compression, raw)
            .map(Decoded)
            .map_err(|e| StoreError::Io { context: "starting decompression".into(), source: e })?;
        let limited = Limited { inner: decoded, produced: 0, max_size, max_ratio };
        service.put_nar(BufReader::with_capacity(1 << 20, limited))
    });
    let ((), result) = tokio::join!(pump, ingest);
    // No cached narinfo needs dropping: a path whose NAR was damaged was never cached as found since.
    let e = match result? {
        Ok(added) => {
            return Ok((StatusCode::OK, format!("stored {} ({} bytes)\n", added.nar_hash, added.nar_size))
                .into_response())
        }
        Err(e) => e,
    };
    if let Some(why) = over_limit(&e) {
        return Err(AppError::TooLarge(why));
    }
    match e {
        e if e.is_out_of_space() => Err(e.into()),
        // The store failing to take the bytes is ours to answer for, not the client's.
        StoreError::Nar(e) if matches!(e.kind(), NarErrorKind::Output(_)) => Err(AppError::internal(e)),
        e @ (StoreError::Nar(_) | StoreError::HashMismatch { .. }) => Err(AppError::BadRequest(e.to_string())),
        e => Err(e.into()),
    }
}

pub(super) async fn put_narinfo(
    gw: &Gateway,
    headers: &HeaderMap,
    client: IpAddr,
    hash: StorePathHash,
    body: Body,
) -> Result<Response, AppError> {
    gw.cfg.uploads.authorize(headers, client)?;
    let bytes = axum::body::to_bytes(body, MAX_NARINFO).await.map_err(|_| AppError::TooLarge("narinfo".into()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| AppError::BadRequest("narinfo is not UTF-8".into()))?;
    let info = NarInfo::parse(text).map_err(|e| AppError::BadRequest(format!("invalid narinfo: {e}")))?;
    if *info.store_path.hash() != hash {
        return Err(AppError::BadRequest(format!("narinfo for {} uploaded as {hash}.narinfo", info.store_path)));
    }
    gw.lookup(move |s| {
        s.put_narinfo(info)?;
        Ok(())
    })
    .await?;
    // After the commit: bumps the generation, so a GET that read before the commit cannot cache its answer.
    gw.narinfos.invalidate(&hash);
    Ok(StatusCode::OK.into_response())
}
