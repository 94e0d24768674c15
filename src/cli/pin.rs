//! `nixdag pin` and `nixdag unpin`: keep a store path's closure through any disk budget, or stop keeping it.

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::nix::store_path::{StorePath, StorePathHash};
use crate::store::Store;

#[derive(Args, Debug)]
pub struct PinArgs {
    /// Store paths (`/nix/store/<hash>-<name>`, a symlink to one such as `./result`, or the 32-character
    /// hash part); with none, list the pinned paths
    #[arg(value_name = "PATH")]
    paths: Vec<String>,
}

/// The hash part a command-line argument names.
fn hash_part(arg: &str) -> Result<String> {
    if let Ok(h) = arg.parse::<StorePathHash>() {
        return Ok(h.to_string());
    }
    let abs = if arg.starts_with("/nix/store/") {
        arg.to_string()
    } else {
        // `./result` and other symlinks into the store.
        let p =
            std::fs::canonicalize(arg).with_context(|| format!("{arg} is neither a store path nor its hash part"))?;
        p.to_string_lossy().into_owned()
    };
    let first = abs.trim_end_matches('/').splitn(5, '/').take(4).collect::<Vec<_>>().join("/");
    let sp = StorePath::parse(&first).with_context(|| format!("{arg} is not a store path"))?;
    Ok(sp.hash().to_string())
}

/// The pinned paths, one per line, as store paths where the store knows the name.
fn list(store: &Store) -> Result<()> {
    for h in store.pins()? {
        match store.path_info(&h)? {
            Some(info) => println!("{}", info.store_path.to_absolute()),
            None => println!("{h}"),
        }
    }
    Ok(())
}

pub fn pin(store: &Store, args: PinArgs) -> Result<()> {
    if args.paths.is_empty() {
        return list(store);
    }
    let hashes = args.paths.iter().map(|a| hash_part(a)).collect::<Result<Vec<_>>>()?;
    store.pin(&hashes)?;
    Ok(())
}

pub fn unpin(store: &Store, args: PinArgs) -> Result<()> {
    if args.paths.is_empty() {
        bail!("name the paths to unpin (`nixdag pin` lists the pinned ones)");
    }
    let hashes = args.paths.iter().map(|a| hash_part(a)).collect::<Result<Vec<_>>>()?;
    let removed = store.unpin(&hashes)?;
    for (a, h) in args.paths.iter().zip(&hashes) {
        if !removed.contains(h) {
            eprintln!("nixdag: {a} was not pinned");
        }
    }
    Ok(())
}
