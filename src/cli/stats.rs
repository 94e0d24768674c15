//! `nixdag dedup-stats`: what is stored, what is shared, what it saves.

use anyhow::Result;
use clap::Args;

use crate::store::Store;

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1} %", 100.0 * part as f64 / whole as f64)
    }
}

pub fn run(store: &Store, args: StatsArgs) -> Result<()> {
    let s = store.stats()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("{:<16} {:>16} {:>10}", "", "bytes", "of logical");
    println!("{:<16} {:>16} {:>10}", "logical", s.logical_bytes, pct(s.logical_bytes, s.logical_bytes));
    println!("{:<16} {:>16} {:>10}", "unique blocks", s.unique_bytes, pct(s.unique_bytes, s.logical_bytes));
    println!("{:<16} {:>16} {:>10}", "stored", s.stored_bytes, pct(s.stored_bytes, s.logical_bytes));
    println!("{:<16} {:>16} {:>10}", "  packs", s.pack_bytes, pct(s.pack_bytes, s.logical_bytes));
    println!("{:<16} {:>16} {:>10}", "  index", s.index_bytes, pct(s.index_bytes, s.logical_bytes));
    println!("{} NARs, {} files, {} store paths, {} blocks in {} packs", s.nars, s.files, s.paths, s.blocks, s.packs);
    let f = &s.forms;
    println!(
        "blocks: {} in {} frames, {} deltas ({} of {} raw bytes stored, chains up to {}), {} patched, \
         {} rebuilt from tarball content, {} zstd alone, {} raw",
        f.framed_blocks,
        f.frames,
        f.delta_blocks,
        f.delta_stored_bytes,
        f.delta_raw_bytes,
        f.max_delta_depth,
        f.patched_blocks,
        f.rebuilt_blocks,
        f.zstd_blocks,
        f.raw_blocks
    );
    if s.repack_queued > 0 {
        println!("{} compressed files wait for `nixdag repack` to be kept as content plus a recipe", s.repack_queued);
    }
    Ok(())
}
