//! `nixdag restore`: unpack a stored NAR, as `nix-store --restore` does.

use std::io::BufReader;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::parse_nar_hash;
use crate::dag::DagReader;
use crate::nix::nar;
use crate::store::Store;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The NAR, by its NarHash (any form)
    #[arg(long, value_name = "H")]
    nar_hash: String,
    /// Directory to create (must not exist)
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

pub fn run(store: &Store, args: RestoreArgs) -> Result<()> {
    let hash = parse_nar_hash(&args.nar_hash)?;
    let entry = store.nar(&hash)?.with_context(|| format!("no NAR with hash {hash} in the store"))?;
    let reader = DagReader::new(store, entry.root)?;
    let summary = nar::restore(BufReader::with_capacity(1 << 20, reader), &args.dir)
        .with_context(|| format!("restoring {hash} into {}", args.dir.display()))?;
    anyhow::ensure!(
        summary.nar_hash == hash,
        "restored NAR hashes to {} instead of {hash}: the store is corrupt",
        summary.nar_hash
    );
    Ok(())
}
