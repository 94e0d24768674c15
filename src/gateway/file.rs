//! `GET|HEAD /<algo>/<hash>` (and the SRI forms): a stored source file, as a hashed mirror serves it to
//! Nix's `builtin:fetchurl` and nixpkgs' `fetchurl` (docs/FETCH-SRC.md). Rangeable like a NAR. A file
//! the store lacks is looked for on the LAN's peers, then at the upstream hashed mirrors.

use std::net::IpAddr;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::AppError;
use super::nar::Watched;
use super::ranged::{plan, Plan};
use super::stream::pulled;
use super::Gateway;
use crate::fetch::FetchError;
use crate::nix::hash::NixHash;

pub(super) async fn get(
    gw: &Gateway,
    hash: NixHash,
    headers: &HeaderMap,
    head: bool,
    client: IpAddr,
) -> Result<Response, AppError> {
    let wanted = hash.clone();
    let mut found = gw.lookup(move |s| Ok(s.file(&wanted)?)).await?;
    if found.is_none() && gw.service.pulls_files() {
        // The LAN's peers next: each block verified as it arrives, the whole file against the hash. On a
        // blocking thread of its own, not the lookup pool: a transfer must never delay a narinfo answer.
        let (service, wanted) = (gw.service.clone(), hash.clone());
        let pulled = tokio::task::spawn_blocking(move || service.pull_file(&wanted))
            .await
            .map_err(|e| AppError::internal(format!("the peer fetch of file {hash}: {e}")))?;
        found = match pulled {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("file {hash} from peers: {e}");
                None
            }
        };
    }
    let (sha256, root, size) = match found {
        Some(f) => f,
        None => match &gw.cfg.mirrors {
            // Pull-through: fetched from the upstream mirrors, checked against the hash, kept, then served.
            Some(m) => m.fetch(&hash).await.map_err(|e| pull_error(&e))?,
            None => return Err(AppError::NotFound),
        },
    };
    // One tag per file, whichever of its hashes was asked for.
    let etag = format!("\"sha256-{}\"", crate::nix::hash::nix32::encode(&sha256));
    let (status, start, end, h) = match plan(headers, &etag, "application/octet-stream", size, true)? {
        Plan::NotModified(h) => return Ok((StatusCode::NOT_MODIFIED, h).into_response()),
        Plan::Body { status, start, end, headers } => (status, start, end, headers),
    };
    if head {
        return Ok((status, h).into_response());
    }
    if !gw.budget.has_room() {
        return Err(AppError::Busy("too many bytes in flight"));
    }
    let reader = gw.service.file_reader(root, start, end)?;
    Ok((status, h, pulled(Watched { reader, gw: None }, gw.budget.clone(), client)).into_response())
}

/// No mirror had it (or none answered): 404, as for any file not here, so that Nix goes on to the
/// next mirror or the URL. Our own failures keep their status.
fn pull_error(e: &FetchError) -> AppError {
    match e {
        FetchError::Failed { .. } => AppError::NotFound,
        FetchError::Busy => AppError::Busy("too many mirror downloads at once"),
        FetchError::Store(s) if s.is_out_of_space() => AppError::InsufficientStorage(s.to_string()),
        e => AppError::internal(e),
    }
}
