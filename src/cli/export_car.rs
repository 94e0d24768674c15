//! `nixdag export-car`: every block under a root as a CAR v1 file.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::RootArg;
use crate::dag::car::write_car;
use crate::store::Store;

#[derive(Args, Debug)]
pub struct ExportCarArgs {
    #[command(flatten)]
    root: RootArg,
    /// Output file
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

pub fn run(store: &Store, args: ExportCarArgs) -> Result<()> {
    let root = args.root.resolve(store)?;
    let out = &args.output;
    let f = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let summary = write_car(store, &root, &mut w).with_context(|| format!("exporting {root}"))?;
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("{root}: {} blocks, {} bytes -> {}", summary.blocks, summary.block_bytes, out.display());
    Ok(())
}
