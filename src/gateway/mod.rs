//! The HTTP binary cache (DESIGN §7): what stock `nix` substitutes from and copies to.
//!
//! A thin adapter over [`crate::store`]: URL grammar in [`http_path`] (pure, tested), one file per
//! resource, one [`error::AppError`], upload rules in [`policy`], and the listener with its connection
//! limits in [`server`]. Store calls are synchronous: lookups run on a pool of their own (`pool.rs`),
//! NAR bodies are pulled a batch at a time from the blocking pool under a byte budget (`stream.rs`), and
//! an upload is decompressed, validated and chunked as it arrives, never buffered whole.

mod cache;
mod cacheinfo;
pub mod error;
pub mod http_path;
pub mod key;
mod nar;
mod narinfo;
mod file;
mod ipfs;
pub mod policy;
mod pool;
mod ranged;
pub mod server;
mod stream;
mod upload;

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

use self::error::AppError;
use self::http_path::{PathError, Resource};
pub use self::policy::{Cidr, UploadPolicy};
pub use self::server::ConnLimits;
use crate::nix::store_path::StorePathHash;
use crate::service::Service;

/// How long a narinfo answer is reused: other processes may forget paths in the same store.
const NARINFO_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// How NARs are offered in narinfos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedCompression {
    /// `nar/<hash>.nar`: rangeable, no CPU spent; best on a LAN.
    None,
    /// `nar/<hash>.nar.zst`: compressed on the fly; for slow links.
    Zstd,
}

/// What one request, one client and the whole gateway may cost (docs/SECURITY.md).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections and timeouts of the listener.
    pub conn: ConnLimits,
    /// Bytes of response bodies held in memory, in all.
    pub inflight_bytes: usize,
    /// Bytes of response bodies held in memory for one client address (a host's bodies wait for each
    /// other beyond it; small, so that many addresses of slow readers cannot use up the global budget).
    pub inflight_per_address: usize,
    /// Bytes of rendered narinfos kept.
    pub narinfo_cache_bytes: usize,
    /// Bytes of rendered `.ls` listings kept.
    pub listing_cache_bytes: usize,
    /// Entries (files, directories, symlinks) above which a NAR gets no `.ls` (404; Nix treats
    /// listings as optional).
    pub max_listing_entries: usize,
    /// Threads answering lookups (narinfo, listing, completeness checks).
    pub lookup_threads: usize,
    /// Uploads ingested at once; more wait (without a thread) for up to a minute, then get 503.
    pub uploads_at_once: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            conn: ConnLimits::default(),
            inflight_bytes: 128 << 20,
            inflight_per_address: 8 << 20,
            narinfo_cache_bytes: 32 << 20,
            listing_cache_bytes: 64 << 20,
            max_listing_entries: 100_000,
            lookup_threads: 8,
            uploads_at_once: 4,
        }
    }
}

/// Gateway settings.
#[derive(Debug)]
pub struct GatewayConfig {
    /// `Priority:` in nix-cache-info (lower wins).
    pub priority: u32,
    /// How narinfos point at NARs.
    pub compression: ServedCompression,
    /// Who may PUT, and how large an upload may be.
    pub uploads: UploadPolicy,
    /// Print one line per request (`METHOD PATH STATUS`) to stderr.
    pub access_log: bool,
    /// Costs bounded per request, per client and in all.
    pub limits: Limits,
    /// Upstream hashed mirrors that a file missing here is fetched from (`--tarball-mirror`).
    pub mirrors: Option<Arc<crate::fetch::MirrorPull>>,
}

/// The client's address, set on every request by [`server::serve`]. A router served some other way
/// sees no address, and is treated as a remote client (no loopback upload privilege).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// Shared state: one reference count to clone into every request (seven `Arc`s cloned and dropped per
/// request were 2 % of a narinfo's server CPU).
#[derive(Clone)]
pub struct Gateway(Arc<Shared>);

/// What every request of a gateway shares.
pub struct Shared {
    service: Arc<Service>,
    cfg: Arc<GatewayConfig>,
    narinfos: Arc<cache::ByteCache<StorePathHash>>,
    listings: Arc<narinfo::Listings>,
    budget: stream::Budget,
    lookups: Arc<pool::Lookups>,
    uploads: Arc<tokio::sync::Semaphore>,
}

impl std::ops::Deref for Gateway {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Gateway {
    /// The HTTP door of `service`.
    pub fn new(service: Arc<Service>, cfg: GatewayConfig) -> Self {
        let l = &cfg.limits;
        let narinfos = Arc::new(cache::ByteCache::new(l.narinfo_cache_bytes, NARINFO_TTL));
        // An evicted path must stop being advertised at once, not when its cached narinfo expires.
        let cached = narinfos.clone();
        service.on_evict(Box::new(move || cached.invalidate_all()));
        Gateway(Arc::new(Shared {
            service,
            narinfos,
            listings: Arc::new(narinfo::Listings::new(l.listing_cache_bytes, l.max_listing_entries)),
            budget: stream::Budget::new(l.inflight_bytes, l.inflight_per_address),
            lookups: Arc::new(pool::Lookups::new(l.lookup_threads, 4096)),
            uploads: Arc::new(tokio::sync::Semaphore::new(l.uploads_at_once.max(1))),
            cfg: Arc::new(cfg),
        }))
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

    /// Run a service call on the lookup pool (never on the pool that streams bodies).
    async fn lookup<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Arc<Service>) -> Result<T, AppError> + Send + 'static,
    ) -> Result<T, AppError> {
        let service = self.service.clone();
        self.lookups.run(move || f(&service)).await
    }
}

/// Takes the request whole: the `HeaderMap` and `Uri` extractors clone theirs.
async fn dispatch(State(gw): State<Gateway>, req: axum::extract::Request) -> Response {
    use tracing::Instrument;
    let (parts, body) = req.into_parts();
    let axum::http::request::Parts { method, uri, headers, extensions, .. } = parts;
    let client = extensions.get::<ClientAddr>().map(|c| c.0).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    // A span per request names it in everything logged while answering, at debug level: at info it cost
    // 15 % of narinfo throughput (94 -> 110 k requests/s without it). Failures of ours are logged with
    // the request's fields whatever the level (`AppError::log`).
    let span = tracing::debug_span!("request", %method, path = %uri.path(), %client);
    answer(gw, client, method, uri, headers, body).instrument(span).await
}

async fn answer(gw: Gateway, client: IpAddr, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let resource = match http_path::parse(uri.path()) {
        Ok(r) => r,
        Err(PathError::Malformed(why)) => return AppError::BadRequest(why).into_response(),
        Err(PathError::Unknown) => return AppError::NotFound.into_response(),
    };
    let head = method == Method::HEAD;
    let read = method == Method::GET || head;
    let result = match resource {
        Resource::CacheInfo if read => Ok(cacheinfo::get(&gw)),
        Resource::CacheInfo if method == Method::PUT => upload::put_cache_info(&gw, &headers, client),
        Resource::NarInfo(h) if read => narinfo::get(&gw, h).await,
        Resource::NarInfo(h) if method == Method::PUT => upload::put_narinfo(&gw, &headers, client, h, body).await,
        Resource::Listing(h) if read => narinfo::listing(&gw, h).await,
        Resource::Nar { hash, compression } if read => nar::get(&gw, hash, compression, &headers, head, client).await,
        Resource::Nar { hash, compression } if method == Method::PUT => {
            upload::put_nar(&gw, &headers, client, hash, compression, body).await
        }
        Resource::Ipfs(target) if read => {
            ipfs::get(&gw, target, uri.query().unwrap_or(""), &headers, head, client).await
        }
        Resource::File(hash) if read => file::get(&gw, hash, &headers, head, client).await,
        Resource::Log if read => Err(AppError::NotFound),
        Resource::Root if read => Ok("nixdag binary cache: see /nix-cache-info\n".into_response()),
        _ => Ok((StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response()),
    };
    result.unwrap_or_else(|e| {
        e.log(&method, uri.path(), client);
        e.into_response()
    })
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
