//! `GET|HEAD /<hash>.narinfo` (signed by the gateway) and `GET /<hash>.ls` (the NAR listing).

use std::collections::HashMap;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

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

/// Signed narinfos as served, by store-path hash. Narinfo lookups are most of a binary cache's traffic
/// (Nix asks for every path of a closure, and again for each client), and each costs a database read and
/// an ed25519 signature; the answer only changes when this process records the path, since one process
/// owns the store. Misses are not cached: the path may be uploaded a second later.
#[derive(Default)]
pub(super) struct Cache(std::sync::RwLock<(HashMap<StorePathHash, Bytes>, u64)>);

/// Entries kept before the cache starts over (a few hundred bytes each).
const CACHE_ENTRIES: usize = 100_000;

impl Cache {
    /// The cached answer, or the generation to pass to [`Cache::put`] after reading the store.
    fn get(&self, h: &StorePathHash) -> Result<Bytes, u64> {
        let g = self.0.read().unwrap_or_else(|p| p.into_inner());
        g.0.get(h).cloned().ok_or(g.1)
    }

    /// Cache an answer read at generation `generation`, unless an invalidation came since (the answer
    /// may predate it).
    fn put(&self, h: StorePathHash, text: Bytes, generation: u64) {
        let mut g = self.0.write().unwrap_or_else(|p| p.into_inner());
        if g.1 != generation {
            return;
        }
        if g.0.len() >= CACHE_ENTRIES {
            g.0.clear();
        }
        g.0.insert(h, text);
    }

    /// Forget a path whose narinfo changed.
    pub(super) fn invalidate(&self, h: &StorePathHash) {
        let mut g = self.0.write().unwrap_or_else(|p| p.into_inner());
        g.0.remove(h);
        g.1 += 1;
    }
}

pub(super) async fn get(gw: &Gateway, hash: StorePathHash) -> Result<Response, AppError> {
    let text = match gw.narinfos.get(&hash) {
        Ok(t) => t,
        Err(generation) => {
            let info = blocking(gw, move |s| Ok(s.path_info(&hash.to_string())?)).await?.ok_or(AppError::NotFound)?;
            let text = Bytes::from(served(gw, info).render());
            gw.narinfos.put(hash, text.clone(), generation);
            text
        }
    };
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
