//! Store errors: each variant says what failed and where.

use std::io;
use std::path::PathBuf;

use crate::dag::{BlockHash, DagReadError};
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
    /// The index database failed.
    #[error("index {context}: {source}")]
    Db {
        /// What was being done.
        context: &'static str,
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

    pub(crate) fn db<E: Into<redb::Error>>(context: &'static str) -> impl FnOnce(E) -> StoreError {
        move |e| StoreError::Db { context, source: e.into() }
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
            StoreError::Db { source: redb::Error::Io(e), .. } => io_full(e),
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

/// Attach a sentence to I/O errors, so none travels without saying what was being done.
pub(crate) trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Io { context: what(), source })
    }
}
