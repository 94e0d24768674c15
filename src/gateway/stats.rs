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
                let r = stats::report(service.store(), &opts).map_err(AppError::internal)?;
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
