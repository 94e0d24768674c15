//! Dedup that survives rebuilds: store-path hash parts are taken out of NAR bytes before chunking.
//!
//! A package rebuilt only because a dependency changed differs from the old build in nothing but the
//! 32-character hash parts of `/nix/store/<hash>-…` strings (its references' and its own). Those sit
//! every few KiB in wrappers, RPATHs and string tables, so nearly every chunk of the rebuild is new.
//! [`Normalizer`] replaces each hash part with a placeholder (`e` × 32; `e` is not a nix32 digit, so a
//! placeholder is never taken for a hash) and remembers the original: chunk boundaries and chunk
//! contents then no longer depend on the hashes. The ingest stores the *normalized* chunk as an ordinary
//! block (shared by every rebuild) and the real chunk, which the DAG names as always, as a small
//! `Form::Patched` record (`store/patch.rs`): "that block, with these bytes put back". Every
//! `/nix/store/<32 nix32 chars>` occurrence is normalized, which covers the references and the path
//! itself without needing the narinfo, so `add --nar` and uploads get the same treatment.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

use crate::nix::nar::NarSink;
#[cfg(test)]
use crate::store::patch::{apply_patches, encode_patches};

/// What precedes a hash part.
const PREFIX: &[u8] = b"/nix/store/";
/// Hash part length.
pub const HASH_LEN: usize = 32;
/// The byte a hash part is replaced with.
pub const PLACEHOLDER: u8 = b'e';
/// Bytes held back between writes: a match may start in them and end in the next write.
const HOLD: usize = PREFIX.len() + HASH_LEN - 1;

fn is_nix32(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'a'..=b'd' | b'f'..=b'n' | b'p'..=b's' | b'v'..=b'z')
}

/// A hash part taken out of the stream: where it started and what it was.
pub type Removed = (u64, [u8; HASH_LEN]);

/// Hash parts removed so far and not yet claimed by a chunk, in stream order.
pub type Removals = Rc<RefCell<VecDeque<Removed>>>;

/// A [`NarSink`] adapter that normalizes the byte stream and passes it, with the NAR-aware hooks at the
/// same offsets (normalizing never changes a length), to `inner`.
pub struct Normalizer<S> {
    inner: S,
    held: Vec<u8>,
    /// Stream offset of `held[0]`.
    held_at: u64,
    removed: Removals,
}

impl<S: NarSink> Normalizer<S> {
    /// Normalize into `inner`; removed hash parts are pushed onto `removed`.
    pub fn new(inner: S, removed: Removals) -> Self {
        Normalizer { inner, held: Vec::new(), held_at: 0, removed }
    }

    /// The sink, once the stream has ended (everything held was flushed by the last hook or `finish`).
    pub fn finish(mut self) -> io::Result<S> {
        self.flush_all()?;
        Ok(self.inner)
    }

    /// Replace every complete match in the held bytes, then pass on all but the last `keep` of them: a
    /// match starting there may still be completed by the next write (with `keep = HOLD` every match
    /// starting before the kept bytes is complete, so nothing is looked at twice).
    fn scan(&mut self, keep: usize) -> io::Result<()> {
        let buf = &mut self.held;
        let mut i = 0;
        while let Some(j) = memfind(&buf[i..], PREFIX).map(|j| i + j) {
            let h = j + PREFIX.len();
            if h + HASH_LEN > buf.len() {
                break;
            }
            let part = &mut buf[h..h + HASH_LEN];
            if part.iter().all(|&b| is_nix32(b)) {
                let mut orig = [0u8; HASH_LEN];
                orig.copy_from_slice(part);
                part.fill(PLACEHOLDER);
                self.removed.borrow_mut().push_back((self.held_at + h as u64, orig));
                i = h + HASH_LEN;
            } else {
                i = j + 1;
            }
        }
        let out = buf.len() - keep.min(buf.len());
        if out > 0 {
            self.inner.write_bytes(&self.held[..out])?;
            self.held.drain(..out);
            self.held_at += out as u64;
        }
        Ok(())
    }

    fn flush_all(&mut self) -> io::Result<()> {
        self.scan(0)
    }
}

fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

impl<S: NarSink> NarSink for Normalizer<S> {
    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.held.extend_from_slice(bytes);
        if self.held.len() > HOLD {
            self.scan(HOLD)?;
        }
        Ok(())
    }

    // A store path never spans a hook (file contents are framed by NAR tokens), so a hook flushes.
    fn file_contents_begin(&mut self, len: u64) -> io::Result<()> {
        self.flush_all()?;
        self.inner.file_contents_begin(len)
    }

    fn file_contents_end(&mut self) -> io::Result<()> {
        self.flush_all()?;
        self.inner.file_contents_end()
    }
}

/// The removed hash parts that overlap the chunk at `start..start + chunk.len()`, as patches relative
/// to the chunk: `(offset in chunk, original bytes)`. Parts wholly before `start + len` are taken off
/// `removed`; one that runs into the next chunk stays for it.
pub fn patches_for(removed: &Removals, start: u64, len: usize) -> Vec<(u32, Vec<u8>)> {
    let end = start + len as u64;
    let mut q = removed.borrow_mut();
    let mut out = Vec::new();
    while let Some(&(at, orig)) = q.front() {
        if at >= end {
            break;
        }
        let s = at.max(start);
        let e = (at + HASH_LEN as u64).min(end);
        if e > s {
            out.push(((s - start) as u32, orig[(s - at) as usize..(e - at) as usize].to_vec()));
        }
        if at + HASH_LEN as u64 <= end {
            q.pop_front();
        } else {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(Vec<u8>, Vec<(u64, &'static str)>);
    impl NarSink for Collect {
        fn write_bytes(&mut self, b: &[u8]) -> io::Result<()> {
            self.0.extend_from_slice(b);
            Ok(())
        }
        fn file_contents_begin(&mut self, _: u64) -> io::Result<()> {
            self.1.push((self.0.len() as u64, "begin"));
            Ok(())
        }
    }

    const H1: &str = "0123456789abcdfghijklmnpqrsvwxyz";
    const H2: &str = "zyxwvsrqpnmlkjihgfdcba9876543210";

    fn normalize(input: &[u8], split: usize) -> (Vec<u8>, Vec<Removed>) {
        let removed = Removals::default();
        let mut n = Normalizer::new(Collect(Vec::new(), Vec::new()), removed.clone());
        for piece in input.chunks(split.max(1)) {
            n.write_bytes(piece).unwrap();
        }
        let out = n.finish().unwrap().0;
        let r = removed.borrow().iter().copied().collect();
        (out, r)
    }

    #[test]
    fn hash_parts_are_replaced_wherever_writes_split_them() {
        let text =
            format!("#!/bin/sh\nexec /nix/store/{H1}-dep/bin/x \"$@\" # /nix/store/{H2}-self\n/nix/store/short-x\n");
        for split in [1, 2, 7, 11, 42, 43, 1000] {
            let (out, removed) = normalize(text.as_bytes(), split);
            assert_eq!(out.len(), text.len(), "split {split}");
            let want = text.replace(H1, &"e".repeat(32)).replace(H2, &"e".repeat(32));
            assert_eq!(String::from_utf8(out).unwrap(), want, "split {split}");
            assert_eq!(removed.len(), 2);
            assert_eq!(&removed[0].1, H1.as_bytes());
            assert_eq!(&text.as_bytes()[removed[1].0 as usize..][..32], H2.as_bytes());
        }
    }

    #[test]
    fn non_hashes_are_left_alone() {
        // 'e' is no nix32 digit; a prefix at the very end; a hash cut short.
        let text = format!("/nix/store/{}-x /nix/store/{} /nix/store/", "e".repeat(32), &H1[..20]);
        let (out, removed) = normalize(text.as_bytes(), 5);
        assert_eq!(out, text.as_bytes());
        assert!(removed.is_empty());
    }

    #[test]
    fn patches_split_across_chunks_rebuild_the_original() {
        let text = format!("aaaa/nix/store/{H1}-x bbbb /nix/store/{H2}-y");
        let (norm, removed) = normalize(text.as_bytes(), 3);
        let q: Removals = Rc::new(RefCell::new(removed.into_iter().collect()));
        // Cut in the middle of the first hash part.
        let mut rebuilt = Vec::new();
        let mut pos = 0;
        for len in [20, 30, norm.len() - 50] {
            let mut chunk = norm[pos..pos + len].to_vec();
            let p = patches_for(&q, pos as u64, len);
            apply_patches(&mut chunk, &encode_patches(&p)).unwrap();
            rebuilt.extend_from_slice(&chunk);
            pos += len;
        }
        assert_eq!(rebuilt, text.as_bytes());
        assert!(q.borrow().is_empty());
    }

    /// Any stream, cut into writes and into chunks anywhere: the chunks with their patches put back are the
    /// stream, and the normalized stream holds no complete hash part any more.
    #[test]
    fn random_streams_round_trip_under_any_split() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        const DIGITS: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
        for _ in 0..200 {
            let mut text = Vec::new();
            while text.len() < 3000 {
                match next(4) {
                    0 => {
                        text.extend_from_slice(PREFIX);
                        let n = if next(5) == 0 { next(40) } else { 32 };
                        text.extend((0..n).map(|_| DIGITS[next(DIGITS.len() as u64) as usize]));
                    }
                    1 => text.extend_from_slice(&PREFIX[..next(PREFIX.len() as u64) as usize]),
                    _ => text.extend((0..next(50)).map(|_| next(256) as u8)),
                }
            }
            let split = 1 + next(100) as usize;
            let (norm, removed) = normalize(&text, split);
            assert_eq!(norm.len(), text.len());
            let q: Removals = Rc::new(RefCell::new(removed.into_iter().collect()));
            let (mut pos, mut rebuilt) = (0usize, Vec::new());
            while pos < norm.len() {
                let len = (1 + next(200) as usize).min(norm.len() - pos);
                let mut chunk = norm[pos..pos + len].to_vec();
                apply_patches(&mut chunk, &encode_patches(&patches_for(&q, pos as u64, len))).unwrap();
                rebuilt.extend_from_slice(&chunk);
                pos += len;
            }
            assert_eq!(rebuilt, text);
            assert!(q.borrow().is_empty());
        }
    }
}
