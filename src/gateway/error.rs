//! One error type for every handler. Client mistakes keep their status and a one-line reason; internal
//! failures answer a bare phrase and log the detail, so paths and internals never leak.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// A handler's failure.
#[derive(Debug)]
pub enum AppError {
    /// 400: the request is malformed or its content is wrong (bad NAR, hash mismatch, ...).
    BadRequest(String),
    /// 401: uploads need a token.
    Unauthorized,
    /// 403: uploads are switched off.
    UploadsDisabled,
    /// 403: this client address may not upload.
    Forbidden(String),
    /// 404
    NotFound,
    /// 412: not here, and the client asked for cached answers only (`Cache-Control: only-if-cached`).
    PreconditionFailed,
    /// 409: the upload contradicts what the cache already holds (a narinfo is written once).
    Conflict(String),
    /// 413: a body over a configured limit (narinfo size, NAR size, expansion ratio).
    TooLarge(String),
    /// 503 with `Retry-After`: over a limit that frees itself (connections, bytes in flight, queues).
    Busy(&'static str),
    /// 503: a stored NAR is missing a block or failed a check; the detail (which block) is logged and
    /// the path is no longer advertised.
    Damaged(String),
    /// 502: the NAR was to come from peers (or this machine's Nix store), and they did not deliver it
    /// whole; the detail is logged.
    PeersFailed(String),
    /// 507: the store's disk is full; the detail is logged.
    InsufficientStorage(String),
    /// 416: the range is outside a body of this size.
    RangeNotSatisfiable(u64),
    /// 500: our fault; the detail is logged.
    Internal(String),
}

impl AppError {
    /// An internal failure from anything displayable.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        AppError::Internal(format!("{e:#}"))
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        if e.is_out_of_space() {
            return AppError::InsufficientStorage(e.to_string());
        }
        use crate::store::StoreError;
        match e {
            StoreError::NoSuchNar(_) => AppError::NotFound,
            e @ StoreError::HashMismatch { .. } => AppError::BadRequest(e.to_string()),
            StoreError::BlockTooLarge { len, .. } => AppError::TooLarge(format!("a block of {len} bytes is")),
            e => AppError::internal(e),
        }
    }
}

impl From<crate::service::ServiceError> for AppError {
    fn from(e: crate::service::ServiceError) -> Self {
        use crate::service::{Refusal, ServiceError};
        match e {
            ServiceError::Damaged(d) => AppError::Damaged(d),
            ServiceError::Refused(Refusal::Conflict(why)) => AppError::Conflict(why),
            ServiceError::Refused(Refusal::Invalid(why)) => AppError::BadRequest(why),
            ServiceError::Fetch(why) => AppError::PeersFailed(why),
            ServiceError::LocalNix(why) => AppError::PeersFailed(format!("this machine's Nix store: {why}")),
            ServiceError::Store(e) => e.into(),
        }
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        AppError::internal(e)
    }
}

impl AppError {
    /// Log a failure that is ours (internal, damaged data, a full disk), naming the request: the detail never goes
    /// to the client. Client mistakes are not logged (the access log has their status).
    pub(super) fn log(&self, method: &axum::http::Method, path: &str, client: std::net::IpAddr) {
        match self {
            AppError::Internal(detail) => tracing::error!(%method, path, %client, "internal error: {detail}"),
            AppError::Damaged(detail) => tracing::error!(%method, path, %client, "damaged: {detail}"),
            AppError::PeersFailed(detail) => tracing::warn!(%method, path, %client, "from peers: {detail}"),
            AppError::InsufficientStorage(detail) => {
                tracing::error!(%method, path, %client, "the store's disk is full: {detail}")
            }
            _ => {}
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            AppError::BadRequest(why) => (StatusCode::BAD_REQUEST, why),
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "upload token required".into()),
            AppError::UploadsDisabled => (StatusCode::FORBIDDEN, "uploads are disabled on this gateway".into()),
            AppError::Forbidden(why) => (StatusCode::FORBIDDEN, why),
            AppError::NotFound => (StatusCode::NOT_FOUND, "not found".into()),
            AppError::PreconditionFailed => (StatusCode::PRECONDITION_FAILED, "not in this cache".into()),
            AppError::Conflict(why) => (StatusCode::CONFLICT, why),
            AppError::TooLarge(what) => (StatusCode::PAYLOAD_TOO_LARGE, format!("{what} too large")),
            AppError::Busy(what) => {
                let mut r = (StatusCode::SERVICE_UNAVAILABLE, format!("busy: {what}; retry shortly\n")).into_response();
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
                r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return r;
            }
            AppError::Damaged(detail) => {
                (StatusCode::SERVICE_UNAVAILABLE, format!("stored data is damaged ({detail}); run `nixdag verify`"))
            }
            AppError::PeersFailed(_) => (StatusCode::BAD_GATEWAY, "the peers did not deliver this NAR".into()),
            AppError::InsufficientStorage(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "the cache's disk is full; nothing was stored".into())
            }
            AppError::RangeNotSatisfiable(size) => {
                let mut r = (StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n").into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return r;
            }
            AppError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
        };
        let mut r = (status, format!("{}\n", body.lines().next().unwrap_or(""))).into_response();
        // Misses and errors must not be cached: the path may arrive a second later.
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use crate::BlockHash;

    fn status(e: StoreError) -> StatusCode {
        AppError::from(e).into_response().status()
    }

    fn redb_io(e: std::io::Error) -> StoreError {
        StoreError::Txn { op: "commit", source: redb::Error::Io(e) }
    }

    #[test]
    fn store_errors_map_to_their_status() {
        assert_eq!(status(StoreError::NoSuchNar(crate::NarHash([1; 32]))), StatusCode::NOT_FOUND);
        let mismatch = StoreError::HashMismatch { what: "NAR".into(), expected: "a".into(), got: "b".into() };
        assert_eq!(status(mismatch), StatusCode::BAD_REQUEST);
        let big = StoreError::BlockTooLarge { hash: BlockHash([0; 32]), len: 1 << 33 };
        assert_eq!(status(big), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(status(redb_io(std::io::Error::from_raw_os_error(libc::ENOSPC))), StatusCode::INSUFFICIENT_STORAGE);
        let index = StoreError::Index {
            op: "read",
            table: "blocks-0",
            key: Some("00".into()),
            source: redb::Error::Io(std::io::Error::from_raw_os_error(libc::EDQUOT)),
        };
        assert_eq!(status(index), StatusCode::INSUFFICIENT_STORAGE);
        // A real fault stays ours: 500, the detail logged with the table it names.
        let fault = StoreError::Txn { op: "commit", source: redb::StorageError::Corrupted("bad page".into()).into() };
        let app = AppError::from(fault);
        assert!(matches!(&app, AppError::Internal(d) if d.starts_with("index commit: ")), "{app:?}");
        assert_eq!(app.into_response().status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
