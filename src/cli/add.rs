//! `nixdag add`: paths, NAR streams and flat files into the store.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use clap::Args;

use super::ChunkerArg;
use crate::import;
use crate::local_nix::{LocalStoreError, NixStore};
use crate::nix::hash::nix32;
use crate::nix::store_path::STORE_DIR;
use crate::store::Store;

#[derive(Args, Debug)]
pub struct AddArgs {
    /// Each PATH is a NAR stream (`-` for stdin), validated before it is stored
    #[arg(long, conflicts_with_all = ["file", "closure"])]
    nar: bool,
    /// Each PATH is a flat file (a source tarball), stored byte-exact under its SHA-256
    #[arg(long, conflicts_with = "closure")]
    file: bool,
    /// Also add every store path each PATH references, recursively (needs `nix-store`)
    #[arg(long)]
    closure: bool,
    #[command(flatten)]
    chunker: ChunkerArg,
    /// How new blocks are stored: `frames=1M,level=6,delta-level=6,delta=3,normalize=on,tarballs=later`
    /// (the defaults; `frames=0` and `delta=0` turn frames and deltas off; `tarballs=on` converts
    /// compressed tarballs during the add, `later` queues them for `nixdag repack`), or `legacy` (format
    /// 1's way: each block alone, zstd -3). See docs/STORAGE.md
    #[arg(long, value_name = "OPTIONS", default_value = "")]
    storage: String,
    /// Files, directories, symlinks or /nix/store paths
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

pub fn run(store: &Store, args: AddArgs) -> Result<()> {
    let cfg = args.chunker.config()?;
    store.set_storage(crate::store::StorageConfig::parse(&args.storage)?);
    let mut paths = args.paths.clone();
    if args.closure {
        paths = NixStore::new(None)
            .requisites(&paths)
            .context("the closure of the paths (is Nix installed?)")?
            .iter()
            .map(|p| PathBuf::from(p.to_absolute()))
            .collect();
    }
    let mut lines = Vec::new();
    // Proving a tarball's rebuild recompresses all of it on one core (import::prove_ahead). Helpers, one
    // per core, take the paths after the one being stored in order and prove the tarballs among them; the
    // ingest then only decompresses those, waiting for a proof under way. (A NAR on stdin cannot be read
    // twice.)
    let helpers = !(args.nar && paths.iter().any(|p| p.as_os_str() == "-"));
    let prove = |i: usize| {
        let _ = import::prove_ahead(store, &paths[i], args.nar);
    };
    let result =
        import::with_helpers(paths.len(), helpers, prove, |at| add_all(store, &args, &paths, cfg, &mut lines, at));
    for l in &lines {
        println!("{l}");
    }
    result?;
    let queued = store.repack_queue()?.len();
    if queued > 0 {
        eprintln!(
            "nixdag: {queued} compressed file(s) are stored as they are for now; `nixdag repack` keeps them as \
             content plus a recipe (the gateway does it when idle)"
        );
    }
    Ok(())
}

fn add_all(
    store: &Store,
    args: &AddArgs,
    paths: &[PathBuf],
    cfg: crate::chunk::ChunkerConfig,
    lines: &mut Vec<String>,
    at: &AtomicUsize,
) -> Result<()> {
    for (i, path) in paths.iter().enumerate() {
        at.store(i, Ordering::Relaxed);
        let shown = path.display();
        if args.file {
            let f = File::open(path).with_context(|| format!("opening {shown}"))?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let added = import::add_file(store, BufReader::new(f), &name, Vec::new(), cfg, None)
                .with_context(|| format!("adding {shown}"))?;
            lines.push(format!("{shown} sha256:{} {} {}", nix32::encode(&added.sha256), added.root, added.size));
            continue;
        }
        let added = if args.nar {
            if path.as_os_str() == "-" {
                import::add_nar(store, io::stdin().lock(), cfg, None)
            } else {
                let f = File::open(path).with_context(|| format!("opening {shown}"))?;
                import::add_nar(store, BufReader::with_capacity(1 << 20, f), cfg, None)
            }
        } else {
            let info = match store_path_of(path) {
                Some(p) => nix_path_info(&p)?,
                None => None,
            };
            import::add_path(store, path, cfg, info)
        }
        .with_context(|| format!("adding {shown}"))?;
        lines.push(format!("{shown} {} {} {}", added.nar_hash, added.root, added.nar_size));
    }
    Ok(())
}

/// `Some(/nix/store/<hash>-<name>)` when `path` is a store path itself (not something inside one).
/// What this machine's Nix records of a store path (references, deriver, signatures, CA), or `None` when
/// Nix is not installed or does not hold the path valid: then the path is added as bare content.
fn nix_path_info(path: &Path) -> Result<Option<crate::nix::narinfo::NarInfo>> {
    let Ok(sp) = crate::nix::store_path::StorePath::parse(&path.to_string_lossy()) else { return Ok(None) };
    match NixStore::new(None).path_infos(std::slice::from_ref(&sp)) {
        Ok(mut infos) => Ok(infos.pop()),
        Err(LocalStoreError::Nix { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn store_path_of(path: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(path).ok()?;
    (abs.parent() == Some(Path::new(STORE_DIR))).then_some(abs)
}
