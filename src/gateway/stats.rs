//! `GET /stats`: the `dedup-stats` report as its HTML page (`crate::stats::html`), live.
//!
//! The report costs a pass over the index and a walk of every stream's interior nodes (seconds on a
//! store of millions of blocks), so its cost is bounded whatever clients do: at most one computation
//! at a time, on the lookup pool (never on the async threads); its page is reused for [`STATS_TTL`];
//! while one is computed, others get the previous page, or 503 with `Retry-After` when there is none
//! yet. A computation whose client went away still finishes and fills the cache. The xz sample is
//! smaller than the command's ([`LIVE_XZ`]), so a request never waits on seconds of compression.
//!
//! The page loads nothing and runs no script, so it is served under a policy that forbids everything
//! but its inline style sheet ([`CSP`]); the names in it are escaped by the renderer.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::AppError;
use super::Gateway;
use crate::stats::{self, html, Options, XzOptions};

/// How long a computed page is served before the next request computes another.
pub const STATS_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// The live page's xz sample: 8 NARs, 2 MiB in all (about a second of xz -6), against the command's
/// 20 and 16 MiB; its standard error says what that costs in accuracy.
pub const LIVE_XZ: XzOptions = XzOptions { max_nars: 8, max_bytes: 2 << 20, preset: 6 };

/// Per-path rows on the live page, as `dedup-stats` shows by default.
const LIVE_TOP: usize = 15;

/// Nothing but the inline style sheet (and `data:` images, which the page does not use, so that a
/// browser extension's icon does not log a violation); no script, no connection, no frame.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The cached page and whether one is being computed.
#[derive(Default)]
pub struct StatsPage {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    page: Option<(Instant, Arc<str>)>,
    running: bool,
}

/// Clears `running` when the computation ends, however it ends (an error, a panic on the pool, or a
/// job the full pool never ran).
struct Running(Arc<StatsPage>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner()).running = false;
    }
}

/// What to do with a request, decided under the lock.
enum Plan {
    Serve(Arc<str>),
    Busy,
    Compute(Running),
}

impl StatsPage {
    fn plan(self: &Arc<Self>) -> Plan {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match (&st.page, st.running) {
            (Some((at, page)), _) if at.elapsed() < STATS_TTL => Plan::Serve(page.clone()),
            (Some((_, page)), true) => Plan::Serve(page.clone()),
            (None, true) => Plan::Busy,
            (_, false) => {
                st.running = true;
                Plan::Compute(Running(self.clone()))
            }
        }
    }

    fn store(&self, page: Arc<str>) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).page = Some((Instant::now(), page));
    }
}

/// `GET`/`HEAD /stats`.
pub(super) async fn get(gw: &Gateway, method: &Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response();
    }
    let page = match gw.stats.plan() {
        Plan::Serve(page) => Ok(page),
        Plan::Busy => Err(AppError::Busy("the stats page is being computed")),
        Plan::Compute(running) => {
            gw.lookup(move |service| {
                let opts =
                    Options { top: Some(LIVE_TOP), by_name: true, xz: Some(LIVE_XZ), ..Options::default() };
                // A NAR the xz sample cannot read (damage `verify` would report) costs the page its
                // estimate, not the whole page.
                let r = match stats::report(service.store(), &opts) {
                    Err(stats::StatsError::Xz(e)) => {
                        tracing::warn!("/stats: no standard-cache estimate: {e}");
                        stats::report(service.store(), &Options { xz: None, ..opts })
                    }
                    r => r,
                }
                .map_err(AppError::internal)?;
                let note = format!(
                    "Live from the gateway: computed at most once every {} s; the standard-cache estimate samples at most {} NARs and {} (dedup-stats samples more).",
                    STATS_TTL.as_secs(),
                    LIVE_XZ.max_nars,
                    stats::human_bytes(LIVE_XZ.max_bytes)
                );
                let page: Arc<str> =
                    html::render(&r, &html::Page { generated: SystemTime::now(), note: Some(note) }).into();
                running.0.store(page.clone());
                drop(running);
                Ok(page)
            })
            .await
        }
    };
    match page {
        Ok(page) => {
            // For HEAD hyper sends the headers (Content-Length from the body) and leaves the body out.
            let mut res = Response::new(axum::body::Body::from(page.to_string()));
            let h = res.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            res
        }
        Err(e) => {
            if let AppError::Internal(detail) = &e {
                tracing::error!("/stats: {detail}");
            }
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::{GatewayConfig, Limits, ServedCompression, UploadPolicy};
    use crate::nix::signing::SecretKey;
    use crate::service::{Service, ServiceConfig};
    use crate::store::Store;

    /// A request through the gateway's router: (status, headers, body).
    async fn call(router: &mut axum::Router, method: Method) -> (StatusCode, axum::http::HeaderMap, String) {
        let req = axum::http::Request::builder().method(method).uri("/stats").body(axum::body::Body::empty()).unwrap();
        let res = tower_service::Service::call(router, req).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = axum::body::to_bytes(body, 16 << 20).await.unwrap();
        (parts.status, parts.headers, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn the_route_answers_busy_then_the_page_with_its_headers_then_the_same_page() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let service = Service::start(
            store,
            ServiceConfig {
                key: SecretKey::generate("stats-test-1").unwrap(),
                trusted_keys: Vec::new(),
                repack_idle: None,
                trust_foreign_narinfos: false,
                budget: None,
            },
        );
        let gw = Gateway::new(
            service,
            GatewayConfig {
                priority: 40,
                compression: ServedCompression::None,
                uploads: UploadPolicy::default(),
                serve_metrics: true,
                metrics: true,
                limits: Limits::default(),
                mirrors: None,
            },
        );
        let pages = gw.stats.clone();
        let mut router = gw.router();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            // Another request is computing the first page: 503 with Retry-After, nothing started.
            pages.state.lock().unwrap().running = true;
            let (status, headers, _) = call(&mut router, Method::GET).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(headers.contains_key(header::RETRY_AFTER));
            pages.state.lock().unwrap().running = false;
            // Computed now, with its headers.
            let (status, headers, first) = call(&mut router, Method::GET).await;
            assert_eq!(status, StatusCode::OK, "{first}");
            assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
            assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert!(first.contains("<svg id=\"chart-timeline\" class=\"chart\""));
            assert!(!pages.state.lock().unwrap().running, "the computation ended");
            // Within the TTL the same page, not another computation.
            let computed_at = |p: &StatsPage| p.state.lock().unwrap().page.as_ref().map(|c| c.0);
            let before = computed_at(&pages);
            let (status, _, second) = call(&mut router, Method::GET).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(computed_at(&pages), before, "the page was computed again");
            assert_eq!(first, second);
            let (status, _, _) = call(&mut router, Method::POST).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        });
    }

    #[test]
    fn one_computation_at_a_time_and_the_page_is_reused() {
        let pages = Arc::new(StatsPage::default());
        let Plan::Compute(running) = pages.plan() else { panic!("the first request computes") };
        assert!(matches!(pages.plan(), Plan::Busy), "a second request while the first computes, no page yet");
        pages.store("<p>one</p>".into());
        drop(running);
        assert!(matches!(pages.plan(), Plan::Serve(p) if &*p == "<p>one</p>"), "a fresh page is served");
        // Stale: the next request computes, and meanwhile others get the stale page.
        let old = Instant::now().checked_sub(STATS_TTL).expect("the clock runs for 30 s");
        pages.state.lock().unwrap().page.as_mut().unwrap().0 = old;
        let Plan::Compute(running) = pages.plan() else { panic!("a stale page is recomputed") };
        assert!(matches!(pages.plan(), Plan::Serve(p) if &*p == "<p>one</p>"));
        // A computation that fails (or never ran) frees the slot.
        drop(running);
        assert!(matches!(pages.plan(), Plan::Compute(_)));
    }
}
