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
use crate::peer::{endpoint, key, seqs, EndpointRecord};
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
    }
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
