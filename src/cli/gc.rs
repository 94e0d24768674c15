//! `nixdag gc`: collect unreachable blocks and compact packs; with `--max-size`, first evict the least
//! recently served roots until the store fits.

use anyhow::Result;
use clap::Args;

use crate::store::{EvictPolicy, Store};

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
    /// Disk budget: evict the least recently served NARs and files (never a path a kept path references,
    /// nor pinned or uploaded ones) until packs plus index take at most this (K, M, G, T suffixes)
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
    max_size: Option<u64>,
    /// With --max-size: uploaded NARs may be evicted too (by default they are kept like pinned paths)
    #[arg(long, requires = "max_size")]
    evict_uploads: bool,
}

pub fn run(store: &Store, args: GcArgs) -> Result<()> {
    let r = store.gc()?;
    let evicted = match args.max_size {
        Some(max_size) => Some(store.evict(&EvictPolicy { max_size, evict_uploads: args.evict_uploads }, &|_| false)?),
        None => None,
    };
    if args.json {
        // Without a budget, the report alone (as before `--max-size` existed).
        let v = match &evicted {
            Some(e) => serde_json::json!({ "gc": r, "evict": e }),
            None => serde_json::to_value(&r)?,
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
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
    if let Some(e) = evicted {
        println!(
            "disk budget {}: {} -> {} bytes; evicted {} NARs ({} paths) and {} files; kept {} pinned, {} uploaded{}",
            e.max_size,
            e.stored_before,
            e.stored_after,
            e.evicted_nars,
            e.evicted_paths,
            e.evicted_files,
            e.kept_pinned,
            e.kept_uploaded,
            if e.over_budget { "; still over budget (the rest is kept)" } else { "" }
        );
    }
    Ok(())
}
