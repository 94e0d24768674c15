//! The serving side of `/nixdag/fetch/1` ([`super::wire`]): answers other nixdag nodes from the store.
//!
//! Every answer comes from what the node holds itself (`Service::narinfo_own`: the store, and this
//! machine's Nix store under `--local-nix-store`; `nar`): a node never asks its own peers or
//! upstreams on behalf of a peer, so two nodes cannot send a lookup round in circles. Blocks leave
//! only after `read_block_bytes` re-hashed them. Costs are bounded: a request must arrive whole within
//! [`REQUEST_TIMEOUT`] and be at most [`wire::MAX_REQUEST`] bytes, each write must progress within
//! [`WRITE_TIMEOUT`], and a connection has at most [`STREAMS_PER_CONNECTION`] requests answered at once.

use std::sync::Arc;
use std::time::Duration;

use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::protocol::{AcceptError, ProtocolHandler};

use super::stats::PeerStats;
use super::wire::{self, NarInfoAnswer, Request, Root, WireBlock};
use crate::dag::BlockHash;
use crate::nix::hash::NarHash;
use crate::nix::store_path::StorePathHash;
use crate::service::Service;
use crate::store::tables::Form;

/// Time a peer has to send a whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time one write of an answer may wait for the peer to read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
/// Requests of one connection answered at once; more wait for QUIC's stream credit.
pub const STREAMS_PER_CONNECTION: usize = 4;
/// zstd level of blocks on the wire: fast, and blocks that share a base travel as deltas anyway.
const WIRE_LEVEL: i32 = 3;

/// The protocol handler (put behind [`super::Gate`], so only allowed peers reach it).
#[derive(Clone)]
pub struct FetchProtocol {
    service: Arc<Service>,
    stats: Arc<PeerStats>,
}

impl std::fmt::Debug for FetchProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FetchProtocol")
    }
}

impl FetchProtocol {
    /// Answer from `service`'s store, counting bytes in `stats`.
    pub fn new(service: Arc<Service>, stats: Arc<PeerStats>) -> Self {
        FetchProtocol { service, stats }
    }
}

impl ProtocolHandler for FetchProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let id = conn.remote_id();
        let slots = Arc::new(tokio::sync::Semaphore::new(STREAMS_PER_CONNECTION));
        while let Ok((send, recv)) = conn.accept_bi().await {
            let Ok(permit) = slots.clone().acquire_owned().await else { break };
            let this = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let (mut sent, mut received) = (0, 0);
                let r = this.answer(send, recv, &mut sent, &mut received).await;
                match r {
                    Ok(()) => this.stats.seen(id, sent, received),
                    Err(e) => {
                        this.stats.moved(id, sent, received);
                        tracing::debug!(peer = %id, "fetch request: {e}");
                    }
                }
            });
        }
        Ok(())
    }
}

/// Why a request was not answered.
#[derive(Debug, thiserror::Error)]
enum AnswerError {
    #[error("request: {0}")]
    Wire(#[from] wire::WireError),
    #[error("the peer took too long to {0}")]
    Timeout(&'static str),
    #[error("reading the request: {0}")]
    Read(String),
    #[error("writing the answer: {0}")]
    Write(String),
    #[error("{0}")]
    Internal(String),
}

async fn write(send: &mut SendStream, bytes: &[u8], sent: &mut u64) -> Result<(), AnswerError> {
    match tokio::time::timeout(WRITE_TIMEOUT, send.write_all(bytes)).await {
        Ok(Ok(())) => {
            *sent += bytes.len() as u64;
            Ok(())
        }
        Ok(Err(e)) => Err(AnswerError::Write(e.to_string())),
        Err(_) => Err(AnswerError::Timeout("read the answer")),
    }
}

/// Run a store call on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, AnswerError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AnswerError::Internal(e.to_string()))?.map_err(AnswerError::Internal)
}

impl FetchProtocol {
    async fn answer(
        &self,
        mut send: SendStream,
        mut recv: RecvStream,
        sent: &mut u64,
        received: &mut u64,
    ) -> Result<(), AnswerError> {
        let bytes = tokio::time::timeout(REQUEST_TIMEOUT, recv.read_to_end(wire::MAX_REQUEST))
            .await
            .map_err(|_| AnswerError::Timeout("send its request"))?
            .map_err(|e| AnswerError::Read(e.to_string()))?;
        *received += bytes.len() as u64;
        let request = Request::decode(&bytes)?;
        let service = self.service.clone();
        match request {
            Request::NarInfo(h) => {
                let answer = blocking(move || {
                    let Some(mut info) = service.narinfo_own(&StorePathHash(h)).map_err(|e| e.to_string())? else {
                        return Ok(None);
                    };
                    let Some(entry) = service.nar(&info.nar_hash).map_err(|e| e.to_string())? else {
                        return Ok(None);
                    };
                    // What this node's gateway would serve: its signature on a path it vouches for only.
                    service.sign(&mut info);
                    Ok(Some(NarInfoAnswer { root: entry.root, text: info.render() }))
                })
                .await?;
                write(&mut send, &wire::encode_narinfo(answer.as_ref()), sent).await?;
            }
            Request::Nar(h) => {
                let answer = blocking(move || {
                    let entry = service.nar(&NarHash(h)).map_err(|e| e.to_string())?;
                    Ok(entry.map(|e| Root { root: e.root, size: e.nar_size }))
                })
                .await?;
                write(&mut send, &wire::encode_root(answer.as_ref()), sent).await?;
            }
            Request::File(h) => {
                let answer = blocking(move || {
                    let found = service.file(&h).map_err(|e| e.to_string())?;
                    Ok(found.map(|(_, root, size)| Root { root, size }))
                })
                .await?;
                write(&mut send, &wire::encode_root(answer.as_ref()), sent).await?;
            }
            Request::Blocks { deltas, hashes } => {
                for hash in hashes {
                    let service = service.clone();
                    let block = blocking(move || Ok(wire_form(&service, &hash, deltas))).await?;
                    let mut out = Vec::with_capacity(block.wire_len());
                    block.encode(&mut out);
                    write(&mut send, &out, sent).await?;
                }
            }
        }
        send.finish().map_err(|e| AnswerError::Write(e.to_string()))?;
        Ok(())
    }
}

/// The form a block travels in: a delta on the base the store keeps it against (when the peer welcomes
/// deltas and it pays), else a zstd frame, else (incompressible) the bytes as they are. A block that
/// fails its check on read is reported missing (and logged): it is never sent.
pub fn wire_form(service: &Service, hash: &BlockHash, deltas: bool) -> WireBlock {
    let store = service.store();
    let raw = match store.read_block_bytes(hash) {
        Ok(Some(b)) => b,
        Ok(None) => return WireBlock::Missing,
        Err(e) => {
            tracing::error!("not sending block {hash} to a peer: {e}");
            return WireBlock::Missing;
        }
    };
    let raw_len = raw.len() as u32;
    let form = store.block_loc(hash).ok().flatten().map(|loc| loc.form);
    // A block the store keeps raw is one its zstd did not shrink (at its level, 6 by default): the wire's
    // level 3 will not either, and trying cost the sender ~15 % of its CPU on incompressible data.
    let zstd = match form {
        Some(Form::Raw) => None,
        _ => zstd::bulk::compress(&raw, WIRE_LEVEL).ok().filter(|z| z.len() < raw.len()),
    };
    if deltas {
        let base = match form {
            Some(Form::Delta { base, .. }) => Some(base),
            _ => None,
        };
        if let Some(base) = base {
            if let Ok(Some(base_raw)) = store.read_block_bytes(&base) {
                if let Ok(d) = crate::store::delta_compress(WIRE_LEVEL, &base_raw, &raw) {
                    if d.len() + 32 < zstd.as_ref().map_or(raw.len(), Vec::len) {
                        return WireBlock::Delta { base, raw_len, payload: d };
                    }
                }
            }
        }
    }
    match zstd {
        Some(payload) => WireBlock::Zstd { raw_len, payload },
        None => WireBlock::Raw(raw.to_vec()),
    }
}
