//! `nixdag snapshot`: the manifests as one dag-cbor catalogue (docs/IPFS.md, "The catalogue"), stored
//! as blocks so the gateway serves it as `/ipfs/<cid>`; prints its CID.

use anyhow::{Context, Result};
use clap::Args;

use crate::store::Store;

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// Print the CID and the counts as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(store: &Store, args: SnapshotArgs) -> Result<()> {
    let (root, s) = store.take_snapshot().context("taking the catalogue snapshot")?;
    if args.json {
        let v = serde_json::json!({
            "cid": root.to_string(),
            "paths": s.paths,
            "nars": s.nars,
            "files": s.files,
            "nodes": s.nodes,
            "node_bytes": s.node_bytes,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{root}");
        eprintln!(
            "{} paths, {} NARs, {} files in {} nodes ({} bytes)",
            s.paths, s.nars, s.files, s.nodes, s.node_bytes
        );
    }
    Ok(())
}
