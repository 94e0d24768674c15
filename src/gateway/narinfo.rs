//! `GET|HEAD /<hash>.narinfo` (signed by the gateway) and `GET /<hash>.ls` (the NAR listing).

use std::collections::HashSet;
use std::sync::Mutex;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::cache::ByteCache;
use super::error::AppError;
use super::http_path::NarCompression;
use super::{Gateway, ServedCompression};
use crate::nix::hash::{NarHash, NixHash};
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePathHash;

/// The narinfo as this gateway serves it: pointing at our NAR URL, signed by the service.
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
    gw.service.sign(&mut info);
    info
}

/// The narinfo extension field naming the NAR's DAG root (docs/IPFS.md), so a client can fetch
/// verified ranges from `/ipfs/<root>`. Nix ignores keys it does not know (2.8 and later: the parser
/// has no case for them), and signatures cover only the fingerprint (StorePath, NarHash, NarSize,
/// References), so an extra line changes no signature's validity. It goes last, after `Sig:`/`CA:`.
pub(super) const ROOT_FIELD: &str = "X-Nixdag-Root";

fn root_line(root: &crate::dag::Cid) -> String {
    format!("{ROOT_FIELD}: {root}\n")
}

/// Narinfo lookups are most of a binary cache's traffic (Nix asks for every path of a closure, and again
/// for each client), and each costs a database read and an ed25519 signature, so answers are cached
/// (bounded in bytes). Misses are not cached: the path may be uploaded a second later.
pub(super) async fn get(gw: &Gateway, hash: StorePathHash) -> Result<Response, AppError> {
    let text = match gw.narinfos.get(&hash) {
        Ok(t) => {
            gw.metrics.narinfo_cached.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            t
        }
        Err(generation) => {
            // A path whose NAR is not whole is not advertised (Nix would fail on it mid-download).
            let (info, root) = gw
                .lookup(move |s| {
                    let info = s.narinfo(&hash)?.ok_or(AppError::NotFound)?;
                    // Only a NAR already in the store has a DAG; one still to be pulled through has none yet.
                    let root = s.store().nar(&info.nar_hash)?.map(|e| e.root);
                    Ok((info, root))
                })
                .await?;
            let mut text = served(gw, info).render();
            if let Some(root) = root {
                text.push_str(&root_line(&root));
            }
            let text = Bytes::from(text);
            gw.narinfos.put(hash, text.clone(), generation);
            text
        }
    };
    Ok(([(header::CONTENT_TYPE, "text/x-nix-narinfo")], text).into_response())
}

/// Rendered listings by NarHash, bounded in bytes, and the NARs too large to list.
pub(super) struct Listings {
    cache: ByteCache<NarHash>,
    too_large: Mutex<HashSet<NarHash>>,
    /// Listings built at once (each may parse a whole NAR); others wait without a thread.
    builds: tokio::sync::Semaphore,
    max_entries: usize,
}

impl Listings {
    pub(super) fn new(budget: usize, max_entries: usize) -> Self {
        Listings {
            cache: ByteCache::new(budget, std::time::Duration::from_secs(600)),
            too_large: Mutex::default(),
            builds: tokio::sync::Semaphore::new(2),
            max_entries,
        }
    }

    fn is_too_large(&self, h: &NarHash) -> bool {
        self.too_large.lock().unwrap_or_else(|p| p.into_inner()).contains(h)
    }
}

/// `.ls`: built once per NAR (at most two at a time, each giving up past the entry cap), then served
/// from a cache bounded in bytes. A NAR over the cap has no listing: 404, which Nix takes as "none".
pub(super) async fn listing(gw: &Gateway, hash: StorePathHash) -> Result<Response, AppError> {
    let nar_hash = gw.lookup(move |s| Ok(s.narinfo(&hash)?.ok_or(AppError::NotFound)?.nar_hash)).await?;
    let ls = &gw.listings;
    let cached = |ls: &Listings| -> Result<Result<Bytes, u64>, AppError> {
        if ls.is_too_large(&nar_hash) || gw.service.is_damaged(&nar_hash) {
            return Err(AppError::NotFound);
        }
        Ok(ls.cache.get(&nar_hash))
    };
    let json = match cached(ls)? {
        Ok(j) => j,
        Err(_) => {
            let _permit = ls.builds.acquire().await.map_err(AppError::internal)?;
            match cached(ls)? {
                Ok(j) => j,
                Err(generation) => {
                    let max = ls.max_entries;
                    let built = gw.lookup(move |s| Ok(s.listing(&nar_hash, max)?.map(Bytes::from))).await?;
                    match built {
                        Some(j) => {
                            ls.cache.put(nar_hash, j.clone(), generation);
                            j
                        }
                        None => {
                            ls.too_large.lock().unwrap_or_else(|p| p.into_inner()).insert(nar_hash);
                            return Err(AppError::NotFound);
                        }
                    }
                }
            }
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}
