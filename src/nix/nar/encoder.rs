//! The one NAR encoder, used by [`dump_path`](super::dump_path) and
//! [`copy_validated`](super::copy_validated).

use std::io;

use sha2::{Digest, Sha256};

use super::wire::{self, put_str};
use super::NarSink;
use crate::nix::hash::NarHash;

/// Tokens are gathered in a small buffer and handed to the sink in one call, so a sink that is
/// a plain file or a chunker does not see a call per 8-byte token. The buffer is flushed before
/// every file's contents (so the hooks see exact positions) and when it grows past this.
const FLUSH_AT: usize = 32 * 1024;

/// Writes a NAR as a sequence of events, hashing and counting every byte.
///
/// The caller supplies the structure: one root node, where a node is a regular file
/// ([`regular_begin`](Self::regular_begin), any number of
/// [`regular_data`](Self::regular_data), [`regular_end`](Self::regular_end)), a
/// [`symlink`](Self::symlink), or a directory ([`directory_begin`](Self::directory_begin), per
/// entry [`entry_begin`](Self::entry_begin), a node, [`entry_end`](Self::entry_end), and
/// finally [`directory_end`](Self::directory_end)). The encoder does not sort entries or check
/// names: its callers are the file system walker, which sorts, and the validating parser.
/// Contents lengths are checked, because a mismatch would silently corrupt the archive.
pub struct NarEncoder<S: NarSink> {
    sink: S,
    pending: Vec<u8>,
    /// `None` when the caller hashes the same bytes elsewhere (see [`NarEncoder::unhashed`]).
    hasher: Option<Sha256>,
    size: u64,
    /// `(declared length, bytes still to come)` while inside a file's contents.
    contents: Option<(u64, u64)>,
}

impl<S: NarSink> NarEncoder<S> {
    /// Starts a NAR; the magic is written with the first flush.
    pub fn new(sink: S) -> Self {
        let mut pending = Vec::with_capacity(FLUSH_AT + 1024);
        put_str(&mut pending, wire::MAGIC);
        NarEncoder { sink, pending, hasher: Some(Sha256::new()), size: 0, contents: None }
    }

    /// An encoder that does not hash what it writes: for re-encoding a NAR whose parser already hashes
    /// the identical input (SHA-256 twice was two fifths of an ingest's main thread). Its
    /// [`finish`](Self::finish) returns no hash.
    pub fn unhashed(sink: S) -> Self {
        NarEncoder { hasher: None, ..Self::new(sink) }
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            if let Some(h) = &mut self.hasher {
                h.update(&self.pending);
            }
            self.size += self.pending.len() as u64;
            self.sink.write_bytes(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    fn maybe_flush(&mut self) -> io::Result<()> {
        if self.pending.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    fn not_in_contents(&self, what: &str) -> io::Result<()> {
        if self.contents.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NarEncoder: {what} while file contents are incomplete"),
            ));
        }
        Ok(())
    }

    /// Starts a regular file of `len` bytes: writes everything up to and including the length
    /// field, then calls the sink's [`file_contents_begin`](NarSink::file_contents_begin).
    pub fn regular_begin(&mut self, executable: bool, len: u64) -> io::Result<()> {
        self.not_in_contents("regular_begin")?;
        put_str(&mut self.pending, wire::OPEN);
        put_str(&mut self.pending, wire::TYPE);
        put_str(&mut self.pending, wire::REGULAR);
        if executable {
            put_str(&mut self.pending, wire::EXECUTABLE);
            put_str(&mut self.pending, wire::EMPTY);
        }
        put_str(&mut self.pending, wire::CONTENTS);
        self.pending.extend_from_slice(&len.to_le_bytes());
        self.flush()?;
        self.sink.file_contents_begin(len)?;
        self.contents = Some((len, len));
        Ok(())
    }

    /// Writes contents bytes of the current regular file.
    pub fn regular_data(&mut self, data: &[u8]) -> io::Result<()> {
        let Some((len, left)) = self.contents.as_mut() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "NarEncoder: regular_data outside a regular file"));
        };
        if data.len() as u64 > *left {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NarEncoder: more contents than the declared {len} bytes"),
            ));
        }
        *left -= data.len() as u64;
        if let Some(h) = &mut self.hasher {
            h.update(data);
        }
        self.size += data.len() as u64;
        self.sink.write_bytes(data)
    }

    /// Ends the current regular file: calls the sink's
    /// [`file_contents_end`](NarSink::file_contents_end), then queues padding and `)`.
    pub fn regular_end(&mut self) -> io::Result<()> {
        match self.contents {
            Some((len, 0)) => {
                self.sink.file_contents_end()?;
                self.contents = None;
                self.pending.extend_from_slice(&[0u8; 8][..wire::padding_len(len)]);
                put_str(&mut self.pending, wire::CLOSE);
                self.maybe_flush()
            }
            Some((len, left)) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NarEncoder: file ended {left} bytes short of its declared {len} bytes"),
            )),
            None => Err(io::Error::new(io::ErrorKind::InvalidInput, "NarEncoder: regular_end outside a regular file")),
        }
    }

    /// Writes a whole symlink node.
    pub fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
        self.not_in_contents("symlink")?;
        put_str(&mut self.pending, wire::OPEN);
        put_str(&mut self.pending, wire::TYPE);
        put_str(&mut self.pending, wire::SYMLINK);
        put_str(&mut self.pending, wire::TARGET);
        put_str(&mut self.pending, target);
        put_str(&mut self.pending, wire::CLOSE);
        self.maybe_flush()
    }

    /// Starts a directory node.
    pub fn directory_begin(&mut self) -> io::Result<()> {
        self.not_in_contents("directory_begin")?;
        put_str(&mut self.pending, wire::OPEN);
        put_str(&mut self.pending, wire::TYPE);
        put_str(&mut self.pending, wire::DIRECTORY);
        self.maybe_flush()
    }

    /// Starts an entry of the current directory; its node follows.
    pub fn entry_begin(&mut self, name: &[u8]) -> io::Result<()> {
        self.not_in_contents("entry_begin")?;
        put_str(&mut self.pending, wire::ENTRY);
        put_str(&mut self.pending, wire::OPEN);
        put_str(&mut self.pending, wire::NAME);
        put_str(&mut self.pending, name);
        put_str(&mut self.pending, wire::NODE);
        self.maybe_flush()
    }

    /// Ends the current entry.
    pub fn entry_end(&mut self) -> io::Result<()> {
        self.not_in_contents("entry_end")?;
        put_str(&mut self.pending, wire::CLOSE);
        self.maybe_flush()
    }

    /// Ends the current directory.
    pub fn directory_end(&mut self) -> io::Result<()> {
        self.not_in_contents("directory_end")?;
        put_str(&mut self.pending, wire::CLOSE);
        self.maybe_flush()
    }

    /// Flushes what is queued and returns the size and SHA-256 of everything written (the hash is
    /// `None` for an [`unhashed`](Self::unhashed) encoder).
    pub fn finish(mut self) -> io::Result<(u64, Option<NarHash>)> {
        self.not_in_contents("finish")?;
        self.flush()?;
        Ok((self.size, self.hasher.take().map(|h| NarHash(h.finalize().into()))))
    }
}
