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
pub mod metrics;
pub mod policy;
mod pool;
mod ranged;
pub mod server;
mod stats;
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
    /// Answer `GET /metrics` on this router (false when `--metrics-listen` puts it elsewhere).
    pub serve_metrics: bool,
    /// Count every request in the metrics (by route and status, latency, bytes). False (`serve
    /// --no-metrics`) skips that per-request work and answers `/metrics` on no router, so that what the
    /// metrics cost can be measured (scripts/bench-gateway) and a cache that is never scraped need not
    /// pay it.
    pub metrics: bool,
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
    metrics: Arc<metrics::Metrics>,
    /// `/stats`: the cached report page, computed one at a time.
    stats: Arc<stats::StatsPage>,
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
            metrics: Arc::new(metrics::Metrics::default()),
            stats: Arc::new(stats::StatsPage::default()),
            cfg: Arc::new(cfg),
        }))
    }

    /// The axum router; every path goes through one dispatcher over the parsed [`Resource`].
    pub fn router(self) -> Router {
        Router::new().fallback(dispatch).with_state(self)
    }

    /// A router answering only `/metrics` and `/healthz` (for `--metrics-listen`), over the same
    /// counters as [`Gateway::router`].
    pub fn metrics_router(self) -> Router {
        Router::new().fallback(dispatch_metrics).with_state(self)
    }

    /// The gateway's metrics (to add series from other doors).
    pub fn metrics(&self) -> &Arc<metrics::Metrics> {
        &self.metrics
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

/// Takes the request whole: the `HeaderMap` and `Uri` extractors clone theirs. Every request is
/// counted in the metrics and, when the `nixdag::access` target is enabled (`--access-log`, or a
/// `NIXDAG_LOG`/`RUST_LOG` directive), logged as one line at info level.
async fn dispatch(State(gw): State<Gateway>, req: axum::extract::Request) -> Response {
    use tracing::Instrument;
    let start = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let axum::http::request::Parts { method, uri, headers, extensions, .. } = parts;
    let client = extensions.get::<ClientAddr>().map(|c| c.0).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    // A span per request names it in everything logged while answering, at debug level: at info it cost
    // 15 % of narinfo throughput (94 -> 110 k requests/s without it). Failures of ours are logged with
    // the request's fields whatever the level (`AppError::log`).
    let span = tracing::debug_span!("request", %method, path = %uri.path(), %client);
    let range = headers.get(axum::http::header::RANGE).and_then(|v| v.to_str().ok()).map(String::from);
    let (route, res) = match uri.path() {
        "/metrics" if gw.cfg.serve_metrics && gw.cfg.metrics => (ROUTE_METRICS, serve_metrics(&gw, &method).await),
        "/stats" if gw.cfg.serve_metrics => (ROUTE_STATS, stats::get(&gw, &method).await),
        "/healthz" => (ROUTE_HEALTHZ, healthz(&gw, &method).await),
        _ => answer(gw.clone(), client, &method, &uri, headers, body).instrument(span).await,
    };
    finish(&gw, route, &method, &uri, range, client, start, res)
}

/// The `--metrics-listen` router's dispatcher: `/metrics`, `/stats`, `/healthz`, else 404. `/stats`
/// lists every stored path, so it goes where the operator put the metrics (docs/SECURITY.md).
async fn dispatch_metrics(State(gw): State<Gateway>, req: axum::extract::Request) -> Response {
    let start = std::time::Instant::now();
    let client = req.extensions().get::<ClientAddr>().map(|c| c.0).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let (route, res) = match uri.path() {
        "/metrics" if gw.cfg.metrics => (ROUTE_METRICS, serve_metrics(&gw, &method).await),
        "/stats" => (ROUTE_STATS, stats::get(&gw, &method).await),
        "/healthz" => (ROUTE_HEALTHZ, healthz(&gw, &method).await),
        _ => (metrics::OTHER, AppError::NotFound.into_response()),
    };
    finish(&gw, route, &method, &uri, None, client, start, res)
}

const ROUTE_METRICS: usize = 10;
const ROUTE_HEALTHZ: usize = 11;
const ROUTE_STATS: usize = 13;

/// Count and log an answered request. The message starts `METHOD PATH STATUS` (then ` range=R` for a
/// ranged request), as `--access-log` always printed; the fields repeat it for JSON logs.
#[allow(clippy::too_many_arguments)]
fn finish(
    gw: &Gateway,
    route: usize,
    method: &Method,
    uri: &Uri,
    range: Option<String>,
    client: IpAddr,
    start: std::time::Instant,
    res: Response,
) -> Response {
    let took = start.elapsed();
    let status = res.status().as_u16();
    let bytes = res
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        // A body of known length (text answers) gets its Content-Length from hyper later.
        .or_else(|| axum::body::HttpBody::size_hint(res.body()).exact());
    if gw.cfg.metrics {
        gw.metrics.record(route, status, bytes, took);
    }
    tracing::info!(
        target: "nixdag::access",
        %method,
        route = metrics::ROUTES[route],
        path = %uri.path(),
        status,
        bytes = bytes.map(|b| b as i64).unwrap_or(-1),
        duration_ms = took.as_secs_f64() * 1000.0,
        %client,
        "{method} {} {status}{}",
        uri.path(),
        range.map(|r| format!(" range={r}")).unwrap_or_default()
    );
    res
}

async fn serve_metrics(gw: &Gateway, method: &Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response();
    }
    let m = gw.metrics.clone();
    let text = gw
        .lookup(move |service| {
            let store = m.store_stats(service);
            Ok(m.render(service, store.as_ref()))
        })
        .await;
    match text {
        Ok(t) => ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], t).into_response(),
        Err(e) => e.into_response(),
    }
}

/// 200 `ok` when the store answers a lookup; 503 otherwise.
async fn healthz(gw: &Gateway, method: &Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response();
    }
    let probe = gw.lookup(|service| service.store().nar(&crate::nix::hash::NarHash([0; 32])).map_err(AppError::from)).await;
    match probe {
        Ok(_) => "ok\n".into_response(),
        Err(e) => {
            tracing::warn!("healthz: the store does not answer: {e:?}");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
    }
}

async fn answer(
    gw: Gateway,
    client: IpAddr,
    method: &Method,
    uri: &Uri,
    headers: HeaderMap,
    body: Body,
) -> (usize, Response) {
    let resource = match http_path::parse(uri.path()) {
        Ok(r) => r,
        Err(PathError::Malformed(why)) => return (metrics::OTHER, AppError::BadRequest(why).into_response()),
        Err(PathError::Unknown) => return (metrics::OTHER, AppError::NotFound.into_response()),
    };
    let head = method == Method::HEAD;
    let read = method == Method::GET || head;
    let put = method == Method::PUT;
    // Indices into `metrics::ROUTES`.
    let route = match (&resource, put) {
        (Resource::CacheInfo, false) => 0,
        (Resource::NarInfo(_), false) => 1,
        (Resource::NarInfo(_), true) => 2,
        (Resource::Listing(_), _) => 3,
        (Resource::Nar { .. }, false) => 4,
        (Resource::Nar { .. }, true) => 5,
        (Resource::Ipfs(_), _) => 6,
        (Resource::File(_), _) => 7,
        (Resource::Log, _) => 8,
        (Resource::Root, _) => 9,
        (Resource::CacheInfo, true) => 12,
    };
    let result = match resource {
        Resource::CacheInfo if read => Ok(cacheinfo::get(&gw)),
        Resource::CacheInfo if put => upload::put_cache_info(&gw, &headers, client),
        Resource::NarInfo(h) if read => narinfo::get(&gw, h).await,
        Resource::NarInfo(h) if put => upload::put_narinfo(&gw, &headers, client, h, body).await,
        Resource::Listing(h) if read => narinfo::listing(&gw, h).await,
        Resource::Nar { hash, compression } if read => nar::get(&gw, hash, compression, &headers, head, client).await,
        Resource::Nar { hash, compression } if put => {
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
    let res = result.unwrap_or_else(|e| {
        e.log(method, uri.path(), client);
        e.into_response()
    });
    (route, res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::signing::SecretKey;
    use crate::service::ServiceConfig;
    use crate::store::Store;

    /// `serve --no-metrics`: a request leaves every request counter at zero, and `/metrics` is a 404 on
    /// the main router and on the `--metrics-listen` one; with metrics on, the same request is counted.
    #[test]
    fn without_metrics_requests_are_not_counted_and_metrics_is_not_found() {
        use tower_service::Service as _;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let service = Service::start(
            store,
            ServiceConfig {
                key: SecretKey::generate("test-1").unwrap(),
                trusted_keys: Vec::new(),
                repack_idle: None,
                trust_foreign_narinfos: false,
                budget: None,
            },
        );
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let get = |router: &mut Router, path: &str| {
            let req = axum::http::Request::builder().uri(path).body(Body::empty()).unwrap();
            rt.block_on(router.call(req)).unwrap().status()
        };
        for metrics in [true, false] {
            let cfg = GatewayConfig {
                priority: 30,
                compression: ServedCompression::None,
                uploads: UploadPolicy::default(),
                serve_metrics: metrics,
                metrics,
                limits: Limits::default(),
                mirrors: None,
            };
            let gw = Gateway::new(service.clone(), cfg);
            let (mut main, mut side) = (gw.clone().router(), gw.clone().metrics_router());
            assert_eq!(get(&mut main, "/nix-cache-info"), StatusCode::OK);
            assert_eq!(get(&mut main, "/healthz"), StatusCode::OK);
            assert_eq!(get(&mut side, "/healthz"), StatusCode::OK);
            let want = if metrics { StatusCode::OK } else { StatusCode::NOT_FOUND };
            assert_eq!(get(&mut main, "/metrics"), want, "metrics {metrics}");
            assert_eq!(get(&mut side, "/metrics"), want, "metrics {metrics}");
            let text = gw.metrics().render(&service, None);
            let counted = text.contains("nixdag_http_requests_total{route=\"nix-cache-info\",status=\"200\"} 1");
            assert_eq!(counted, metrics, "metrics {metrics}:\n{text}");
            assert_eq!(text.contains("nixdag_http_request_duration_seconds_bucket"), metrics);
        }
        service.stop();
    }
}
