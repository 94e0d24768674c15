//! `nixdag repack`: keep the compressed tarballs an ingest queued (`tarballs=later`) as content plus a
//! recipe, then compact the packs their old records leave sparse.

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use crate::import::{self, RepackOutcome};
use crate::store::Store;

#[derive(Args, Debug)]
pub struct RepackArgs {
    /// Convert at most this many queued files (the rest stay queued)
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(store: &Store, args: RepackArgs) -> Result<()> {
    let total = store.repack_queue()?.len().min(args.limit.unwrap_or(usize::MAX));
    let started = Instant::now();
    let mut done = 0usize;
    let mut progress = |root: &crate::dag::Cid, bytes: u64, outcome: RepackOutcome| {
        done += 1;
        let what = match outcome {
            RepackOutcome::Converted => "content plus recipe",
            RepackOutcome::Kept => "kept as it is (no recipe rebuilds it, or its content would need it)",
            RepackOutcome::Gone => "gone from the store",
        };
        // Progress goes to stderr, so `--json` output stays one document.
        let _ = writeln!(std::io::stderr(), "repack [{done}/{total}] {root} ({bytes} bytes): {what}");
    };
    let r = import::repack(store, args.limit, &mut progress)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{} converted ({} bytes), {} kept as they are, {} gone, {} still queued; compacted {} packs, \
             deleted {}, freed {} bytes; {:.1} s",
            r.converted,
            r.converted_bytes,
            r.kept,
            r.gone,
            r.left,
            r.compaction.packs_compacted,
            r.compaction.packs_deleted,
            r.compaction.disk_bytes_freed,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
