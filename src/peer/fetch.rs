//! The fetching side of `/nixdag/fetch/1`: a narinfo asked of every peer within a deadline, and a NAR
//! fetched block by block, only the blocks the store lacks, from every peer at once.
//!
//! A NAR streams while its blocks arrive, and nothing a peer says is believed before it is checked:
//! 1. **Walk.** The root (asked of all peers: `NAR` request) is walked level by level; the interior
//!    nodes the store lacks are fetched first (they are few), which gives the NAR's leaves in order.
//! 2. **Fetch.** The leaves the store lacks are split between the peers, in NAR order (each peer takes
//!    batches from one shared queue, so a fast peer takes more) and arrive compressed or as deltas
//!    ([`super::wire`]). Each block is decoded and its BLAKE3 checked before it is kept, in a spill file
//!    under `STORE/peer/incoming/` (bounded by the NAR's size). A bad block is dropped, its sender counted
//!    and logged, and the block asked of another peer; a peer that sends nothing for the stall timeout is
//!    abandoned for this fetch and its share goes to the others.
//! 3. **Read.** Meanwhile [`NarStream`] reads the leaves in order, each from the store or, as soon as it
//!    has arrived, from the spill: the NAR's bytes. The service ingests that stream like any NAR
//!    (`Service::put_foreign_path`: validated, chunked, its SHA-256 and size compared with the NarHash of
//!    the believed narinfo, committed only then) while the gateway streams it to the client
//!    (`service/flight.rs`, which holds the last byte back until the NAR is stored). The root is the
//!    peer's word and is never recorded: what is kept is the node's own DAG of bytes that hashed right.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use iroh::endpoint::Connection;
use iroh::{Endpoint, EndpointAddr, EndpointId};
use tokio::task::JoinSet;

use super::stats::PeerStats;
use super::wire::{self, Reader, Request, Root, WireBlock};
use crate::dag::cid::{block_hash, DAG_PB_CODEC};
use crate::dag::unixfs::decode_file_node;
use crate::dag::{BlockHash, Cid};
use crate::nix::hash::{NarHash, NixHash};
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePathHash;
use crate::service::{Believe, MissSource, ServiceError};
use crate::store::{Store, StoreError};

/// Blocks one request asks for: small enough that two peers share even a small NAR's missing blocks.
const BATCH: usize = 32;
/// NAR fetches at once (each holds a gateway lookup thread while it runs).
const FETCHES_AT_ONCE: usize = 4;
/// Deeper than any DAG nixdag reads.
const MAX_LEVELS: usize = 13;

/// How long fetching may wait.
#[derive(Debug, Clone, Copy)]
pub struct FetchConfig {
    /// A narinfo lookup's whole budget (`--peer-deadline`): past it, the miss is a miss.
    pub deadline: Duration,
    /// A peer that sends nothing for this long during a transfer (or does not connect within it) is
    /// abandoned for that fetch (`--peer-timeout`).
    pub stall: Duration,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// A block no peer delivered whole.
    #[error("no peer delivered block {0} (each one asked lacked it, failed, or sent bytes that do not hash to it)")]
    Unavailable(BlockHash),
    /// The DAG the peers describe is not one nixdag can read.
    #[error("the peers' DAG of {what}: {reason}")]
    BadDag {
        /// The NAR or file (`NAR sha256:…`, `file sha512:…`).
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The peers sent more block bytes than the NAR can need.
    #[error("more than {0} bytes of blocks for one NAR: abandoned")]
    TooMuch(u64),
    /// The spill file failed.
    #[error("spill file {}: {source}", path.display())]
    Spill {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The node's client of its peers' fetch protocol.
pub struct Fetcher {
    endpoint: Endpoint,
    /// The peers asked, in the order they became known. Dynamic: peers found on the LAN (mDNS,
    /// `super::discovery`) come and go while `serve` runs; a lookup or fetch works on the list as it
    /// was when it started.
    peers: std::sync::RwLock<Vec<Source>>,
    conns: tokio::sync::Mutex<HashMap<EndpointId, Connection>>,
    stats: Arc<PeerStats>,
    cfg: FetchConfig,
    runtime: tokio::runtime::Handle,
    fetches: Arc<tokio::sync::Semaphore>,
    /// When each peer last failed to connect: it is not dialled again for [`BACKOFF`], so a dead peer
    /// costs each later lookup nothing instead of the whole deadline.
    down: Mutex<HashMap<EndpointId, std::time::Instant>>,
}

/// A peer the fetcher asks, and how it became known.
#[derive(Debug, Clone)]
struct Source {
    addr: EndpointAddr,
    /// Named by the operator (`--peer`, `--peers-file`, an invite): kept for the life of `serve`. A
    /// discovered peer is dropped when its announcement expires.
    named: bool,
}

/// How long a peer that could not be reached is left alone.
const BACKOFF: Duration = Duration::from_secs(5);

/// What a block worker reports.
enum Got {
    Block { peer: usize, hash: BlockHash, block: WireBlock },
    Gone { peer: usize, unanswered: Vec<BlockHash>, reason: String },
}

/// The blocks still to fetch, shared by the workers.
#[derive(Default)]
struct Work {
    /// Blocks to ask for, and whether deltas are welcome for each.
    queue: VecDeque<(BlockHash, bool)>,
    /// Which workers were given each block.
    tried: HashMap<BlockHash, HashSet<usize>>,
    finished: bool,
}

impl Fetcher {
    /// A client on `endpoint` (the node's own, on `runtime`) of the `peers`.
    pub fn new(
        endpoint: Endpoint,
        peers: Vec<EndpointAddr>,
        stats: Arc<PeerStats>,
        cfg: FetchConfig,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Fetcher> {
        for p in &peers {
            stats.known(p.id);
        }
        let peers = peers.into_iter().map(|addr| Source { addr, named: true }).collect();
        Arc::new(Fetcher {
            endpoint,
            peers: std::sync::RwLock::new(peers),
            conns: tokio::sync::Mutex::new(HashMap::new()),
            stats,
            cfg,
            runtime,
            fetches: Arc::new(tokio::sync::Semaphore::new(FETCHES_AT_ONCE)),
            down: Mutex::new(HashMap::new()),
        })
    }

    /// The peers asked now.
    pub fn peers(&self) -> Vec<EndpointAddr> {
        self.peers.read().unwrap_or_else(|p| p.into_inner()).iter().map(|s| s.addr.clone()).collect()
    }

    /// A peer found on the LAN: asked from now on (its addresses replaced if it was known). Finding a
    /// peer grants it nothing: whether it may fetch from this node is the access rule's business alone.
    pub fn discovered(&self, addr: EndpointAddr) {
        let id = addr.id;
        self.stats.known(id);
        // A fresh announcement is news: dial it again even if it was unreachable a moment ago.
        self.down.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        match peers.iter_mut().find(|s| s.addr.id == addr.id) {
            // A named peer keeps the addresses the operator gave, plus the announced ones.
            Some(s) if s.named => {
                let merged = addr.ip_addrs().fold(s.addr.clone(), |a, ip| a.with_ip_addr(*ip));
                s.addr = merged;
            }
            Some(s) => s.addr = addr,
            None => peers.push(Source { addr, named: false }),
        }
    }

    /// A peer found on the LAN stopped announcing itself: no longer asked (a named peer stays).
    pub fn expired(&self, id: &EndpointId) {
        self.peers.write().unwrap_or_else(|p| p.into_inner()).retain(|s| s.named || s.addr.id != *id);
    }

    /// A connection to `addr`, reused while it is open.
    async fn conn(&self, addr: &EndpointAddr, timeout: Duration) -> Result<Connection, String> {
        if let Some(c) = self.conns.lock().await.get(&addr.id) {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let since = self.down.lock().unwrap_or_else(|p| p.into_inner()).get(&addr.id).map(|t| t.elapsed());
        if since.is_some_and(|s| s < BACKOFF) {
            return Err(format!("unreachable less than {BACKOFF:?} ago"));
        }
        let failed = |why: String| {
            self.stats.unreachable(addr.id);
            self.down.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.id, std::time::Instant::now());
            Err(why)
        };
        let c = match tokio::time::timeout(timeout, self.endpoint.connect(addr.clone(), wire::ALPN)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return failed(format!("connecting: {e}")),
            Err(_) => return failed(format!("no connection within {timeout:?}")),
        };
        self.down.lock().unwrap_or_else(|p| p.into_inner()).remove(&addr.id);
        self.conns.lock().await.insert(addr.id, c.clone());
        Ok(c)
    }

    /// Send `req` on a new stream of `conn`; the answer is read from the returned reader.
    async fn ask(conn: &Connection, req: &Request) -> Result<Reader<iroh::endpoint::RecvStream>, String> {
        let (mut send, recv) = conn.open_bi().await.map_err(|e| format!("opening a stream: {e}"))?;
        send.write_all(&req.encode()).await.map_err(|e| format!("sending the request: {e}"))?;
        send.finish().map_err(|e| format!("sending the request: {e}"))?;
        Ok(Reader::new(recv))
    }

    /// Ask every peer at once; the first peer that has the thing wins (the others finish in the
    /// background, their connections kept for what follows). Each peer gets `timeout` in all. Also
    /// returns the peers that failed before that answer came (unreachable, or a bad answer).
    async fn ask_all<T: Send + 'static>(
        self: &Arc<Self>,
        req: Request,
        timeout: Duration,
        read: fn(&mut Reader<iroh::endpoint::RecvStream>) -> ReadFut<'_, Option<T>>,
        keep: Keep<T>,
    ) -> (Option<T>, HashSet<EndpointId>) {
        let mut set = JoinSet::new();
        for addr in self.peers() {
            let (this, req, keep) = (self.clone(), req.clone(), keep.clone());
            set.spawn(async move {
                let sent = req.encode().len() as u64;
                let r = tokio::time::timeout(timeout, async {
                    let conn = this.conn(&addr, timeout).await?;
                    let mut reader = Self::ask(&conn, &req).await?;
                    let answer = read(&mut reader).await.map_err(|e| e.to_string());
                    Ok::<_, String>((answer, reader.bytes))
                })
                .await;
                let answer = match r {
                    Ok(Ok((Ok(answer), received))) => {
                        this.stats.seen(addr.id, sent, received);
                        Ok(answer.filter(|a| keep(a)))
                    }
                    Ok(Ok((Err(e), received))) => {
                        this.stats.moved(addr.id, sent, received);
                        tracing::warn!(peer = %addr.id, "bad answer: {e}");
                        Err(())
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %addr.id, "{e}");
                        Err(())
                    }
                    Err(_) => {
                        this.stats.unreachable(addr.id);
                        Err(())
                    }
                };
                (addr.id, answer)
            });
        }
        let mut failed = HashSet::new();
        while let Some(done) = set.join_next().await {
            match done {
                Ok((_, Ok(Some(t)))) => {
                    set.detach_all();
                    return (Some(t), failed);
                }
                Ok((_, Ok(None))) => {}
                Ok((id, Err(()))) => {
                    failed.insert(id);
                }
                Err(_) => {}
            }
        }
        (None, failed)
    }

    /// A store path's narinfo from the first peer whose answer `believe` accepts, within the deadline.
    pub fn narinfo(
        self: &Arc<Self>,
        hash: &StorePathHash,
        believe: Arc<dyn Fn(&NarInfo) -> bool + Send + Sync>,
    ) -> Option<NarInfo> {
        let req = Request::NarInfo(hash.0);
        let deadline = self.cfg.deadline;
        let this = self.clone();
        let want = *hash;
        let keep: Keep<wire::NarInfoAnswer> = Arc::new(move |a| match NarInfo::parse(&a.text) {
            Ok(info) if *info.store_path.hash() == want => {
                let yes = believe(&info);
                if !yes {
                    tracing::info!("narinfo of {} from a peer is signed by no trusted key: not served", info.store_path);
                }
                yes
            }
            Ok(info) => {
                tracing::warn!("a peer answered {want} with the narinfo of {}: ignored", info.store_path);
                false
            }
            Err(e) => {
                tracing::warn!("a peer's narinfo for {want} does not parse: {e}");
                false
            }
        });
        let found = self.runtime.block_on(async move {
            let ask = this.ask_all(req, deadline, |r| Box::pin(r.narinfo()), keep);
            tokio::time::timeout(deadline, ask).await.ok().and_then(|(a, _)| a)
        })?;
        NarInfo::parse(&found.text).ok()
    }

    /// The NAR with this hash and size as a stream of its bytes while its blocks arrive (see the module
    /// doc); `Ok(None)` when no peer has it. The stream holds one of the [`FETCHES_AT_ONCE`] slots.
    pub fn stream_nar(self: &Arc<Self>, store: Arc<Store>, nar: &NarHash, size: u64) -> Result<Option<NarStream>, FetchError> {
        let found = self.stream(store, Request::Nar(nar.0), format!("NAR {nar}"), &nar.0, Some(size))?;
        Ok(found.map(|(stream, _)| stream))
    }

    /// A source file, asked by any hash it is known under, as a stream of its bytes while its blocks
    /// arrive, with its size as the peer that has it states it (the receiver checks the bytes against the
    /// hash as it stores them: the size is a promise, not a proof). `Ok(None)` when no peer has it.
    pub fn stream_file(self: &Arc<Self>, store: Arc<Store>, hash: &NixHash) -> Result<Option<(NarStream, u64)>, FetchError> {
        let found = self.stream(store, Request::File(hash.clone()), format!("file {hash}"), &hash.digest, None)?;
        Ok(found.map(|(s, root)| (s, root.size)))
    }

    /// Ask every peer for the root `req` names (of `expected` bytes, when the caller knows), walk its DAG
    /// and start fetching its leaves.
    fn stream(
        self: &Arc<Self>,
        store: Arc<Store>,
        req: Request,
        what: String,
        key: &[u8],
        expected: Option<u64>,
    ) -> Result<Option<(NarStream, Root)>, FetchError> {
        let this = self.clone();
        let permit = self.runtime.block_on(async move { this.fetches.clone().acquire_owned().await.ok() });
        let this = self.clone();
        let (found, failed) = self.runtime.block_on(async move {
            let stall = this.cfg.stall;
            this.ask_all(req, stall, |r| Box::pin(r.root()), Arc::new(|_| true)).await
        });
        let Some(found) = found else { return Ok(None) };
        let (root, size) = (found.root, found.size);
        if let Some(want) = expected.filter(|w| *w != size) {
            return Err(FetchError::BadDag { what, reason: format!("root {root} says {size} bytes, not {want}") });
        }
        // Every peer not known to have failed may hold blocks of it (dedup across NARs), not only those
        // that have the NAR; a worker whose peer is unreachable gives up its share.
        let sources: Vec<EndpointAddr> = self.peers().into_iter().filter(|p| !failed.contains(&p.id)).collect();
        let spill = Arc::new(Shared::new(Spill::create(&store, key)?));
        let limit = size + size / 4 + (4 << 20);
        let leaves = self.walk(&store, &what, root, &sources, &spill, limit)?;
        let mut wanted = HashSet::new();
        let missing: Vec<BlockHash> = leaves
            .iter()
            .filter(|h| wanted.insert(**h))
            .filter(|h| !spill.has(h) && !matches!(store.block_loc(h), Ok(Some(_))))
            .copied()
            .collect();
        let (this, st, sp, count) = (self.clone(), store.clone(), spill.clone(), missing.len());
        let label = what.clone();
        let task = self.runtime.spawn(async move {
            let r = if missing.is_empty() {
                Ok(())
            } else {
                this.fetch_blocks(&st, sources, missing, &sp, limit).await.map_err(|e| e.to_string())
            };
            match &r {
                Ok(()) => tracing::info!("{label}: {count} new blocks fetched from peers, {} bytes", sp.bytes()),
                Err(e) => tracing::warn!("{label} from peers: {e}"),
            }
            sp.end(r);
        });
        let stream = NarStream {
            store,
            spill,
            leaves,
            next: 0,
            cur: Bytes::new(),
            stall: self.cfg.stall,
            task,
            _permit: permit,
        };
        Ok(Some((stream, found)))
    }

    /// Walk the DAG under `root`, fetching the interior nodes the store lacks into the spill; returns the
    /// leaves in NAR order (a leaf used twice appears twice).
    fn walk(
        self: &Arc<Self>,
        store: &Store,
        what: &str,
        root: Cid,
        sources: &[EndpointAddr],
        spill: &Shared,
        limit: u64,
    ) -> Result<Vec<BlockHash>, FetchError> {
        let bad = |reason: String| FetchError::BadDag { what: what.to_owned(), reason };
        let node = |h: &BlockHash| -> Result<Vec<Cid>, FetchError> {
            let bytes = match spill.get(h)? {
                Some(b) => b,
                None => store.read_block_bytes(h)?.ok_or(FetchError::Unavailable(*h))?,
            };
            Ok(decode_file_node(*h, &bytes).map_err(|e| bad(e.to_string()))?.links)
        };
        // Level by level, so each level's missing interior nodes travel in one batch.
        let mut level = vec![root];
        let mut seen = HashSet::new();
        let mut depth = 0;
        while !level.is_empty() {
            depth += 1;
            if depth > MAX_LEVELS {
                return Err(bad(format!("deeper than {MAX_LEVELS} levels")));
            }
            let mut missing = Vec::new();
            let interior: Vec<&Cid> = level.iter().filter(|c| c.codec() == DAG_PB_CODEC).collect();
            for cid in &interior {
                let h = block_hash(cid).map_err(|e| bad(e.to_string()))?;
                if store.block_loc(&h)?.is_none() && !spill.has(&h) {
                    missing.push(h);
                }
            }
            if !missing.is_empty() {
                let this = self.clone();
                self.runtime.block_on(this.fetch_blocks(store, sources.to_vec(), missing, spill, limit))?;
            }
            let mut next = Vec::new();
            for cid in interior {
                let h = block_hash(cid).map_err(|e| bad(e.to_string()))?;
                for link in node(&h)? {
                    let lh = block_hash(&link).map_err(|e| bad(e.to_string()))?;
                    if link.codec() == DAG_PB_CODEC && seen.insert(lh) {
                        next.push(link);
                    }
                }
            }
            level = next;
        }
        // Every interior node is at hand now: the leaves in order, depth first.
        let mut leaves = Vec::new();
        let mut stack = vec![root];
        while let Some(cid) = stack.pop() {
            let h = block_hash(&cid).map_err(|e| bad(e.to_string()))?;
            if cid.codec() != DAG_PB_CODEC {
                leaves.push(h);
                if leaves.len() as u64 > limit {
                    return Err(bad("more leaves than the NAR has bytes".into()));
                }
                continue;
            }
            stack.extend(node(&h)?.into_iter().rev());
        }
        Ok(leaves)
    }

    /// Fetch `want` from `sources` into the spill, each block checked (see the module doc).
    async fn fetch_blocks(
        self: Arc<Self>,
        store: &Store,
        sources: Vec<EndpointAddr>,
        want: Vec<BlockHash>,
        spill: &Shared,
        limit: u64,
    ) -> Result<(), FetchError> {
        let mut remaining: HashSet<BlockHash> = want.iter().copied().collect();
        let work = Arc::new((Mutex::new(Work::default()), tokio::sync::Notify::new()));
        work.0.lock().unwrap_or_else(|p| p.into_inner()).queue = want.iter().map(|h| (*h, true)).collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Got>(64);
        let mut workers = JoinSet::new();
        for (i, addr) in sources.iter().enumerate() {
            workers.spawn(worker(self.clone(), i, addr.clone(), work.clone(), tx.clone()));
        }
        drop(tx);
        let mut live: HashSet<usize> = (0..sources.len()).collect();
        let requeue = |hash: BlockHash, deltas: bool, again_from: Option<usize>| {
            let mut w = work.0.lock().unwrap_or_else(|p| p.into_inner());
            if let (Some(p), Some(t)) = (again_from, w.tried.get_mut(&hash)) {
                t.remove(&p);
            }
            w.queue.push_back((hash, deltas));
            drop(w);
            work.1.notify_waiters();
        };
        let result = loop {
            if remaining.is_empty() {
                break Ok(());
            }
            let Some(got) = rx.recv().await else {
                break Err(FetchError::Unavailable(*remaining.iter().next().expect("not empty")));
            };
            match got {
                Got::Block { peer, hash, block } => {
                    if !remaining.contains(&hash) {
                        continue;
                    }
                    let id = sources[peer].id;
                    let base = match &block {
                        WireBlock::Delta { base, .. } => match spill.get(base)? {
                            Some(b) => Some(b),
                            None => store.read_block_bytes(base).ok().flatten(),
                        },
                        _ => None,
                    };
                    match judge(&hash, &block, base.as_deref()) {
                        Judged::Good(bytes) => {
                            spill.put(hash, &bytes)?;
                            remaining.remove(&hash);
                            if spill.bytes() > limit {
                                break Err(FetchError::TooMuch(limit));
                            }
                            // Nothing went back to the queue and every peer is still live: no block can
                            // have become stuck (see below).
                            continue;
                        }
                        Judged::WithoutDelta => requeue(hash, false, Some(peer)),
                        Judged::Missing => requeue(hash, true, None),
                        Judged::Bad(why) => {
                            self.stats.bad_block(id);
                            tracing::warn!(peer = %id, "bad block {hash} from a peer ({why}): dropped, asked of another peer");
                            requeue(hash, true, None);
                        }
                    }
                }
                Got::Gone { peer, unanswered, reason } => {
                    live.remove(&peer);
                    tracing::warn!(peer = %sources[peer].id, "peer abandoned for this fetch: {reason}");
                    for h in unanswered.into_iter().filter(|h| remaining.contains(h)) {
                        requeue(h, true, None);
                    }
                }
            }
            // A block every live peer was given already cannot come any more. Only a block put back in the
            // queue, or a peer gone, can make one so: the check runs after those alone, since it walks the
            // whole queue (after every block it made a 1 GiB fetch quadratic: ~17 % of the receiver's CPU).
            let w = work.0.lock().unwrap_or_else(|p| p.into_inner());
            let stuck = w.queue.iter().find(|(h, _)| w.tried.get(h).is_some_and(|t| live.is_subset(t)));
            if let Some((h, _)) = stuck {
                break Err(FetchError::Unavailable(*h));
            }
        };
        work.0.lock().unwrap_or_else(|p| p.into_inner()).finished = true;
        work.1.notify_waiters();
        workers.abort_all();
        result
    }
}

/// What to do with a block a peer sent.
#[derive(Debug, PartialEq, Eq)]
enum Judged {
    /// Its bytes, which hash to its name.
    Good(Vec<u8>),
    /// A delta on a base this node lacks: ask again for it whole (the same peer may send it).
    WithoutDelta,
    /// The peer does not have it.
    Missing,
    /// It does not decode, or decodes to bytes of another hash: the sender is marked.
    Bad(String),
}

/// The receiver's check of every block, whatever its sender: decoded (with `base`, the delta's base,
/// when this node has it) and hashed; only bytes that hash to `hash` are good.
fn judge(hash: &BlockHash, block: &WireBlock, base: Option<&[u8]>) -> Judged {
    match block.decode_bytes(base) {
        Ok(Some(bytes)) if BlockHash::of(&bytes) == *hash => Judged::Good(bytes),
        Ok(Some(bytes)) => Judged::Bad(format!("its {} bytes hash to {}", bytes.len(), BlockHash::of(&bytes))),
        Ok(None) if matches!(block, WireBlock::Delta { .. }) => Judged::WithoutDelta,
        Ok(None) => Judged::Missing,
        Err(e) => Judged::Bad(e.to_string()),
    }
}

/// Which answers count as found (the others as "not here").
type Keep<T> = Arc<dyn Fn(&T) -> bool + Send + Sync>;

/// A future reading one answer (the reader functions of [`Reader`], boxed).
type ReadFut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, wire::WireError>> + Send + 'a>>;

/// One peer's share of a block fetch: take a batch no one gave it before, ask, pass on each block as it
/// comes; on an error or a stall, hand back what is unanswered and stop.
async fn worker(
    f: Arc<Fetcher>,
    peer: usize,
    addr: EndpointAddr,
    work: Arc<(Mutex<Work>, tokio::sync::Notify)>,
    tx: tokio::sync::mpsc::Sender<Got>,
) {
    let stall = f.cfg.stall;
    let conn = match f.conn(&addr, stall).await {
        Ok(c) => c,
        Err(reason) => {
            tx.send(Got::Gone { peer, unanswered: Vec::new(), reason }).await.ok();
            return;
        }
    };
    loop {
        let batch = loop {
            {
                let mut w = work.0.lock().unwrap_or_else(|p| p.into_inner());
                if w.finished {
                    return;
                }
                let Work { queue, tried, .. } = &mut *w;
                let mut batch: Vec<BlockHash> = Vec::new();
                let mut deltas = None;
                let mut i = 0;
                while i < queue.len() && batch.len() < BATCH {
                    let (h, d) = queue[i];
                    let mine = !tried.get(&h).is_some_and(|t| t.contains(&peer));
                    if mine && deltas.is_none_or(|x| x == d) {
                        deltas = Some(d);
                        queue.remove(i);
                        tried.entry(h).or_default().insert(peer);
                        batch.push(h);
                    } else {
                        i += 1;
                    }
                }
                if let Some(d) = deltas {
                    break (d, batch);
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), work.1.notified()).await;
        };
        let (deltas, hashes) = batch;
        let req = Request::Blocks { deltas, hashes: hashes.clone() };
        let sent = req.encode().len() as u64;
        let mut answered = 0;
        let r: Result<u64, (u64, String)> = async {
            let mut reader = tokio::time::timeout(stall, Fetcher::ask(&conn, &req))
                .await
                .map_err(|_| (0, "no stream within the stall timeout".to_string()))?
                .map_err(|e| (0, e))?;
            for &hash in &hashes {
                let block = match tokio::time::timeout(stall, reader.block()).await {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => return Err((reader.bytes, e.to_string())),
                    Err(_) => return Err((reader.bytes, format!("sent nothing for {stall:?}"))),
                };
                answered += 1;
                if tx.send(Got::Block { peer, hash, block }).await.is_err() {
                    return Ok(reader.bytes);
                }
            }
            Ok(reader.bytes)
        }
        .await;
        match r {
            Ok(received) => f.stats.seen(addr.id, sent, received),
            Err((received, reason)) => {
                f.stats.moved(addr.id, sent, received);
                f.stats.unreachable(addr.id);
                let unanswered = hashes[answered..].to_vec();
                tx.send(Got::Gone { peer, unanswered, reason }).await.ok();
                return;
            }
        }
    }
}

/// Blocks fetched and checked, waiting in a file until the whole NAR is checked.
struct Spill {
    path: PathBuf,
    file: File,
    index: HashMap<BlockHash, (u64, u32)>,
    len: u64,
}

static SPILLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Spill {
    /// A spill file named by `key` (the NarHash or file digest asked for), this process and a counter.
    fn create(store: &Store, key: &[u8]) -> Result<Spill, FetchError> {
        let dir = store.dir().join("peer").join("incoming");
        let n = SPILLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{}.{}.{n}", hex(key), std::process::id()));
        let err = |source| FetchError::Spill { path: path.clone(), source };
        std::fs::create_dir_all(&dir).map_err(err)?;
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(err)?;
        Ok(Spill { path, file, index: HashMap::new(), len: 0 })
    }

    fn put(&mut self, hash: BlockHash, bytes: &[u8]) -> Result<(), FetchError> {
        self.file.write_all_at(bytes, self.len).map_err(|source| FetchError::Spill { path: self.path.clone(), source })?;
        self.index.insert(hash, (self.len, bytes.len() as u32));
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// A spilled block, checked again (the disk is not trusted either).
    fn get(&self, hash: &BlockHash) -> Result<Option<Bytes>, FetchError> {
        let Some(&(at, len)) = self.index.get(hash) else { return Ok(None) };
        let mut b = vec![0; len as usize];
        let err = |source| FetchError::Spill { path: self.path.clone(), source };
        self.file.read_exact_at(&mut b, at).map_err(err)?;
        if BlockHash::of(&b) != *hash {
            return Err(err(io::Error::new(io::ErrorKind::InvalidData, format!("block {hash} changed on disk"))));
        }
        Ok(Some(Bytes::from(b)))
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The spill shared by the fetch (which adds blocks) and the [`NarStream`] (which waits for them).
struct Shared {
    state: Mutex<(Spill, Option<Result<(), String>>)>,
    arrived: Condvar,
}

impl Shared {
    fn new(spill: Spill) -> Shared {
        Shared { state: Mutex::new((spill, None)), arrived: Condvar::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Spill, Option<Result<(), String>>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, hash: BlockHash, bytes: &[u8]) -> Result<(), FetchError> {
        self.lock().0.put(hash, bytes)?;
        self.arrived.notify_all();
        Ok(())
    }

    fn get(&self, hash: &BlockHash) -> Result<Option<Bytes>, FetchError> {
        self.lock().0.get(hash)
    }

    fn has(&self, hash: &BlockHash) -> bool {
        self.lock().0.index.contains_key(hash)
    }

    fn bytes(&self) -> u64 {
        self.lock().0.len
    }

    /// The fetch ended: no more blocks will arrive.
    fn end(&self, r: Result<(), String>) {
        self.lock().1 = Some(r);
        self.arrived.notify_all();
    }
}

/// A NAR's bytes, read leaf by leaf in order as the leaves arrive from peers (each checked on arrival
/// and again when read from the spill) or from the store. Dropping it stops the fetch.
pub struct NarStream {
    store: Arc<Store>,
    spill: Arc<Shared>,
    leaves: Vec<BlockHash>,
    next: usize,
    cur: Bytes,
    stall: Duration,
    task: tokio::task::JoinHandle<()>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl NarStream {
    /// Leaf `h`: from the spill once it arrived, else from the store; waits while the fetch runs.
    fn leaf(&self, h: &BlockHash) -> io::Result<Bytes> {
        loop {
            if let Some(b) = self.spill.get(h).map_err(io::Error::other)? {
                return Ok(b);
            }
            if let Some(b) = self.store.read_block_bytes(h).map_err(io::Error::other)? {
                return Ok(b);
            }
            let state = self.spill.lock();
            if state.0.index.contains_key(h) {
                continue;
            }
            match &state.1 {
                Some(Err(e)) => return Err(io::Error::other(e.clone())),
                Some(Ok(())) => return Err(io::Error::other(format!("block {h} is neither fetched nor stored"))),
                None => {}
            }
            let (state, t) = self.spill.arrived.wait_timeout(state, self.stall).unwrap_or_else(|p| p.into_inner());
            if t.timed_out() && state.1.is_none() && !state.0.index.contains_key(h) {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("block {h} did not arrive from peers")));
            }
        }
    }
}

impl Read for NarStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            let Some(h) = self.leaves.get(self.next).copied() else { return Ok(0) };
            self.cur = self.leaf(&h)?;
            self.next += 1;
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

impl Drop for NarStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The service's view of the peers: where it looks on a miss.
pub struct PeerMisses(pub Arc<Fetcher>);

impl MissSource for PeerMisses {
    fn narinfo(&self, hash: &StorePathHash, believe: Believe) -> Option<NarInfo> {
        self.0.narinfo(hash, believe)
    }

    fn open_nar(&self, store: &Arc<Store>, hash: &NarHash, size: u64) -> Result<Option<Box<dyn Read + Send>>, ServiceError> {
        match self.0.stream_nar(store.clone(), hash, size) {
            Ok(found) => Ok(found.map(|s| Box::new(s) as Box<dyn Read + Send>)),
            Err(FetchError::Store(e)) => Err(ServiceError::Store(e)),
            Err(e) => Err(ServiceError::Fetch(e.to_string())),
        }
    }

    fn open_file(&self, store: &Arc<Store>, hash: &NixHash) -> Result<Option<crate::fetch::FileStream>, ServiceError> {
        match self.0.stream_file(store.clone(), hash) {
            Ok(found) => Ok(found.map(|(s, size)| (Box::new(s) as Box<dyn Read + Send>, size))),
            Err(FetchError::Store(e)) => Err(ServiceError::Store(e)),
            Err(e) => Err(ServiceError::Fetch(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_block_is_judged_bad_whatever_its_form() {
        let good = nixdag_testkit::noise(1, 50_000);
        let hash = BlockHash::of(&good);
        let mut forged = good.clone();
        forged[100] ^= 1;
        let raw_len = good.len() as u32;
        assert_eq!(judge(&hash, &WireBlock::Raw(good.clone()), None), Judged::Good(good.clone()));
        assert!(matches!(judge(&hash, &WireBlock::Raw(forged.clone()), None), Judged::Bad(_)));
        let z = |b: &[u8]| zstd::bulk::compress(b, 3).unwrap();
        assert_eq!(judge(&hash, &WireBlock::Zstd { raw_len, payload: z(&good) }, None), Judged::Good(good.clone()));
        assert!(matches!(judge(&hash, &WireBlock::Zstd { raw_len, payload: z(&forged) }, None), Judged::Bad(_)));
        assert!(matches!(judge(&hash, &WireBlock::Zstd { raw_len, payload: vec![1, 2, 3] }, None), Judged::Bad(_)));
        // A delta: good on the right base, bad on another, asked again whole without one.
        let base = nixdag_testkit::edited(&good, 7);
        let payload = crate::store::delta_compress(3, &base, &good).unwrap();
        let d = WireBlock::Delta { base: BlockHash::of(&base), raw_len, payload };
        assert_eq!(judge(&hash, &d, Some(&base)), Judged::Good(good.clone()));
        assert!(matches!(judge(&hash, &d, Some(&nixdag_testkit::noise(3, 50_000))), Judged::Bad(_)));
        assert_eq!(judge(&hash, &d, None), Judged::WithoutDelta);
        assert_eq!(judge(&hash, &WireBlock::Missing, None), Judged::Missing);
    }
}
