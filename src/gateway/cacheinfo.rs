//! `GET /nix-cache-info`

use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::Gateway;
use crate::nix::store_path::STORE_DIR;

pub(super) fn get(gw: &Gateway) -> Response {
    let body = format!("StoreDir: {STORE_DIR}\nWantMassQuery: 1\nPriority: {}\n", gw.cfg.priority);
    ([(header::CONTENT_TYPE, "text/x-nix-cache-info")], body).into_response()
}
