//! The Nix ARchive (NAR) format: writing, validating, restoring and listing.
//!
//! A NAR is Nix's canonical serialization of a file system object (a regular file, a symlink,
//! or a directory tree). It records only what Nix considers content: file bytes, the executable
//! bit, symlink targets and entry names. The SHA-256 of a store path's NAR is its
//! [`NarHash`], so the encoding must be reproduced byte for byte: [`dump_path`] produces exactly
//! what `nix-store --dump` does.
//!
//! # Wire format
//!
//! Everything is a sequence of *strings*: a u64 little-endian length, the bytes, then zero
//! bytes up to a multiple of 8. Integers (only the contents length) are a bare u64 LE.
//!
//! ```text
//! nar       = "nix-archive-1" node
//! node      = "(" "type" body ")"
//! body      = "regular" [ "executable" "" ] "contents" contents
//!           | "symlink" "target" <target>
//!           | "directory" { "entry" "(" "name" <name> "node" node ")" }
//! contents  = <u64 LE length> <bytes> <zero padding to 8>
//! ```
//!
//! Directory entries appear in strictly increasing byte order of their names. A name is
//! non-empty, not `.` or `..`, and contains neither `/` nor NUL.
//!
//! # Validation
//!
//! [`copy_validated`], [`restore`] and [`list`] all go through one streaming parser
//! ([`parse`]) that rejects, each with its own [`NarErrorKind`] and the byte offset and entry
//! path of the problem: a bad magic, unexpected tags, unsorted or duplicate entries, invalid
//! names, empty or NUL-containing symlink targets, non-zero padding, over-long strings (checked
//! before allocating, see the limits in [`wire`]), excessive nesting, truncation and trailing
//! data. Accepting only canonical NARs means every accepted archive has exactly one NAR hash,
//! and that copying a NAR through [`copy_validated`] reproduces its bytes exactly.
//!
//! # Structure
//!
//! - [`wire`]: tokens, padding and limits; the single spelling of the grammar.
//! - [`NarEncoder`]: the one writer, fed by the file system walker ([`dump_path`]) and by the
//!   parser ([`copy_validated`]).
//! - [`parse`] with a [`NarVisitor`]: the one reader, behind [`copy_validated`], [`restore`] and
//!   [`list`].
//!
//! A tree dumped to a NAR and copied through the validating parser gives the same bytes and summary
//! (`doc_example::dump_and_validated_copy_agree`).

mod dump;
mod encoder;
mod error;
mod listing;
mod parser;
mod restore;
pub mod wire;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod doc_example {
    use super::{copy_validated, dump_path, NarSummary};

    #[test]
    fn dump_and_validated_copy_agree() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("hello"), b"hello\n")?;
        let mut nar = Vec::new();
        let written: NarSummary = dump_path(dir.path(), &mut nar)?;
        let mut copy = Vec::new();
        let read = copy_validated(&nar[..], &mut copy)?;
        assert_eq!((written, &nar), (read, &copy));
        Ok(())
    }
}

use std::io;

pub use self::dump::dump_path;
pub use self::encoder::NarEncoder;
pub use self::error::{NarError, NarErrorKind, NarWriteError};
#[cfg_attr(not(feature = "internals"), allow(unused_imports))] // for fuzz targets and benches
pub use self::listing::{list, list_bounded, NarEntry, NarListing};
pub use self::parser::{parse, NarVisitor};
pub use self::restore::restore;
use crate::nix::hash::NarHash;

/// Where NAR bytes go. The hooks let a chunker start and end chunks at regular-file contents,
/// so identical files in different NARs produce identical chunks.
pub trait NarSink {
    /// Appends `bytes` to the NAR.
    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Called right before the contents bytes of a regular file of `len` bytes are written
    /// (after the u64 length field).
    fn file_contents_begin(&mut self, len: u64) -> io::Result<()> {
        let _ = len;
        Ok(())
    }

    /// Called right after the last contents byte (before the padding).
    fn file_contents_end(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<T: NarSink + ?Sized> NarSink for &mut T {
    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        (**self).write_bytes(bytes)
    }

    fn file_contents_begin(&mut self, len: u64) -> io::Result<()> {
        (**self).file_contents_begin(len)
    }

    fn file_contents_end(&mut self) -> io::Result<()> {
        (**self).file_contents_end()
    }
}

/// Adapter: any [`io::Write`] is a sink that ignores the hooks.
///
/// The encoder already batches small tokens, but a writer that makes a system call per
/// `write` still benefits from a `BufWriter` for NARs with many small files.
#[derive(Debug)]
pub struct WriteSink<W>(pub W);

impl<W: io::Write> NarSink for WriteSink<W> {
    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }
}

/// Collects the NAR in memory (tests, small paths).
impl NarSink for Vec<u8> {
    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// Size and hash of a NAR, computed over every byte written or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NarSummary {
    /// Length of the NAR in bytes (Nix's `NarSize`).
    pub nar_size: u64,
    /// SHA-256 of the NAR (Nix's `NarHash`).
    pub nar_hash: NarHash,
}

/// Parses a NAR from `r`, validating everything, and re-emits the identical bytes into `sink`
/// with the file-contents hooks. Streaming, with bounded memory.
///
/// The output is produced by [`NarEncoder`] from the parsed events, not copied from the input;
/// since the parser accepts only canonical NARs the two are identical, and this is how a NAR
/// from an untrusted source is chunked exactly as if it had been dumped locally. Bytes reach the
/// sink before the archive is known to be complete: on error, discard what the sink received.
pub fn copy_validated<R: io::Read>(r: R, sink: &mut impl NarSink) -> Result<NarSummary, NarError> {
    struct Copy<S: NarSink>(NarEncoder<S>);

    impl<S: NarSink> NarVisitor for Copy<S> {
        fn regular_begin(&mut self, executable: bool, len: u64, _: u64) -> io::Result<()> {
            self.0.regular_begin(executable, len)
        }
        fn regular_data(&mut self, data: &[u8]) -> io::Result<()> {
            self.0.regular_data(data)
        }
        fn regular_end(&mut self) -> io::Result<()> {
            self.0.regular_end()
        }
        fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
            self.0.symlink(target)
        }
        fn directory_begin(&mut self) -> io::Result<()> {
            self.0.directory_begin()
        }
        fn entry_begin(&mut self, name: &[u8]) -> io::Result<()> {
            self.0.entry_begin(name)
        }
        fn entry_end(&mut self) -> io::Result<()> {
            self.0.entry_end()
        }
        fn directory_end(&mut self) -> io::Result<()> {
            self.0.directory_end()
        }
    }

    // The parser hashes the input; since it accepts only canonical NARs, the re-encoded output is the
    // same bytes, so the encoder need not hash them again (only their count is cross-checked).
    let mut copy = Copy(NarEncoder::unhashed(sink));
    let read = parse(r, &mut copy)?;
    let (written, _) =
        copy.0.finish().map_err(|e| NarError::new(NarErrorKind::Output(e), read.nar_size, "/".to_owned()))?;
    if written != read.nar_size {
        let why = io::Error::other(format!("re-encoded {written} bytes of a {}-byte NAR", read.nar_size));
        return Err(NarError::new(NarErrorKind::Output(why), read.nar_size, "/".to_owned()));
    }
    Ok(read)
}
