//! The narinfo-miss hook: where the service turns when its store lacks a path. [`Fallback`] is the one
//! seam (upstream caches here; other sources, such as peers, fit the same two calls), and
//! [`UpstreamFallback`] is `serve --upstream`: a pull-through cache over [`Upstreams`].
//!
//! A miss asks the upstreams (in parallel, within a deadline, so a slow or dead upstream never holds a
//! request longer); a path none has is remembered as missing for a short while. A narinfo found is
//! answered at once (signature checked against the trusted keys first), and its NAR is pulled when a
//! client asks for it: one download per NAR however many clients ask (single flight), streamed to
//! each of them while it is being stored, from an unlinked temporary file that grows as the download
//! does. The ingest validates the NAR as it arrives and commits it with its narinfo only when the
//! NarHash and NarSize match; otherwise nothing is kept and the clients' streams are cut before their
//! last byte. Once stored, the path is served from the store like any other.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Service;
use crate::nix::hash::NarHash;
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePathHash;
use crate::upstream::{as_stored, Lookup, NarDownload, Upstreams};

/// What the service asks when its store lacks something.
pub trait Fallback: Send + Sync {
    /// A verified narinfo for a path the store lacks, or `None` (no source has it, or none answered
    /// within the deadline). Called on a lookup thread; may block up to the deadline.
    fn narinfo(&self, hash: &StorePathHash) -> Option<NarInfo>;
    /// The NAR with this hash, which the store lacks, as it is being stored: `None` when no narinfo
    /// this fallback answered names it.
    fn nar(&self, service: &Arc<Service>, hash: &NarHash) -> Option<Pulled>;
}

/// How `serve --upstream` treats its upstreams.
#[derive(Debug, Clone, Copy)]
pub struct PullConfig {
    /// Longest a narinfo miss waits for the upstreams.
    pub deadline: Duration,
    /// How long "no upstream has it" is remembered.
    pub negative_ttl: Duration,
    /// Longest a client's NAR stream waits for the download to make progress.
    pub idle: Duration,
}

/// Entries kept in the bounded maps below before they are cleared (a few MiB at most).
const MAX_REMEMBERED: usize = 16_384;

/// NAR downloads at once (a thread and a temporary file each); a request for another missing NAR beyond
/// them is answered as missing.
const MAX_FLIGHTS: usize = 32;

/// A pull-through cache over upstream binary caches.
pub struct UpstreamFallback {
    upstreams: Arc<Upstreams>,
    rt: tokio::runtime::Handle,
    cfg: PullConfig,
    /// Narinfos answered, by NarHash: what a NAR request may pull, and from where.
    answered: Mutex<HashMap<NarHash, (usize, NarInfo)>>,
    /// Paths no upstream had, until when.
    missing: Mutex<HashMap<StorePathHash, Instant>>,
    /// Downloads under way.
    flights: Arc<Mutex<HashMap<NarHash, Arc<Flight>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl UpstreamFallback {
    /// Upstreams asked through `rt` (a runtime of their own: lookups block on it from other threads).
    pub fn new(upstreams: Arc<Upstreams>, rt: tokio::runtime::Handle, cfg: PullConfig) -> Self {
        UpstreamFallback {
            upstreams,
            rt,
            cfg,
            answered: Mutex::default(),
            missing: Mutex::default(),
            flights: Arc::default(),
        }
    }
}

impl Fallback for UpstreamFallback {
    fn narinfo(&self, hash: &StorePathHash) -> Option<NarInfo> {
        if lock(&self.missing).get(hash).is_some_and(|until| Instant::now() < *until) {
            return None;
        }
        let lookup = self.rt.block_on(async { tokio::time::timeout(self.cfg.deadline, self.upstreams.lookup(hash)).await });
        match lookup {
            Ok(Lookup::Found { upstream, info }) => {
                let mut answered = lock(&self.answered);
                if answered.len() >= MAX_REMEMBERED {
                    answered.clear();
                }
                answered.insert(info.nar_hash, (upstream, (*info).clone()));
                Some(as_stored(*info))
            }
            Ok(Lookup::Missing) => {
                self.remember_missing(hash);
                None
            }
            Ok(Lookup::Refused(why)) => {
                tracing::warn!("upstream narinfo of {hash} refused: {why}");
                self.remember_missing(hash);
                None
            }
            Ok(Lookup::Failed(why)) => {
                tracing::warn!("no upstream answered for {hash}: {why}");
                None
            }
            Err(_) => {
                tracing::warn!("no upstream answered for {hash} within {:?}", self.cfg.deadline);
                None
            }
        }
    }

    fn nar(&self, service: &Arc<Service>, hash: &NarHash) -> Option<Pulled> {
        let mut flights = lock(&self.flights);
        if let Some(f) = flights.get(hash) {
            return Some(Pulled::new(f.clone(), self.cfg.idle));
        }
        if flights.len() >= MAX_FLIGHTS {
            tracing::warn!("not pulling NAR {hash}: {MAX_FLIGHTS} downloads under way");
            return None;
        }
        let (upstream, info) = lock(&self.answered).get(hash).cloned()?;
        let hash = *hash;
        // Stored meanwhile (a flight that just ended): the caller reads the store again.
        if matches!(service.store().nar(&hash), Ok(Some(_))) {
            return None;
        }
        let file = match temp_file(service.store().dir()) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("cannot make a temporary file to pull NAR {hash}: {e}");
                return None;
            }
        };
        let flight = Arc::new(Flight { size: info.nar_size, file, state: Mutex::default(), cond: Condvar::new() });
        flights.insert(hash, flight.clone());
        drop(flights);
        let up = self.upstreams.list()[upstream].clone();
        let (rt, service, f) = (self.rt.clone(), service.clone(), flight.clone());
        let flights = self.flights.clone();
        let started = std::thread::Builder::new().name("nixdag-pull".into()).spawn(move || {
            let result = match NarDownload::open(&up, &info, &rt, None) {
                Ok(d) => service
                    .put_path(as_stored(info), BufReader::with_capacity(1 << 20, Tee { inner: d, flight: &f }))
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = &result {
                tracing::warn!("pulling NAR {hash} from {}: {e}", up.url());
            }
            // Stored (or failed) first, then forgotten: a request that misses the flight finds the store.
            lock(&flights).remove(&hash);
            f.end(result);
        });
        if let Err(e) = started {
            lock(&self.flights).remove(&hash);
            flight.end(Err(format!("cannot start the download: {e}")));
        }
        Some(Pulled::new(flight, self.cfg.idle))
    }
}

impl UpstreamFallback {
    fn remember_missing(&self, hash: &StorePathHash) {
        let mut missing = lock(&self.missing);
        if missing.len() >= MAX_REMEMBERED {
            let now = Instant::now();
            missing.retain(|_, until| *until > now);
        }
        if missing.len() < MAX_REMEMBERED {
            missing.insert(*hash, Instant::now() + self.cfg.negative_ttl);
        }
    }
}

/// A temporary file under `STORE/tmp/`, unlinked at once: it lives as long as the flight holds it, and
/// nothing is left behind by a crash.
fn temp_file(store_dir: &Path) -> io::Result<File> {
    let dir = store_dir.join("tmp");
    std::fs::create_dir_all(&dir)?;
    let mut name = [0u8; 8];
    getrandom::getrandom(&mut name).map_err(|e| io::Error::other(e.to_string()))?;
    let path = dir.join(format!("pull-{}", data_encoding::HEXLOWER.encode(&name)));
    let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

/// One NAR download under way.
pub struct Flight {
    size: u64,
    file: File,
    state: Mutex<FlightState>,
    cond: Condvar,
}

#[derive(Default)]
struct FlightState {
    written: u64,
    end: Option<Result<(), String>>,
}

impl Flight {
    fn end(&self, r: Result<(), String>) {
        lock(&self.state).end = Some(r);
        self.cond.notify_all();
    }
}

/// The download as the ingest reads it: each piece is also written to the flight's file for clients.
struct Tee<'a> {
    inner: NarDownload,
    flight: &'a Flight,
}

impl Read for Tee<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        if n > 0 {
            let at = lock(&self.flight.state).written;
            self.flight.file.write_all_at(&out[..n], at)?;
            lock(&self.flight.state).written = at + n as u64;
            self.flight.cond.notify_all();
        }
        Ok(n)
    }
}

/// A client's view of a flight: the NAR from its first byte, as fast as the download goes.
pub struct Pulled {
    flight: Arc<Flight>,
    pos: u64,
    idle: Duration,
}

impl Pulled {
    fn new(flight: Arc<Flight>, idle: Duration) -> Self {
        Pulled { flight, pos: 0, idle }
    }

    /// The NAR's size (its signed NarSize).
    pub fn size(&self) -> u64 {
        self.flight.size
    }

    /// The next piece, at most `max` bytes; `None` once the whole NAR is stored. An error when the
    /// download failed or its NAR did not match (then nothing was stored), or it stalled.
    pub fn next_bytes(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        let f = &self.flight;
        let mut state = lock(&f.state);
        loop {
            // The last byte is held back until the NAR is stored: a client never receives a whole NAR
            // whose hash turned out wrong (its download is cut instead).
            let ready = match state.end {
                Some(Ok(())) => state.written,
                _ => state.written.min(f.size.saturating_sub(1)),
            };
            if self.pos < ready {
                let n = (ready - self.pos).min(max as u64) as usize;
                drop(state);
                let mut buf = vec![0u8; n];
                f.file.read_exact_at(&mut buf, self.pos)?;
                self.pos += n as u64;
                return Ok(Some(Bytes::from(buf)));
            }
            match &state.end {
                Some(Ok(())) => return Ok(None),
                Some(Err(e)) => return Err(io::Error::other(format!("pulling the NAR failed: {e}"))),
                None => {}
            }
            let (s, timeout) = f.cond.wait_timeout(state, self.idle).unwrap_or_else(|p| p.into_inner());
            state = s;
            if timeout.timed_out() && state.end.is_none() && self.pos >= state.written.min(f.size.saturating_sub(1)) {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the upstream download stalled"));
            }
        }
    }
}
