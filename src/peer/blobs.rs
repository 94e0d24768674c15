//! The store as iroh-blobs sees it: an actor answering iroh-blobs' store protocol from our packs, so the
//! stock provider (`BlobsProtocol`) serves our blocks to any iroh-blobs client.
//!
//! iroh-blobs 0.104 has no store trait: its `api::Store` is a client of a channel of `proto::Command`s,
//! and a store is whatever answers them (`store/readonly_mem.rs` upstream is the model). This actor
//! answers the reads the provider makes:
//! - `ExportBao`: a blob's bao-verified ranges. The blob is a block, read with
//!   [`Store::read_block_bytes`] (which rebuilds it from its stored form and checks its BLAKE3), or a
//!   registered HashSeq ([`super::seqs`]). Its bao outboard is computed from those bytes on the spot:
//!   blocks are at most 256 KiB (~100 µs of hashing), so no outboard is kept and nothing is copied on
//!   disk. `traverse_ranges_validated` re-hashes what it sends against the outboard, so a block can only
//!   leave verified.
//! - `ExportRanges` (how the provider reads a HashSeq's children), `Observe`, `BlobStatus`.
//!
//! Writes (imports, tags, deletes) are refused: a peer is a source of bytes, never a writer here.

use std::io;
use std::sync::Arc;

use bao_tree::io::mixed::{traverse_ranges_validated, EncodedItem};
use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::io::{EncodeError, Leaf};
use bao_tree::ChunkRanges;
use bytes::Bytes;
use iroh_blobs::api::blobs::Bitfield;
use iroh_blobs::api::proto::{BlobStatus, Command, ExportRangesItem};
use iroh_blobs::api::TempTag;
use iroh_blobs::store::mem::MemStore;
use iroh_blobs::store::IROH_BLOCK_SIZE;
use iroh_blobs::Hash;
use range_collections::range_set::RangeSetRange;

use super::seqs::Seqs;
use crate::dag::BlockHash;
use crate::store::Store;

/// What the actor reads blobs from: the store's blocks, then the registered HashSeqs.
pub struct Source {
    store: Arc<Store>,
    seqs: Seqs,
}

impl Source {
    /// Blobs of `store`.
    pub fn new(store: Arc<Store>) -> Self {
        let seqs = Seqs::new(store.dir());
        Source { store, seqs }
    }

    /// The blob named `hash`, verified, or `None` when the node has no such blob.
    pub fn get(&self, hash: &Hash) -> io::Result<Option<Bytes>> {
        let h = BlockHash(*hash.as_bytes());
        if let Some(b) = self.store.read_block_bytes(&h).map_err(io::Error::other)? {
            return Ok(Some(b));
        }
        self.seqs.get(&self.store, &h).map_err(io::Error::other)
    }

    /// The blob's size without reading it (a block's from the index; a HashSeq is rebuilt).
    pub fn size(&self, hash: &Hash) -> io::Result<Option<u64>> {
        let h = BlockHash(*hash.as_bytes());
        if let Some(loc) = self.store.block_loc(&h).map_err(io::Error::other)? {
            return Ok(Some(loc.raw_len as u64));
        }
        Ok(self.seqs.get(&self.store, &h).map_err(io::Error::other)?.map(|b| b.len() as u64))
    }
}

/// Start the actor on the current tokio runtime; the returned store is what `BlobsProtocol` serves.
pub fn spawn(source: Source) -> iroh_blobs::api::Store {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(run(Arc::new(source), rx));
    MemStore::from_sender(tx.into()).into()
}

fn refused(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, format!("{what}: this node's blobs are read-only"))
}

/// Run `f` (a block read: disk, decompression, hashing) on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io::Error::other)?
}

async fn run(source: Arc<Source>, mut commands: tokio::sync::mpsc::Receiver<Command>) {
    while let Some(cmd) = commands.recv().await {
        match cmd {
            Command::ExportBao(msg) => {
                let (hash, ranges, tx) = (msg.inner.hash, msg.inner.ranges, msg.tx);
                tokio::spawn(export_bao(source.clone(), hash, ranges, tx));
            }
            Command::ExportRanges(msg) => {
                let (hash, ranges, tx) = (msg.inner.hash, msg.inner.ranges, msg.tx);
                tokio::spawn(export_ranges(source.clone(), hash, ranges, tx));
            }
            Command::Observe(msg) => {
                let (hash, tx) = (msg.inner.hash, msg.tx);
                let source = source.clone();
                tokio::spawn(async move {
                    let size = blocking(move || source.size(&hash)).await.ok().flatten();
                    let bitfield = size.map_or_else(Bitfield::empty, Bitfield::complete);
                    tx.send(bitfield).await.ok();
                });
            }
            Command::BlobStatus(msg) => {
                let (hash, tx) = (msg.inner.hash, msg.tx);
                let source = source.clone();
                tokio::spawn(async move {
                    let status = match blocking(move || source.size(&hash)).await {
                        Ok(Some(size)) => BlobStatus::Complete { size },
                        _ => BlobStatus::NotFound,
                    };
                    tx.send(status).await.ok();
                });
            }
            // Nothing is listed: a peer asks for what it wants by hash.
            Command::ListBlobs(_) => {}
            Command::ListTags(msg) => {
                msg.tx.send(Vec::new()).await.ok();
            }
            Command::ListTempTags(msg) => {
                msg.tx.send(Vec::new()).await.ok();
            }
            Command::CreateTempTag(msg) => {
                msg.tx.send(TempTag::new(msg.inner.value, None)).await.ok();
            }
            Command::SyncDb(msg) => {
                msg.tx.send(Ok(())).await.ok();
            }
            Command::ClearProtected(msg) => {
                msg.tx.send(Ok(())).await.ok();
            }
            Command::WaitIdle(msg) => {
                msg.tx.send(()).await.ok();
            }
            Command::Shutdown(msg) => {
                msg.tx.send(()).await.ok();
                break;
            }
            Command::ImportBao(msg) => {
                msg.tx.send(Err(refused("import").into())).await.ok();
            }
            Command::ImportBytes(msg) => {
                msg.tx.send(refused("import").into()).await.ok();
            }
            Command::ImportByteStream(msg) => {
                msg.tx.send(refused("import").into()).await.ok();
            }
            Command::ImportPath(msg) => {
                msg.tx.send(refused("import").into()).await.ok();
            }
            Command::ExportPath(msg) => {
                msg.tx.send(iroh_blobs::api::Error::from(refused("export to a path")).into()).await.ok();
            }
            Command::Batch(_) => {}
            Command::SetTag(msg) => {
                msg.tx.send(Err(refused("set tag").into())).await.ok();
            }
            Command::CreateTag(msg) => {
                msg.tx.send(Err(refused("create tag").into())).await.ok();
            }
            Command::RenameTag(msg) => {
                msg.tx.send(Err(refused("rename tag").into())).await.ok();
            }
            Command::DeleteTags(msg) => {
                msg.tx.send(Err(refused("delete tags").into())).await.ok();
            }
            Command::DeleteBlobs(msg) => {
                msg.tx.send(Err(refused("delete blobs").into())).await.ok();
            }
        }
    }
}

/// Forwards bao-tree's items to the provider's channel.
struct Forward(irpc::channel::mpsc::Sender<EncodedItem>);

impl bao_tree::io::mixed::Sender for Forward {
    type Error = irpc::channel::SendError;
    async fn send(&mut self, item: EncodedItem) -> Result<(), Self::Error> {
        self.0.send(item).await
    }
}

/// Send the `ranges` of blob `hash` bao-encoded: the outboard is computed from the verified bytes, and
/// the encoder checks every chunk it sends against it.
async fn export_bao(
    source: Arc<Source>,
    hash: Hash,
    ranges: ChunkRanges,
    tx: irpc::channel::mpsc::Sender<EncodedItem>,
) {
    let found = blocking(move || {
        Ok(source.get(&hash)?.map(|data| {
            let outboard = PreOrderMemOutboard::create(&data, IROH_BLOCK_SIZE);
            (data, outboard)
        }))
    })
    .await;
    let mut tx = Forward(tx);
    let (data, outboard) = match found {
        Ok(Some(found)) => found,
        Ok(None) => {
            let e = io::Error::new(io::ErrorKind::NotFound, format!("no blob {hash}"));
            tx.0.send(EncodedItem::Error(EncodeError::Io(e))).await.ok();
            return;
        }
        Err(e) => {
            tracing::error!("serving blob {hash} to a peer: {e}");
            tx.0.send(EncodedItem::Error(EncodeError::Io(e))).await.ok();
            return;
        }
    };
    if Hash::from(outboard.root) != hash {
        // read_block_bytes checked the bytes; this is a bug or memory corruption, never served.
        tracing::error!("blob {hash}: bytes hash to {}", Hash::from(outboard.root));
        let e = io::Error::other("blob failed its hash check");
        tx.0.send(EncodedItem::Error(EncodeError::Io(e))).await.ok();
        return;
    }
    traverse_ranges_validated(data, outboard, &ranges, &mut tx).await.ok();
}

/// Send byte ranges of blob `hash` unencoded (the provider reads HashSeqs this way).
async fn export_ranges(
    source: Arc<Source>,
    hash: Hash,
    ranges: range_collections::RangeSet2<u64>,
    tx: irpc::channel::mpsc::Sender<ExportRangesItem>,
) {
    let data = match blocking(move || source.get(&hash)).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            let e = iroh_blobs::api::Error::io(io::ErrorKind::NotFound, format!("no blob {hash}"));
            tx.send(ExportRangesItem::Error(e)).await.ok();
            return;
        }
        Err(e) => {
            tx.send(ExportRangesItem::Error(e.into())).await.ok();
            return;
        }
    };
    let size = data.len() as u64;
    if tx.send(ExportRangesItem::Size(size)).await.is_err() {
        return;
    }
    for range in ranges.iter() {
        let (start, end) = match range {
            RangeSetRange::Range(r) => (size.min(*r.start), size.min(*r.end)),
            RangeSetRange::RangeFrom(r) => (size.min(*r.start), size),
        };
        // 16 KiB pieces, as the provider's other stores send them.
        let mut offset = start;
        while offset < end {
            let next = end.min(offset + (16 << 10));
            let leaf = Leaf { offset, data: data.slice(offset as usize..next as usize) };
            if tx.send(ExportRangesItem::Data(leaf)).await.is_err() {
                return;
            }
            offset = next;
        }
    }
}
