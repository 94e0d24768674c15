//! What the node knows about each peer (reachable, last seen, bytes each way, bad blocks), and the
//! status file `serve` keeps for `nixdag peer status`: `STORE/peer/status.json`, rewritten every
//! second (whole, under a temporary name, then renamed), removed on a clean exit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use iroh::EndpointId;

use super::PeerError;

/// One peer's line of `peer status --json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerStatus {
    /// Its endpoint id (hex).
    pub endpoint_id: String,
    /// Whether the last exchange with it worked (a peer that only dialled us counts once it did).
    pub reachable: bool,
    /// Unix seconds of the last exchange that worked; `None` if there was none.
    pub last_seen: Option<u64>,
    /// Bytes of the fetch protocol this node sent it (answers and requests).
    pub bytes_sent: u64,
    /// Bytes of the fetch protocol this node received from it.
    pub bytes_received: u64,
}

/// `STORE/peer/status.json`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StatusFile {
    /// Every peer named on the command line, and every peer that fetched from this node.
    pub peers: Vec<PeerStatus>,
    /// Sums over `peers`.
    pub bytes_sent: u64,
    /// Sums over `peers`.
    pub bytes_received: u64,
    /// Blocks peers sent that failed their hash check (each dropped, and fetched elsewhere).
    pub bad_blocks: u64,
    /// The `serve` process, so a file a crash left behind is recognised as stale.
    pub pid: u32,
}

#[derive(Debug, Default)]
struct Entry {
    status: PeerStatus,
    bad_blocks: u64,
}

/// The counters, shared by the fetching and the serving side.
#[derive(Debug, Default)]
pub struct PeerStats {
    peers: Mutex<BTreeMap<EndpointId, Entry>>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl PeerStats {
    fn with(&self, id: EndpointId, f: impl FnOnce(&mut Entry)) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let e = peers.entry(id).or_insert_with(|| Entry {
            status: PeerStatus { endpoint_id: id.to_string(), ..PeerStatus::default() },
            bad_blocks: 0,
        });
        f(e)
    }

    /// A peer named on the command line: listed before any exchange.
    pub fn known(&self, id: EndpointId) {
        self.with(id, |_| {});
    }

    /// An exchange with `id` worked; `sent` and `received` bytes moved.
    pub fn seen(&self, id: EndpointId, sent: u64, received: u64) {
        self.with(id, |e| {
            e.status.reachable = true;
            e.status.last_seen = Some(now());
            e.status.bytes_sent += sent;
            e.status.bytes_received += received;
        });
    }

    /// Bytes moved in an exchange that then failed.
    pub fn moved(&self, id: EndpointId, sent: u64, received: u64) {
        self.with(id, |e| {
            e.status.bytes_sent += sent;
            e.status.bytes_received += received;
        });
    }

    /// `id` could not be reached, or stopped answering.
    pub fn unreachable(&self, id: EndpointId) {
        self.with(id, |e| e.status.reachable = false);
    }

    /// `id` sent a block that failed its check.
    pub fn bad_block(&self, id: EndpointId) {
        self.with(id, |e| e.bad_blocks += 1);
    }

    /// Blocks `id` sent that failed their check.
    pub fn bad_blocks_of(&self, id: &EndpointId) -> u64 {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).get(id).map_or(0, |e| e.bad_blocks)
    }

    /// The status file's contents now.
    pub fn snapshot(&self) -> StatusFile {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = StatusFile { pid: std::process::id(), ..StatusFile::default() };
        for e in peers.values() {
            f.bytes_sent += e.status.bytes_sent;
            f.bytes_received += e.status.bytes_received;
            f.bad_blocks += e.bad_blocks;
            f.peers.push(e.status.clone());
        }
        f
    }
}

/// Where `serve` keeps the status file.
pub fn status_path(store_dir: &Path) -> PathBuf {
    store_dir.join("peer").join("status.json")
}

impl StatusFile {
    /// Write it whole under a temporary name, then rename it into place.
    pub fn write(&self, store_dir: &Path) -> Result<(), PeerError> {
        let path = status_path(store_dir);
        let err = |source| PeerError::File { what: "peer status", path: path.clone(), source };
        let dir = path.parent().unwrap_or(store_dir);
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = dir.join(format!(".status.json.{}", std::process::id()));
        let json = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        std::fs::write(&tmp, json).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }

    /// The status of a `serve` that runs now, if any.
    pub fn read_live(store_dir: &Path) -> Result<Option<StatusFile>, PeerError> {
        let path = status_path(store_dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(PeerError::File { what: "peer status", path, source }),
        };
        let f: StatusFile = serde_json::from_slice(&bytes).map_err(|e| PeerError::BadFile {
            what: "peer status",
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(super::endpoint::process_alive(f.pid).then_some(f))
    }

    /// Remove this process's file (on a clean exit).
    pub fn remove_own(store_dir: &Path) {
        let path = status_path(store_dir);
        let own = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<StatusFile>(&b).ok())
            .is_some_and(|f| f.pid == std::process::id());
        if own {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_has_the_five_fields_per_peer_and_totals_outside() {
        let stats = PeerStats::default();
        let (a, b) = (iroh::SecretKey::from_bytes(&[1; 32]).public(), iroh::SecretKey::from_bytes(&[2; 32]).public());
        stats.known(a);
        stats.seen(b, 10, 2000);
        stats.moved(b, 1, 5);
        stats.bad_block(b);
        let f = stats.snapshot();
        assert_eq!((f.bytes_sent, f.bytes_received, f.bad_blocks), (11, 2005, 1));
        let v = serde_json::to_value(&f).unwrap();
        for p in v["peers"].as_array().unwrap() {
            let mut keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
            keys.sort();
            assert_eq!(keys, ["bytes_received", "bytes_sent", "endpoint_id", "last_seen", "reachable"]);
        }
        let never = v["peers"].as_array().unwrap().iter().find(|p| p["endpoint_id"] == a.to_string()).unwrap();
        assert_eq!((never["reachable"].as_bool(), never["last_seen"].is_null()), (Some(false), true));
        let dir = tempfile::tempdir().unwrap();
        f.write(dir.path()).unwrap();
        assert_eq!(StatusFile::read_live(dir.path()).unwrap().unwrap().peers, f.peers);
        StatusFile::remove_own(dir.path());
        assert!(StatusFile::read_live(dir.path()).unwrap().is_none());
    }
}
