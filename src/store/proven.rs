//! Tarball recipes proven ahead of their ingest.
//!
//! Proving that a recipe rebuilds a tarball exactly means recompressing all of it (deflate -9 runs at
//! ~14 MiB/s of content), and an ingest does that on one core: a multi-path `add` of tarballs ran at
//! 3 MiB/s with the second core idle. Helper threads analyze the next files while the current one is
//! stored ([`prove_ahead`] beside an `add` with `tarballs=on`, `Store::repack` for queued files); the
//! ingest then only decompresses a file whose recipe is proven.
//! Results are keyed by the SHA-256 of the compressed bytes, so a file that changed between the helper's
//! read and the ingest's is simply analyzed again.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use sha2::Digest;

use super::{flat, rebuilt, Store, StoreError};
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
    pub(super) fn prove(&self, compressed: &[u8]) -> Result<(), StoreError> {
        let key = key_of(compressed);
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.done.contains_key(&key) || !st.busy.insert(key) {
                return Ok(());
            }
        }
        let guard = ClaimGuard { proven: self, key };
        let found = recompress::analyze(compressed, |_| Ok(())).map_err(|e| StoreError::Io {
            context: "analyzing a compressed file ahead".into(),
            source: std::io::Error::other(e.to_string()),
        });
        if let Ok(r) = &found {
            self.state.lock().unwrap_or_else(|p| p.into_inner()).done.insert(key, r.clone());
        }
        drop(guard);
        found.map(drop)
    }
}

/// For a helper thread beside a multi-path `add`: if `path` (a NAR when `nar`, else a file) is a tarball
/// the store would try to rebuild, prove its recipe now. Anything else returns at once. Errors only say
/// the helper could not help; the ingest analyzes such a file itself.
pub fn prove_ahead(store: &Store, path: &Path, nar: bool) -> Result<(), StoreError> {
    if store.storage().tarballs != super::compress::Tarballs::Now {
        return Ok(());
    }
    let io_err = |e: std::io::Error| StoreError::Io { context: format!("reading {} ahead", path.display()), source: e };
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    if !meta.is_file() || meta.len() > rebuilt::REBUILD_MAX {
        return Ok(());
    }
    let mut f = std::fs::File::open(path).map_err(io_err)?;
    let mut head = Vec::new();
    (&mut f).take(flat::FLAT_HEAD as u64).read_to_end(&mut head).map_err(io_err)?;
    let mut bytes;
    let payload = if nar {
        let Some((start, len, total)) = flat::flat_compressed_parts(&head) else { return Ok(()) };
        bytes = head;
        f.read_to_end(&mut bytes).map_err(io_err)?;
        if total != bytes.len() as u64 {
            return Ok(()); // not the NAR it looked like: the ingest's parser says what is wrong
        }
        &bytes[start..start + len as usize]
    } else if recompress::detect(&head).is_some() {
        bytes = head;
        f.read_to_end(&mut bytes).map_err(io_err)?;
        &bytes[..]
    } else {
        return Ok(());
    };
    store.proven().prove(payload)
}

/// Run `work` over `items` things in order while helper threads, one per core (at most 4), call
/// `prove(i)` for the items after the one `work` is at (it stores its index in the counter it gets before
/// each item). With `helpers` false, or one item, `work` runs alone. Used by a multi-path `add` with
/// `tarballs=on` and by `Store::repack`.
pub fn with_helpers<T>(
    items: usize,
    helpers: bool,
    prove: impl Fn(usize) + Sync,
    work: impl FnOnce(&AtomicUsize) -> T,
) -> T {
    let at = AtomicUsize::new(0);
    let next = AtomicUsize::new(1);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        if helpers && items > 1 {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4).min(items - 1);
            for _ in 0..n {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items || done.load(Ordering::Relaxed) {
                        return;
                    }
                    if i > at.load(Ordering::Relaxed) {
                        prove(i);
                    }
                });
            }
        }
        let r = work(&at);
        done.store(true, Ordering::Relaxed);
        r
    })
}
