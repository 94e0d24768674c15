//! Who may fetch: a node serves only the endpoint ids it trusts (`--allow-peer`, an allow file, the
//! nodes its invites admitted: [`super::invite`]), or anyone (`--open`). Being found on the LAN
//! (`super::discovery`) is not among them.
//!
//! The check sits in front of each protocol handler, after the TLS handshake has proven the remote's
//! endpoint id, so a refused peer gets a closed connection and not one byte of a block. It is per
//! protocol (not an endpoint hook) because an endpoint hook also sees the connections this node makes
//! itself, to peers that need not be on its own allow list.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use iroh::endpoint::{Connection, VarInt};
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::EndpointId;

use super::PeerError;

/// The QUIC close code a refused peer sees (HTTP's 403, for the reader of a packet capture).
pub const REFUSED: u32 = 403;

/// Which remote endpoints may use the node's protocols.
#[derive(Debug, Clone)]
pub enum Access {
    /// Anyone who can reach the endpoint (`--open`).
    Open,
    /// Only the ids on the list; an empty list serves nobody.
    Allow(Arc<AllowList>),
}

impl Access {
    /// Whether `id` may be served.
    pub fn allows(&self, id: &EndpointId) -> bool {
        match self {
            Access::Open => true,
            Access::Allow(list) => list.allows(id),
        }
    }
}

/// The ids given on the command line, and those in an allow file, which is read again whenever it
/// changed (checked at each new connection: one `stat`, so an edit takes effect for the next peer
/// without a restart or a signal).
#[derive(Debug)]
pub struct AllowList {
    fixed: HashSet<EndpointId>,
    file: Option<AllowFile>,
    /// The nodes the store's invites admitted (`STORE/peer/invites.json`, re-read when it changes).
    invited: Option<super::invite::Admitted>,
}

#[derive(Debug)]
struct AllowFile {
    path: PathBuf,
    state: Mutex<FileState>,
}

/// What was read from the allow file, and when.
#[derive(Debug)]
struct FileState {
    /// The file's (mtime, length) when read; `None` when it was gone.
    stamp: Option<(SystemTime, u64)>,
    /// The ids it held.
    ids: HashSet<EndpointId>,
}

impl AllowList {
    /// `fixed` ids, plus those in `file` (one id per line, `#` comments). The file must be readable now;
    /// later, a file that is gone allows none of its ids, and one that no longer parses keeps the ids
    /// read before (with a warning), so a half-saved edit locks nobody out.
    pub fn new(fixed: HashSet<EndpointId>, file: Option<&Path>) -> Result<AllowList, PeerError> {
        let file = match file {
            Some(path) => {
                let stamp = stamp(path).map_err(|source| PeerError::File {
                    what: "allow file",
                    path: path.to_path_buf(),
                    source,
                })?;
                let ids = read_ids(path)?;
                Some(AllowFile { path: path.to_path_buf(), state: Mutex::new(FileState { stamp: Some(stamp), ids }) })
            }
            None => None,
        };
        Ok(AllowList { fixed, file, invited: None })
    }

    /// Also allow the nodes that the invites of the store at `store_dir` admitted.
    pub fn with_invites(mut self, store_dir: &Path) -> Result<AllowList, PeerError> {
        self.invited = Some(super::invite::Admitted::new(store_dir)?);
        Ok(self)
    }

    /// Whether `id` is on the list now.
    pub fn allows(&self, id: &EndpointId) -> bool {
        if self.fixed.contains(id) {
            return true;
        }
        if self.invited.as_ref().is_some_and(|i| i.allows(id)) {
            return true;
        }
        let Some(f) = &self.file else { return false };
        let mut state = f.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&f.path).ok();
        if now != state.stamp {
            match now {
                None => *state = FileState { stamp: None, ids: HashSet::new() },
                Some(s) => match read_ids(&f.path) {
                    Ok(ids) => {
                        tracing::info!("allow file {} re-read: {} ids", f.path.display(), ids.len());
                        *state = FileState { stamp: Some(s), ids };
                    }
                    Err(e) => {
                        tracing::warn!("{e}; keeping the {} ids read before", state.ids.len());
                        state.stamp = Some(s);
                    }
                },
            }
        }
        state.ids.contains(id)
    }
}

fn stamp(path: &Path) -> std::io::Result<(SystemTime, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.modified()?, m.len()))
}

/// Endpoint ids, one per line (`#` comments, blank lines).
fn read_ids(path: &Path) -> Result<HashSet<EndpointId>, PeerError> {
    let text = std::fs::read_to_string(path).map_err(|source| PeerError::File {
        what: "allow file",
        path: path.to_path_buf(),
        source,
    })?;
    let mut ids = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let id = super::endpoint::parse_id(line).map_err(|e| PeerError::BadFile {
            what: "allow file",
            path: path.to_path_buf(),
            reason: format!("line {}: {e}", n + 1),
        })?;
        ids.insert(id);
    }
    Ok(ids)
}

/// A protocol handler that admits only the peers [`Access`] allows.
#[derive(Debug)]
pub struct Gate<P> {
    access: Access,
    inner: P,
}

impl<P> Gate<P> {
    /// Put `inner` behind `access`.
    pub fn new(access: Access, inner: P) -> Self {
        Gate { access, inner }
    }
}

impl<P: ProtocolHandler> ProtocolHandler for Gate<P> {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let id = conn.remote_id();
        if !self.access.allows(&id) {
            tracing::warn!(peer = %id, "refused a peer that is not allowed (see --allow-peer, --open)");
            conn.close(VarInt::from_u32(REFUSED), b"not allowed");
            return Ok(());
        }
        tracing::debug!(peer = %id, "peer admitted");
        self.inner.accept(conn).await
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> EndpointId {
        iroh::SecretKey::from_bytes(&[n; 32]).public()
    }

    #[test]
    fn only_allowed_ids_pass_unless_open() {
        let allow = Access::Allow(Arc::new(AllowList::new([id(1)].into_iter().collect(), None).unwrap()));
        assert!(allow.allows(&id(1)));
        assert!(!allow.allows(&id(2)));
        let nobody = Access::Allow(Arc::new(AllowList::new(HashSet::new(), None).unwrap()));
        assert!(!nobody.allows(&id(1)));
        assert!(Access::Open.allows(&id(2)));
    }

    #[test]
    fn the_allow_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("allow");
        std::fs::write(&f, format!("# peers\n{}\n", id(1))).unwrap();
        let list = AllowList::new(HashSet::new(), Some(&f)).unwrap();
        assert!(list.allows(&id(1)) && !list.allows(&id(2)));
        std::fs::write(&f, format!("{}\n{}  # the second\n", id(1), id(2))).unwrap();
        assert!(list.allows(&id(2)));
        // A broken edit keeps what was read before.
        std::fs::write(&f, "not an id, and longer than before\n").unwrap();
        assert!(list.allows(&id(2)));
        // A file that is gone allows none of its ids.
        std::fs::remove_file(&f).unwrap();
        assert!(!list.allows(&id(1)));
        assert!(AllowList::new(HashSet::new(), Some(&f)).is_err(), "a missing file at start is an error");
    }
}
