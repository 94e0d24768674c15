//! HashSeqs: a stored stream (a NAR, a file) as one iroh-blobs blob, the list of its leaves' hashes.
//!
//! A stock iroh-blobs client that fetches a HashSeq with every child gets each leaf bao-verified and,
//! concatenated in order, the stream (docs/PEERS.md says why this format). The HashSeq itself is not
//! stored: it is 32 bytes per leaf, rebuilt from the DAG when asked for. What must be kept is the way
//! back from its hash to the DAG's root, since a hash cannot be inverted: `nixdag peer ticket` writes
//! the root's CID to `STORE/peer/seqs/<hash hex>`, and `serve` reads it there, rebuilds the list, and
//! serves it only if it hashes to the name asked for (so a wrong or stale file serves nothing).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use super::PeerError;
use crate::dag::{reader::leaves, BlockHash, Cid};
use crate::store::Store;

/// Bytes of rebuilt HashSeqs `serve` keeps for the next requests (a 1 GiB NAR's is ~0.5 MiB).
const CACHE_BYTES: usize = 16 << 20;

/// The directory of registered HashSeqs.
pub fn seqs_dir(store_dir: &Path) -> PathBuf {
    store_dir.join("peer").join("seqs")
}

/// The HashSeq of the stream under `root`: its leaves' BLAKE3 hashes in stream order (a leaf used
/// twice appears twice, so the concatenation is the stream).
pub fn hash_seq(store: &Store, root: &Cid) -> Result<Vec<u8>, PeerError> {
    let mut seq = Vec::new();
    leaves(store, root, &mut |h: BlockHash, _, _| seq.extend_from_slice(&h.0))?;
    Ok(seq)
}

/// Register the HashSeq of `root` so `serve` answers it; returns its hash.
pub fn register(store: &Store, root: &Cid) -> Result<BlockHash, PeerError> {
    let seq = hash_seq(store, root)?;
    let hash = BlockHash::of(&seq);
    let dir = seqs_dir(store.dir());
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PeerError::File { what: "HashSeq registry", path, source }
    };
    std::fs::create_dir_all(&dir).map_err(err(&dir))?;
    let path = dir.join(hash.to_hex());
    let tmp = dir.join(format!(".{}.{}", hash.to_hex(), std::process::id()));
    std::fs::write(&tmp, format!("{root}\n")).map_err(err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(err(&path))?;
    Ok(hash)
}

/// `serve`'s side: the registered HashSeqs, rebuilt on demand and kept for a while.
pub struct Seqs {
    dir: PathBuf,
    cache: Mutex<Vec<(BlockHash, Bytes)>>,
}

impl Seqs {
    /// The registry of the store in `store_dir`.
    pub fn new(store_dir: &Path) -> Self {
        Seqs { dir: seqs_dir(store_dir), cache: Mutex::new(Vec::new()) }
    }

    /// The HashSeq named `hash`, if one is registered and its root is still whole in the store.
    pub fn get(&self, store: &Store, hash: &BlockHash) -> Result<Option<Bytes>, PeerError> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, b)) = cache.iter().find(|(h, _)| h == hash) {
                return Ok(Some(b.clone()));
            }
        }
        let path = self.dir.join(hash.to_hex());
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(PeerError::File { what: "HashSeq registry", path, source }),
        };
        let Ok(root) = crate::dag::cid::parse_cid(text.trim()) else {
            tracing::warn!("{}: not a CID; ignored", path.display());
            return Ok(None);
        };
        let seq = match hash_seq(store, &root) {
            Ok(s) => s,
            // The root was forgotten and collected since the ticket was made: nothing to serve.
            Err(PeerError::Dag(e)) => {
                tracing::warn!("HashSeq {} of {root}: {e}", hash.to_hex());
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if BlockHash::of(&seq) != *hash {
            tracing::warn!("{}: the leaves of {root} no longer hash to its name; ignored", path.display());
            return Ok(None);
        }
        let seq = Bytes::from(seq);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.push((*hash, seq.clone()));
        let mut total: usize = cache.iter().map(|(_, b)| b.len()).sum();
        while cache.len() > 1 && total > CACHE_BYTES {
            total -= cache.remove(0).1.len();
        }
        Ok(Some(seq))
    }
}
