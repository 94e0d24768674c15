//! `GET|HEAD /nar/<NarHash>.nar` (rangeable) and `.nar.zst` (compressed on the fly), streamed from the DAG.

use std::io::{self, Read, Write};
use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::AppError;
use super::http_path::{parse_range, NarCompression, RangeRequest};
use super::stream::{body_from_blocking, body_from_chunks, CHUNK};
use super::{blocking, Gateway};
use crate::dag::{Cid, DagReader};
use crate::nix::hash::NarHash;
use crate::store::Store;

/// zstd level for `.nar.zst`: fast enough to keep up with a LAN, still a large saving on a slow link.
const ZSTD_LEVEL: i32 = 3;

pub(super) async fn get(
    gw: &Gateway,
    hash: NarHash,
    compression: NarCompression,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, AppError> {
    if !matches!(compression, NarCompression::None | NarCompression::Zstd) {
        return Err(AppError::NotFound);
    }
    let entry = blocking(gw, move |s| Ok(s.nar(&hash)?)).await?.ok_or(AppError::NotFound)?;
    let etag = format!("\"{}{}\"", hash.to_nix32(), compression.extension());
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-nix-nar"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    h.insert(header::ETAG, HeaderValue::from_str(&etag).map_err(AppError::internal)?);
    let matches_etag = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches_etag {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    let store = gw.store.clone();
    let size = entry.nar_size;
    if compression == NarCompression::Zstd {
        // A compressed body has no stable byte offsets to resume from: ranges are for `.nar` only.
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
        if head {
            return Ok((StatusCode::OK, h).into_response());
        }
        let body = body_from_blocking(move |w| {
            let mut enc = zstd::stream::write::Encoder::new(w, ZSTD_LEVEL)?;
            copy_dag(&store, entry.root, 0, size, &mut enc)?;
            enc.finish()?;
            Ok(())
        });
        return Ok((StatusCode::OK, h, body).into_response());
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let range = parse_range(headers.get(header::RANGE).and_then(|v| v.to_str().ok()), size);
    let (status, start, end) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Partial { start, end } => {
            let cr = format!("bytes {start}-{}/{size}", end - 1);
            h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&cr).map_err(AppError::internal)?);
            (StatusCode::PARTIAL_CONTENT, start, end)
        }
        RangeRequest::Unsatisfiable => return Err(AppError::RangeNotSatisfiable(size)),
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if head {
        return Ok((status, h).into_response());
    }
    let body = body_from_chunks(move |send| {
        let mut r = DagReader::range(&*store, entry.root, start, Some(end)).map_err(io::Error::other)?;
        while let Some(b) = r.next_bytes(CHUNK).map_err(io::Error::other)? {
            send(b)?;
        }
        Ok(())
    });
    Ok((status, h, body).into_response())
}

/// Copy bytes `[start, end)` of the file under `root` into `w` in large pieces.
fn copy_dag(store: &Arc<Store>, root: Cid, start: u64, end: u64, w: &mut impl Write) -> io::Result<()> {
    let mut r = DagReader::range(&**store, root, start, Some(end)).map_err(io::Error::other)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        w.write_all(&buf[..n])?;
    }
}
