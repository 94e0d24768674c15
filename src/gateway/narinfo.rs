//! `GET|HEAD /<hash>.narinfo` (signed by the gateway) and `GET /<hash>.ls` (the NAR listing).

use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::AppError;
use super::http_path::NarCompression;
use super::{blocking, Gateway, ServedCompression};
use crate::dag::DagReader;
use crate::nix::hash::NixHash;
use crate::nix::nar;
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePathHash;

/// The narinfo as this gateway serves it: pointing at our NAR URL, with our signature added.
pub(super) fn served(gw: &Gateway, mut info: NarInfo) -> NarInfo {
    let compression = match gw.cfg.compression {
        ServedCompression::None => NarCompression::None,
        ServedCompression::Zstd => NarCompression::Zstd,
    };
    info.url = Some(format!("nar/{}{}", info.nar_hash.to_nix32(), compression.extension()));
    info.compression = Some(compression.name().to_string());
    if compression == NarCompression::None {
        info.file_hash = Some(NixHash::from(info.nar_hash));
        info.file_size = Some(info.nar_size);
    } else {
        info.file_hash = None;
        info.file_size = None;
    }
    let sig = gw.cfg.key.sign(&info.fingerprint());
    if !info.sigs.contains(&sig) {
        info.sigs.retain(|s| !s.starts_with(&format!("{}:", gw.cfg.key.name())));
        info.sigs.push(sig);
    }
    info
}

pub(super) async fn get(gw: &Gateway, hash: StorePathHash) -> Result<Response, AppError> {
    let info = blocking(gw, move |s| Ok(s.path_info(&hash.to_string())?)).await?.ok_or(AppError::NotFound)?;
    let text = served(gw, info).render();
    Ok(([(header::CONTENT_TYPE, "text/x-nix-narinfo")], text).into_response())
}

pub(super) async fn listing(gw: &Gateway, hash: StorePathHash) -> Result<Response, AppError> {
    let json = blocking(gw, move |s| {
        let info = s.path_info(&hash.to_string())?.ok_or(AppError::NotFound)?;
        let entry = s.nar(&info.nar_hash)?.ok_or(AppError::NotFound)?;
        let reader = DagReader::new(s, entry.root).map_err(AppError::internal)?;
        let listing = nar::list(std::io::BufReader::with_capacity(1 << 20, reader)).map_err(AppError::internal)?;
        Ok(listing.to_json())
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}
