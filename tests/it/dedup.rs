//! Dedup: versions of a package share blocks; adding the same thing twice adds nothing.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::common::*;

pub struct Trees {
    _work: tempfile::TempDir,
    pub old: PathBuf,
    pub new: PathBuf,
}

/// Two released versions of Pygments (a ~4 MiB pure-Python package), downloaded once per test run.
pub fn pygments_trees() -> &'static Trees {
    static TREES: OnceLock<Trees> = OnceLock::new();
    TREES.get_or_init(|| {
        let work = tempfile::tempdir().unwrap();
        let old = pypi_wheel_tree(work.path(), "pygments", "2.17.2");
        let new = pypi_wheel_tree(work.path(), "pygments", "2.18.0");
        Trees { _work: work, old, new }
    })
}

#[test]
fn two_versions_cost_less_than_stored_apart() {
    let t = pygments_trees();
    let (old, new) = (t.old.to_str().unwrap(), t.new.to_str().unwrap());
    let alone_old = TestStore::new();
    alone_old.add(&[old]);
    let alone_new = TestStore::new();
    alone_new.add(&[new]);
    let both = TestStore::new();
    both.add(&[old]);
    both.add(&[new]);
    let (a, b, ab) = (alone_old.stat("stored_bytes"), alone_new.stat("stored_bytes"), both.stat("stored_bytes"));
    let (ua, ub, uab) = (alone_old.stat("unique_bytes"), alone_new.stat("unique_bytes"), both.stat("unique_bytes"));
    eprintln!("pygments 2.17.2 + 2.18.0: stored {ab} together vs {} apart; unique {uab} vs {}", a + b, ua + ub);
    assert!(ab < a + b, "stored together {ab} should be less than apart {}", a + b);
    assert!(uab < ua + ub, "unique together {uab} should be less than apart {}", ua + ub);
    both.verify();
}

#[test]
fn adding_the_same_path_twice_adds_no_block() {
    let t = pygments_trees();
    let store = TestStore::new();
    let first = store.add(&[t.old.to_str().unwrap()]);
    let before = store.snapshot();
    let second = store.add(&[t.old.to_str().unwrap()]);
    assert_eq!(first, second);
    assert_eq!(store.snapshot(), before, "second add changed the store");
}
