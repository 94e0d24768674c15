//! NAR: the validating streaming parser behind `copy_validated`, `list` and `restore`.
//!
//! Properties:
//! - `copy_validated` accepts exactly what `list` accepts (one parser, two visitors);
//! - on success the re-emitted bytes equal the input byte for byte, `nar_size` is the input length and
//!   `nar_hash` its SHA-256 (the parser only accepts canonical NARs);
//! - the chunker hooks bracket exactly the declared contents bytes of each regular file;
//! - every file in the listing has a `nar_offset`/`size` that points at its contents in the NAR;
//!   and the listing has as many entries as the NAR (fixed finding: non-UTF-8 names used to collide);
//! - the verdict does not depend on how the reader splits the input (short reads);
//! - nothing panics, and memory stays bounded whatever lengths the input declares.
#![no_main]

use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use nixdag::nix::hash::NarHash;
use nixdag::nix::nar::{copy_validated, list, parse, NarEntry, NarSink, NarVisitor, WriteSink};

/// A sink that checks the `file_contents_begin`/`file_contents_end` contract while collecting bytes.
#[derive(Default)]
struct HookCheck {
    out: Vec<u8>,
    /// (offset where contents start, declared length) while inside a file's contents.
    open: Option<(usize, u64)>,
    files: usize,
}

impl NarSink for HookCheck {
    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some((start, len)) = self.open {
            assert!(
                (self.out.len() - start + bytes.len()) as u64 <= len,
                "more contents bytes written than the {len} declared"
            );
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }
    fn file_contents_begin(&mut self, len: u64) -> io::Result<()> {
        assert!(self.open.is_none(), "nested file_contents_begin");
        // The u64 length field was written right before the hook.
        assert!(self.out.len() >= 8);
        assert_eq!(self.out[self.out.len() - 8..], len.to_le_bytes(), "hook length differs from the wire");
        self.open = Some((self.out.len(), len));
        Ok(())
    }
    fn file_contents_end(&mut self) -> io::Result<()> {
        let (start, len) = self.open.take().expect("file_contents_end without begin");
        assert_eq!((self.out.len() - start) as u64, len, "contents hook bracket has the wrong length");
        self.files += 1;
        Ok(())
    }
}

/// Hands out the input in pieces of 1..=13 bytes (a fixed pattern), to exercise buffer refills at
/// every position.
struct Dribble<'a> {
    data: &'a [u8],
    n: usize,
}

impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.n += 1;
        let k = (self.n * 7 % 13 + 1).min(buf.len()).min(self.data.len());
        buf[..k].copy_from_slice(&self.data[..k]);
        self.data = &self.data[k..];
        Ok(k)
    }
}

/// Counts directory entries as the parser reports them.
struct CountEntries(u64);

impl NarVisitor for CountEntries {
    fn entry_begin(&mut self, _: &[u8]) -> io::Result<()> {
        self.0 += 1;
        Ok(())
    }
}

/// Checks every regular file's `nar_offset`/`size` against the NAR (they are what a client uses to
/// fetch one file with a range request) and returns the number of entries in the listing.
fn check_listing(entry: &NarEntry, nar: &[u8]) -> u64 {
    match entry {
        NarEntry::Regular { size, nar_offset, .. } => {
            let (off, size) = (*nar_offset as usize, *size as usize);
            assert!(off >= 8 && off + size <= nar.len(), "file at {off}+{size} outside the {}-byte NAR", nar.len());
            assert_eq!(nar[off - 8..off], (size as u64).to_le_bytes(), "nar_offset does not follow the length field");
            0
        }
        NarEntry::Symlink { target } => {
            assert!(!target.is_empty());
            0
        }
        NarEntry::Directory { entries } => entries.values().map(|e| 1 + check_listing(e, nar)).sum(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut sink = WriteSink(Vec::new());
    let copied = copy_validated(data, &mut sink);
    let listed = list(data);

    assert_eq!(
        copied.is_ok(),
        listed.is_ok(),
        "copy_validated and list disagree: {copied:?} vs {:?}",
        listed.as_ref().err()
    );

    match &copied {
        Ok(summary) => {
            assert!(sink.0 == data, "re-emitted NAR differs from the validated input");
            assert_eq!(summary.nar_size, data.len() as u64);
            assert_eq!(summary.nar_hash, NarHash::of_bytes(data));
            let listing = listed.unwrap();
            let json = listing.to_json();
            assert!(json.starts_with('{'));
            let listed_entries = check_listing(&listing.root, data);
            let mut count = CountEntries(0);
            parse(data, &mut count).expect("parse rejects what copy_validated accepted");
            assert_eq!(listed_entries, count.0, "the listing lost entries");
        }
        Err(e) => {
            // Error rendering must not panic, and offsets point inside (or just past) the input.
            let _ = e.to_string();
            let _ = e.is_malformed();
            assert!(e.offset() <= data.len() as u64, "error offset {} past input length {}", e.offset(), data.len());
        }
    }

    // Same input through short reads and the hook-checking sink: same verdict, same result.
    let mut hooks = HookCheck::default();
    let dribbled = copy_validated(Dribble { data, n: 0 }, &mut hooks);
    match (&copied, &dribbled) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            assert!(hooks.out == data);
            assert!(hooks.open.is_none());
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "errors differ with short reads"),
        _ => panic!("verdict depends on read sizes: {copied:?} vs {dribbled:?}"),
    }
});
