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
    /// 404
    NotFound,
    /// 413: a narinfo larger than anything Nix writes.
    TooLarge(&'static str),
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
        AppError::internal(e)
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        AppError::internal(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            AppError::BadRequest(why) => (StatusCode::BAD_REQUEST, why),
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "upload token required".into()),
            AppError::UploadsDisabled => (StatusCode::FORBIDDEN, "uploads are disabled on this gateway".into()),
            AppError::NotFound => (StatusCode::NOT_FOUND, "not found".into()),
            AppError::TooLarge(what) => (StatusCode::PAYLOAD_TOO_LARGE, format!("{what} too large")),
            AppError::RangeNotSatisfiable(size) => {
                let mut r = (StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n").into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return r;
            }
            AppError::Internal(detail) => {
                eprintln!("nixdag gateway: internal error: {detail}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
        };
        let mut r = (status, format!("{}\n", body.lines().next().unwrap_or(""))).into_response();
        // Misses and errors must not be cached: the path may arrive a second later.
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}
