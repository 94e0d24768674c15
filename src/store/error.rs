//! Store errors: each variant says what failed and where.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::dag::{BlockHash, DagReadError};
use crate::recompress::RecompressError;
use crate::nix::hash::NarHash;
use crate::nix::nar::{NarError, NarWriteError};

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, and to which file.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// An operation on one index table failed: which operation, which table, and which row when there
    /// is one (a block by its BLAKE3 hex, a NAR by its nix32 NarHash, a pack by its id).
    #[error("index {op} of {table}{}: {source}", KeySuffix(.key))]
    Index {
        /// What was being done: "open", "read", "write", "remove", "scan".
        op: &'static str,
        /// The table (its redb name, e.g. `blocks-0`).
        table: &'static str,
        /// The row's key, rendered readably, when the operation was about one row.
        key: Option<String>,
        /// redb's error.
        source: redb::Error,
    },
    /// The index database as a whole failed: opening it, or beginning or committing a transaction.
    #[error("index {op}: {source}")]
    Txn {
        /// What was being done: "open", "begin read", "begin write", "commit", ...
        op: &'static str,
        /// redb's error.
        source: redb::Error,
    },
    /// The store was written by an incompatible version of nixdag.
    #[error("store {path} has format version {got}, this nixdag reads version {expected}")]
    Version {
        /// The store directory.
        path: PathBuf,
        /// What this build reads.
        expected: u32,
        /// What the store says.
        got: u32,
    },
    /// A stored block does not hash to its name, or its pack record is damaged.
    #[error("block {hash} in pack {pack} at offset {offset} is corrupt: {reason}")]
    CorruptBlock {
        /// The block.
        hash: BlockHash,
        /// Its pack.
        pack: u32,
        /// Its record offset.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Garbage collection stopped before removing anything: a root's DAG cannot be read whole, so
    /// what it needs cannot be told from garbage.
    #[error("refusing to collect garbage: {what} is damaged: {source}")]
    GcRefused {
        /// The root (`nar sha256:…`, `file sha256:…`) or recipe whose DAG is damaged.
        what: String,
        /// Why its DAG cannot be read.
        source: DagReadError,
    },
    /// A block too long for the index's 32-bit lengths (a chunker or a recipe gone wrong, never user data).
    #[error("block {hash} of {len} bytes is too large to store (at most {} bytes)", u32::MAX)]
    BlockTooLarge {
        /// The block.
        hash: BlockHash,
        /// Its length.
        len: u64,
    },
    /// Analyzing or rebuilding a compressed file failed (`recompress`).
    #[error("{context}: {source}")]
    Recompress {
        /// What was being done.
        context: &'static str,
        /// The typed failure.
        source: RecompressError,
    },
    /// An index entry cannot be decoded.
    #[error("index table {table} holds a malformed entry: {reason}")]
    CorruptIndex {
        /// The table.
        table: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Data did not hash to what the caller said it would.
    #[error("hash mismatch for {what}: expected {expected}, got {got}")]
    HashMismatch {
        /// What was hashed.
        what: String,
        /// The hash that was promised.
        expected: String,
        /// The hash of the bytes received.
        got: String,
    },
    /// A command that only reads was pointed at a directory that holds no store (a mistyped `--store`
    /// must not create an empty store and report it consistent).
    #[error("{path} is not a nixdag store (no index.redb): check --store or NIXDAG_STORE")]
    NotAStore {
        /// The directory given.
        path: PathBuf,
    },
    /// The store is held by another process and the caller asked not to wait (`--no-wait`).
    #[error("store {path} is busy: {what}; try again, or leave out --no-wait to wait")]
    Busy {
        /// The store directory.
        path: PathBuf,
        /// Who holds it, and for what.
        what: String,
    },
    /// A manifest refers to a NAR the store does not hold.
    #[error("no NAR with hash {0} in the store")]
    NoSuchNar(NarHash),
    /// A store path (by hash part) the store does not hold, e.g. one asked to be pinned.
    #[error("no store path with hash part {0} in the store")]
    NoSuchPath(String),
    /// The DAG under a root could not be read.
    #[error(transparent)]
    Dag(#[from] DagReadError),
    /// A NAR being added is malformed (the error says at which byte and entry).
    #[error(transparent)]
    Nar(#[from] NarError),
    /// A path being added could not be serialized.
    #[error(transparent)]
    NarWrite(#[from] NarWriteError),
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Io { context, source }
    }

    /// The index as a whole failed to `op` ("open", "begin read", "begin write", "commit").
    pub(crate) fn txn<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
        move |e| StoreError::Txn { op, source: e.into() }
    }

    /// `op` failed on the table named `table` (pass `TABLE.name()`) as a whole: opening or scanning it.
    pub(crate) fn table_op<E: Into<redb::Error>>(op: &'static str, table: &'static str) -> impl FnOnce(E) -> StoreError {
        move |e| StoreError::Index { op, table, key: None, source: e.into() }
    }

    /// `op` failed on the row `key` of table `table`; the key is rendered only when it fails.
    pub(crate) fn row<E: Into<redb::Error>>(
        op: &'static str,
        table: &'static str,
        key: impl fmt::Display,
    ) -> impl FnOnce(E) -> StoreError {
        move |e| StoreError::Index { op, table, key: Some(key.to_string()), source: e.into() }
    }

    /// The redb error under an index failure.
    pub fn redb_source(&self) -> Option<&redb::Error> {
        match self {
            StoreError::Index { source, .. } | StoreError::Txn { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether the store failed because its disk (or quota) is full: the gateway answers 507 and the CLI
    /// says so in words, instead of a bare "internal error".
    pub fn is_out_of_space(&self) -> bool {
        fn io_full(e: &io::Error) -> bool {
            e.kind() == io::ErrorKind::StorageFull
                || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
                || e.get_ref().and_then(|i| i.downcast_ref::<StoreError>()).is_some_and(StoreError::is_out_of_space)
        }
        match self {
            StoreError::Io { source, .. } => io_full(source),
            StoreError::Index { source: redb::Error::Io(e), .. } | StoreError::Txn { source: redb::Error::Io(e), .. } => {
                io_full(e)
            }
            // A content callback's failure (the store's own writes) travels inside the recompress error.
            StoreError::Recompress { source, .. } => {
                let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
                while let Some(c) = cause {
                    if c.downcast_ref::<io::Error>().is_some_and(io_full) {
                        return true;
                    }
                    cause = c.source();
                }
                false
            }
            StoreError::Nar(e) => match e.kind() {
                crate::nix::nar::NarErrorKind::Io(io) | crate::nix::nar::NarErrorKind::Output(io) => io_full(io),
                _ => false,
            },
            _ => false,
        }
    }

    /// Recover a store error that travelled through an `io::Error` (block sinks speak `io`).
    pub fn from_io(e: io::Error) -> StoreError {
        match e.downcast::<StoreError>() {
            Ok(s) => s,
            Err(e) => StoreError::Io { context: "ingest".into(), source: e },
        }
    }
}

/// Bytes as lowercase hex (a key that is no hash of its own, e.g. a block name's prefix).
pub(crate) struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A 32-byte SHA-256 row key (`files-0`) as Nix prints it: `sha256:<nix32>`, rendered only when shown.
pub(crate) struct Sha256Key<'a>(pub &'a [u8]);

impl fmt::Display for Sha256Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", crate::nix::hash::nix32::encode(self.0))
    }
}

/// " key K" after an index table's name, or nothing.
struct KeySuffix<'a>(&'a Option<String>);

impl fmt::Display for KeySuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(k) => write!(f, " key {k}"),
            None => Ok(()),
        }
    }
}

/// Attach a sentence to I/O errors, so none travels without saying what was being done.
pub(crate) trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Io { context: what(), source })
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use redb::TableHandle;

    use super::*;
    use crate::dag::cid::RAW_CODEC;
    use crate::recompress::Recipe;
    use crate::store::tables::{NarEntry, BLOCKS, NARS, PACKS};
    use crate::store::{Manifest, Store};

    fn corrupted() -> redb::StorageError {
        redb::StorageError::Corrupted("a page checksum does not match".into())
    }

    /// The source is the typed redb error, not its text.
    fn redb_source(e: &StoreError) -> &redb::Error {
        e.source().and_then(|s| s.downcast_ref::<redb::Error>()).expect("typed redb source")
    }

    #[test]
    fn a_row_error_names_the_operation_table_and_key() {
        let hash = BlockHash::of(b"a block");
        let e = StoreError::row("read", BLOCKS.name(), hash)(corrupted());
        let msg = e.to_string();
        assert_eq!(msg, format!("index read of blocks-0 key {}: {}", hash.to_hex(), redb::Error::from(corrupted())));
        assert!(matches!(redb_source(&e), redb::Error::Corrupted(_)));
        assert!(matches!(e.redb_source(), Some(redb::Error::Corrupted(_))));

        let nar = NarHash([3; 32]);
        let e = StoreError::row("write", NARS.name(), nar)(corrupted());
        assert!(e.to_string().starts_with(&format!("index write of nars-0 key sha256:{}: ", nar.to_nix32())), "{e}");
        let e = StoreError::row("remove", PACKS.name(), 17u32)(corrupted());
        assert!(e.to_string().starts_with("index remove of packs-0 key 17: "), "{e}");
        let e = StoreError::row("read", "files-0", Sha256Key(&[0; 32]))(corrupted());
        assert!(e.to_string().starts_with(&format!("index read of files-0 key sha256:{}: ", "0".repeat(52))), "{e}");
        let e = StoreError::row("read", BLOCKS.name(), Hex(&[0xab, 0x01]))(corrupted());
        assert!(e.to_string().starts_with("index read of blocks-0 key ab01: "), "{e}");
    }

    #[test]
    fn a_table_error_names_the_table_and_a_transaction_error_the_operation() {
        let e = StoreError::table_op("scan", BLOCKS.name())(corrupted());
        assert!(e.to_string().starts_with("index scan of blocks-0: "), "{e}");
        assert!(matches!(redb_source(&e), redb::Error::Corrupted(_)));
        let e = StoreError::txn("commit")(corrupted());
        assert!(e.to_string().starts_with("index commit: "), "{e}");
        assert!(matches!(redb_source(&e), redb::Error::Corrupted(_)));
    }

    /// A real failure through the store: a table re-created with other types cannot be opened, and the
    /// error says which.
    #[test]
    fn a_retyped_table_is_named_when_it_cannot_be_opened() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        {
            let txn = store.db().begin_write().unwrap();
            txn.delete_table(NARS).unwrap();
            txn.open_table(redb::TableDefinition::<u64, u64>::new("nars-0")).unwrap();
            txn.commit().unwrap();
        }
        let e = store.nar(&NarHash([1; 32])).unwrap_err();
        assert!(matches!(e, StoreError::Index { op: "open", table: "nars-0", key: None, .. }), "{e:?}");
        assert!(e.to_string().starts_with("index open of nars-0: "), "{e}");
        assert!(matches!(redb_source(&e), redb::Error::TableTypeMismatch { .. }), "{e:?}");
    }

    #[test]
    fn out_of_space_is_seen_under_every_index_form_and_inside_recompress() {
        let full = || io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(StoreError::row("write", BLOCKS.name(), BlockHash([0; 32]))(redb::Error::Io(full())).is_out_of_space());
        assert!(StoreError::table_op("open", BLOCKS.name())(redb::Error::Io(full())).is_out_of_space());
        assert!(StoreError::txn("commit")(redb::Error::Io(full())).is_out_of_space());
        assert!(!StoreError::txn("commit")(corrupted()).is_out_of_space());
        // The store's own write failing inside a content callback, as a block sink reports it.
        let sink = io::Error::other(StoreError::Io { context: "appending".into(), source: full() });
        let e = StoreError::Recompress {
            context: "analyzing a compressed file",
            source: RecompressError::Content { offset: 9, source: sink },
        };
        assert!(e.is_out_of_space());
    }

    #[test]
    fn recompress_keeps_its_typed_source() {
        let source = Recipe::decode(b"").unwrap_err();
        let shown = source.to_string();
        let e = StoreError::Recompress { context: "analyzing a compressed file", source };
        assert_eq!(e.to_string(), format!("analyzing a compressed file: {shown}"));
        assert!(e.source().and_then(|s| s.downcast_ref::<RecompressError>()).is_some());
        assert!(!e.is_out_of_space());
    }

    #[test]
    fn too_large_names_the_block_and_its_length() {
        let hash = BlockHash::of(b"big");
        let e = StoreError::BlockTooLarge { hash, len: 1 << 33 };
        let msg = e.to_string();
        assert!(msg.contains(&hash.to_hex()) && msg.contains(&(1u64 << 33).to_string()), "{msg}");
        assert!(!msg.contains("pack 0"), "{msg}");
    }

    /// GC stops when a root's DAG has a hole, names the root, and keeps the DAG error typed.
    #[test]
    fn gc_refusal_names_the_root_and_keeps_the_dag_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bytes = vec![7u8; 3000];
        let hash = BlockHash::of(&bytes);
        let mut i = store.begin_ingest();
        i.put(hash, &bytes).unwrap();
        let nar_hash = NarHash([5; 32]);
        let entry = NarEntry { root: hash.cid(RAW_CODEC), nar_size: bytes.len() as u64 };
        i.commit(&[Manifest::Nar { nar_hash, entry }]).unwrap();
        {
            let txn = store.db().begin_write().unwrap();
            assert!(txn.open_table(BLOCKS).unwrap().remove(hash.0.as_slice()).unwrap().is_some());
            txn.commit().unwrap();
        }
        let e = store.gc().unwrap_err();
        assert!(matches!(&e, StoreError::GcRefused { what, .. } if *what == format!("nar {nar_hash}")), "{e:?}");
        assert!(e.to_string().starts_with(&format!("refusing to collect garbage: nar {nar_hash} is damaged: ")), "{e}");
        assert!(e.source().and_then(|s| s.downcast_ref::<DagReadError>()).is_some());
    }
}
