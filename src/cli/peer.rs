//! `nixdag peer show | ticket | status | invite | invites | revoke`: the node's iroh identity, tickets
//! stock iroh-blobs clients fetch with, the running `serve`'s peers, and invites. They read what a
//! running `serve` recorded in the store (`STORE/peer/endpoint.json`), so they name the live endpoint and
//! its addresses; without a running `serve` a ticket carries the id alone. Invites live in
//! `STORE/peer/invites.json`, which the running `serve` re-reads when it changes.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use iroh::EndpointAddr;
use iroh_blobs::ticket::BlobTicket;
use iroh_blobs::{BlobFormat, Hash};

use super::RootArg;
use crate::dag::cid::{block_hash, RAW_CODEC};
use crate::peer::{endpoint, invite, key, seqs, EndpointRecord, StatusFile};
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
    /// Make an invite: a ticket with which one new node (or N) joins, allowed without an allow-list edit.
    /// Printed once; the store keeps only its hash. `--list` lists the invites instead
    Invite(InviteArgs),
    /// List the invites: id, state, uses, expiry, the nodes each admitted (as `invite --list`)
    Invites {
        /// As JSON (the stored records; tokens are never stored)
        #[arg(long)]
        json: bool,
    },
    /// Revoke an invite: it is refused from now on, and the nodes it admitted are no longer allowed
    Revoke {
        /// The invite's id (16 hex digits, as `peer invites` lists it)
        id: String,
    },
}

#[derive(Args, Debug)]
struct InviteArgs {
    /// How long the invite may be used: `90s`, `30m`, `2h`, `7d`, or `never`
    #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = parse_expiry)]
    expires: Expiry,
    /// How many nodes it may admit
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    uses: u32,
    /// List the invites instead of making one
    #[arg(long, conflicts_with_all = ["expires", "uses"])]
    list: bool,
    /// With `--list`: as JSON
    #[arg(long, requires = "list")]
    json: bool,
}

/// An invite's lifetime: `None` never expires.
#[derive(Debug, Clone, Copy)]
struct Expiry(Option<std::time::Duration>);

/// `90s`, `30m`, `2h`, `7d`, a plain number of seconds, or `never`.
fn parse_expiry(s: &str) -> std::result::Result<Expiry, String> {
    let s = s.trim();
    if s == "never" {
        return Ok(Expiry(None));
    }
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: a number and a unit (s, m, h, d), or never"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    if n == 0 {
        return Err("an invite that expires at once admits nobody".into());
    }
    Ok(Expiry(Some(std::time::Duration::from_secs(n.saturating_mul(secs)))))
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
        other => run_without_store(store.dir(), PeerArgs { command: other }),
    }
}

/// Run a command that needs no store open (`show`, `status`).
pub fn run_without_store(store_dir: &std::path::Path, args: PeerArgs) -> Result<()> {
    match args.command {
        PeerCommand::Status { json } => status(store_dir, json),
        PeerCommand::Invite(a) if a.list => list_invites(store_dir, a.json),
        PeerCommand::Invite(a) => make_invite(store_dir, a),
        PeerCommand::Invites { json } => list_invites(store_dir, json),
        PeerCommand::Revoke { id } => revoke(store_dir, &id),
        _ => show(store_dir),
    }
}

/// `peer invite`: record the invite (hashed), print its ticket.
fn make_invite(store_dir: &std::path::Path, args: InviteArgs) -> Result<()> {
    let addr = live_or_id(store_dir)?;
    let (ticket, rec) = invite::create(store_dir, addr, args.expires.0, args.uses)?;
    let until = rec.expires.map_or("never expires".to_string(), |e| format!("expires at {e} (Unix seconds)"));
    eprintln!("invite {} for {} node(s), {until}; revoke with `nixdag peer revoke {}`", rec.id, rec.uses, rec.id);
    println!("{}", ticket.encode());
    Ok(())
}

/// `peer invites`, `peer invite --list`.
fn list_invites(store_dir: &std::path::Path, json: bool) -> Result<()> {
    let f = invite::read(store_dir)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&f)?);
        return Ok(());
    }
    let now = invite::now();
    println!("{:<16}  {:<8}  {:>9}  {:>10}  admitted", "id", "state", "uses", "expires");
    for i in &f.invites {
        let expires = i.expires.map_or("never".to_string(), |e| e.to_string());
        let uses = format!("{}/{}", i.used, i.uses);
        println!("{:<16}  {:<8}  {uses:>9}  {expires:>10}  {}", i.id, i.state(now), i.admitted.join(","));
    }
    Ok(())
}

/// `peer revoke ID`.
fn revoke(store_dir: &std::path::Path, id: &str) -> Result<()> {
    let parsed: invite::InviteId =
        id.parse().map_err(|e: String| anyhow::anyhow!("{id:?} is not an invite id: {e}"))?;
    if !invite::revoke(store_dir, &parsed)? {
        anyhow::bail!("no invite {id} in {}", invite::invites_path(store_dir).display());
    }
    eprintln!("invite {id} revoked");
    Ok(())
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
