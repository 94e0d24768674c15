//! The command line: argument definitions here, one file per command. Each command returns
//! `anyhow::Result`, and `main` prints the error chain once.

mod add;
mod cat;
mod export_car;
mod forget;
mod gc;
mod key;
mod nix_cli;
mod repack;
mod restore;
mod serve;
mod stats;
mod verify;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::chunk::ChunkerConfig;
use crate::dag::Cid;
use crate::nix::hash::{HashAlgo, NarHash, NixHash};
use crate::store::Store;

/// nixdag: a content-addressed chunk store for Nix NARs and source tarballs.
#[derive(Parser, Debug)]
#[command(name = "nixdag", version, about, long_about = None)]
pub struct Cli {
    /// Store directory [default: $XDG_DATA_HOME/nixdag or ~/.local/share/nixdag]
    #[arg(long, global = true, env = "NIXDAG_STORE", value_name = "DIR")]
    store: Option<PathBuf>,
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
    /// Serve the store as a Nix binary cache over HTTP
    Serve(serve::ServeArgs),
    /// The gateway's signing key
    Key(key::KeyArgs),
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let store_dir = match cli.store {
        Some(d) => d,
        None => Store::default_dir().context("no --store, NIXDAG_STORE, XDG_DATA_HOME or HOME to find the store")?,
    };
    let open = || Store::open(&store_dir).with_context(|| format!("opening store {}", store_dir.display()));
    // Commands that only read open the index read-only: nothing written, and readers run side by side.
    let read = || Store::open_read_only(&store_dir).with_context(|| format!("opening store {}", store_dir.display()));
    match cli.command {
        Command::Add(a) => {
            let mut store = open()?;
            add::run(&store, a)?;
            store.compact_index().context("compacting the index")
        }
        Command::Cat(a) => cat::run(&read()?, a),
        Command::Restore(a) => restore::run(&read()?, a),
        Command::ExportCar(a) => export_car::run(&read()?, a),
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
        Command::DedupStats(a) => stats::run(&read()?, a),
        Command::Serve(a) => serve::run(open()?, a),
        Command::Key(a) => key::run(&store_dir, a),
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
