//! NAR listings: the tree behind a binary cache's `<hash>.ls` files, which let clients such as
//! `nix store ls` and `nix store cat` find a file in a NAR without downloading all of it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read};

use super::error::NarError;
use super::parser::{parse, NarVisitor};

/// One node of a NAR listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NarEntry {
    /// A regular file.
    Regular {
        /// Contents length in bytes.
        size: u64,
        /// Whether the executable flag is set.
        executable: bool,
        /// Byte offset of the contents in the NAR, so a reader can fetch just that range.
        nar_offset: u64,
    },
    /// A symlink.
    Symlink {
        /// The target (lossy UTF-8 if it was not UTF-8).
        target: String,
    },
    /// A directory.
    Directory {
        /// Entries by the bytes of their names, sorted like the NAR. Keyed by bytes, not lossy
        /// UTF-8: two names that are not UTF-8 must not collapse into one entry (fuzzing found that);
        /// only the JSON rendering is lossy, because JSON cannot hold raw bytes.
        entries: BTreeMap<Vec<u8>, NarEntry>,
    },
}

/// The listing of a whole NAR, as returned by [`list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarListing {
    /// The root node.
    pub root: NarEntry,
}

impl NarListing {
    /// Renders the listing as Nix 2.8 writes `.ls` files (`write-nar-listing=true`): compact
    /// JSON, `{"version":1,"root":…}`, keys in Nix's order, `executable` only when true, and
    /// Nix's string escaping. Byte-identical output lets a cache serve our listings and Nix's
    /// interchangeably.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"version\":1,\"root\":");
        write_entry(&mut out, &self.root);
        out.push('}');
        out
    }

    /// Finds an entry by path inside the NAR (`""` or `"/"` for the root, `"bin/hi"`,
    /// `"/bin/hi"`); symlinks are not followed.
    pub fn get(&self, path: &str) -> Option<&NarEntry> {
        let mut node = &self.root;
        for name in path.split('/').filter(|s| !s.is_empty()) {
            match node {
                NarEntry::Directory { entries } => node = entries.get(name.as_bytes())?,
                _ => return None,
            }
        }
        Some(node)
    }
}

/// Recursion depth is bounded by the parser's `MAX_DEPTH`.
fn write_entry(out: &mut String, entry: &NarEntry) {
    match entry {
        NarEntry::Regular { size, executable, nar_offset } => {
            let _ = write!(out, "{{\"type\":\"regular\",\"size\":{size}");
            if *executable {
                out.push_str(",\"executable\":true");
            }
            // Nix omits a zero offset; a real NAR never has one.
            if *nar_offset != 0 {
                let _ = write!(out, ",\"narOffset\":{nar_offset}");
            }
            out.push('}');
        }
        NarEntry::Symlink { target } => {
            out.push_str("{\"type\":\"symlink\",\"target\":");
            write_json_string(out, target);
            out.push('}');
        }
        NarEntry::Directory { entries } => {
            out.push_str("{\"type\":\"directory\",\"entries\":{");
            for (i, (name, child)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, &String::from_utf8_lossy(name));
                out.push(':');
                write_entry(out, child);
            }
            out.push_str("}}");
        }
    }
}

/// Nix 2.8's `toJSON` for strings: escapes `"` `\` `\n` `\r` `\t`, other control characters
/// as `\u00xx`, and leaves everything else (including non-ASCII) as is. serde_json would
/// write `\b` and `\f` instead, hence our own.
pub(super) fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Lists the NAR read from `r`, validating it completely.
///
/// Memory grows with the number of entries (the listing is the result), not with file sizes.
pub fn list<R: Read>(r: R) -> Result<NarListing, NarError> {
    list_bounded(r, usize::MAX)
        .map(|l| l.unwrap_or(NarListing { root: NarEntry::Directory { entries: BTreeMap::new() } }))
}

/// Like [`list`], but gives up (returning `None`) once the NAR has more than `max_entries` nodes, so a
/// hostile NAR of a million empty files costs a bounded amount of memory and time to refuse.
pub fn list_bounded<R: Read>(r: R, max_entries: usize) -> Result<Option<NarListing>, NarError> {
    let mut lister = Lister { left: max_entries, ..Lister::default() };
    match parse(r, &mut lister) {
        Err(_) if lister.over => return Ok(None),
        r => r?,
    };
    match lister.root {
        Some(root) => Ok(Some(NarListing { root })),
        // `parse` succeeded, so a root node was seen; this cannot happen.
        None => Err(NarError::new(super::NarErrorKind::Truncated, 0, "/".to_owned())),
    }
}

/// A directory's entries by the bytes of their names.
type Entries = BTreeMap<Vec<u8>, NarEntry>;

#[derive(Default)]
struct Lister {
    /// Open directories: their entries so far and the name of the entry being read.
    stack: Vec<(Entries, Vec<u8>)>,
    root: Option<NarEntry>,
    /// Nodes still allowed.
    left: usize,
    /// The NAR had more nodes than allowed.
    over: bool,
}

impl Lister {
    /// Count one more node; fails the parse once over the limit.
    fn count(&mut self) -> io::Result<()> {
        if self.left == 0 {
            self.over = true;
            return Err(io::Error::other("too many entries for a listing"));
        }
        self.left -= 1;
        Ok(())
    }

    fn complete(&mut self, entry: NarEntry) {
        match self.stack.last_mut() {
            Some((entries, name)) => {
                entries.insert(std::mem::take(name), entry);
            }
            None => self.root = Some(entry),
        }
    }
}

impl NarVisitor for Lister {
    fn regular_begin(&mut self, executable: bool, len: u64, contents_offset: u64) -> io::Result<()> {
        self.count()?;
        self.complete(NarEntry::Regular { size: len, executable, nar_offset: contents_offset });
        Ok(())
    }

    fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
        self.count()?;
        self.complete(NarEntry::Symlink { target: String::from_utf8_lossy(target).into_owned() });
        Ok(())
    }

    fn directory_begin(&mut self) -> io::Result<()> {
        self.count()?;
        self.stack.push((BTreeMap::new(), Vec::new()));
        Ok(())
    }

    fn entry_begin(&mut self, name: &[u8]) -> io::Result<()> {
        if let Some((_, current)) = self.stack.last_mut() {
            *current = name.to_vec();
        }
        Ok(())
    }

    fn directory_end(&mut self) -> io::Result<()> {
        if let Some((entries, _)) = self.stack.pop() {
            self.complete(NarEntry::Directory { entries });
        }
        Ok(())
    }
}
