//! Helper threads that prove tarball recipes ahead of the ingest that needs them (see `store::proven`
//! for why: proving recompresses a whole file, more than everything else an ingest does).

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::flat;
use crate::recompress;
use crate::store::{rebuilt::REBUILD_MAX, Store, StoreError, Tarballs};

/// For a helper thread beside a multi-path `add`: if `path` (a NAR when `nar`, else a file) is a tarball
/// the store would try to rebuild, prove its recipe now. Anything else returns at once. Errors only say
/// the helper could not help; the ingest analyzes such a file itself.
pub fn prove_ahead(store: &Store, path: &Path, nar: bool) -> Result<(), StoreError> {
    if store.storage().tarballs != Tarballs::Now {
        return Ok(());
    }
    let io_err = |e: std::io::Error| StoreError::Io { context: format!("reading {} ahead", path.display()), source: e };
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    if !meta.is_file() || meta.len() > REBUILD_MAX {
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
/// `tarballs=on` and by `import::repack`.
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
