//! The command line: argument definitions here, one file per command. Each command returns
//! `anyhow::Result`, and `main` prints the error chain once.

mod add;
mod cat;
mod completions;
mod export_car;
mod fetch_src;
mod forget;
mod gc;
mod key;
mod man;
mod nix_cli;
mod peer;
mod pin;
mod repack;
mod restore;
mod serve;
mod snapshot;
mod stats;
mod verify;
mod warm;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::chunk::ChunkerConfig;
use crate::dag::Cid;
use crate::nix::hash::{HashAlgo, NarHash, NixHash};
use crate::store::Store;

/// nixdag: a content-addressed chunk store for Nix NARs and source tarballs.
#[derive(Parser, Debug)]
#[command(name = "nixdag", version = version(), about, long_about = None)]
pub struct Cli {
    /// Store directory [default: $XDG_DATA_HOME/nixdag or ~/.local/share/nixdag]
    #[arg(long, global = true, env = "NIXDAG_STORE", value_name = "DIR")]
    store: Option<PathBuf>,
    /// Fail at once, instead of waiting, when another process holds the store alone
    #[arg(long, global = true)]
    no_wait: bool,
    /// Diagnostics on stderr as text lines or JSON objects (filter: NIXDAG_LOG, else RUST_LOG)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "NIXDAG_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Store paths as NARs (or NAR streams, or flat files); prints `<path> sha256:<nix32> <root CID> <size>`
    Add(add::AddArgs),
    /// Write stored bytes to stdout
    Cat(cat::CatArgs),
    /// Unpack a stored NAR into a new directory, as `nix-store --restore` does
    Restore(restore::RestoreArgs),
    /// Write a CAR v1 file holding every block under a root
    ExportCar(export_car::ExportCarArgs),
    /// Re-hash every block and walk every root; exits 0 only if the store is consistent
    Verify(verify::VerifyArgs),
    /// Remove blocks no root reaches and compact packs
    Gc(gc::GcArgs),
    /// Keep the compressed tarballs `add` queued as content plus a recipe (see `--storage tarballs=`)
    Repack(repack::RepackArgs),
    /// Drop a NAR (with the store paths recorded with it) or a file from the manifests; gc then frees its blocks
    Forget(forget::ForgetArgs),
    /// What is stored, what is shared, and what it saves
    DedupStats(stats::StatsArgs),
    /// Get a source file by its hash (from the store, hashed mirrors or its URLs), verified, and keep it
    FetchSrc(fetch_src::FetchSrcArgs),
    /// Serve the store as a Nix binary cache over HTTP
    Serve(Box<serve::ServeArgs>),
    /// The gateway's signing key
    Key(key::KeyArgs),
    /// Store paths and their closures ahead of time, from upstream caches or this machine's Nix store
    Warm(warm::WarmArgs),
    /// The peer endpoint (docs/PEERS.md): its identity, and tickets for stock iroh-blobs clients
    Peer(peer::PeerArgs),
    /// Keep store paths and their closures through any disk budget (`--max-size`); with no path, list the pins
    Pin(pin::PinArgs),
    /// Stop keeping pinned store paths (they are evicted by age again)
    Unpin(pin::PinArgs),
    /// Export the manifests as a dag-cbor catalogue the gateway serves as `/ipfs/<cid>`; prints its CID
    Snapshot(snapshot::SnapshotArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) for this version's flags
    Completions(completions::CompletionsArgs),
    /// Write the manual pages (nixdag.1, one per command) into a directory: a packaging step
    #[command(hide = true)]
    Man(man::ManArgs),
}

/// What `--version` prints after the name: the crate's version and the on-disk formats this build
/// writes, which decide whether it can open a given store (docs/FORMAT.md, "Version history"). A bug
/// report, or an operator deciding whether a downgrade is safe, needs both.
fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (store format {}, pack format {})",
            env!("CARGO_PKG_VERSION"),
            crate::store::tables::FORMAT_VERSION,
            crate::store::pack::PACK_VERSION
        )
    })
}

/// The whole command line as clap sees it, for the generators (completions, manual pages).
fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Diagnostics go to stderr, as `LEVEL span{fields}: message` lines or (`--log-format json`) one JSON
/// object a line. The filter is `NIXDAG_LOG`, else `RUST_LOG`, else `info`, in `EnvFilter`'s directive
/// syntax (`warn,nixdag::access=info`). The per-request lines of `serve` (target `nixdag::access`) are
/// off unless `--access-log` or a directive naming that target turns them on: a line per request costs
/// throughput a busy cache should not pay by default.
fn init_logging(cli: &Cli) {
    let mut directives = std::env::var("NIXDAG_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "info".into());
    if !directives.contains("nixdag::access") {
        let access = matches!(&cli.command, Command::Serve(a) if a.access_log);
        directives.push_str(if access { ",nixdag::access=info" } else { ",nixdag::access=off" });
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("nixdag: ignoring the log filter {directives:?}: {e}");
        tracing_subscriber::EnvFilter::new("info,nixdag::access=off")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.without_time().with_target(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

/// How diagnostics are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
enum LogFormat {
    /// `LEVEL span{fields}: message`
    #[default]
    Text,
    /// One JSON object a line (timestamp, level, target, fields)
    Json,
}

/// Parse, run, report: the whole binary.
pub(crate) fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = <Cli as clap::Parser>::parse();
    init_logging(&cli);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: the whole context chain, outermost first.
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(fetch_src::exit_code(&e))
        }
    }
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    // The generators describe the binary, not a store: they run with no store and no HOME (a build
    // sandbox).
    let command = match cli.command {
        Command::Completions(a) => return completions::run(a),
        Command::Man(a) => return man::run(a),
        command => command,
    };
    let store_dir = match cli.store {
        Some(d) => d,
        None => Store::default_dir().context("no --store, NIXDAG_STORE, XDG_DATA_HOME or HOME to find the store")?,
    };
    let dir = store_dir.clone();
    let wait = !cli.no_wait;
    guard_index(&store_dir, move || run_in(dir, command, wait)).map_err(|e| explain(e, &store_dir))
}

/// Faults the operator must act on get a sentence saying so beside the OS or redb error: a full disk,
/// and an index redb reports as corrupted.
fn explain(e: anyhow::Error, store_dir: &std::path::Path) -> anyhow::Error {
    use crate::store::StoreError;
    let store_err = || e.chain().filter_map(|c| c.downcast_ref::<StoreError>());
    if store_err().any(|s| s.is_out_of_space()) {
        return e
            .context("the disk holding the store is full: free space, then run the command again (nothing was lost)");
    }
    let corrupt = store_err().any(|s| {
        matches!(s.redb_source(), Some(redb::Error::Corrupted(_)))
            || matches!(s.redb_source(), Some(redb::Error::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData)
    });
    if corrupt {
        let index = store_dir.join("index.redb");
        return e.context(format!(
            "the store's index {} is damaged: run `nixdag verify` to see what is affected, or restore it from a backup",
            index.display()
        ));
    }
    e
}

/// redb checks its file as it reads and, on some damage, panics instead of returning an error. Such a
/// panic is caught here and reported as a damaged index, naming the file and what to do, with exit
/// status 1 (not 101 and a backtrace). Panics from anywhere else are bugs and unwind as usual.
fn guard_index<T>(store_dir: &std::path::Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    install_redb_panic_hook();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) if REDB_PANIC.with(|p| p.borrow().is_some()) => {
            let what = REDB_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default();
            drop(payload);
            anyhow::bail!(
                "the store's index {} is damaged ({what}): run `nixdag verify`, or restore the file from a backup",
                store_dir.join("index.redb").display()
            )
        }
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

thread_local! {
    /// The message of a panic raised inside redb on this thread, for [`guard_index`].
    static REDB_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Keep redb's panics quiet (they become one error line) and remember them; others print as usual.
fn install_redb_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_redb = info.location().is_some_and(|l| l.file().contains("/redb-"));
            if in_redb {
                let msg = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "redb panicked".into());
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file().rsplit("/src/").next().unwrap_or(""), l.line()));
                REDB_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{}", at.unwrap_or_default())));
            } else {
                default(info);
            }
        }));
    });
}

fn run_in(store_dir: PathBuf, command: Command, wait: bool) -> Result<()> {
    let open = || Store::open_with(&store_dir, wait).with_context(|| format!("opening store {}", store_dir.display()));
    // Commands that only read open the index read-only: nothing written, and readers run side by side.
    let read = || {
        Store::open_read_only_with(&store_dir, wait).with_context(|| format!("opening store {}", store_dir.display()))
    };
    match command {
        Command::Add(a) => {
            let mut store = open()?;
            add::run(&store, a)?;
            store.compact_index().context("compacting the index")
        }
        Command::Cat(a) => cat::run(&read()?, a),
        Command::Restore(a) => restore::run(&read()?, a),
        Command::ExportCar(a) => export_car::run(&read()?, a),
        Command::Verify(a) if a.repair => verify::run(&open()?, a),
        Command::Verify(a) => verify::run(&read()?, a),
        Command::Gc(a) => {
            let mut store = open()?;
            gc::run(&store, a)?;
            store.compact_index().context("compacting the index")
        }
        Command::Repack(a) => {
            let mut store = open()?;
            repack::run(&store, a)?;
            store.compact_index().context("compacting the index")
        }
        Command::Forget(a) => forget::run(&open()?, a),
        Command::Snapshot(a) => snapshot::run(&open()?, a),
        Command::Pin(a) => pin::pin(&open()?, a),
        Command::Unpin(a) => pin::unpin(&open()?, a),
        Command::DedupStats(a) => stats::run(&read()?, a),
        Command::Serve(a) => serve::run(open()?, *a),
        Command::FetchSrc(a) => fetch_src::run(open()?, a),
        Command::Warm(a) => warm::run(open()?, a),
        Command::Key(a) => key::run(&store_dir, a),
        Command::Peer(a) if peer::needs_store(&a) => peer::run(&read()?, a),
        Command::Peer(a) => peer::run_without_store(&store_dir, a),
        Command::Completions(_) | Command::Man(_) => unreachable!("run() answers these without a store"),
    }
}

/// How a command names a stored stream: by NarHash, by a file hash, or by CID.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
struct RootArg {
    /// A stored NAR, by its NarHash (hex, nix32, base64 or SRI)
    #[arg(long, value_name = "H")]
    nar_hash: Option<String>,
    /// A stored file, by its SHA-256 (or SHA-512, SHA-1, MD5; any form)
    #[arg(long, value_name = "H")]
    file_hash: Option<String>,
    /// A root or block CID (bafk…/bafy…)
    #[arg(value_name = "CID")]
    cid: Option<String>,
}

impl RootArg {
    /// Resolve to a root CID and the stream's size when a manifest gives it.
    fn resolve(&self, store: &Store) -> Result<Cid> {
        if let Some(h) = &self.nar_hash {
            let hash = parse_nar_hash(h)?;
            let entry = store.nar(&hash)?.with_context(|| format!("no NAR with hash {hash} in the store"))?;
            return Ok(entry.root);
        }
        if let Some(h) = &self.file_hash {
            let hash = parse_file_hash(h)?;
            let (_, entry) = store.file(&hash)?.with_context(|| format!("no file with hash {hash} in the store"))?;
            return Ok(entry.root_cid()?);
        }
        let cid = self.cid.as_deref().context("give --nar-hash, --file-hash or a CID")?;
        let cid = crate::dag::cid::parse_cid(cid)?;
        let hash = crate::dag::cid::block_hash(&cid)?;
        if store.block_loc(&hash)?.is_none() {
            anyhow::bail!("unknown CID {cid}: no such block in the store");
        }
        Ok(cid)
    }
}

fn parse_nar_hash(s: &str) -> Result<NarHash> {
    s.parse::<NarHash>().with_context(|| format!("invalid NAR hash {s:?}"))
}

fn parse_file_hash(s: &str) -> Result<NixHash> {
    NixHash::parse_with_default(s, HashAlgo::Sha256).with_context(|| format!("invalid file hash {s:?}"))
}

/// The node's one set of trusted keys (`--trusted-key`, `--trusted-keys-file`): it checks signatures on
/// uploads, and every door that takes narinfos from elsewhere uses the same set.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct TrustArgs {
    /// Trust signatures by this key (`name:base64`, as in Nix's trusted-public-keys); repeatable
    #[arg(long = "trusted-key", value_name = "KEY")]
    trusted_keys: Vec<String>,
    /// Trust the keys in this file (whitespace-separated `name:base64`, `#` comments)
    #[arg(long, value_name = "FILE")]
    trusted_keys_file: Option<PathBuf>,
}

impl TrustArgs {
    pub(crate) fn keys(&self) -> Result<Vec<crate::nix::signing::PublicKey>> {
        use crate::nix::signing::PublicKey;
        let mut keys = self
            .trusted_keys
            .iter()
            .map(|k| PublicKey::parse(k).with_context(|| format!("invalid --trusted-key {k:?}")))
            .collect::<Result<Vec<_>>>()?;
        if let Some(f) = &self.trusted_keys_file {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("");
                for k in line.split_whitespace() {
                    keys.push(
                        PublicKey::parse(k).with_context(|| format!("{}:{}: invalid key {k:?}", f.display(), n + 1))?,
                    );
                }
            }
        }
        Ok(keys)
    }
}

/// A byte size: a number with an optional K, M, G or T suffix (powers of 1024).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{s:?}: unknown size suffix {c:?} (use K, M, G or T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

/// `--chunker` shared by the commands that ingest.
#[derive(Args, Debug, Clone)]
struct ChunkerArg {
    /// Chunking: `cdc:MIN/AVG/MAX` (default cdc:16K/64K/256K) or `fixed:SIZE`, then optionally
    /// `,files=SIZE` (files at least this long get chunk boundaries of their own; default 64K) or `,files=off`
    #[arg(long, value_name = "SPEC")]
    chunker: Option<String>,
}

impl ChunkerArg {
    fn config(&self) -> Result<ChunkerConfig> {
        Ok(match &self.chunker {
            Some(s) => ChunkerConfig::parse(s)?,
            None => ChunkerConfig::default(),
        })
    }
}

/// Allocator settings for reading stores, set once at start-up, before any other thread exists.
///
/// Reads decompress zstd frames of 1–2 MiB into fresh buffers. glibc serves such sizes with mmap and
/// unmaps them on free, so every frame paid for zeroing new pages (7 % of a `cat`, 0.42 → 0.34 s for a
/// 184 MiB NAR); from the heap they are reused. Both limits stay small beside what a reading process
/// keeps anyway (a 64 MiB frame cache).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; the caller runs before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}
