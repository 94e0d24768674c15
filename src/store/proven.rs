//! Tarball recipes proven ahead of their ingest: what is known, and who is analyzing what. The helper
//! threads that do the proving live in `import::ahead`.
//!
//! Proving that a recipe rebuilds a tarball exactly means recompressing all of it (deflate -9 runs at
//! ~14 MiB/s of content), and an ingest does that on one core: a multi-path `add` of tarballs ran at
//! 3 MiB/s with the second core idle. Helper threads analyze the next files while the current one is
//! stored (`prove_ahead` beside an `add` with `tarballs=on`, `import::repack` for queued files); the
//! ingest then only decompresses a file whose recipe is proven.
//! Results are keyed by the SHA-256 of the compressed bytes, so a file that changed between the helper's
//! read and the ingest's is simply analyzed again.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex};

use sha2::Digest;

use super::StoreError;
use crate::recompress::{self, Recipe};

/// What is known about compressed files by their SHA-256.
#[derive(Default)]
pub(crate) struct Proven {
    state: Mutex<State>,
    ready: Condvar,
}

#[derive(Default)]
struct State {
    /// Analyzed: the recipe that rebuilds the file, or `None` when none does.
    done: HashMap<[u8; 32], Option<Recipe>>,
    /// Being analyzed now (by a helper or by an ingest).
    busy: HashSet<[u8; 32]>,
}

/// An ingest's answer for one file.
pub(crate) enum Claim<'a> {
    /// Analyzed already: its recipe, or `None` when it cannot be rebuilt.
    Known(Option<Recipe>),
    /// Nobody has: the ingest analyzes it; the guard keeps helpers off it until dropped.
    Mine(#[allow(dead_code)] ClaimGuard<'a>),
}

/// Releases a claimed file when the ingest is done with it (or failed).
pub(crate) struct ClaimGuard<'a> {
    proven: &'a Proven,
    key: [u8; 32],
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.proven.state.lock().unwrap_or_else(|p| p.into_inner());
        st.busy.remove(&self.key);
        self.proven.ready.notify_all();
    }
}

pub(crate) fn key_of(compressed: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(compressed).into()
}

impl Proven {
    /// The ingest's turn for `key`: waits while a helper is analyzing it.
    pub(crate) fn claim(&self, key: [u8; 32]) -> Claim<'_> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while st.busy.contains(&key) {
            st = self.ready.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(r) = st.done.remove(&key) {
            return Claim::Known(r);
        }
        st.busy.insert(key);
        Claim::Mine(ClaimGuard { proven: self, key })
    }

    /// Results waiting for their ingest.
    #[cfg(test)]
    pub(crate) fn state_len(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).done.len()
    }

    /// A helper's analysis of `compressed`, unless it is known or under way.
    pub(crate) fn prove(&self, compressed: &[u8]) -> Result<(), StoreError> {
        let key = key_of(compressed);
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.done.contains_key(&key) || !st.busy.insert(key) {
                return Ok(());
            }
        }
        let guard = ClaimGuard { proven: self, key };
        let found = recompress::analyze(compressed, |_| Ok(()))
            .map_err(|source| StoreError::Recompress { context: "analyzing a compressed file ahead", source });
        if let Ok(r) = &found {
            self.state.lock().unwrap_or_else(|p| p.into_inner()).done.insert(key, r.clone());
        }
        drop(guard);
        found.map(drop)
    }
}
