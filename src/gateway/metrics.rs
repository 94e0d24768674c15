//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4), and `GET /healthz`.
//!
//! Request counts and latencies are kept in fixed arrays of atomics indexed by route and status, so
//! counting costs a request a few relaxed additions and no lock (a map behind a mutex would serialize
//! every request of every core). Each serving thread adds to a shard of its own, so two cores never
//! pass one cache line back and forth per request; a scrape sums the shards. The store's sizes need a scan of the index, so they are computed at
//! most every [`STORE_REFRESH`] when scraped, off the async threads, and cached. Counters kept by
//! other parts (the service, the peers) are read when scraped.
//!
//! Names follow Prometheus' conventions: `nixdag_` prefix, base units (`_bytes`, `_seconds`),
//! counters ending in `_total`. docs/STATS.md lists every series.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::service::Service;
use crate::store::StoreStats;

/// How old the cached store sizes may get.
pub const STORE_REFRESH: Duration = Duration::from_secs(15);

/// Route labels: what a request asked for, as `answer` dispatched it.
pub const ROUTES: [&str; 15] = [
    "nix-cache-info",
    "narinfo",
    "narinfo_upload",
    "listing",
    "nar",
    "nar_upload",
    "ipfs",
    "file",
    "log",
    "root",
    "metrics",
    "healthz",
    "cache_info_upload",
    "stats",
    "other",
];

/// The label of a route that matched nothing else.
pub const OTHER: usize = ROUTES.len() - 1;

/// Statuses counted under their own code; any other falls in the last slot, labelled by its class.
const STATUSES: [u16; 17] = [200, 204, 206, 304, 400, 401, 403, 404, 405, 409, 413, 416, 429, 500, 502, 503, 507];

/// Upper bounds of the latency buckets, in seconds (Prometheus' client defaults, plus 1 ms and 30 s:
/// a narinfo answers in well under a millisecond, a large NAR streams for many seconds).
const BUCKETS: [f64; 13] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Per route: count by status, latency histogram.
struct RouteStats {
    /// Requests by status, `STATUSES` then one slot each for 1xx..5xx others.
    status: [AtomicU64; STATUSES.len() + 5],
    /// Requests whose duration is ≤ `BUCKETS[i]` (not cumulative here; summed when rendered).
    buckets: [AtomicU64; BUCKETS.len() + 1],
    /// Sum of durations, in microseconds.
    sum_us: AtomicU64,
}

impl Default for RouteStats {
    fn default() -> Self {
        RouteStats {
            status: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// Extra series another part of the program renders (the peers' counters), appended when scraped.
pub type Extra = Box<dyn Fn(&mut String) + Send + Sync>;

/// Shards of the request counters (more than the serving threads of any machine this runs on; threads
/// beyond share them round-robin).
const SHARDS: usize = 16;

/// One thread's request counters, on cache lines of their own.
#[repr(align(128))]
struct Shard {
    routes: [RouteStats; ROUTES.len()],
    /// Response body bytes announced (`Content-Length`) by route.
    response_bytes: [AtomicU64; ROUTES.len()],
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            routes: std::array::from_fn(|_| RouteStats::default()),
            response_bytes: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// This thread's shard, fixed at its first request.
fn shard_index() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static INDEX: usize = (NEXT.fetch_add(1, Ordering::Relaxed) as usize) % SHARDS;
    }
    INDEX.with(|i| *i)
}

/// The gateway's metrics.
pub struct Metrics {
    shards: Box<[Shard]>,
    store: Mutex<Option<(Instant, StoreStats)>>,
    extra: Mutex<Vec<Extra>>,
    /// Narinfos answered from the gateway's cache of rendered narinfos (never reaching the service).
    pub narinfo_cached: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            store: Mutex::new(None),
            extra: Mutex::new(Vec::new()),
            narinfo_cached: AtomicU64::new(0),
        }
    }
}

fn status_slot(status: u16) -> usize {
    match STATUSES.iter().position(|s| *s == status) {
        Some(i) => i,
        None => STATUSES.len() + (usize::from(status / 100).clamp(1, 5) - 1),
    }
}

fn slot_label(slot: usize) -> String {
    match STATUSES.get(slot) {
        Some(s) => s.to_string(),
        None => format!("{}xx", slot - STATUSES.len() + 1),
    }
}

impl Metrics {
    /// Count one answered request.
    pub fn record(&self, route: usize, status: u16, body_bytes: Option<u64>, took: Duration) {
        let shard = &self.shards[shard_index()];
        let r = &shard.routes[route.min(OTHER)];
        r.status[status_slot(status)].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let b = BUCKETS.iter().position(|le| secs <= *le).unwrap_or(BUCKETS.len());
        r.buckets[b].fetch_add(1, Ordering::Relaxed);
        r.sum_us.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        if let Some(n) = body_bytes {
            shard.response_bytes[route.min(OTHER)].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// One counter summed over the shards.
    fn sum(&self, counter: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|sh| counter(sh).load(Ordering::Relaxed)).sum()
    }

    /// Render more series on every scrape (peers' counters, set by `serve`).
    pub fn add_extra(&self, f: Extra) {
        self.extra.lock().unwrap_or_else(|p| p.into_inner()).push(f);
    }

    /// The store's sizes, recomputed when older than [`STORE_REFRESH`]. Blocking: call it off the async
    /// threads. A failure keeps the last figures (or none).
    pub fn store_stats(&self, service: &Service) -> Option<StoreStats> {
        let mut cached = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, s)) = &*cached {
            if at.elapsed() < STORE_REFRESH {
                return Some(s.clone());
            }
        }
        match service.store().stats() {
            Ok(s) => {
                *cached = Some((Instant::now(), s.clone()));
                Some(s)
            }
            Err(e) => {
                tracing::warn!("metrics: reading the store's sizes: {e}");
                cached.as_ref().map(|c| c.1.clone())
            }
        }
    }

    /// The exposition text. `store` from [`Metrics::store_stats`].
    pub fn render(&self, service: &Service, store: Option<&StoreStats>) -> String {
        let mut out = String::with_capacity(8192);
        let o = &mut out;
        head(o, "nixdag_http_requests_total", "counter", "HTTP requests answered, by route and status.");
        for (i, route) in ROUTES.iter().enumerate() {
            for slot in 0..STATUSES.len() + 5 {
                let n = self.sum(|sh| &sh.routes[i].status[slot]);
                if n > 0 {
                    let _ = writeln!(o, "nixdag_http_requests_total{{route=\"{route}\",status=\"{}\"}} {n}", slot_label(slot));
                }
            }
        }
        head(o, "nixdag_http_request_duration_seconds", "histogram", "Time to answer a request (to its headers; a body streams after), by route.");
        for (i, route) in ROUTES.iter().enumerate() {
            let counts: Vec<u64> = (0..=BUCKETS.len()).map(|b| self.sum(|sh| &sh.routes[i].buckets[b])).collect();
            let total: u64 = counts.iter().sum();
            if total == 0 {
                continue;
            }
            let mut acc = 0;
            for (j, le) in BUCKETS.iter().enumerate() {
                acc += counts[j];
                let _ = writeln!(o, "nixdag_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {acc}");
            }
            let _ = writeln!(o, "nixdag_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {total}");
            let sum = self.sum(|sh| &sh.routes[i].sum_us) as f64 / 1e6;
            let _ = writeln!(o, "nixdag_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum}");
            let _ = writeln!(o, "nixdag_http_request_duration_seconds_count{{route=\"{route}\"}} {total}");
        }
        head(o, "nixdag_http_response_bytes_total", "counter", "Response body bytes of known length (Content-Length, or a body of known size), by route; streamed bodies without one are not counted.");
        for (i, route) in ROUTES.iter().enumerate() {
            let n = self.sum(|sh| &sh.response_bytes[i]);
            if n > 0 {
                let _ = writeln!(o, "nixdag_http_response_bytes_total{{route=\"{route}\"}} {n}");
            }
        }
        let c = service.counters();
        counter(o, "nixdag_served_bytes_total", "Bytes read out of stored NARs and files for clients (whole or ranges, before any compression).", c.nar_bytes);
        head(o, "nixdag_narinfo_hits_total", "counter", "Narinfos found, by where: store (this cache), local (this machine's Nix store), peer, upstream.");
        for (source, n) in [("store", c.narinfo_store), ("local", c.narinfo_local_nix), ("peer", c.narinfo_peer), ("upstream", c.narinfo_upstream)] {
            let _ = writeln!(o, "nixdag_narinfo_hits_total{{source=\"{source}\"}} {n}");
        }
        counter(o, "nixdag_narinfo_cache_hits_total", "Narinfos answered from the gateway's cache of rendered narinfos (found earlier, counted once in nixdag_narinfo_hits_total).", self.narinfo_cached.load(Ordering::Relaxed));
        counter(o, "nixdag_narinfo_misses_total", "Narinfos asked for that no source had.", c.narinfo_not_found);
        counter(o, "nixdag_nars_opened_total", "NAR bodies opened (whole or a range).", c.nars_opened);
        counter(o, "nixdag_files_opened_total", "Stored files opened (hashed mirror).", c.files_opened);
        counter(o, "nixdag_nars_pulled_total", "NARs pulled through from this machine's Nix store or an upstream.", c.nars_pulled);
        counter(o, "nixdag_ingest_bytes_total", "NAR bytes stored by uploads and pulls (before dedup).", c.ingested_bytes);
        counter(o, "nixdag_ingest_new_bytes_total", "Of those, raw bytes of blocks new to the store.", c.ingested_new_bytes);
        counter(o, "nixdag_nars_put_total", "NARs stored by uploads.", c.nars_put);
        counter(o, "nixdag_damaged_nars_total", "NARs found damaged while serving.", c.damaged);
        if let Some(s) = store {
            gauge(o, "nixdag_store_logical_bytes", "Bytes of every stored NAR and file, each whole.", s.logical_bytes);
            gauge(o, "nixdag_store_unique_bytes", "Raw bytes of the distinct blocks.", s.unique_bytes);
            gauge(o, "nixdag_store_stored_bytes", "Bytes on disk: packs plus index.", s.stored_bytes);
            gauge(o, "nixdag_store_blocks", "Distinct blocks.", s.blocks);
            gauge(o, "nixdag_store_nars", "Stored NARs.", s.nars);
            gauge(o, "nixdag_store_files", "Stored files.", s.files);
            gauge(o, "nixdag_repack_queue_length", "Compressed files waiting for repack.", s.repack_queued);
        }
        for f in self.extra.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            f(o);
        }
        out
    }
}

/// `# HELP` and `# TYPE` lines.
pub fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// A counter without labels.
pub fn counter(o: &mut String, name: &str, help: &str, v: u64) {
    head(o, name, "counter", help);
    let _ = writeln!(o, "{name} {v}");
}

/// A gauge without labels.
pub fn gauge(o: &mut String, name: &str, help: &str, v: u64) {
    head(o, name, "gauge", help);
    let _ = writeln!(o, "{name} {v}");
}

/// A shared handle.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_fall_in_their_slots() {
        assert_eq!(slot_label(status_slot(200)), "200");
        assert_eq!(slot_label(status_slot(418)), "4xx");
        assert_eq!(slot_label(status_slot(302)), "3xx");
        assert_eq!(slot_label(status_slot(599)), "5xx");
        assert_eq!(slot_label(status_slot(101)), "1xx");
    }
}
