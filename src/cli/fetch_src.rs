//! `nixdag fetch-src`: a source file by its hash, from the store, or else from the LAN's peers, hashed
//! mirrors and its URLs; checked against the hash before it is kept (docs/FETCH-SRC.md). Exit codes: 0 fetched, 2 not
//! found anywhere, 3 hash mismatch, 4 network error, 1 anything else.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::dag::DagReader;
use crate::fetch::{FailKind, FetchError, FetchOptions, Fetcher, Progress, Source};
use crate::nix::hash::{HashAlgo, NixHash};
use crate::peer::{endpoint, EndpointRecord, FetchConfig, PeerClient};
use crate::store::Store;

#[derive(Args, Debug)]
pub struct FetchSrcArgs {
    /// The file's hash as Nix users write it: `sha256:<hex|nix32|base64>` (or sha512, sha1, md5), SRI
    /// (`sha256-<base64>`), or a bare SHA-256 in hex or nix32
    #[arg(long, value_name = "H", required_unless_present = "list", conflicts_with = "list")]
    hash: Option<String>,
    /// A URL the file was published at; repeatable, tried after the mirrors, in order
    #[arg(long = "url", value_name = "URL")]
    urls: Vec<String>,
    /// A hashed mirror (`http://host/`, answering `/<algo>/<hex>`); repeatable, tried first, in order
    #[arg(long = "mirror", value_name = "URL")]
    mirrors: Vec<String>,
    /// Also write the file here
    #[arg(short = 'o', long = "output", value_name = "FILE", conflicts_with = "list")]
    output: Option<PathBuf>,
    /// The file's name (for the store and `--add-to-nix-store`) [default: the URL's last part]
    #[arg(long, value_name = "NAME", conflicts_with = "list")]
    name: Option<String>,
    /// Add the file to the Nix store as the fixed-output path `fetchurl` would make, and print the path
    #[arg(long, conflicts_with = "list")]
    add_to_nix_store: bool,
    /// Prefetch every file in FILE: one per line, `HASH [URL...]` (`#` comments)
    #[arg(long, value_name = "FILE")]
    list: Option<PathBuf>,
    /// With `--list`: downloads at once
    #[arg(long, default_value_t = 4, value_name = "N")]
    jobs: usize,
    /// With `--list`: print the summary as JSON
    #[arg(long)]
    json: bool,
    /// Further tries of a URL after a failure that may pass (each resumes with Range)
    #[arg(long, default_value_t = 3, value_name = "N")]
    retries: u32,
    /// A LAN peer to ask before the mirrors (an endpoint ticket, `ID@HOST:PORT`, or an id); repeatable.
    /// While `serve` runs with peering on this store, its peers are asked through it instead
    #[arg(long = "peer", value_name = "PEER")]
    peers: Vec<String>,
    /// Peers, one per line (as `--peer` takes them; `#` comments)
    #[arg(long, value_name = "FILE")]
    peers_file: Option<PathBuf>,
    /// Seconds a peer may send nothing before it is given up
    #[arg(long, default_value_t = 5, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=600))]
    peer_timeout: u64,
}

/// The exit status for an error `run` returned (the codes in the module doc).
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e.chain().find_map(|c| c.downcast_ref::<FetchError>()).map(FetchError::kind) {
        Some(FailKind::NotFound) => 2,
        Some(FailKind::Mismatch) => 3,
        Some(FailKind::Network) => 4,
        _ => 1,
    }
}

pub fn run(store: Store, args: FetchSrcArgs) -> Result<()> {
    let store = Arc::new(store);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the download runtime")?;
    let opts = FetchOptions { retries: args.retries, ..FetchOptions::default() };
    let mut fetcher = Fetcher::new(opts)?;
    let mut args = args;
    match peers_step(store.dir(), &args)? {
        Peers::None => {}
        Peers::Through(gateway) => {
            eprintln!("asking the LAN's peers through the running serve at {gateway}");
            args.mirrors.insert(0, gateway);
        }
        Peers::Own(client) => fetcher = fetcher.with_nearby(Arc::new(client)),
    }
    match &args.list {
        Some(list) => runtime.block_on(run_list(store, fetcher, list, &args)),
        None => runtime.block_on(run_one(store, fetcher, &args)),
    }
}

/// How the LAN's peers are asked (docs/FETCH-SRC.md).
enum Peers {
    /// No peer named, and no `serve` with peering on this store.
    None,
    /// Through the gateway of the `serve` that runs with peering on this store (it holds the node's
    /// endpoint, and asks its peers for a file it lacks): a hashed mirror ahead of the others.
    Through(String),
    /// The named peers, from an endpoint of this command's own.
    Own(PeerClient),
}

fn peers_step(store_dir: &Path, args: &FetchSrcArgs) -> Result<Peers> {
    if let Some((record, _)) = EndpointRecord::read_live(store_dir)? {
        if let Some(gateway) = record.gateway {
            if !args.peers.is_empty() || args.peers_file.is_some() {
                eprintln!("serve runs with peering on this store: its peers are asked, not --peer");
            }
            return Ok(Peers::Through(gateway));
        }
    }
    let mut named = args.peers.clone();
    if let Some(f) = &args.peers_file {
        named.extend(endpoint::read_peers_file(f)?.into_iter().map(|(_, p)| p));
    }
    if named.is_empty() {
        return Ok(Peers::None);
    }
    let peers = named.iter().map(|p| endpoint::parse_peer(p)).collect::<Result<Vec<_>, _>>()?;
    let cfg = FetchConfig { deadline: Duration::from_millis(500), stall: Duration::from_secs(args.peer_timeout) };
    Ok(Peers::Own(PeerClient::start(store_dir, peers, cfg).context("starting an endpoint to ask the peers")?))
}

fn parse_hash(s: &str) -> Result<NixHash> {
    NixHash::parse_with_default(s.trim(), HashAlgo::Sha256).with_context(|| format!("invalid hash {s:?}"))
}

/// The name a file gets: `--name`, else the last part of its first URL.
fn file_name(name: Option<&str>, urls: &[String], hash: &NixHash) -> String {
    if let Some(n) = name {
        return n.to_owned();
    }
    urls.iter()
        .filter_map(|u| u.split(['?', '#']).next()?.rsplit('/').next().filter(|s| !s.is_empty()).map(String::from))
        .next()
        .unwrap_or_else(|| format!("{}-{}", hash.algo, hash.to_hex()))
}

fn sources(mirrors: &[String], urls: &[String]) -> Vec<Source> {
    mirrors.iter().cloned().map(Source::Mirror).chain(urls.iter().cloned().map(Source::Url)).collect()
}

async fn run_one(store: Arc<Store>, fetcher: Fetcher, args: &FetchSrcArgs) -> Result<()> {
    let hash = parse_hash(args.hash.as_deref().unwrap_or_default())?;
    let name = file_name(args.name.as_deref(), &args.urls, &hash);
    // The store first: a file kept once is never downloaded again. Then the peers, the mirrors, the URLs.
    let (sha256, root, size, from) = match store.file(&hash)? {
        Some((sha, entry)) => {
            let root = entry.root_cid()?;
            if let Some(out) = &args.output {
                write_stored(&store, root, out)?;
            }
            (sha, root, entry.size, "the store".to_string())
        }
        None => {
            let progress = Arc::new(Progress::default());
            let shown = show_progress(progress.clone());
            let fetched = fetcher
                .fetch(&store, &hash, &sources(&args.mirrors, &args.urls), &name, args.output.as_deref(), &progress)
                .await;
            shown.abort();
            let _ = shown.await;
            let f = fetched?;
            (f.added.sha256, f.added.root, f.added.size, f.from)
        }
    };
    eprintln!("{name}: {size} bytes from {from}");
    println!("{name} sha256:{} {root} {size}", crate::nix::hash::nix32::encode(&sha256));
    if args.add_to_nix_store {
        let path = add_to_nix_store(&store, &hash, &name, root, args.output.as_deref())?;
        println!("{path}");
    }
    Ok(())
}

/// A stored file written to `out` (through a `.part` file, renamed once whole).
fn write_stored(store: &Store, root: crate::dag::Cid, out: &Path) -> Result<()> {
    let mut part = out.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let mut f = std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
    let mut reader = DagReader::new(store, root)?;
    io::copy(&mut reader, &mut f).with_context(|| format!("writing {}", part.display()))?;
    f.sync_all().with_context(|| format!("syncing {}", part.display()))?;
    std::fs::rename(&part, out).with_context(|| format!("renaming {} to {}", part.display(), out.display()))
}

/// `nix-store --add-fixed ALGO FILE`: the flat fixed-output path `fetchurl` gives a file of this name
/// and hash. The file must be called NAME on disk, so it is written into a scratch directory.
fn add_to_nix_store(
    store: &Store,
    hash: &NixHash,
    name: &str,
    root: crate::dag::Cid,
    written: Option<&Path>,
) -> Result<String> {
    if name.contains('/') || name.starts_with('.') || name.is_empty() {
        bail!("{name:?} is not a store path name: give --name");
    }
    let dir = std::env::temp_dir().join(format!("nixdag-fetch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(name);
    let result = (|| {
        match written {
            Some(w) => {
                std::fs::copy(w, &file).with_context(|| format!("copying {} to {}", w.display(), file.display()))?;
            }
            None => write_stored(store, root, &file)?,
        }
        let out = Command::new("nix-store")
            .args(["--add-fixed", hash.algo.name()])
            .arg(&file)
            .output()
            .context("running nix-store --add-fixed (is Nix installed?)")?;
        if !out.status.success() {
            bail!("nix-store --add-fixed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A progress bar on a terminal; plain lines every few seconds otherwise. Runs until aborted.
fn show_progress(p: Arc<Progress>) -> tokio::task::JoinHandle<()> {
    let tty = io::stderr().is_terminal();
    tokio::spawn(async move {
        let bar = tty.then(|| {
            let bar = indicatif::ProgressBar::new(0);
            let style = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar
        });
        let _finish = Finish(bar.clone());
        let (mut url, mut said) = (String::new(), 0);
        let mut tick = tokio::time::interval(if tty { Duration::from_millis(100) } else { Duration::from_secs(5) });
        loop {
            tick.tick().await;
            let (got, total) = (p.received.load(Ordering::Relaxed), p.total.load(Ordering::Relaxed));
            let now = p.url.lock().map(|u| u.clone()).unwrap_or_default();
            match &bar {
                Some(bar) => {
                    if now != url {
                        bar.set_message(now.clone());
                    }
                    bar.set_length(total.max(got));
                    bar.set_position(got);
                }
                None if now != url || got != said => {
                    let of = if total > 0 { format!(" of {total}") } else { String::new() };
                    eprintln!("{now}: {got}{of} bytes");
                    said = got;
                }
                None => {}
            }
            url = now;
        }
    })
}

/// Clears the bar when the display task ends (it is aborted).
struct Finish(Option<indicatif::ProgressBar>);

impl Drop for Finish {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// One line of a `--list` file.
struct Wanted {
    hash: NixHash,
    urls: Vec<String>,
}

fn read_list(path: &Path) -> Result<Vec<Wanted>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(h) = words.next() else { continue };
        let hash = parse_hash(h).with_context(|| format!("{}:{}", path.display(), n + 1))?;
        out.push(Wanted { hash, urls: words.map(String::from).collect() });
    }
    Ok(out)
}

#[derive(serde::Serialize)]
struct Summary {
    fetched: Vec<Done>,
    present: Vec<String>,
    failed: Vec<Failed>,
}

#[derive(serde::Serialize)]
struct Done {
    hash: String,
    from: String,
    size: u64,
}

#[derive(serde::Serialize)]
struct Failed {
    hash: String,
    kind: &'static str,
    reason: String,
}

async fn run_list(store: Arc<Store>, fetcher: Fetcher, list: &Path, args: &FetchSrcArgs) -> Result<()> {
    let wanted = read_list(list)?;
    let total = wanted.len();
    let slots = Arc::new(tokio::sync::Semaphore::new(args.jobs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, w) in wanted.into_iter().enumerate() {
        let (store, fetcher, slots, mirrors) = (store.clone(), fetcher.clone(), slots.clone(), args.mirrors.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let shown = w.hash.to_string();
            let outcome = match store.file(&w.hash) {
                Ok(Some(_)) => Ok(None),
                Ok(None) => {
                    let name = file_name(None, &w.urls, &w.hash);
                    let progress = Progress::default();
                    fetcher.fetch(&store, &w.hash, &sources(&mirrors, &w.urls), &name, None, &progress).await.map(Some)
                }
                Err(e) => Err(FetchError::Store(e)),
            };
            (i, shown, outcome)
        });
    }
    let mut summary = Summary { fetched: Vec::new(), present: Vec::new(), failed: Vec::new() };
    let mut worst: Option<FetchError> = None;
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        let (_, hash, outcome) = joined.context("a download task")?;
        done += 1;
        match outcome {
            Ok(None) => {
                eprintln!("[{done}/{total}] {hash}: already in the store");
                summary.present.push(hash);
            }
            Ok(Some(f)) => {
                eprintln!("[{done}/{total}] {hash}: {} bytes from {}", f.added.size, f.from);
                summary.fetched.push(Done { hash, from: f.from, size: f.added.size });
            }
            Err(e) => {
                eprintln!("[{done}/{total}] {hash}: failed: {e}");
                let kind = match e.kind() {
                    FailKind::NotFound => "not-found",
                    FailKind::Mismatch => "mismatch",
                    FailKind::Network => "network",
                    FailKind::Local => "local",
                };
                summary.failed.push(Failed { hash, kind, reason: e.to_string() });
                let rank = |k: FailKind| match k {
                    FailKind::Local => 3,
                    FailKind::Mismatch => 2,
                    FailKind::Network => 1,
                    FailKind::NotFound => 0,
                };
                if worst.as_ref().is_none_or(|w| rank(e.kind()) > rank(w.kind())) {
                    worst = Some(e);
                }
            }
        }
    }
    summary.fetched.sort_by(|a, b| a.hash.cmp(&b.hash));
    summary.present.sort();
    summary.failed.sort_by(|a, b| a.hash.cmp(&b.hash));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let mut out = io::stdout().lock();
        writeln!(
            out,
            "fetched {}, already present {}, failed {}",
            summary.fetched.len(),
            summary.present.len(),
            summary.failed.len()
        )?;
        for f in &summary.failed {
            writeln!(out, "  failed {} ({}): {}", f.hash, f.kind, f.reason)?;
        }
    }
    match worst {
        Some(e) => Err(anyhow::Error::new(e).context(format!("{} of {total} files failed", summary.failed.len()))),
        None => Ok(()),
    }
}
