//! `nixdag serve`: the HTTP binary cache, and the peer door (docs/PEERS.md) when peering is on.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use super::TrustArgs;
use crate::fetch::{FetchOptions, MirrorPull};
use crate::gateway::{key, server, Cidr, ConnLimits, Gateway, GatewayConfig, Limits, ServedCompression, UploadPolicy};
use crate::peer::access::AllowList;
use crate::peer::{endpoint, Access, FetchConfig, InviteTicket, PeerConfig, Peering};
use crate::service::{PullConfig, Service, ServiceConfig, UpstreamFallback};
use crate::store::{EvictPolicy, Store};
use crate::upstream::{Timeouts, Upstreams};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Compression {
    None,
    Zstd,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on; serving the LAN is an explicit `--listen 0.0.0.0:PORT`
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: String,
    /// Signing key (`name:base64`, as nix-store --generate-binary-cache-key writes it)
    /// [default: one created in the store on first start]
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Priority announced in nix-cache-info (lower is preferred; cache.nixos.org is 40)
    #[arg(long, default_value_t = 30, value_name = "N")]
    priority: u32,
    /// How narinfos point at NARs: plain `.nar` (rangeable) or `.nar.zst`
    #[arg(long, value_enum, default_value = "none")]
    nar_compression: Compression,
    /// Accept uploads (`nix copy --to`) without a token from loopback clients (and from the blocks
    /// `--allow-upload-from` names)
    #[arg(long)]
    allow_upload: bool,
    /// Also accept uploads without a token from this address block (`10.0.0.0/8`, `192.168.1.7`); repeatable
    #[arg(long = "allow-upload-from", value_name = "CIDR")]
    allow_upload_from: Vec<Cidr>,
    /// Accept uploads presenting this token (Bearer, or the password in Nix's netrc), from anywhere
    #[arg(long, value_name = "FILE")]
    upload_token_file: Option<PathBuf>,
    #[command(flatten)]
    trust: TrustArgs,
    /// Largest NAR an upload may hold, decompressed (bytes; K, M, G suffixes)
    #[arg(long, default_value = "64G", value_name = "SIZE", value_parser = super::parse_size)]
    max_upload_size: u64,
    /// Largest ratio of a NAR to the compressed upload that carries it
    #[arg(long, default_value_t = 1000, value_name = "N")]
    max_upload_expansion: u64,
    /// Open connections one client address may hold; more are answered 503
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_connections_per_address: usize,
    /// Seconds a client has to send a request's headers (also closes idle keep-alive connections)
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    header_timeout: u64,
    /// Seconds a connection may make no progress (nothing sent, nothing read) before it is closed
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    idle_timeout: u64,
    /// Bytes of NAR bodies held in memory in all; new downloads beyond it get 503
    #[arg(long, default_value = "128M", value_name = "SIZE", value_parser = super::parse_size)]
    inflight_bytes: u64,
    /// Bytes of NAR bodies held in memory for one client address
    #[arg(long, default_value = "8M", value_name = "SIZE", value_parser = super::parse_size)]
    inflight_per_address: u64,
    /// Log one line per request (method, route, path, status, bytes, duration) at info level, target
    /// `nixdag::access`; the same as the filter directive `nixdag::access=info` in NIXDAG_LOG/RUST_LOG
    #[arg(long)]
    pub(super) access_log: bool,
    /// Serve `GET /metrics` (Prometheus) on this address instead of the main one, which then does not
    /// answer it; `/healthz` is on both. Loopback unless given otherwise: metrics say what clients fetch
    #[arg(long, value_name = "ADDR", conflicts_with = "no_metrics")]
    metrics_listen: Option<String>,
    /// Keep no metrics: requests are not counted and `/metrics` answers 404 (`/healthz` stays). For a
    /// cache nobody scrapes, and to measure what counting costs
    #[arg(long)]
    no_metrics: bool,
    /// Repack queued tarballs (`nixdag repack`) in the background once no new one has been queued for
    /// this many seconds; 0 never does
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    repack_idle: u64,
    /// An upstream hashed mirror (`http://host/`, answering `/<algo>/<hex>`): a file asked for by hash and
    /// missing here is fetched from it, checked, kept and served; repeatable, tried in order
    #[arg(long = "tarball-mirror", value_name = "URL")]
    tarball_mirrors: Vec<String>,
    /// Offer the valid paths of this machine's Nix store, with the signatures Nix records for them
    /// (ingested on first request). `=ROOT` names a local store rooted elsewhere (Nix's `--store ROOT`)
    #[arg(long, value_name = "ROOT", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    local_nix_store: Option<PathBuf>,
    /// Disk budget: whenever packs plus index take more than this (K, M, G, T suffixes), evict the least
    /// recently served NARs and files in the background (never a path a kept path references, nor pinned
    /// or uploaded ones) and free their blocks; checked every few seconds and after each ingest
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
    max_size: Option<u64>,
    /// With --max-size: uploaded NARs may be evicted too (by default they are kept like pinned paths)
    #[arg(long, requires = "max_size")]
    evict_uploads: bool,
    #[command(flatten)]
    peering: PeeringArgs,
    #[command(flatten)]
    upstream: UpstreamArgs,
}

/// Pull-through (src/service/upstream.rs): paths the store lacks are fetched from upstream caches.
#[derive(Args, Debug)]
pub struct UpstreamArgs {
    /// An upstream binary cache (`https://…` or `http://…`) asked when a path is missing here; its
    /// narinfos must be signed by a `--trusted-key`; repeatable
    #[arg(long = "upstream", value_name = "URL", help_heading = "Upstreams")]
    upstreams: Vec<String>,
    /// Longest a missing path waits for the upstreams before the answer is 404
    #[arg(long, default_value_t = 5, value_name = "SECS", help_heading = "Upstreams")]
    upstream_deadline: u64,
    /// How long "no upstream has this path" is remembered
    #[arg(long, default_value_t = 10, value_name = "SECS", help_heading = "Upstreams")]
    upstream_negative_ttl: u64,
}

/// The peer door (docs/PEERS.md). Off unless `--peering` or another of these options is given.
#[derive(Args, Debug)]
pub struct PeeringArgs {
    /// Serve blocks to peers over iroh (the stock iroh-blobs protocol); any option below turns it on too
    #[arg(long, help_heading = "Peers")]
    peering: bool,
    /// UDP address of the peer endpoint; serving the LAN is an explicit `--peer-listen 0.0.0.0:PORT`
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR", help_heading = "Peers")]
    peer_listen: std::net::SocketAddr,
    /// A peer: an endpoint ticket (`endpoint…`, as `nixdag peer show` prints) or `ID@IP:PORT`; repeatable.
    /// An invite (`nixdaginvite1…`) is taken too, as with `--invite`
    #[arg(long = "peer", value_name = "TICKET_OR_ID@ADDR", help_heading = "Peers")]
    peers: Vec<String>,
    /// An invite (`nixdaginvite1…`, from `nixdag peer invite` on another node): presented to that node,
    /// which then allows this one; that node is also a peer to fetch from. Repeatable
    #[arg(long = "invite", value_name = "INVITE", help_heading = "Peers")]
    invites: Vec<String>,
    /// Do not announce the endpoint on the LAN nor look for other nodes there (mDNS). Discovery is on
    /// whenever peering is, unless the endpoint listens on loopback only
    #[arg(long, help_heading = "Peers")]
    no_discovery: bool,
    /// Peers, one per line (as `--peer` takes them; `#` comments)
    #[arg(long, value_name = "FILE", help_heading = "Peers")]
    peers_file: Option<PathBuf>,
    /// Serve blocks to any peer that can reach the endpoint (instead of only `--allow-peer` ids)
    #[arg(long, help_heading = "Peers", conflicts_with_all = ["allow_peers", "allow_peers_file"])]
    open: bool,
    /// Serve blocks to this endpoint id (hex, as `nixdag peer show` prints it); repeatable
    #[arg(long = "allow-peer", value_name = "ID", help_heading = "Peers")]
    allow_peers: Vec<String>,
    /// Also serve the endpoint ids in this file (one per line, `#` comments), read again when it changes
    #[arg(long, value_name = "FILE", help_heading = "Peers")]
    allow_peers_file: Option<PathBuf>,
    /// Milliseconds the peers have to answer a narinfo this node lacks (50-500); past it the miss is a 404
    #[arg(long, default_value_t = 300, value_name = "MS", help_heading = "Peers",
          value_parser = clap::value_parser!(u64).range(50..=500))]
    peer_deadline: u64,
    /// Seconds a peer may send nothing during a transfer before the rest is fetched from others
    #[arg(long, default_value_t = 5, value_name = "SECS", help_heading = "Peers",
          value_parser = clap::value_parser!(u64).range(1..=600))]
    peer_timeout: u64,
    /// Keep and serve narinfos from peers that no `--trusted-key` signed (never signed by this node)
    #[arg(long, help_heading = "Peers")]
    trust_peer_narinfos: bool,
}

impl PeeringArgs {
    /// The peer door's configuration, or `None` when peering is off.
    fn config(&self, store_dir: &std::path::Path) -> Result<Option<PeerConfig>> {
        let on = self.peering
            || self.open
            || !self.peers.is_empty()
            || !self.invites.is_empty()
            || self.peers_file.is_some()
            || !self.allow_peers.is_empty()
            || self.allow_peers_file.is_some();
        if !on {
            return Ok(None);
        }
        if let Some(bad) = self.invites.iter().find(|i| !InviteTicket::is_invite(i)) {
            bail!("--invite {bad:?}: not an invite (those start with {})", crate::peer::invite::TICKET_PREFIX);
        }
        let mut peers = Vec::new();
        let mut invites = Vec::new();
        let mut take = |p: &str| -> Result<(), crate::peer::PeerError> {
            if InviteTicket::is_invite(p) {
                invites.push(InviteTicket::parse(p)?);
            } else {
                peers.push(endpoint::parse_peer(p)?);
            }
            Ok(())
        };
        for p in self.peers.iter().chain(&self.invites) {
            take(p)?;
        }
        if let Some(f) = &self.peers_file {
            for (n, line) in endpoint::read_peers_file(f)? {
                take(&line).with_context(|| format!("{}:{n}", f.display()))?;
            }
        }
        let access = if self.open {
            Access::Open
        } else {
            let ids = self.allow_peers.iter().map(|p| endpoint::parse_id(p)).collect::<Result<HashSet<_>, _>>()?;
            let list = AllowList::new(ids, self.allow_peers_file.as_deref())?.with_invites(store_dir)?;
            Access::Allow(Arc::new(list))
        };
        // A loopback endpoint cannot be dialled from another machine: announcing it on the LAN would only
        // send multicast off a machine whose operator kept peering local.
        let discovery = !self.no_discovery && !self.peer_listen.ip().is_loopback();
        let fetch = FetchConfig {
            deadline: std::time::Duration::from_millis(self.peer_deadline),
            stall: std::time::Duration::from_secs(self.peer_timeout),
        };
        Ok(Some(PeerConfig { listen: self.peer_listen, access, peers, invites, discovery, fetch, gateway: None }))
    }
}

/// Keep block-sized buffers on the heap, in few arenas that give memory back.
///
/// A served leaf (up to 256 KiB) and a decompressed frame (1 MiB) live in fresh buffers until the socket
/// has sent them; above glibc's default 128 KiB mmap threshold each one was a new mapping (page faults,
/// zeroing and munmap were a sixth of the serving CPU), so they stay on the heap. But glibc gives every
/// thread that allocates at once an arena of its own (up to 8 per core), and each may keep up to the trim
/// threshold of freed memory: 32 concurrent 1 GiB downloads peaked at 297 MiB on the 2-core Intel VM
/// (102 MiB on the AMD one: how threads happened to meet arenas). One arena per core and an 8 MiB trim
/// threshold bound that by the budgets (bodies, frame cache), not by luck: 148 MiB for the same run.
fn tune_allocator() {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) as i32;
    // SAFETY: mallopt only adjusts allocator parameters; it is called before any server thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_ARENA_MAX, cores);
    }
}

pub fn run(store: Store, args: ServeArgs) -> Result<()> {
    tune_allocator();
    // Options are checked before anything is created in the store.
    let peer_cfg = args.peering.config(store.dir())?;
    let key = key::load_or_create(store.dir(), args.key.as_deref())?;
    let token = match &args.upload_token_file {
        Some(f) => {
            let t = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let t = t.trim().to_string();
            if t.is_empty() {
                bail!("upload token file {} is empty", f.display());
            }
            Some(t)
        }
        None => None,
    };
    let mut allow_from = args.allow_upload_from.clone();
    if args.allow_upload {
        allow_from.extend(Cidr::loopback());
    }
    let uploads = UploadPolicy {
        token,
        allow_from,
        max_nar_size: args.max_upload_size,
        max_expansion: args.max_upload_expansion.max(1),
    };
    let trusted_keys = args.trust.keys()?;
    let upstream = &args.upstream;
    let upstreams = if upstream.upstreams.is_empty() {
        None
    } else {
        if trusted_keys.is_empty() {
            bail!("--upstream needs --trusted-key or --trusted-keys-file (nothing unsigned is taken from upstreams)");
        }
        let u = Upstreams::new(&upstream.upstreams, trusted_keys.clone(), Timeouts::default())?;
        Some(Arc::new(u))
    };
    let open_files = server::raise_open_file_limit();
    let limits = Limits {
        conn: ConnLimits {
            per_address: args.max_connections_per_address.max(1),
            // Leave room for packs, the index and the lookup threads' files.
            total: (open_files.saturating_sub(64) as usize).max(16),
            header_timeout: std::time::Duration::from_secs(args.header_timeout.max(1)),
            idle_timeout: std::time::Duration::from_secs(args.idle_timeout.max(1)),
        },
        inflight_bytes: args.inflight_bytes as usize,
        inflight_per_address: args.inflight_per_address as usize,
        ..Limits::default()
    };
    let public = key.public();
    let cfg = GatewayConfig {
        priority: args.priority,
        compression: match args.nar_compression {
            Compression::None => ServedCompression::None,
            Compression::Zstd => ServedCompression::Zstd,
        },
        uploads,
        serve_metrics: args.metrics_listen.is_none() && !args.no_metrics,
        metrics: !args.no_metrics,
        limits: limits.clone(),
        mirrors: None,
    };
    let store = Arc::new(store);
    let mut cfg = cfg;
    if !args.tarball_mirrors.is_empty() {
        let opts = FetchOptions { max_size: args.max_upload_size, ..FetchOptions::default() };
        cfg.mirrors = Some(MirrorPull::new(store.clone(), args.tarball_mirrors.clone(), opts, 4)?);
    }
    let service = Service::start(
        store,
        ServiceConfig {
            key,
            trusted_keys,
            repack_idle: (args.repack_idle > 0).then(|| std::time::Duration::from_secs(args.repack_idle)),
            trust_foreign_narinfos: args.peering.trust_peer_narinfos,
            budget: args.max_size.map(|max_size| EvictPolicy { max_size, evict_uploads: args.evict_uploads }),
        },
    );
    if let Some(root) = &args.local_nix_store {
        let root = (!root.as_os_str().is_empty()).then(|| root.clone());
        let nix = crate::local_nix::NixStore::new(root);
        tracing::info!("offering this machine's Nix store ({})", nix.real_dir().display());
        service.set_local_nix(Arc::new(crate::service::LocalNix::new(nix, Timeouts::default().idle)));
    }
    // Upstreams get a runtime of their own: lookups block on it from the gateway's lookup threads. Their
    // nix-cache-info is read in the background, so `serve` starts with every upstream offline.
    let upstream_rt = match upstreams {
        Some(u) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("nixdag-upstream")
                .enable_all()
                .build()
                .context("starting the upstream runtime")?;
            let probe = u.clone();
            rt.spawn(async move {
                for p in probe.probe().await {
                    tracing::warn!("upstream {p}");
                }
            });
            let cfg = PullConfig {
                deadline: std::time::Duration::from_secs(upstream.upstream_deadline.max(1)),
                negative_ttl: std::time::Duration::from_secs(upstream.upstream_negative_ttl),
                idle: Timeouts::default().idle,
            };
            service.set_fallback(Arc::new(UpstreamFallback::new(u, rt.handle().clone(), cfg)));
            Some(rt)
        }
        None => None,
    };
    let gateway = Gateway::new(service.clone(), cfg);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let at = std::net::ToSocketAddrs::to_socket_addrs(&args.listen)
        .with_context(|| format!("listening on {}", args.listen))?
        .next()
        .with_context(|| format!("listening on {}: no address", args.listen))?;
    let listeners = server::bind_per_core(at, threads).with_context(|| format!("listening on {}", args.listen))?;
    let addr = listeners[0].local_addr()?;
    println!("nixdag gateway on http://{addr}");
    println!("trusted-public-keys = {public}");
    let peering = match peer_cfg {
        Some(mut cfg) => {
            cfg.gateway = Some(addr);
            let p = Peering::start(&service, cfg).context("starting the peer endpoint")?;
            println!("peer endpoint {}", endpoint::endpoint_ticket(p.addr()));
            Some(p)
        }
        None => None,
    };
    if let Some(p) = &peering {
        gateway.metrics().add_extra(peer_metrics(p.stats()));
    }
    if let Some(m) = &args.metrics_listen {
        let at = std::net::ToSocketAddrs::to_socket_addrs(m)
            .with_context(|| format!("--metrics-listen {m}"))?
            .next()
            .with_context(|| format!("--metrics-listen {m}: no address"))?;
        let listener = std::net::TcpListener::bind(at).with_context(|| format!("listening on {m}"))?;
        listener.set_nonblocking(true)?;
        println!("nixdag metrics on http://{}/metrics", listener.local_addr()?);
        let (router, conn) = (gateway.clone().metrics_router(), limits.conn.clone());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("metrics runtime")?;
        std::thread::Builder::new().name("nixdag-metrics".into()).spawn(move || {
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                server::serve(listener, router, conn, shutdown_signal()).await
            })
        })?;
    }
    std::io::stdout().flush()?;
    let served = server::serve_per_core(listeners, gateway.router(), limits.conn, shutdown_signal()).context("serving");
    if let Some(p) = peering {
        p.stop();
    }
    service.stop();
    if let Some(rt) = upstream_rt {
        rt.shutdown_timeout(std::time::Duration::from_secs(1));
    }
    served
}

/// The peers' counters as metrics series.
fn peer_metrics(stats: Arc<crate::peer::stats::PeerStats>) -> crate::gateway::metrics::Extra {
    use crate::gateway::metrics::counter;
    Box::new(move |o: &mut String| {
        let s = stats.snapshot();
        counter(o, "nixdag_peer_sent_bytes_total", "Bytes sent to peers.", s.bytes_sent);
        counter(o, "nixdag_peer_received_bytes_total", "Bytes received from peers (fetches).", s.bytes_received);
        counter(
            o,
            "nixdag_peer_bad_blocks_total",
            "Blocks from peers that failed their check (fetch errors).",
            s.bad_blocks,
        );
        let reachable = s.peers.iter().filter(|p| p.reachable).count() as u64;
        crate::gateway::metrics::gauge(o, "nixdag_peers_reachable", "Peers reachable now.", reachable);
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
