//! The headers every immutable, content-addressed body shares (NARs, files by hash): `ETag` and
//! `If-None-Match`, caching, and a single `Range`.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};

use super::error::AppError;
use super::http_path::{parse_range, RangeRequest};

/// What to answer for a body of `size` bytes.
pub(super) enum Plan {
    /// `If-None-Match` named this body: 304 with these headers.
    NotModified(HeaderMap),
    /// Send bytes `start..end` with this status and these headers (`Content-Length` set when known).
    Body { status: StatusCode, start: u64, end: u64, headers: HeaderMap },
}

/// The answer's status, span and headers. `rangeable` is false for a body whose bytes are made on the fly
/// (compressed): it has no stable offsets, so it is always sent whole, without a length.
pub(super) fn plan(
    request: &HeaderMap,
    etag: &str,
    content_type: &'static str,
    size: u64,
    rangeable: bool,
) -> Result<Plan, AppError> {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    h.insert(header::ETAG, HeaderValue::from_str(etag).map_err(AppError::internal)?);
    let matches_etag = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches_etag {
        return Ok(Plan::NotModified(h));
    }
    if !rangeable {
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
        return Ok(Plan::Body { status: StatusCode::OK, start: 0, end: size, headers: h });
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (status, start, end) = match parse_range(request.get(header::RANGE).and_then(|v| v.to_str().ok()), size) {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Partial { start, end } => {
            let cr = format!("bytes {start}-{}/{size}", end - 1);
            h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&cr).map_err(AppError::internal)?);
            (StatusCode::PARTIAL_CONTENT, start, end)
        }
        RangeRequest::Unsatisfiable => return Err(AppError::RangeNotSatisfiable(size)),
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    Ok(Plan::Body { status, start, end, headers: h })
}
