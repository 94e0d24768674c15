//! `nixdag verify`: is the store consistent?

use anyhow::{bail, Result};
use clap::Args;

use crate::store::Store;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
    /// Drop damaged blocks from the index, so that adding or uploading their content again stores them
    /// anew (the NARs and files that used them stay incomplete until then)
    #[arg(long)]
    pub(super) repair: bool,
}

pub fn run(store: &Store, args: VerifyArgs) -> Result<()> {
    let r = store.verify()?;
    if args.repair && !r.damaged.is_empty() {
        let n = store.drop_damaged(&r)?;
        eprintln!(
            "nixdag: repair: dropped {n} damaged blocks from the index; add or upload the NARs and files above \
             again to store them anew, then run verify"
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for p in &r.problems {
            println!("problem: {p}");
        }
        println!(
            "checked {} blocks ({} bytes) in {} packs, {} roots, {} store paths: {}",
            r.blocks,
            r.block_bytes,
            r.packs,
            r.roots,
            r.paths,
            if r.ok() { "ok".to_string() } else { format!("{} problems", r.problems.len()) }
        );
    }
    if !r.ok() {
        bail!("store {} is inconsistent ({} problems)", store.dir().display(), r.problems.len());
    }
    Ok(())
}
