//! The validating, streaming NAR parser.
//!
//! One pass, bounded memory: a 64 KiB read buffer, the current entry path, and the last name
//! seen in each open directory. File contents are handed to the visitor in pieces as they
//! arrive and never collected. Directories are walked with an explicit stack rather than by
//! recursion, so a hostile archive cannot exhaust the call stack; [`MAX_DEPTH`] and
//! [`MAX_PATH_LEN`] bound that stack.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use super::error::{NarError, NarErrorKind};
use super::wire::{self, padding_len, quote_bytes, MAX_DEPTH, MAX_NAME_LEN, MAX_PATH_LEN, MAX_TAG_LEN, MAX_TARGET_LEN};
use super::NarSummary;
use crate::nix::hash::NarHash;

/// Size of the parser's read buffer, and thus the largest piece of contents it hands over.
const BUF_LEN: usize = 64 * 1024;

/// Receives the events of a NAR as [`parse`] validates it.
///
/// Events arrive in archive order and are already validated up to that point (names checked,
/// order checked), but the archive as a whole is only known to be valid when [`parse`] returns
/// `Ok`: a consumer that must not act on a bad archive has to be able to undo. Every method
/// defaults to doing nothing, so a visitor implements only what it needs. An error returned by
/// a method stops parsing and is reported as [`NarErrorKind::Output`].
pub trait NarVisitor {
    /// A regular file of `len` bytes starts; its contents begin at byte `contents_offset`.
    fn regular_begin(&mut self, executable: bool, len: u64, contents_offset: u64) -> io::Result<()> {
        let _ = (executable, len, contents_offset);
        Ok(())
    }
    /// The next piece of the current file's contents (never empty).
    fn regular_data(&mut self, data: &[u8]) -> io::Result<()> {
        let _ = data;
        Ok(())
    }
    /// The current file's contents are complete.
    fn regular_end(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// A symlink node (target non-empty, without NUL).
    fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
        let _ = target;
        Ok(())
    }
    /// A directory node starts.
    fn directory_begin(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// An entry of the current directory starts (name valid and in order); its node follows.
    fn entry_begin(&mut self, name: &[u8]) -> io::Result<()> {
        let _ = name;
        Ok(())
    }
    /// The current entry ends.
    fn entry_end(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// The current directory ends.
    fn directory_end(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Validates only.
impl NarVisitor for () {}

impl<V: NarVisitor + ?Sized> NarVisitor for &mut V {
    fn regular_begin(&mut self, executable: bool, len: u64, contents_offset: u64) -> io::Result<()> {
        (**self).regular_begin(executable, len, contents_offset)
    }
    fn regular_data(&mut self, data: &[u8]) -> io::Result<()> {
        (**self).regular_data(data)
    }
    fn regular_end(&mut self) -> io::Result<()> {
        (**self).regular_end()
    }
    fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
        (**self).symlink(target)
    }
    fn directory_begin(&mut self) -> io::Result<()> {
        (**self).directory_begin()
    }
    fn entry_begin(&mut self, name: &[u8]) -> io::Result<()> {
        (**self).entry_begin(name)
    }
    fn entry_end(&mut self) -> io::Result<()> {
        (**self).entry_end()
    }
    fn directory_end(&mut self) -> io::Result<()> {
        (**self).directory_end()
    }
}

/// Parses and validates a whole NAR from `r`, calling `visitor` for each event, and returns its
/// size and SHA-256.
///
/// Reads `r` to its end: anything after the root node is [`NarErrorKind::TrailingData`]. The
/// reader is buffered internally, so there is no need to wrap it in a `BufReader`.
pub fn parse<R: Read, V: NarVisitor + ?Sized>(r: R, visitor: &mut V) -> Result<NarSummary, NarError> {
    Parser {
        input: Input {
            inner: r,
            buf: vec![0u8; BUF_LEN].into_boxed_slice(),
            pos: 0,
            end: 0,
            offset: 0,
            hasher: Sha256::new(),
        },
        visitor,
        path: Vec::new(),
    }
    .run()
}

/// The buffered, hashing, position-tracking input. Every consumed byte is hashed exactly once.
struct Input<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// Bytes consumed so far: the parser's position in the NAR.
    offset: u64,
    hasher: Sha256,
}

impl<R: Read> Input<R> {
    /// Makes sure at least one byte is buffered; `Ok(false)` at end of input.
    fn fill(&mut self) -> Result<bool, NarErrorKind> {
        if self.pos < self.end {
            return Ok(true);
        }
        loop {
            match self.inner.read(&mut self.buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.pos = 0;
                    self.end = n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NarErrorKind::Io(e)),
            }
        }
    }

    /// Consumes up to `max` (> 0) buffered bytes, reading more if none are buffered.
    fn take(&mut self, max: u64) -> Result<&[u8], NarErrorKind> {
        if !self.fill()? {
            return Err(NarErrorKind::Truncated);
        }
        let n = (self.end - self.pos).min(usize::try_from(max).unwrap_or(usize::MAX));
        let start = self.pos;
        self.pos += n;
        self.offset += n as u64;
        let piece = &self.buf[start..start + n];
        self.hasher.update(piece);
        Ok(piece)
    }

    fn read_exact(&mut self, out: &mut [u8]) -> Result<(), NarErrorKind> {
        let mut filled = 0;
        while filled < out.len() {
            let piece = self.take((out.len() - filled) as u64)?;
            out[filled..filled + piece.len()].copy_from_slice(piece);
            filled += piece.len();
        }
        Ok(())
    }

    fn read_u64(&mut self) -> Result<u64, NarErrorKind> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// What [`Parser::node`] left open.
enum Node {
    /// A file or symlink, complete including its `)`.
    Leaf,
    /// A directory whose entries follow.
    Directory,
}

/// An open directory.
struct Frame {
    /// Name of the last entry begun, for the order check.
    prev: Option<Vec<u8>>,
    /// Length of `Parser::path` before the open entry's name was appended.
    path_len: usize,
}

struct Parser<'v, R, V: ?Sized> {
    input: Input<R>,
    visitor: &'v mut V,
    /// Entry path, `/a/b`, empty at the root.
    path: Vec<u8>,
}

impl<R: Read, V: NarVisitor + ?Sized> Parser<'_, R, V> {
    fn err_at(&self, kind: NarErrorKind, offset: u64) -> NarError {
        let path = if self.path.is_empty() { "/".to_owned() } else { String::from_utf8_lossy(&self.path).into_owned() };
        NarError::new(kind, offset, path)
    }

    /// For errors detected at the current position (EOF, I/O).
    fn here(&self, kind: NarErrorKind) -> NarError {
        self.err_at(kind, self.input.offset)
    }

    fn output(&self, r: io::Result<()>) -> Result<(), NarError> {
        r.map_err(|e| self.here(NarErrorKind::Output(e)))
    }

    fn u64(&mut self) -> Result<u64, NarError> {
        self.input.read_u64().map_err(|k| self.here(k))
    }

    fn read(&mut self, out: &mut [u8]) -> Result<(), NarError> {
        self.input.read_exact(out).map_err(|k| self.here(k))
    }

    fn padding(&mut self, len: u64) -> Result<(), NarError> {
        let start = self.input.offset;
        let mut pad = [0u8; 8];
        let pad = &mut pad[..padding_len(len)];
        self.read(pad)?;
        if pad.iter().any(|&b| b != 0) {
            return Err(self.err_at(NarErrorKind::NonZeroPadding, start));
        }
        Ok(())
    }

    /// Reads a string of at most `max` bytes; `what` names it in the error.
    fn string(&mut self, max: u64, what: &'static str) -> Result<Vec<u8>, NarError> {
        let start = self.input.offset;
        let len = self.u64()?;
        if len > max {
            return Err(self.err_at(NarErrorKind::StringTooLong { what, len, max }, start));
        }
        // `len <= max`, a small constant, so this cannot truncate or allocate much.
        let mut s = vec![0u8; len as usize];
        self.read(&mut s)?;
        self.padding(len)?;
        Ok(s)
    }

    /// Reads a tag into a stack buffer; returns it with its start offset.
    fn tag(&mut self) -> Result<(TagBuf, u64), NarError> {
        let start = self.input.offset;
        let len = self.u64()?;
        if len > MAX_TAG_LEN {
            let kind = NarErrorKind::StringTooLong { what: "tag", len, max: MAX_TAG_LEN };
            return Err(self.err_at(kind, start));
        }
        let mut tag = TagBuf { buf: [0u8; MAX_TAG_LEN as usize], len: len as usize };
        self.read(&mut tag.buf[..tag.len])?;
        self.padding(len)?;
        Ok((tag, start))
    }

    fn unexpected(&self, expected: &'static str, got: &TagBuf, start: u64) -> NarError {
        let kind = NarErrorKind::UnexpectedTag { expected, got: quote_bytes(got.as_bytes()) };
        self.err_at(kind, start)
    }

    fn expect(&mut self, tok: &'static [u8], expected: &'static str) -> Result<(), NarError> {
        let (tag, start) = self.tag()?;
        if tag.as_bytes() != tok {
            return Err(self.unexpected(expected, &tag, start));
        }
        Ok(())
    }

    fn run(mut self) -> Result<NarSummary, NarError> {
        // The magic has its own error, as it is what tells "not a NAR" from "a broken NAR".
        let len = self.u64()?;
        if len != wire::MAGIC.len() as u64 {
            return Err(self.err_at(NarErrorKind::BadMagic, 0));
        }
        let mut magic = [0u8; 13];
        self.read(&mut magic)?;
        if magic != wire::MAGIC {
            return Err(self.err_at(NarErrorKind::BadMagic, 0));
        }
        self.padding(len)?;

        let mut stack: Vec<Frame> = Vec::new();
        if let Node::Directory = self.node()? {
            stack.push(Frame { prev: None, path_len: 0 });
        }
        while let Some(frame) = stack.last_mut() {
            let (tag, start) = self.tag()?;
            match tag.as_bytes() {
                wire::CLOSE => {
                    let r = self.visitor.directory_end();
                    self.output(r)?;
                    stack.pop();
                    if let Some(parent) = stack.last() {
                        self.end_entry(parent.path_len)?;
                    }
                }
                wire::ENTRY => {
                    self.expect(wire::OPEN, "\"(\"")?;
                    self.expect(wire::NAME, "\"name\"")?;
                    let name_start = self.input.offset;
                    let name = self.string(MAX_NAME_LEN, "entry name")?;
                    if let Some(kind) = check_name(&name, frame.prev.as_deref()) {
                        return Err(self.err_at(kind, name_start));
                    }
                    if self.path.len() + 1 + name.len() > MAX_PATH_LEN {
                        let kind = NarErrorKind::PathTooLong { max: MAX_PATH_LEN };
                        return Err(self.err_at(kind, name_start));
                    }
                    self.expect(wire::NODE, "\"node\"")?;
                    frame.path_len = self.path.len();
                    self.path.push(b'/');
                    self.path.extend_from_slice(&name);
                    let r = self.visitor.entry_begin(&name);
                    frame.prev = Some(name);
                    self.output(r)?;
                    match self.node()? {
                        Node::Leaf => {
                            let path_len = frame.path_len;
                            self.end_entry(path_len)?;
                        }
                        Node::Directory => {
                            if stack.len() >= MAX_DEPTH {
                                let kind = NarErrorKind::TooDeep { max: MAX_DEPTH };
                                return Err(self.here(kind));
                            }
                            stack.push(Frame { prev: None, path_len: 0 });
                        }
                    }
                }
                _ => return Err(self.unexpected("\"entry\" or \")\"", &tag, start)),
            }
        }

        if self.input.fill().map_err(|k| self.here(k))? {
            return Err(self.here(NarErrorKind::TrailingData));
        }
        Ok(NarSummary { nar_size: self.input.offset, nar_hash: NarHash(self.input.hasher.finalize().into()) })
    }

    /// Reads the `)` that closes an entry and leaves it.
    fn end_entry(&mut self, path_len: usize) -> Result<(), NarError> {
        self.expect(wire::CLOSE, "\")\"")?;
        let r = self.visitor.entry_end();
        self.output(r)?;
        self.path.truncate(path_len);
        Ok(())
    }

    /// Reads a node up to its end, or up to its first entry if it is a directory.
    fn node(&mut self) -> Result<Node, NarError> {
        self.expect(wire::OPEN, "\"(\"")?;
        self.expect(wire::TYPE, "\"type\"")?;
        let (tag, start) = self.tag()?;
        match tag.as_bytes() {
            wire::REGULAR => {
                let (tag, start) = self.tag()?;
                let executable = match tag.as_bytes() {
                    wire::EXECUTABLE => {
                        self.expect(wire::EMPTY, "\"\"")?;
                        self.expect(wire::CONTENTS, "\"contents\"")?;
                        true
                    }
                    wire::CONTENTS => false,
                    _ => return Err(self.unexpected("\"executable\" or \"contents\"", &tag, start)),
                };
                let len = self.u64()?;
                let r = self.visitor.regular_begin(executable, len, self.input.offset);
                self.output(r)?;
                let mut left = len;
                while left > 0 {
                    let piece = match self.input.take(left) {
                        Ok(piece) => piece,
                        Err(kind) => return Err(self.here(kind)),
                    };
                    left -= piece.len() as u64;
                    let r = self.visitor.regular_data(piece);
                    self.output(r)?;
                }
                let r = self.visitor.regular_end();
                self.output(r)?;
                self.padding(len)?;
                self.expect(wire::CLOSE, "\")\"")?;
                Ok(Node::Leaf)
            }
            wire::SYMLINK => {
                self.expect(wire::TARGET, "\"target\"")?;
                let target_start = self.input.offset;
                let target = self.string(MAX_TARGET_LEN, "symlink target")?;
                let bad = if target.is_empty() {
                    Some(NarErrorKind::EmptySymlinkTarget)
                } else if target.contains(&0) {
                    Some(NarErrorKind::SymlinkTargetContainsNul { target: quote_bytes(&target) })
                } else {
                    None
                };
                if let Some(kind) = bad {
                    return Err(self.err_at(kind, target_start));
                }
                let r = self.visitor.symlink(&target);
                self.output(r)?;
                self.expect(wire::CLOSE, "\")\"")?;
                Ok(Node::Leaf)
            }
            wire::DIRECTORY => {
                let r = self.visitor.directory_begin();
                self.output(r)?;
                Ok(Node::Directory)
            }
            _ => Err(self.unexpected("\"regular\", \"symlink\" or \"directory\"", &tag, start)),
        }
    }
}

/// Nix's rules for entry names (`parseDump` in `libutil/archive.cc`), plus strict order.
fn check_name(name: &[u8], prev: Option<&[u8]>) -> Option<NarErrorKind> {
    if name.is_empty() {
        return Some(NarErrorKind::EmptyName);
    }
    if name == b"." || name == b".." {
        return Some(NarErrorKind::DotName { name: quote_bytes(name) });
    }
    if name.contains(&b'/') {
        return Some(NarErrorKind::NameContainsSlash { name: quote_bytes(name) });
    }
    if name.contains(&0) {
        return Some(NarErrorKind::NameContainsNul { name: quote_bytes(name) });
    }
    match prev {
        Some(prev) if name == prev => Some(NarErrorKind::DuplicateEntry { name: quote_bytes(name) }),
        Some(prev) if name < prev => {
            Some(NarErrorKind::UnsortedEntries { prev: quote_bytes(prev), name: quote_bytes(name) })
        }
        _ => None,
    }
}

/// A tag read into a fixed buffer.
struct TagBuf {
    buf: [u8; MAX_TAG_LEN as usize],
    len: usize,
}

impl TagBuf {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}
