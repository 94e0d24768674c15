//! Errors of NAR reading ([`NarError`]) and of archiving a file tree ([`NarWriteError`]).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A NAR could not be read, or what was read could not be written out.
///
/// Always says where: `offset` is the byte position in the NAR at which the problem was found
/// (the start of the offending string, or how far the input went when it ended early) and
/// `path` is the entry inside the archive (`/` for the root, `/share/doc/x` below it). Both
/// survive I/O errors, so a failing download still reports how far it got.
#[derive(Debug)]
pub struct NarError {
    kind: NarErrorKind,
    offset: u64,
    path: String,
}

/// What is wrong; see [`NarError`] for where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NarErrorKind {
    /// The input does not start with the `nix-archive-1` string.
    #[error("not a Nix archive (missing \"nix-archive-1\" magic)")]
    BadMagic,
    /// A token other than the grammar allows at this point.
    #[error("expected {expected}, got {got:?}")]
    UnexpectedTag {
        /// What the grammar allows here, e.g. `"entry" or ")"`.
        expected: &'static str,
        /// The token found (lossy UTF-8).
        got: String,
    },
    /// A length field exceeds the limit for its string; rejected before allocating.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    StringTooLong {
        /// Which string: "tag", "entry name" or "symlink target".
        what: &'static str,
        /// The length the field claims.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A directory entry's name sorts before the previous one; Nix writes entries sorted by
    /// name bytes, and the NAR hash depends on it.
    #[error("entries not sorted: {name:?} follows {prev:?}")]
    UnsortedEntries {
        /// The previous entry's name.
        prev: String,
        /// The offending name.
        name: String,
    },
    /// Two entries of one directory have the same name.
    #[error("duplicate entry {name:?}")]
    DuplicateEntry {
        /// The repeated name.
        name: String,
    },
    /// An entry name is empty.
    #[error("empty entry name")]
    EmptyName,
    /// An entry is named `.` or `..`, which would escape or alias its directory on restore.
    #[error("entry name {name:?} is not allowed")]
    DotName {
        /// `.` or `..`.
        name: String,
    },
    /// An entry name contains `/`, which would escape its directory on restore.
    #[error("entry name {name:?} contains '/'")]
    NameContainsSlash {
        /// The name.
        name: String,
    },
    /// An entry name contains a NUL byte, which no file system accepts.
    #[error("entry name {name:?} contains a NUL byte")]
    NameContainsNul {
        /// The name.
        name: String,
    },
    /// A symlink has an empty target, which no file system can hold.
    #[error("empty symlink target")]
    EmptySymlinkTarget,
    /// A symlink target contains a NUL byte, which no file system can hold.
    #[error("symlink target {target:?} contains a NUL byte")]
    SymlinkTargetContainsNul {
        /// The target (lossy UTF-8).
        target: String,
    },
    /// Padding after a string or file contents is not all zero bytes. Nix writes zeros, and
    /// accepting anything else would give one tree many NAR hashes.
    #[error("non-zero padding")]
    NonZeroPadding,
    /// The entry path would be longer than [`MAX_PATH_LEN`](super::wire::MAX_PATH_LEN).
    #[error("entry path longer than {max} bytes")]
    PathTooLong {
        /// The limit.
        max: usize,
    },
    /// Directories nest deeper than [`MAX_DEPTH`](super::wire::MAX_DEPTH).
    #[error("directories nested deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The input ended before the archive did (including file contents shorter than their
    /// length field says).
    #[error("unexpected end of input (NAR truncated)")]
    Truncated,
    /// Bytes follow the closing `)` of the root node.
    #[error("trailing data after the end of the archive")]
    TrailingData,
    /// Reading the input failed.
    #[error("{0}")]
    Io(io::Error),
    /// Writing what was read (to a sink, or to the file system on restore) failed.
    #[error("{0}")]
    Output(io::Error),
}

impl NarError {
    pub(super) fn new(kind: NarErrorKind, offset: u64, path: String) -> NarError {
        NarError { kind, offset, path }
    }

    /// What is wrong.
    pub fn kind(&self) -> &NarErrorKind {
        &self.kind
    }

    /// Takes the kind, e.g. to recover an I/O error.
    pub fn into_kind(self) -> NarErrorKind {
        self.kind
    }

    /// Byte offset in the NAR at which the problem was found.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Entry path inside the archive: `/` for the root, else like `/share/doc/x`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The I/O error, if reading or writing failed rather than the NAR being malformed.
    pub fn io_error(&self) -> Option<&io::Error> {
        match &self.kind {
            NarErrorKind::Io(e) | NarErrorKind::Output(e) => Some(e),
            _ => None,
        }
    }

    /// True if the NAR itself is at fault, as opposed to an I/O failure on either side.
    pub fn is_malformed(&self) -> bool {
        self.io_error().is_none()
    }
}

/// One line: what kind of failure, where in the NAR, which entry, what exactly. The I/O error
/// text is part of the line (and not also a `source()`), so printing a chain never repeats it.
impl fmt::Display for NarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            NarErrorKind::Io(_) => "cannot read NAR",
            NarErrorKind::Output(_) => "cannot write NAR contents",
            _ => "malformed NAR",
        };
        write!(f, "{what} at byte {} (entry {:?}): {}", self.offset, self.path, self.kind)
    }
}

impl std::error::Error for NarError {}

/// For `Read` adapters and callers that only deal in `io::Error`: I/O failures keep their kind,
/// malformed input becomes `InvalidData` (and a truncated one `UnexpectedEof`); the message keeps
/// the offset and entry path.
impl From<NarError> for io::Error {
    fn from(e: NarError) -> io::Error {
        let kind = match &e.kind {
            NarErrorKind::Io(io) | NarErrorKind::Output(io) => io.kind(),
            NarErrorKind::Truncated => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// A file tree could not be serialized by [`dump_path`](super::dump_path).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NarWriteError {
    /// Reading a file, directory or symlink failed.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file system path.
        path: PathBuf,
        /// The underlying error (also in the message).
        error: io::Error,
    },
    /// A socket, FIFO or device node: NAR has no way to represent it.
    #[error("cannot archive {}: unsupported file type ({kind})", path.display())]
    UnsupportedFileType {
        /// The file system path.
        path: PathBuf,
        /// "socket", "fifo", "block device", "character device" or "unknown".
        kind: &'static str,
    },
    /// A file's size changed while it was read; its length was already written, so the NAR
    /// would be corrupt.
    #[error("{} changed while being archived ({detail}; it had {expected} bytes)", path.display())]
    FileChanged {
        /// The file system path.
        path: PathBuf,
        /// The size when the file was opened.
        expected: u64,
        /// "it ended early", "it grew" or "it was replaced".
        detail: &'static str,
    },
    /// The sink failed.
    #[error("cannot write NAR: {error}")]
    Sink {
        /// The underlying error (also in the message).
        error: io::Error,
    },
}

impl NarWriteError {
    /// The file system path concerned, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            NarWriteError::Read { path, .. }
            | NarWriteError::UnsupportedFileType { path, .. }
            | NarWriteError::FileChanged { path, .. } => Some(path),
            NarWriteError::Sink { .. } => None,
        }
    }

    /// The I/O error, if one caused this.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            NarWriteError::Read { error, .. } | NarWriteError::Sink { error } => Some(error),
            _ => None,
        }
    }
}

impl From<NarWriteError> for io::Error {
    fn from(e: NarWriteError) -> io::Error {
        let kind = e.io_error().map_or(io::ErrorKind::Other, io::Error::kind);
        io::Error::new(kind, e.to_string())
    }
}
