//! The HTTP binary cache (DESIGN §7): what stock `nix` substitutes from and copies to.
//!
//! A thin adapter over [`crate::store`]: URL grammar in [`http_path`] (pure, tested), one file per
//! resource, one [`error::AppError`]. Store calls are synchronous, so they run on tokio's blocking pool,
//! and bodies cross between the two worlds through bounded channels (`stream.rs`): a NAR is streamed out
//! of the DAG, and an upload is decompressed, validated and chunked as it arrives, never buffered whole.

mod cacheinfo;
pub mod error;
pub mod http_path;
pub mod key;
mod nar;
mod narinfo;
mod stream;
mod upload;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

use self::error::AppError;
use self::http_path::{PathError, Resource};
use crate::nix::signing::{PublicKey, SecretKey};
use crate::store::Store;

/// How NARs are offered in narinfos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedCompression {
    /// `nar/<hash>.nar`: rangeable, no CPU spent; best on a LAN.
    None,
    /// `nar/<hash>.nar.zst`: compressed on the fly; for slow links.
    Zstd,
}

/// Who may upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadPolicy {
    /// Nobody (the default).
    Denied,
    /// Anybody who can reach the gateway.
    Open,
    /// Whoever presents this token (`Authorization: Bearer …`, or as the password of Basic auth, which
    /// is what Nix sends from a netrc file).
    Token(String),
}

/// Gateway settings.
#[derive(Debug)]
pub struct GatewayConfig {
    /// `Priority:` in nix-cache-info (lower wins).
    pub priority: u32,
    /// How narinfos point at NARs.
    pub compression: ServedCompression,
    /// Who may PUT.
    pub uploads: UploadPolicy,
    /// Signs every narinfo served.
    pub key: SecretKey,
    /// Keys whose signatures on uploaded narinfos are checked (besides our own).
    pub trusted_keys: Vec<PublicKey>,
    /// Print one line per request (`METHOD PATH STATUS`) to stderr.
    pub access_log: bool,
}

/// Shared state: cheap to clone into every request.
#[derive(Clone)]
pub struct Gateway {
    store: Arc<Store>,
    cfg: Arc<GatewayConfig>,
    narinfos: Arc<narinfo::Cache>,
}

impl Gateway {
    /// A gateway over `store`.
    pub fn new(store: Arc<Store>, cfg: GatewayConfig) -> Self {
        Gateway { store, cfg: Arc::new(cfg), narinfos: Arc::default() }
    }

    /// The axum router; every path goes through one dispatcher over the parsed [`Resource`].
    pub fn router(self) -> Router {
        let log = self.cfg.access_log;
        let router = Router::new().fallback(dispatch).with_state(self);
        if log {
            router.layer(axum::middleware::from_fn(access_log))
        } else {
            router
        }
    }
}

async fn dispatch(State(gw): State<Gateway>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let resource = match http_path::parse(uri.path()) {
        Ok(r) => r,
        Err(PathError::Malformed(why)) => return AppError::BadRequest(why).into_response(),
        Err(PathError::Unknown) => return AppError::NotFound.into_response(),
    };
    let head = method == Method::HEAD;
    let read = method == Method::GET || head;
    let result = match resource {
        Resource::CacheInfo if read => Ok(cacheinfo::get(&gw)),
        Resource::CacheInfo if method == Method::PUT => upload::put_cache_info(&gw, &headers),
        Resource::NarInfo(h) if read => narinfo::get(&gw, h).await,
        Resource::NarInfo(h) if method == Method::PUT => upload::put_narinfo(&gw, &headers, h, body).await,
        Resource::Listing(h) if read => narinfo::listing(&gw, h).await,
        Resource::Nar { hash, compression } if read => nar::get(&gw, hash, compression, &headers, head).await,
        Resource::Nar { hash, compression } if method == Method::PUT => {
            upload::put_nar(&gw, &headers, hash, compression, body).await
        }
        Resource::Log if read => Err(AppError::NotFound),
        Resource::Root if read => Ok("nixdag binary cache: see /nix-cache-info\n".into_response()),
        _ => Ok((StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response()),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn access_log(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let range = req.headers().get(axum::http::header::RANGE).and_then(|v| v.to_str().ok()).map(String::from);
    let res = next.run(req).await;
    match range {
        Some(r) => eprintln!("{method} {path} {} range={r}", res.status().as_u16()),
        None => eprintln!("{method} {path} {}", res.status().as_u16()),
    }
    res
}

/// Run a store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    gw: &Gateway,
    f: impl FnOnce(&Store) -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    let store = gw.store.clone();
    tokio::task::spawn_blocking(move || f(&store)).await?
}
