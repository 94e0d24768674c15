//! This machine's Nix store as a source for the service (`serve --local-nix-store`): a path the store
//! lacks but the local Nix store holds, valid, is answered with the narinfo Nix records (its own
//! signatures kept, such as those of the cache it came from), and its NAR is ingested from
//! `nix-store --dump` on the first request, streamed to that client while it is stored
//! ([`super::flight`]) and served from the store after. So a LAN of machines that each run it shares
//! what any of them has already downloaded or built, with the signatures those paths already carry.
//!
//! Trust: the node's owner chose to serve their own Nix store, as `nixdag add` does; the NAR is still
//! checked against the NarHash and NarSize Nix recorded, so a path damaged on disk is refused. Paths
//! ingested this way are marked in the store, and offered only while the local Nix store still has
//! them: a path deleted or collected locally stops being offered (its blocks go at a later gc).

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::flight::{Flights, Pulled};
use super::Service;
use crate::local_nix::NixStore;
use crate::nix::hash::NarHash;
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::{StorePath, StorePathHash};

/// Narinfos answered and not yet pulled, kept before they are cleared (a few MiB at most).
const MAX_ANSWERED: usize = 16_384;

/// The local Nix store as the service's nearest source.
pub struct LocalNix {
    nix: Arc<NixStore>,
    idle: Duration,
    /// Narinfos answered, by NarHash: what a NAR request may pull.
    answered: Mutex<HashMap<NarHash, NarInfo>>,
    flights: Flights,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LocalNix {
    /// Serve from `nix`; a client's NAR stream waits at most `idle` for `nix-store --dump` to progress.
    pub fn new(nix: NixStore, idle: Duration) -> LocalNix {
        LocalNix { nix: Arc::new(nix), idle, answered: Mutex::default(), flights: Flights::default() }
    }

    /// The narinfo of a valid path of the local Nix store with this hash part, as Nix records it.
    pub fn narinfo(&self, hash: &StorePathHash) -> Option<NarInfo> {
        let info = match self.nix.find(hash) {
            Ok(found) => found?,
            Err(e) => {
                tracing::warn!("looking for {hash} in this machine's Nix store: {e}");
                return None;
            }
        };
        let mut answered = lock(&self.answered);
        if answered.len() >= MAX_ANSWERED {
            answered.clear();
        }
        answered.insert(info.nar_hash, info.clone());
        Some(info)
    }

    /// The NAR with this hash, which the store lacks, as it is being ingested from the local Nix store;
    /// `None` when no narinfo this source answered names it.
    pub fn nar(&self, service: &Arc<Service>, hash: &NarHash) -> Option<Pulled> {
        if let Some(p) = self.flights.join(hash, self.idle) {
            return Some(p);
        }
        let info = lock(&self.answered).get(hash).cloned()?;
        // Still there? (deleted since the narinfo was answered: nothing to offer)
        if !self.nix.exists(&info.store_path) {
            return None;
        }
        let key = info.store_path.hash().to_string();
        if let Err(e) = service.store().mark_local_path(&key) {
            tracing::error!("cannot mark {} as coming from the local Nix store: {e}", info.store_path);
            return None;
        }
        let (nix, path) = (self.nix.clone(), info.store_path.clone());
        self.flights.start(service, info, "this machine's Nix store".into(), self.idle, false, move || {
            nix.dump(&path).map(|d| Box::new(d) as Box<dyn Read + Send>).map_err(|e| e.to_string())
        })
    }

    /// Whether a path ingested from the local Nix store is still offered: it is while that store has it.
    pub fn still_offers(&self, path: &StorePath) -> bool {
        self.nix.exists(path)
    }
}
