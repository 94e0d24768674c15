//! One NAR being stored from a source elsewhere (an upstream cache, this machine's Nix store) while
//! clients read it: the single-flight machinery both fallbacks share.
//!
//! One pull per NAR however many clients ask. The source's bytes go through the ingest (which validates
//! the NAR as it arrives and commits it with its narinfo only when NarHash and NarSize match) and, on the
//! way, into an unlinked temporary file that grows as the pull does; each client reads that file from its
//! first byte. The last byte is held back until the NAR is stored, so a client never receives a whole NAR
//! whose hash turned out wrong: its stream is cut instead, and Nix's own check refuses it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::Service;
use crate::nix::hash::NarHash;
use crate::nix::narinfo::NarInfo;

/// Pulls at once (a thread and a temporary file each); a request for another missing NAR beyond them is
/// answered as missing.
const MAX_FLIGHTS: usize = 32;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The pulls under way, by NarHash.
#[derive(Default)]
pub struct Flights {
    map: Arc<Mutex<HashMap<NarHash, Arc<Flight>>>>,
}

impl Flights {
    /// A client's view of the pull of this NAR, if one is under way.
    pub fn join(&self, hash: &NarHash, idle: Duration) -> Option<Pulled> {
        lock(&self.map).get(hash).map(|f| Pulled::new(f.clone(), idle))
    }

    /// Start pulling the NAR `info` names from what `open` opens (`from` names it in logs), storing it with
    /// `info` as its narinfo (recorded as foreign, never signed by this node, when `foreign`: it came from a
    /// peer); or join the pull already under way. `None` when too many pulls run, or the
    /// NAR was stored meanwhile (the caller reads the store again), or no temporary file can be made.
    pub fn start(
        &self,
        service: &Arc<Service>,
        info: NarInfo,
        from: String,
        idle: Duration,
        foreign: bool,
        open: impl FnOnce() -> Result<Box<dyn Read + Send>, String> + Send + 'static,
    ) -> Option<Pulled> {
        let hash = info.nar_hash;
        let mut flights = lock(&self.map);
        if let Some(f) = flights.get(&hash) {
            return Some(Pulled::new(f.clone(), idle));
        }
        if flights.len() >= MAX_FLIGHTS {
            tracing::warn!("not pulling NAR {hash}: {MAX_FLIGHTS} pulls under way");
            return None;
        }
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
        let (service, f, map) = (service.clone(), flight.clone(), self.map.clone());
        let started = std::thread::Builder::new().name("nixdag-pull".into()).spawn(move || {
            let result = open().and_then(|source| {
                let r = BufReader::with_capacity(1 << 20, Tee { inner: source, flight: &f });
                let stored = if foreign { service.put_foreign_path(info, r) } else { service.put_path(info, r) };
                stored.map(|_| ()).map_err(|e| e.to_string())
            });
            if let Err(e) = &result {
                tracing::warn!("pulling NAR {hash} from {from}: {e}");
            }
            // Stored (or failed) first, then forgotten: a request that misses the flight finds the store.
            lock(&map).remove(&hash);
            f.end(result);
        });
        if let Err(e) = started {
            lock(&self.map).remove(&hash);
            flight.end(Err(format!("cannot start the pull: {e}")));
        }
        Some(Pulled::new(flight, idle))
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

/// The source as the ingest reads it: each piece is also written to the flight's file for clients.
struct Tee<'a> {
    inner: Box<dyn Read + Send>,
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
    pub(super) fn new(flight: Arc<Flight>, idle: Duration) -> Self {
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
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the NAR's source stalled"));
            }
        }
    }
}
