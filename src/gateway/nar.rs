//! `GET|HEAD /nar/<NarHash>.nar` (rangeable) and `.nar.zst` (compressed on the fly), pulled from the DAG.

use std::io::{self, Write};
use std::net::IpAddr;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::error::AppError;
use super::http_path::NarCompression;
use super::ranged::{plan, Plan};
use super::stream::{pulled, Produce, CHUNK};
use super::Gateway;
use crate::nix::hash::NarHash;
use crate::service::NarReader;

/// Names a NAR's root CID on its responses (docs/IPFS.md).
const ROOT_HEADER: axum::http::HeaderName = axum::http::HeaderName::from_static("x-nixdag-root");

/// zstd level for `.nar.zst`: fast enough to keep up with a LAN, still a large saving on a slow link.
const ZSTD_LEVEL: i32 = 3;

pub(super) async fn get(
    gw: &Gateway,
    hash: NarHash,
    compression: NarCompression,
    headers: &HeaderMap,
    head: bool,
    client: IpAddr,
) -> Result<Response, AppError> {
    if !matches!(compression, NarCompression::None | NarCompression::Zstd) {
        return Err(AppError::NotFound);
    }
    // Before any status is sent: the NAR must be whole (every block present in the index), or being
    // pulled from an upstream (`serve --upstream`) as it is stored.
    let found = gw
        .lookup(move |s| match s.nar(&hash)? {
            Some(entry) => Ok((Some(entry), None)),
            None => s.pull(&hash).map(|r| (None, Some(r))).ok_or(AppError::NotFound),
        })
        .await
        .inspect_err(|e| {
            if matches!(e, AppError::Damaged(_)) {
                gw.narinfos.invalidate_all();
            }
        })?;
    let etag = format!("\"{}{}\"", hash.to_nix32(), compression.extension());
    let (entry, pulling) = found;
    let size = entry.as_ref().map(|e| e.nar_size).or_else(|| pulling.as_ref().and_then(|r| r.pulled_size())).unwrap_or(0);
    // A compressed body has no stable byte offsets to resume from: ranges are for `.nar` only. A NAR still
    // being pulled is sent whole (a server may ignore Range); once stored, ranges work.
    let rangeable = compression == NarCompression::None && pulling.is_none();
    let (status, start, end, mut h) = match plan(headers, &etag, "application/x-nix-nar", size, rangeable)? {
        Plan::NotModified(h) => return Ok((StatusCode::NOT_MODIFIED, h).into_response()),
        Plan::Body { status, start, end, headers } => (status, start, end, headers),
    };
    if pulling.is_some() && compression == NarCompression::None {
        h.insert(axum::http::header::CONTENT_LENGTH, axum::http::HeaderValue::from(size));
    }
    // The DAG's root, so that a client can fetch verified ranges from `/ipfs/<root>` instead.
    if let Some(v) = entry.as_ref().and_then(|e| axum::http::HeaderValue::from_str(&e.root.to_string()).ok()) {
        h.insert(ROOT_HEADER, v);
    }
    if head {
        return Ok((status, h).into_response());
    }
    if !gw.budget.has_room() {
        return Err(AppError::Busy("too many bytes in flight"));
    }
    let reader = match (pulling, entry) {
        (Some(r), _) => r,
        (None, Some(entry)) => gw.service.nar_reader(hash, &entry, start, end)?,
        (None, None) => return Err(AppError::NotFound),
    };
    let reader = Watched { reader, gw: Some(gw.clone()) };
    let body = if compression == NarCompression::Zstd {
        let enc = zstd::stream::write::Encoder::new(Vec::with_capacity(CHUNK), ZSTD_LEVEL).map_err(AppError::internal)?;
        pulled(Zstd { reader, enc, done: false }, gw.budget.clone(), client)
    } else {
        pulled(reader, gw.budget.clone(), client)
    };
    Ok((status, h, body).into_response())
}

/// A NAR's (or file's) reader; when a block of a NAR turns out bad mid-stream (the service marks the
/// NAR damaged and the stream is cut), the narinfos cached in `gw` are dropped so the path stops being
/// advertised at once.
pub(super) struct Watched {
    pub(super) reader: NarReader,
    pub(super) gw: Option<Gateway>,
}

impl Watched {
    fn next(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        self.reader.next_bytes(max).inspect_err(|_| {
            if let Some(gw) = &self.gw {
                gw.narinfos.invalidate_all()
            }
        })
    }
}

impl Produce for Watched {
    fn next_batch(&mut self, max: usize, out: &mut Vec<Bytes>) -> io::Result<()> {
        let mut n = 0;
        while n < max {
            match self.next(CHUNK.min(max - n))? {
                Some(b) => {
                    n += b.len();
                    out.push(b);
                }
                None => break,
            }
        }
        Ok(())
    }
}

/// `.nar.zst`: the NAR compressed as it is pulled.
struct Zstd {
    reader: Watched,
    enc: zstd::stream::write::Encoder<'static, Vec<u8>>,
    done: bool,
}

impl Produce for Zstd {
    fn next_batch(&mut self, max: usize, out: &mut Vec<Bytes>) -> io::Result<()> {
        while !self.done && self.enc.get_ref().len() < max {
            match self.reader.next(CHUNK)? {
                Some(b) => self.enc.write_all(&b)?,
                None => {
                    self.enc.do_finish()?;
                    self.done = true;
                }
            }
        }
        let buf = std::mem::replace(self.enc.get_mut(), Vec::with_capacity(CHUNK));
        if !buf.is_empty() {
            out.push(Bytes::from(buf));
        }
        Ok(())
    }
}
