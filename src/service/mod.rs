//! The service: the one object every door calls. The HTTP gateway is the first door; peers, the hashed
//! mirror and the cache warmer come next, each a room beside the gateway that adds only its protocol.
//!
//! It owns the store, the signing key and the node's one set of trusted keys, the background repack,
//! what is known about damaged NARs, and counters. It answers: a store path's narinfo (signed), a NAR
//! whole or as a range (checked whole first), a file by hash, a NAR listing, and puts (a NAR, a narinfo
//! judged by the upload rules of docs/SECURITY.md). Its calls are synchronous: a door runs them on a pool
//! of its choosing.

mod accept;
mod flight;
mod health;
mod local;
mod repack;
mod upkeep;
mod upstream;

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;

pub use self::accept::{judge_narinfo, Known, Refusal, Verdict};
pub use self::flight::Pulled;
use self::flight::Flights;
pub use self::local::LocalNix;
pub use self::upstream::{Fallback, PullConfig, UpstreamFallback};
use crate::chunk::ChunkerConfig;
use crate::dag::{Cid, DagReader};
use crate::fetch::{FileFound, FileStream};
use crate::nix::hash::{HashAlgo, Hasher, NarHash, NixHash};
use crate::nix::nar::{self, NarVisitor};
use crate::nix::narinfo::NarInfo;
use crate::nix::signing::{verify_any, PublicKey, SecretKey};
use crate::nix::store_path::{StorePath, StorePathHash};
use crate::import::{self, NarAdded};
use crate::store::{EvictPolicy, Manifest, NarEntry, Store, StoreError};

/// How a service is set up.
pub struct ServiceConfig {
    /// Signs the narinfos of the paths the cache vouches for.
    pub key: SecretKey,
    /// The node's one set of trusted keys.
    pub trusted_keys: Vec<PublicKey>,
    /// Repack queued tarballs in the background once no new one was queued for this long (`None`:
    /// never; `nixdag repack` then does it).
    pub repack_idle: Option<Duration>,
    /// Keep and serve narinfos a [`MissSource`] found even when no trusted key signed them
    /// (`--trust-peer-narinfos`); they are still never signed by this node.
    pub trust_foreign_narinfos: bool,
    /// The disk budget (`--max-size`): evict least recently served roots in the background whenever the
    /// store is over it (`None`: never; served times are recorded all the same, for `gc --max-size`).
    pub budget: Option<EvictPolicy>,
}

/// Where the service looks for what the store lacks, on a miss: the node's peers (`src/peer/fetch.rs`),
/// later an upstream binary cache too. The service decides what to believe (its trusted keys) and
/// records what came so; a source only finds and moves bytes, each call bounding its own time.
pub trait MissSource: Send + Sync {
    /// The narinfo of a store path as found elsewhere, with the signatures it carries, the first that
    /// `believe` accepts (the service's trust rule); `None` when none came within the source's deadline.
    fn narinfo(&self, hash: &StorePathHash, believe: Believe) -> Option<NarInfo>;
    /// The bytes of the NAR with this hash and size as they arrive, every block verified on the way;
    /// `Ok(None)` when nobody has it. The service stores the stream (and checks its NarHash) itself.
    fn open_nar(&self, store: &Arc<Store>, hash: &NarHash, size: u64) -> Result<Option<Box<dyn Read + Send>>, ServiceError>;
    /// A source file by any hash it is known under: its bytes as they arrive (every block verified on
    /// the way) and its size as the source states it; `Ok(None)` when nobody has it. The service checks
    /// the bytes against the hash as it stores them.
    fn open_file(&self, store: &Arc<Store>, hash: &NixHash) -> Result<Option<FileStream>, ServiceError>;
}

/// Largest file taken from a [`MissSource`] (as `fetch-src` takes from a URL).
const MAX_PULLED_FILE: u64 = 64 << 30;

/// Distinct files fetched from a [`MissSource`] at once; a request for another one is answered as a
/// miss (the gateway goes on to its mirrors, or 404) rather than queued, so what clients can make this
/// node fetch and hold threads for stays bounded (docs/SECURITY.md).
const FILE_FLIGHTS_MAX: usize = 4;

/// One fetch of a file from a [`MissSource`], shared by every caller that asks meanwhile.
type FileFlight = Arc<OnceLock<Result<Option<FileFound>, String>>>;

/// The service's rule for narinfos from elsewhere, handed to a [`MissSource`].
pub type Believe = Arc<dyn Fn(&NarInfo) -> bool + Send + Sync>;

/// Longest a client's stream of a NAR from peers waits for progress (the peers' own stall timeout
/// abandons a silent peer sooner and moves its share to the others).
const PEER_IDLE: Duration = Duration::from_secs(30);

/// Narinfos a [`MissSource`] found that are not recorded yet (their NAR is fetched on its first
/// request), by store-path hash part; bounded, oldest dropped first.
const FOREIGN_PENDING_MAX: usize = 4096;

/// A service call that did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Fetching what the store lacks from elsewhere (peers) failed.
    #[error("fetching from peers: {0}")]
    Fetch(String),
    /// Reading this machine's Nix store (`--local-nix-store`) failed.
    #[error("reading this machine's Nix store: {0}")]
    LocalNix(String),
    /// A stored NAR lacks a block or failed a check; it is no longer advertised.
    #[error("stored data is damaged: {0}")]
    Damaged(String),
    /// An upload the rules refuse.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the service has done since it started.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Counters {
    /// Narinfo lookups answered (found or not).
    pub narinfo_lookups: u64,
    /// Of those, paths not in the cache.
    pub narinfo_misses: u64,
    /// NAR bodies opened (whole or a range).
    pub nars_opened: u64,
    /// Stored files opened (hashed mirror; whole or a range).
    pub files_opened: u64,
    /// Bytes read out of NARs and files for doors.
    pub nar_bytes: u64,
    /// NARs stored by puts.
    pub nars_put: u64,
    /// Narinfos recorded by puts.
    pub narinfos_put: u64,
    /// NARs found damaged.
    pub damaged: u64,
    /// Narinfos [`Service::narinfo`] found in the store.
    pub narinfo_store: u64,
    /// … in this machine's Nix store (`--local-nix-store`).
    pub narinfo_local_nix: u64,
    /// … at a peer (or pending from one).
    pub narinfo_peer: u64,
    /// … at an upstream cache.
    pub narinfo_upstream: u64,
    /// … nowhere.
    pub narinfo_not_found: u64,
    /// NARs pulled through (local Nix store or upstream).
    pub nars_pulled: u64,
    /// NAR bytes stored by puts and pulls (their size, before dedup).
    pub ingested_bytes: u64,
    /// Of those, raw bytes of blocks that were new to the store.
    pub ingested_new_bytes: u64,
}

#[derive(Default)]
struct AtomicCounters {
    narinfo_lookups: AtomicU64,
    narinfo_misses: AtomicU64,
    nars_opened: AtomicU64,
    files_opened: AtomicU64,
    nar_bytes: AtomicU64,
    nars_put: AtomicU64,
    narinfos_put: AtomicU64,
    damaged: AtomicU64,
    narinfo_store: AtomicU64,
    narinfo_local_nix: AtomicU64,
    narinfo_peer: AtomicU64,
    narinfo_upstream: AtomicU64,
    narinfo_not_found: AtomicU64,
    nars_pulled: AtomicU64,
    ingested_bytes: AtomicU64,
    ingested_new_bytes: AtomicU64,
}

/// Where [`Service::narinfo`] found a narinfo.
#[derive(Debug, Clone, Copy)]
enum Source {
    Store,
    LocalNix,
    Peer,
    Upstream,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The service; share it as `Arc<Service>`.
pub struct Service {
    store: Arc<Store>,
    key: SecretKey,
    trusted: Vec<PublicKey>,
    health: health::Health,
    counters: AtomicCounters,
    repacker: Mutex<Option<repack::Background>>,
    /// Asked on a miss (`serve --upstream`); set once, after start.
    fallback: std::sync::OnceLock<Arc<dyn Fallback>>,
    miss: OnceLock<Arc<dyn MissSource>>,
    /// This machine's Nix store (`serve --local-nix-store`); set once, after start.
    local: OnceLock<Arc<LocalNix>>,
    trust_foreign: bool,
    /// NARs being streamed from peers.
    peer_flights: Flights,
    /// Files being fetched from peers, by the hash asked: one fetch per file however many ask.
    file_flights: Mutex<HashMap<NixHash, FileFlight>>,
    /// Narinfos from the miss source, believed, whose NAR is not fetched yet (insertion order kept).
    foreign_pending: Mutex<(HashMap<String, NarInfo>, std::collections::VecDeque<String>)>,
    /// Which roots are served and being read (the disk budget's LRU).
    usage: Arc<upkeep::Usage>,
    /// Writes served times and keeps the disk budget.
    upkeep: Mutex<Option<upkeep::Upkeep>>,
    /// Called after an eviction removed roots.
    evict_hooks: Arc<Mutex<Vec<upkeep::Hook>>>,
}

impl Service {
    /// Start a service over `store`: the background repack begins if configured.
    pub fn start(store: Arc<Store>, cfg: ServiceConfig) -> Arc<Service> {
        let repacker = cfg.repack_idle.map(|idle| repack::Background::start(store.clone(), idle));
        let usage = Arc::new(upkeep::Usage::default());
        let evict_hooks = Arc::new(Mutex::new(Vec::new()));
        let upkeep = upkeep::Upkeep::start(store.clone(), usage.clone(), cfg.budget, evict_hooks.clone());
        Arc::new(Service {
            usage,
            upkeep: Mutex::new(Some(upkeep)),
            evict_hooks,
            store,
            key: cfg.key,
            trusted: cfg.trusted_keys,
            health: health::Health::default(),
            counters: AtomicCounters::default(),
            repacker: Mutex::new(repacker),
            fallback: std::sync::OnceLock::new(),
            miss: OnceLock::new(),
            local: OnceLock::new(),
            trust_foreign: cfg.trust_foreign_narinfos,
            peer_flights: Flights::default(),
            file_flights: Mutex::default(),
            foreign_pending: Mutex::default(),
        })
    }

    /// Where to turn on a miss (src/service/upstream.rs); only the first call takes effect.
    pub fn set_fallback(&self, f: Arc<dyn Fallback>) {
        let _ = self.fallback.set(f);
    }

    /// Offer the paths of this machine's Nix store too (once; a second call is ignored): asked on a miss
    /// before peers and upstreams, since it is on this machine.
    pub fn set_local_nix(&self, local: Arc<LocalNix>) {
        let _ = self.local.set(local);
    }

    /// Look for what the store lacks in `source` from now on (once; a second call is ignored).
    pub fn set_miss_source(&self, source: Arc<dyn MissSource>) {
        let _ = self.miss.set(source);
    }

    /// Whether a narinfo found elsewhere may be kept and served: signed by a trusted key, or the
    /// operator chose to believe such narinfos anyway.
    pub fn believes_foreign(&self, info: &NarInfo) -> bool {
        self.trust_foreign || verify_any(&self.trusted, &info.fingerprint(), &info.sigs)
    }

    /// Whether this path's narinfo came from elsewhere (a peer), so the gateway must not sign it.
    pub fn is_foreign(&self, path: &StorePath) -> bool {
        let key = path.hash().to_string();
        let pending = self.foreign_pending.lock().unwrap_or_else(|p| p.into_inner()).0.contains_key(&key);
        // An index error counts as foreign: never sign what we cannot tell apart.
        pending || self.store.is_foreign_path(&key).unwrap_or(true)
    }

    /// Stop background work (and wait for it; served times gathered so far are written); the service
    /// still answers calls.
    pub fn stop(&self) {
        if let Some(r) = self.repacker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            r.stop();
        }
        if let Some(u) = self.upkeep.lock().unwrap_or_else(|p| p.into_inner()).take() {
            u.stop();
        }
    }

    /// Call `f` after each eviction that removed roots (a door drops what it cached about them).
    pub fn on_evict(&self, f: Box<dyn Fn() + Send + Sync>) {
        self.evict_hooks.lock().unwrap_or_else(|p| p.into_inner()).push(f);
    }

    /// Something was stored: let the disk budget be checked now.
    fn stored_more(&self) {
        if let Some(u) = self.upkeep.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            u.nudge();
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The public half of the signing key.
    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    /// The node's trusted keys.
    pub fn trusted_keys(&self) -> &[PublicKey] {
        &self.trusted
    }

    /// What the service has done.
    pub fn counters(&self) -> Counters {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            narinfo_lookups: get(&c.narinfo_lookups),
            narinfo_misses: get(&c.narinfo_misses),
            nars_opened: get(&c.nars_opened),
            files_opened: get(&c.files_opened),
            nar_bytes: get(&c.nar_bytes),
            nars_put: get(&c.nars_put),
            narinfos_put: get(&c.narinfos_put),
            damaged: get(&c.damaged),
            narinfo_store: get(&c.narinfo_store),
            narinfo_local_nix: get(&c.narinfo_local_nix),
            narinfo_peer: get(&c.narinfo_peer),
            narinfo_upstream: get(&c.narinfo_upstream),
            narinfo_not_found: get(&c.narinfo_not_found),
            nars_pulled: get(&c.nars_pulled),
            ingested_bytes: get(&c.ingested_bytes),
            ingested_new_bytes: get(&c.ingested_new_bytes),
        }
    }

    /// Add the gateway's signature to a narinfo of a path the cache vouches for (replacing an older one
    /// by the same key name). Every path in the store came through a door the operator trusts (`add`
    /// by the store's owner, or an admitted uploader: docs/SECURITY.md), so the service vouches for each.
    pub fn sign(&self, info: &mut NarInfo) {
        if self.is_foreign(&info.store_path) {
            return;
        }
        let sig = self.key.sign(&info.fingerprint());
        if !info.sigs.contains(&sig) {
            let prefix = format!("{}:", self.key.name());
            info.sigs.retain(|s| !s.starts_with(&prefix));
            info.sigs.push(sig);
        }
    }

    /// The narinfo of a store path: recorded, if its NAR is whole (a path whose NAR is damaged is not
    /// advertised: Nix would fail on it mid-download), else from this machine's Nix store (when
    /// offered), else from the peers (the miss source) if the node believes it
    /// ([`Service::believes_foreign`]), else from the upstream caches (the fallback, which verifies it).
    /// Not signed yet: see [`Service::sign`].
    pub fn narinfo(&self, hash: &StorePathHash) -> Result<Option<NarInfo>, ServiceError> {
        let found = self.narinfo_anywhere(hash)?;
        bump(
            match &found {
                Some((_, Source::Store)) => &self.counters.narinfo_store,
                Some((_, Source::LocalNix)) => &self.counters.narinfo_local_nix,
                Some((_, Source::Peer)) => &self.counters.narinfo_peer,
                Some((_, Source::Upstream)) => &self.counters.narinfo_upstream,
                None => &self.counters.narinfo_not_found,
            },
            1,
        );
        Ok(found.map(|f| f.0))
    }

    /// [`Service::narinfo`], and where it was found (for the metrics).
    fn narinfo_anywhere(&self, hash: &StorePathHash) -> Result<Option<(NarInfo, Source)>, ServiceError> {
        if let Some(info) = self.narinfo_local(hash)? {
            return Ok(Some((info, Source::Store)));
        }
        let key = hash.to_string();
        if let Some(info) = self.foreign_pending.lock().unwrap_or_else(|p| p.into_inner()).0.get(&key) {
            return Ok(Some((info.clone(), Source::Peer)));
        }
        if let Some(info) = self.local.get().and_then(|l| l.narinfo(hash)) {
            return Ok(Some((info, Source::LocalNix)));
        }
        // A miss turns to the LAN's peers first (within their deadline), then to the upstream caches (a
        // verified narinfo or nothing): peers are near and free, upstreams far and metered.
        let upstream = || Ok(self.fallback.get().and_then(|f| f.narinfo(hash)).map(|i| (i, Source::Upstream)));
        let Some(source) = self.miss.get() else { return upstream() };
        let (trusted, all) = (self.trusted.clone(), self.trust_foreign);
        let believe: Believe = Arc::new(move |i: &NarInfo| all || verify_any(&trusted, &i.fingerprint(), &i.sigs));
        let Some(info) = source.narinfo(hash, believe) else { return upstream() };
        // The source applied the rule; the service checks again what it keeps.
        if info.store_path.hash() != hash || !self.believes_foreign(&info) {
            return upstream();
        }
        let mut pending = self.foreign_pending.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *pending;
        if map.insert(key.clone(), info.clone()).is_none() {
            order.push_back(key);
            while order.len() > FOREIGN_PENDING_MAX {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        Ok(Some((info, Source::Peer)))
    }

    /// The recorded narinfo of a store path, if its NAR is whole; the store alone (what a peer is told).
    pub fn narinfo_local(&self, hash: &StorePathHash) -> Result<Option<NarInfo>, ServiceError> {
        bump(&self.counters.narinfo_lookups, 1);
        let found = self.store.path_info(&hash.to_string())?;
        let Some(info) = found else {
            bump(&self.counters.narinfo_misses, 1);
            return Ok(None);
        };
        let Some(entry) = self.store.nar(&info.nar_hash)? else { return Ok(None) };
        // A path from this machine's Nix store is offered while that store has it.
        if let Some(local) = self.local.get() {
            if self.store.is_local_path(&hash.to_string())? && !local.still_offers(&info.store_path) {
                bump(&self.counters.narinfo_misses, 1);
                return Ok(None);
            }
        }
        match self.check_whole(info.nar_hash, &entry) {
            Ok(()) => {
                // Served: a client that asked for the narinfo asks for the NAR next, which must not be
                // evicted in between.
                self.usage.touch(entry.root);
                Ok(Some(info))
            }
            Err(ServiceError::Damaged(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The narinfo of a path this node holds itself, for a peer: recorded in the store, or in this
    /// machine's Nix store, whose NAR is then ingested first (a peer fetches blocks, so they must be in
    /// the store before the answer). Never asks peers or upstreams: two nodes cannot ask in circles.
    pub fn narinfo_own(self: &Arc<Self>, hash: &StorePathHash) -> Result<Option<NarInfo>, ServiceError> {
        if let Some(info) = self.narinfo_local(hash)? {
            return Ok(Some(info));
        }
        let Some(local) = self.local.get() else { return Ok(None) };
        let Some(info) = local.narinfo(hash) else { return Ok(None) };
        if let Some(mut pulled) = local.nar(self, &info.nar_hash) {
            while pulled.next_bytes(1 << 20).map_err(|e| ServiceError::LocalNix(e.to_string()))?.is_some() {}
        }
        if let Some(found) = self.narinfo_local(hash)? {
            return Ok(Some(found));
        }
        // Its NAR was stored already (under another path, or uploaded): record this path beside it.
        if self.store.nar(&info.nar_hash)?.is_some() && local.still_offers(&info.store_path) {
            self.store.mark_local_path(&hash.to_string())?;
            self.record_path(info)?;
            return self.narinfo_local(hash);
        }
        Ok(None)
    }

    fn check_whole(&self, hash: NarHash, entry: &NarEntry) -> Result<(), ServiceError> {
        let newly = !self.health.is_damaged(&hash);
        let r = self.health.check(&self.store, hash, entry.root, entry.nar_size);
        if newly && matches!(r, Err(ServiceError::Damaged(_))) {
            bump(&self.counters.damaged, 1);
        }
        r
    }

    /// The stored NAR with this hash, checked whole in the index (every block present) before a door
    /// promises it: [`ServiceError::Damaged`] names what is missing. The store alone (also what a peer
    /// is told): a NAR the store lacks is not looked for elsewhere here, see [`Service::pull`].
    pub fn nar(&self, hash: &NarHash) -> Result<Option<NarEntry>, ServiceError> {
        let Some(entry) = self.store.nar(hash)? else { return Ok(None) };
        self.check_whole(*hash, &entry)?;
        Ok(Some(entry))
    }

    /// A NAR the store lacks, pulled from where its narinfo was found (this machine's Nix store, the
    /// peers, an upstream), as it is being stored: `None` when none knows such a NAR.
    pub fn pull(self: &Arc<Self>, hash: &NarHash) -> Option<NarReader> {
        let pulled = match self.local.get().and_then(|l| l.nar(self, hash)) {
            Some(p) => p,
            None => match self.pull_from_peers(hash) {
                Some(p) => p,
                None => self.fallback.get()?.nar(self, hash)?,
            },
        };
        bump(&self.counters.nars_opened, 1);
        bump(&self.counters.nars_pulled, 1);
        Some(NarReader { inner: Inner::Pulled(pulled), nar: Some(*hash), service: self.clone(), _reading: None })
    }

    /// A NAR a believed foreign narinfo names, streamed from the peers while its blocks arrive and stored
    /// with that narinfo as foreign ([`Service::put_foreign_path`]: only if it hashes to the NarHash).
    fn pull_from_peers(self: &Arc<Self>, hash: &NarHash) -> Option<Pulled> {
        let source = self.miss.get()?.clone();
        if let Some(p) = self.peer_flights.join(hash, PEER_IDLE) {
            return Some(p);
        }
        let info = {
            let pending = self.foreign_pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.0.values().find(|i| i.nar_hash == *hash).cloned()?
        };
        let (store, (h, size)) = (self.store.clone(), (*hash, info.nar_size));
        self.peer_flights.start(self, info, "peers".into(), PEER_IDLE, true, move || match source.open_nar(&store, &h, size) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err("no peer has it any more".into()),
            Err(e) => Err(e.to_string()),
        })
    }

    /// Whether the NAR with this hash was found damaged.
    pub fn is_damaged(&self, hash: &NarHash) -> bool {
        self.health.is_damaged(hash)
    }

    /// A reader of bytes `[start, end)` of a NAR [`Service::nar`] returned.
    pub fn nar_reader(
        self: &Arc<Self>,
        hash: NarHash,
        entry: &NarEntry,
        start: u64,
        end: u64,
    ) -> Result<NarReader, ServiceError> {
        let reader = DagReader::range(self.store.clone(), entry.root, start, Some(end)).map_err(StoreError::from)?;
        bump(&self.counters.nars_opened, 1);
        // Served now (the disk budget evicts the least recently served), and kept while it is read.
        let reading = Some(self.usage.open(entry.root));
        Ok(NarReader { inner: Inner::Stored(reader), nar: Some(hash), service: self.clone(), _reading: reading })
    }

    /// Bytes `start..end` of a stored file (found by [`Service::file`]).
    pub fn file_reader(self: &Arc<Self>, root: Cid, start: u64, end: u64) -> Result<NarReader, ServiceError> {
        let reader = DagReader::range(self.store.clone(), root, start, Some(end)).map_err(StoreError::from)?;
        bump(&self.counters.files_opened, 1);
        let reading = Some(self.usage.open(root));
        Ok(NarReader { inner: Inner::Stored(reader), nar: None, service: self.clone(), _reading: reading })
    }

    /// A stored file by any of its hashes: its SHA-256, root and size.
    pub fn file(&self, hash: &NixHash) -> Result<Option<FileFound>, ServiceError> {
        let Some((sha, entry)) = self.store.file(hash)? else { return Ok(None) };
        Ok(Some((sha, entry.root_cid()?, entry.size)))
    }

    /// Whether a file the store lacks is looked for elsewhere ([`Service::pull_file`]).
    pub fn pulls_files(&self) -> bool {
        self.miss.get().is_some()
    }

    /// A file the store lacks, fetched from the peers and stored, if one has it: kept only when its bytes
    /// hash to `hash` (a peer's DAG that names other bytes is refused, and nothing is kept). Concurrent
    /// calls for one hash share one fetch. Blocks until the file is stored: a source file is wanted
    /// whole (Nix's fetchers check it at the end), unlike a NAR, which streams while it arrives.
    pub fn pull_file(&self, hash: &NixHash) -> Result<Option<FileFound>, ServiceError> {
        let Some(source) = self.miss.get().cloned() else { return Ok(None) };
        let flight = {
            let mut flights = self.file_flights.lock().unwrap_or_else(|p| p.into_inner());
            if flights.len() >= FILE_FLIGHTS_MAX && !flights.contains_key(hash) {
                tracing::warn!("not asking peers for file {hash}: {FILE_FLIGHTS_MAX} fetches under way");
                return Ok(None);
            }
            flights.entry(hash.clone()).or_default().clone()
        };
        let result = flight.get_or_init(|| self.fetch_file(source.as_ref(), hash).map_err(|e| e.to_string())).clone();
        self.file_flights.lock().unwrap_or_else(|p| p.into_inner()).remove(hash);
        result.map_err(ServiceError::Fetch)
    }

    fn fetch_file(&self, source: &dyn MissSource, hash: &NixHash) -> Result<Option<FileFound>, ServiceError> {
        // Stored meanwhile (a fetch that just ended).
        if let Some(found) = self.file(hash)? {
            return Ok(Some(found));
        }
        let Some((reader, size)) = source.open_file(&self.store, hash)? else { return Ok(None) };
        if size > MAX_PULLED_FILE {
            return Err(ServiceError::Fetch(format!("file {hash}: {size} bytes is over the limit of {MAX_PULLED_FILE}")));
        }
        let name = format!("{}-{}", hash.algo, hash.to_hex());
        let added = match import::add_file(&self.store, reader.take(size), &name, Vec::new(), ChunkerConfig::default(), Some(hash)) {
            Ok(a) => a,
            Err(StoreError::HashMismatch { expected, got, .. }) => {
                tracing::warn!("a peer's DAG for file {expected} holds bytes of {got}: refused, nothing kept");
                return Err(ServiceError::Fetch(format!("the peers' file {expected} hashed to {got}: refused")));
            }
            Err(e) => return Err(e.into()),
        };
        bump(&self.counters.ingested_bytes, added.size);
        self.stored_more();
        tracing::info!("file {hash} fetched from peers: {} bytes", added.size);
        Ok(Some((added.sha256, added.root, added.size)))
    }

    /// The listing (`.ls` JSON) of a stored NAR, or `Ok(None)` when it has more than `max_entries` nodes.
    pub fn listing(&self, hash: &NarHash, max_entries: usize) -> Result<Option<String>, ServiceError> {
        let entry = self.nar(hash)?.ok_or(StoreError::NoSuchNar(*hash))?;
        let reader = DagReader::new(self.store.as_ref(), entry.root).map_err(StoreError::from)?;
        let listing =
            nar::list_bounded(io::BufReader::with_capacity(1 << 16, reader), max_entries).map_err(StoreError::from)?;
        Ok(listing.map(|l| l.to_json()))
    }

    /// Store a NAR read from `r` (validated as it streams). A NAR found damaged before is whole again.
    ///
    /// Only uploads come this way: the NAR is recorded as uploaded (kept by the disk budget unless
    /// `--evict-uploads`).
    pub fn put_nar(&self, r: impl Read) -> Result<NarAdded, StoreError> {
        let added = import::add_uploaded_nar(&self.store, r, ChunkerConfig::default())?;
        self.health.healed(&added.nar_hash, &added.root);
        bump(&self.counters.nars_put, 1);
        bump(&self.counters.ingested_bytes, added.nar_size);
        bump(&self.counters.ingested_new_bytes, added.new_bytes);
        self.stored_more();
        Ok(added)
    }

    /// Store a store path whose narinfo the caller has verified (signed by a trusted key, or from this
    /// machine's Nix store: docs/SECURITY.md), its NAR read from `r`: both are committed together, and
    /// only if the NAR matches the narinfo's NarHash and NarSize; otherwise nothing is kept.
    pub fn put_path(&self, info: NarInfo, r: impl Read) -> Result<NarAdded, StoreError> {
        let added = import::add_nar(&self.store, r, ChunkerConfig::default(), Some(info))?;
        self.health.healed(&added.nar_hash, &added.root);
        bump(&self.counters.nars_put, 1);
        bump(&self.counters.ingested_bytes, added.nar_size);
        bump(&self.counters.ingested_new_bytes, added.new_bytes);
        bump(&self.counters.narinfos_put, 1);
        self.stored_more();
        Ok(added)
    }

    /// Store a path whose narinfo came from a peer and is believed ([`Service::believes_foreign`]), its
    /// NAR read from `r`: recorded as foreign (served with the signatures it carries, never signed by this
    /// node), and only if the NAR matches the narinfo's NarHash and NarSize.
    pub fn put_foreign_path(&self, info: NarInfo, r: impl Read) -> Result<NarAdded, StoreError> {
        let added = import::add_foreign_nar(&self.store, r, ChunkerConfig::default(), info)?;
        self.health.healed(&added.nar_hash, &added.root);
        bump(&self.counters.nars_put, 1);
        Ok(added)
    }

    /// Record a verified narinfo (as [`Service::put_path`]) whose NAR is stored and whole already.
    pub fn record_path(&self, info: NarInfo) -> Result<(), ServiceError> {
        let entry = self.nar(&info.nar_hash)?.ok_or(StoreError::NoSuchNar(info.nar_hash))?;
        if entry.nar_size != info.nar_size {
            return Err(StoreError::HashMismatch {
                what: format!("NAR of {}", info.store_path),
                expected: format!("{} ({} bytes)", info.nar_hash, info.nar_size),
                got: format!("{} ({} bytes)", info.nar_hash, entry.nar_size),
            }
            .into());
        }
        self.store.begin_ingest().commit(&[Manifest::Path(Box::new(info))])?;
        bump(&self.counters.narinfos_put, 1);
        Ok(())
    }

    /// Record an uploaded narinfo if the upload rules accept it (docs/SECURITY.md): its NAR stored, its
    /// references present, its CA claim true, signatures by known keys valid, and written once.
    pub fn put_narinfo(&self, info: NarInfo) -> Result<Verdict, ServiceError> {
        let s = &*self.store;
        let existing = s.path_info(&info.store_path.hash().to_string())?;
        let stored = s.nar(&info.nar_hash)?;
        let has_path =
            |p: &StorePath| s.path_info(&p.hash().to_string()).ok().flatten().is_some_and(|i| i.store_path == *p);
        let flat = |h: &NixHash| stored.as_ref().and_then(|e| flat_hash(s, e.root, h.algo));
        let mut keys = vec![self.key.public()];
        keys.extend(self.trusted.iter().cloned());
        let known = Known {
            existing: existing.as_ref(),
            stored_nar_size: stored.as_ref().map(|e| e.nar_size),
            has_path: &has_path,
            flat_hash: &flat,
            keys: &keys,
        };
        let verdict = judge_narinfo(&info, &known)?;
        if let Verdict::Record(info) = &verdict {
            s.begin_ingest().commit(&[Manifest::Path(info.clone())])?;
            bump(&self.counters.narinfos_put, 1);
        }
        Ok(verdict)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Bytes of a NAR (or a stored file) for a door. A block that turns out bad mid-stream marks the NAR
/// damaged (it stops being advertised) and ends the read with an error: once a door has sent its
/// headers, cutting the stream is the only safe answer, and the client's hash check catches it.
pub struct NarReader {
    inner: Inner,
    /// The NAR to mark damaged; `None` for a file (no narinfo advertises it).
    nar: Option<NarHash>,
    service: Arc<Service>,
    /// Keeps the root from eviction while it is read.
    _reading: Option<upkeep::Reading>,
}

enum Inner {
    Stored(DagReader<Arc<Store>>),
    /// Being pulled from elsewhere (its bytes are checked by the ingest, not by a stored DAG).
    Pulled(Pulled),
}

impl NarReader {
    /// The NAR's size, when it is being pulled (a stored NAR's size is in its entry).
    pub fn pulled_size(&self) -> Option<u64> {
        match &self.inner {
            Inner::Pulled(p) => Some(p.size()),
            Inner::Stored(_) => None,
        }
    }

    /// The next piece, at most `max` bytes; `None` at the end.
    pub fn next_bytes(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        let reader = match &mut self.inner {
            Inner::Stored(r) => r,
            Inner::Pulled(p) => {
                let b = p.next_bytes(max)?;
                if let Some(b) = &b {
                    bump(&self.service.counters.nar_bytes, b.len() as u64);
                }
                return Ok(b);
            }
        };
        match reader.next_bytes(max) {
            Ok(b) => {
                if let Some(b) = &b {
                    bump(&self.service.counters.nar_bytes, b.len() as u64);
                }
                Ok(b)
            }
            Err(e) => {
                match self.nar {
                    Some(nar) => {
                        if !self.service.health.is_damaged(&nar) {
                            bump(&self.service.counters.damaged, 1);
                        }
                        self.service.health.mark_damaged(nar);
                        tracing::error!("NAR {nar} is damaged: {e}");
                    }
                    None => tracing::error!("a stored file is damaged: {e}"),
                }
                Err(io::Error::other(e))
            }
        }
    }
}

/// The hash of a NAR's contents when the NAR is a single regular file (what a flat or text CA claim is
/// about); `None` for anything else. A NAR that turns out to be a directory stops the parse at once.
fn flat_hash(store: &Store, root: Cid, algo: HashAlgo) -> Option<NixHash> {
    struct Flat {
        hasher: Option<Hasher>,
        regular: bool,
    }
    impl NarVisitor for Flat {
        fn regular_begin(&mut self, _x: bool, _len: u64, _off: u64) -> io::Result<()> {
            self.regular = true;
            Ok(())
        }
        fn regular_data(&mut self, data: &[u8]) -> io::Result<()> {
            if let Some(h) = self.hasher.as_mut() {
                h.update(data);
            }
            Ok(())
        }
        fn directory_begin(&mut self) -> io::Result<()> {
            Err(io::Error::other("a directory, not a file"))
        }
        fn symlink(&mut self, _t: &[u8]) -> io::Result<()> {
            Err(io::Error::other("a symlink, not a file"))
        }
    }
    let reader = DagReader::new(store, root).ok()?;
    let mut v = Flat { hasher: Some(Hasher::new(algo)), regular: false };
    nar::parse(io::BufReader::with_capacity(1 << 16, reader), &mut v).ok()?;
    if !v.regular {
        return None;
    }
    v.hasher.take().map(Hasher::finish)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A source that has every file, and hands it out only when the test says so.
    struct Held(Mutex<mpsc::Receiver<()>>, AtomicU64);

    impl MissSource for Held {
        fn narinfo(&self, _: &StorePathHash, _: Believe) -> Option<NarInfo> {
            None
        }
        fn open_nar(&self, _: &Arc<Store>, _: &NarHash, _: u64) -> Result<Option<Box<dyn Read + Send>>, ServiceError> {
            Ok(None)
        }
        fn open_file(&self, _: &Arc<Store>, _: &NixHash) -> Result<Option<FileStream>, ServiceError> {
            self.1.fetch_add(1, Ordering::SeqCst);
            let _ = self.0.lock().unwrap().recv();
            Ok(None)
        }
    }

    #[test]
    fn file_fetches_from_peers_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let cfg = ServiceConfig {
            key: SecretKey::generate("pull-file-test-1").unwrap(),
            trusted_keys: Vec::new(),
            repack_idle: None,
            trust_foreign_narinfos: false,
            budget: None,
        };
        let service = Service::start(store, cfg);
        let (release, held) = mpsc::channel();
        let source = Arc::new(Held(Mutex::new(held), AtomicU64::new(0)));
        service.set_miss_source(source.clone());
        let hash = |n: u8| NixHash::digest_of(HashAlgo::Sha256, &[n]);
        // FILE_FLIGHTS_MAX distinct fetches under way.
        let mut waiting = Vec::new();
        for n in 0..FILE_FLIGHTS_MAX as u8 {
            let s = service.clone();
            waiting.push(std::thread::spawn(move || s.pull_file(&hash(n))));
        }
        while source.1.load(Ordering::SeqCst) < FILE_FLIGHTS_MAX as u64 {
            std::thread::sleep(Duration::from_millis(5));
        }
        // One more distinct file is a miss at once, without asking the source.
        assert!(matches!(service.pull_file(&hash(200)), Ok(None)));
        assert_eq!(source.1.load(Ordering::SeqCst), FILE_FLIGHTS_MAX as u64);
        for _ in 0..FILE_FLIGHTS_MAX {
            release.send(()).unwrap();
        }
        for w in waiting {
            assert!(matches!(w.join().unwrap(), Ok(None)));
        }
        // Once they ended, another file is asked again.
        release.send(()).unwrap();
        assert!(matches!(service.pull_file(&hash(200)), Ok(None)));
        assert_eq!(source.1.load(Ordering::SeqCst), FILE_FLIGHTS_MAX as u64 + 1);
        service.stop();
    }
}
