//! `nixdag peer show | ticket`: the node's iroh identity, and tickets stock iroh-blobs clients fetch with.
//! Both read what a running `serve` recorded in the store (`STORE/peer/endpoint.json`), so they name
//! the live endpoint and its addresses; without a running `serve` a ticket carries the id alone.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use iroh::EndpointAddr;
use iroh_blobs::ticket::BlobTicket;
use iroh_blobs::{BlobFormat, Hash};

use super::RootArg;
use crate::dag::cid::{block_hash, RAW_CODEC};
use crate::peer::{endpoint, key, seqs, EndpointRecord, StatusFile};
use crate::store::Store;

#[derive(Args, Debug)]
pub struct PeerArgs {
    #[command(subcommand)]
    command: PeerCommand,
}

#[derive(Subcommand, Debug)]
enum PeerCommand {
    /// Print the endpoint id, the addresses of the running `serve`, and an endpoint ticket (last line)
    Show,
    /// Print a ticket with which a stock iroh-blobs client fetches a stored NAR, file or block
    /// (a HashSeq of the stream's leaves; a raw blob for a one-block stream)
    Ticket(TicketArgs),
    /// Print each peer of the running `serve`: endpoint id, reachable, last seen, bytes each way
    Status {
        /// As JSON: {"peers": [{endpoint_id, reachable, last_seen, bytes_sent, bytes_received}], totals}
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct TicketArgs {
    #[command(flatten)]
    root: RootArg,
}

/// `peer show` needs no store open (it reads two files in the store directory).
pub fn show(store_dir: &std::path::Path) -> Result<()> {
    let addr = live_or_id(store_dir)?;
    println!("endpoint-id: {}", addr.id);
    for a in addr.ip_addrs() {
        println!("address: {a}");
    }
    println!("{}", endpoint::endpoint_ticket(&addr));
    Ok(())
}

pub fn run(store: &Store, args: PeerArgs) -> Result<()> {
    match args.command {
        PeerCommand::Show => show(store.dir()),
        PeerCommand::Ticket(t) => ticket(store, t),
        PeerCommand::Status { json } => status(store.dir(), json),
    }
}

/// Run a command that needs no store open (`show`, `status`).
pub fn run_without_store(store_dir: &std::path::Path, args: PeerArgs) -> Result<()> {
    match args.command {
        PeerCommand::Status { json } => status(store_dir, json),
        _ => show(store_dir),
    }
}

/// `peer status`: what the running `serve` last wrote to `STORE/peer/status.json` (every second).
fn status(store_dir: &std::path::Path, json: bool) -> Result<()> {
    let Some(f) = StatusFile::read_live(store_dir)? else {
        anyhow::bail!("no `serve` with peering is running on {}", store_dir.display());
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&f)?);
        return Ok(());
    }
    println!(
        "{:<64}  {:<9}  {:>10}  {:>12}  {:>14}",
        "endpoint-id", "reachable", "last-seen", "bytes-sent", "bytes-received"
    );
    for p in &f.peers {
        let seen = p.last_seen.map_or("never".to_string(), |t| t.to_string());
        let reach = if p.reachable { "yes" } else { "no" };
        println!("{:<64}  {reach:<9}  {seen:>10}  {:>12}  {:>14}", p.endpoint_id, p.bytes_sent, p.bytes_received);
    }
    println!("total: {} bytes sent, {} received, {} bad blocks", f.bytes_sent, f.bytes_received, f.bad_blocks);
    Ok(())
}

/// Whether the command needs the store open (only `ticket` reads the index).
pub fn needs_store(args: &PeerArgs) -> bool {
    matches!(args.command, PeerCommand::Ticket(_))
}

fn ticket(store: &Store, args: TicketArgs) -> Result<()> {
    let root = args.root.resolve(store)?;
    let addr = live_or_id(store.dir())?;
    // A one-block stream is its raw leaf: that blob is the stream. Anything larger is the HashSeq of its
    // leaves, registered so the running (or next) `serve` answers it.
    let ticket = if root.codec() == RAW_CODEC {
        BlobTicket::new(addr, Hash::from_bytes(block_hash(&root)?.0), BlobFormat::Raw)
    } else {
        let seq = seqs::register(store, &root).with_context(|| format!("listing the leaves of {root}"))?;
        BlobTicket::new(addr, Hash::from_bytes(seq.0), BlobFormat::HashSeq)
    };
    println!("{ticket}");
    Ok(())
}

/// The running `serve`'s endpoint, or the store's endpoint id with no address (with a note on stderr).
fn live_or_id(store_dir: &std::path::Path) -> Result<EndpointAddr> {
    if let Some((_, addr)) = EndpointRecord::read_live(store_dir)? {
        return Ok(addr);
    }
    std::fs::create_dir_all(store_dir).with_context(|| format!("creating {}", store_dir.display()))?;
    let secret = key::load_or_create(store_dir)?;
    eprintln!("nixdag: no `serve --peering` is running on this store: the ticket names the endpoint id alone");
    Ok(EndpointAddr::new(secret.public()))
}
