//! Which stored NARs are whole: checked in the index before the first byte is promised (a 200 followed
//! by a cut-off stream is what attic's users hit, and a re-push did not heal it there), and remembered.

use std::collections::HashSet;
use std::sync::Mutex;

use super::ServiceError;
use crate::dag::{reader, Cid, DagReadError};
use crate::nix::hash::NarHash;
use crate::store::Store;

/// Roots found complete (bounded: forgotten all at once when full, then re-checked as asked for).
const COMPLETE_ENTRIES: usize = 100_000;

/// NARs known whole, and NARs known damaged (not advertised until uploaded again).
#[derive(Default)]
pub struct Health {
    complete: Mutex<HashSet<Cid>>,
    damaged: Mutex<HashSet<NarHash>>,
}

impl Health {
    /// Whether the NAR was found damaged.
    pub fn is_damaged(&self, hash: &NarHash) -> bool {
        self.damaged.lock().unwrap_or_else(|p| p.into_inner()).contains(hash)
    }

    /// Stop advertising this NAR.
    pub fn mark_damaged(&self, hash: NarHash) {
        self.damaged.lock().unwrap_or_else(|p| p.into_inner()).insert(hash);
    }

    /// The NAR was stored again: check it afresh when next asked for.
    pub fn healed(&self, hash: &NarHash, root: &Cid) {
        self.damaged.lock().unwrap_or_else(|p| p.into_inner()).remove(hash);
        self.complete.lock().unwrap_or_else(|p| p.into_inner()).remove(root);
    }

    /// Check in the index that every block of the NAR under `root` is present, reading only interior
    /// nodes (leaves are looked up, not read). A missing or unreadable block marks the NAR damaged and
    /// answers 503 naming it; the first success is remembered.
    pub fn check(&self, store: &Store, hash: NarHash, root: Cid, size: u64) -> Result<(), ServiceError> {
        if self.is_damaged(&hash) {
            return Err(ServiceError::Damaged(format!("NAR {hash} was found damaged earlier")));
        }
        if self.complete.lock().unwrap_or_else(|p| p.into_inner()).contains(&root) {
            return Ok(());
        }
        let mut seen = reader::Seen::new();
        let walked = reader::walk(store, &root, Some(size), &mut seen, reader::WalkMode::NodesOnly, &mut |_, _| Ok(()));
        match walked {
            Ok(()) => {
                let mut c = self.complete.lock().unwrap_or_else(|p| p.into_inner());
                if c.len() >= COMPLETE_ENTRIES {
                    c.clear();
                }
                c.insert(root);
                Ok(())
            }
            Err(DagReadError::Io { cid, source }) if !is_corrupt(&source) => {
                Err(ServiceError::Store(crate::store::StoreError::Io {
                    context: format!("reading block {cid} of NAR {hash}"),
                    source,
                }))
            }
            Err(e) => {
                self.mark_damaged(hash);
                Err(ServiceError::Damaged(format!("NAR {hash}: {e}")))
            }
        }
    }
}

/// Whether a read failed because stored bytes are damaged (not because of the OS).
fn is_corrupt(e: &std::io::Error) -> bool {
    e.get_ref().and_then(|i| i.downcast_ref::<crate::store::StoreError>()).is_some_and(|s| {
        matches!(s, crate::store::StoreError::CorruptBlock { .. } | crate::store::StoreError::CorruptIndex { .. })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::{BlockHash, DagBuilder};
    use crate::store::{Manifest, NarEntry};

    /// A NAR whose index lost a leaf is refused before any status is sent (503 naming the block), and is
    /// no longer advertised; one whose blocks are all there passes, and is remembered.
    #[test]
    fn a_missing_block_is_found_before_the_200() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chunks: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 5000]).collect();
        let mut b = DagBuilder::new(store.begin_ingest());
        for c in &chunks {
            b.push_leaf(c).unwrap();
        }
        let (dag, ingest) = b.finish().unwrap();
        let entry = NarEntry { root: dag.root, nar_size: 30_000 };
        ingest.commit(&[Manifest::Nar { nar_hash: NarHash([3; 32]), entry }]).unwrap();
        let health = Health::default();
        assert!(health.check(&store, NarHash([3; 32]), dag.root, 30_000).is_ok());
        // Lose one leaf from the index.
        let lost = BlockHash::of(&chunks[4]);
        let txn = store.db().begin_write().unwrap();
        txn.open_table(crate::store::tables::BLOCKS).unwrap().remove(lost.0.as_slice()).unwrap();
        txn.commit().unwrap();
        let fresh = Health::default();
        match fresh.check(&store, NarHash([3; 32]), dag.root, 30_000) {
            Err(ServiceError::Damaged(why)) => {
                assert!(why.contains("missing") || why.contains(&lost.to_string()), "{why}")
            }
            other => panic!("expected damage, got {other:?}"),
        }
        assert!(fresh.is_damaged(&NarHash([3; 32])));
        fresh.healed(&NarHash([3; 32]), &dag.root);
        assert!(!fresh.is_damaged(&NarHash([3; 32])));
    }
}
