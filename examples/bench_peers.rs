//! The baselines and the many-peers client of `scripts/bench-peers` (docs/BENCHMARKS-peers.md). Written
//! against iroh and iroh-blobs' public API only (and the `/nixdag/fetch/1` bytes as docs/PEERS.md documents
//! them), with the endpoint settings a nixdag node uses (`src/peer/endpoint.rs`: `presets::Minimal`, no
//! relay, no address lookup, no port mapping, loopback).
//!
//! ```text
//! bench_peers prep TICKET OUT     fetch a NAR's HashSeq and every leaf from a running `nixdag serve` (its
//!                                 stock iroh-blobs door) into memory, write the leaves to OUT.leaves and
//!                                 their sizes to OUT.sizes; prints `prep,<bytes>,<secs>`
//! bench_peers speed OUT           the baseline of the speed benchmark: the same leaves moved by stock
//!                                 iroh-blobs between two MemStores on loopback, as a HashSeq of the
//!                                 leaves and as one blob; prints `speed,hashseq|blob,<bytes>,<secs>`
//! bench_peers many TICKET N [B]   N client endpoints at once each fetch every leaf of the NAR in TICKET
//!                                 from its node over /nixdag/fetch/1 (BLOCKS requests of B blocks, 32 by
//!                                 default as nixdag's fetcher asks), decode and BLAKE3-check each, keep
//!                                 none; prints `many,<clients>,<leaves>,<bytes checked>,<secs>`
//! ```
//!
//! Built with `cargo build --release --example bench_peers`.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use iroh::endpoint::{presets, PortmapperConfig};
use iroh::protocol::Router;
use iroh::{Endpoint, EndpointAddr, NetReportConfig, RelayMode};
use iroh_blobs::hashseq::HashSeq;
use iroh_blobs::store::mem::MemStore;
use iroh_blobs::ticket::BlobTicket;
use iroh_blobs::{BlobFormat, BlobsProtocol, Hash, HashAndFormat};

/// `/nixdag/fetch/1` (docs/PEERS.md).
const FETCH_ALPN: &[u8] = b"/nixdag/fetch/1";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, what: &str| args.get(i).cloned().with_context(|| format!("missing {what}"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match args.get(1).map(String::as_str) {
        Some("prep") => rt.block_on(prep(&arg(2, "TICKET")?, Path::new(&arg(3, "OUT")?))),
        Some("speed") => rt.block_on(speed(Path::new(&arg(2, "OUT")?))),
        Some("many") => {
            let batch = args.get(4).map(|b| b.parse()).transpose()?.unwrap_or(32);
            rt.block_on(many(&arg(2, "TICKET")?, arg(3, "N")?.parse()?, batch))
        }
        _ => bail!("usage: bench_peers prep TICKET OUT | speed OUT | many TICKET N [BATCH]"),
    }
}

/// An offline loopback endpoint, as `src/peer/endpoint.rs` binds a node's.
async fn endpoint() -> Result<Endpoint> {
    Ok(Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .clear_ip_transports()
        .portmapper_config(PortmapperConfig::Disabled)
        .net_report_config(NetReportConfig::minimal())
        .bind_addr("127.0.0.1:0")?
        .bind()
        .await?)
}

/// The leaves a HashSeq blob names.
fn seq_leaves(bytes: Bytes) -> Result<Vec<Hash>> {
    Ok(HashSeq::try_from(bytes)?.iter().collect())
}

async fn prep(ticket: &str, out: &Path) -> Result<()> {
    let ticket: BlobTicket = ticket.parse()?;
    ensure!(ticket.format() == BlobFormat::HashSeq, "the ticket names a raw blob, not a NAR's HashSeq");
    let ep = endpoint().await?;
    let store = MemStore::new();
    let t = Instant::now();
    let conn = ep.connect(ticket.addr().clone(), iroh_blobs::ALPN).await?;
    store.remote().fetch(conn, ticket.hash_and_format()).await?;
    let secs = t.elapsed().as_secs_f64();
    let leaves = seq_leaves(store.get_bytes(ticket.hash()).await?)?;
    let mut data = std::io::BufWriter::new(std::fs::File::create(out.with_extension("leaves"))?);
    let mut sizes = String::new();
    let mut total = 0u64;
    for h in &leaves {
        let b = store.get_bytes(*h).await?;
        std::io::Write::write_all(&mut data, &b)?;
        sizes.push_str(&format!("{}\n", b.len()));
        total += b.len() as u64;
    }
    std::io::Write::flush(&mut data)?;
    std::fs::write(out.with_extension("sizes"), sizes)?;
    ep.close().await;
    println!("prep,{total},{secs:.3}");
    Ok(())
}

/// Serve `content` from `src` on one endpoint, fetch it into an empty MemStore from another: seconds from
/// the dial to the last verified byte, and the bytes read (payload and proofs).
async fn transfer(src: &MemStore, content: HashAndFormat) -> Result<(f64, u64)> {
    let server = endpoint().await?;
    let router = Router::builder(server.clone()).accept(iroh_blobs::ALPN, BlobsProtocol::new(src, None)).spawn();
    let addr: EndpointAddr = server.addr();
    let client = endpoint().await?;
    let dst = MemStore::new();
    let t = Instant::now();
    let conn = client.connect(addr, iroh_blobs::ALPN).await?;
    let stats = dst.remote().fetch(conn, content).await?;
    let secs = t.elapsed().as_secs_f64();
    let local = dst.remote().local(content).await?;
    ensure!(local.is_complete(), "the receiving store is missing part of the content");
    client.close().await;
    // Not router.shutdown(): that shuts down `src` too, which the next transfer reuses.
    server.close().await;
    drop(router);
    drop(dst);
    Ok((secs, stats.total_bytes_read()))
}

async fn speed(out: &Path) -> Result<()> {
    let data = Bytes::from(std::fs::read(out.with_extension("leaves"))?);
    let sizes: Vec<usize> =
        std::fs::read_to_string(out.with_extension("sizes"))?.lines().map(str::parse).collect::<Result<_, _>>()?;
    ensure!(sizes.iter().sum::<usize>() == data.len(), "sizes do not add up to the leaves");
    // The same leaves as blobs under a HashSeq: what nixdag moves, block by block, each verified.
    let src = MemStore::new();
    let mut hashes = Vec::with_capacity(sizes.len());
    let mut at = 0;
    for n in &sizes {
        hashes.push(src.add_bytes(data.slice(at..at + n)).await?.hash);
        at += n;
    }
    let seq: HashSeq = hashes.into_iter().collect();
    let root = src.add_bytes_with_opts((seq.into_inner(), BlobFormat::HashSeq)).await?.hash;
    let (secs, read) = transfer(&src, HashAndFormat::hash_seq(root)).await?;
    println!("speed,hashseq,{},{secs:.3},{read},{}", data.len(), sizes.len());
    drop(src);
    // The same bytes as one blob (one outboard over all of it), for reference.
    let src = MemStore::new();
    let whole = src.add_bytes(data.clone()).await?.hash;
    let (secs, read) = transfer(&src, HashAndFormat::raw(whole)).await?;
    println!("speed,blob,{},{secs:.3},{read},1", data.len());
    Ok(())
}

async fn many(ticket: &str, clients: usize, batch: usize) -> Result<()> {
    ensure!((1..=256).contains(&batch), "a BLOCKS request names 1 to 256 blocks");
    let ticket: BlobTicket = ticket.parse()?;
    // The leaf list: the HashSeq blob alone, from the node's stock iroh-blobs door.
    let ep = endpoint().await?;
    let store = MemStore::new();
    let conn = ep.connect(ticket.addr().clone(), iroh_blobs::ALPN).await?;
    store.remote().fetch(conn, HashAndFormat::raw(ticket.hash())).await?;
    let leaves = std::sync::Arc::new(seq_leaves(store.get_bytes(ticket.hash()).await?)?);
    ep.close().await;
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (addr, leaves) = (ticket.addr().clone(), leaves.clone());
        set.spawn(async move { drain(addr, &leaves, batch).await });
    }
    let mut total = 0;
    while let Some(r) = set.join_next().await {
        total += r??;
    }
    let secs = t.elapsed().as_secs_f64();
    println!("many,{clients},{},{total},{secs:.3}", leaves.len());
    Ok(())
}

/// One client: every block of `leaves` from `addr` over `/nixdag/fetch/1`, one BLOCKS request at a time,
/// each block decoded and checked against its BLAKE3 hash, then dropped. Returns the bytes checked.
async fn drain(addr: EndpointAddr, leaves: &[Hash], batch: usize) -> Result<u64> {
    use tokio::io::AsyncReadExt;
    let ep = endpoint().await?;
    let conn = ep.connect(addr, FETCH_ALPN).await?;
    let mut total = 0u64;
    for hashes in leaves.chunks(batch) {
        let (mut send, mut recv) = conn.open_bi().await?;
        // 04 BLOCKS, flags 0 (no deltas), count, the hashes.
        let mut req = vec![4, 0];
        req.extend_from_slice(&(hashes.len() as u16).to_le_bytes());
        for h in hashes {
            req.extend_from_slice(h.as_bytes());
        }
        send.write_all(&req).await?;
        send.finish()?;
        for h in hashes {
            let form = recv.read_u8().await?;
            let bytes = match form {
                // 01 ZSTD [4] raw_len [4] len [len] frame
                1 => {
                    let raw_len = recv.read_u32_le().await? as usize;
                    let len = recv.read_u32_le().await? as usize;
                    ensure!(raw_len <= 1 << 20 && len <= (1 << 20) + 4096, "block too large");
                    let mut frame = vec![0; len];
                    recv.read_exact(&mut frame).await?;
                    zstd::bulk::decompress(&frame, raw_len)?
                }
                // 03 RAW [4] raw_len [raw_len] bytes
                3 => {
                    let len = recv.read_u32_le().await? as usize;
                    ensure!(len <= 1 << 20, "block too large");
                    let mut b = vec![0; len];
                    recv.read_exact(&mut b).await?;
                    b
                }
                0 => bail!("the node lacks block {h}"),
                other => bail!("unexpected block form {other} (no deltas were asked for)"),
            };
            ensure!(blake3::hash(&bytes).as_bytes() == h.as_bytes(), "block {h} does not hash to its name");
            total += bytes.len() as u64;
        }
    }
    conn.close(0u32.into(), b"done");
    ep.close().await;
    Ok(total)
}
