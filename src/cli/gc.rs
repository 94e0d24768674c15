//! `nixdag gc`: collect unreachable blocks and compact packs.

use anyhow::Result;
use clap::Args;

use crate::store::Store;

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(store: &Store, args: GcArgs) -> Result<()> {
    let r = store.gc()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{} roots, {} live blocks; removed {} blocks ({} bytes); compacted {} packs, deleted {}; freed {} bytes",
            r.roots,
            r.live_blocks,
            r.removed_blocks,
            r.removed_bytes,
            r.packs_compacted,
            r.packs_deleted,
            r.disk_bytes_freed
        );
    }
    Ok(())
}
