//! Tar-aware boundaries: the same cut points for a file inside a tarball as inside a NAR.
//!
//! A tarball's decompressed stream (`src/recompress`) is chunked like a flat file, but it holds the same
//! files as the unpacked tree next to it in the store. The NAR chunker gives every file of at least the
//! large-file threshold chunk boundaries of its own ([`super::ChunkerConfig::large_file_threshold`]);
//! [`TarSplit`] reads the tar headers going by and tells the chunker where each regular member's contents
//! begin and end, so those files are cut exactly as in the NAR and their chunks are shared whole.
//!
//! Only boundaries depend on the parsing: every byte is passed on unchanged and in order, whatever the
//! input. A stream that stops looking like a tar (bad checksum, unknown layout) is passed on without
//! further boundaries, so a wrong guess costs dedup, never data. Written here: the `tar` crate reads
//! archives from a `Read` and owns the buffering; this needs a push parser that only watches.

use std::io;

use crate::nix::nar::NarSink;

const BLOCK: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Gathering a 512-byte header.
    Header,
    /// Inside a member's data: bytes left, padding after it, whether it is a regular file's contents.
    Data { left: u64, pad: u64, file: bool },
    /// Padding to the next 512-byte block.
    Pad { left: u64 },
    /// Not (or no longer) a tar stream: pass bytes on.
    Off,
}

/// Passes a tar stream on to `inner`, announcing regular members' contents as NAR file contents.
pub struct TarSplit<S> {
    inner: S,
    state: State,
    header: [u8; BLOCK],
    have: usize,
}

impl<S: NarSink> TarSplit<S> {
    /// Watch the stream about to be written to `inner`.
    pub fn new(inner: S) -> Self {
        TarSplit { inner, state: State::Header, header: [0; BLOCK], have: 0 }
    }

    /// Pass `bytes` on, announcing member contents as they begin and end.
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.state {
                State::Off => return self.inner.write_bytes(bytes),
                State::Header => {
                    let n = (BLOCK - self.have).min(bytes.len());
                    self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                    self.have += n;
                    self.inner.write_bytes(&bytes[..n])?;
                    bytes = &bytes[n..];
                    if self.have == BLOCK {
                        self.have = 0;
                        self.state = next_after_header(&self.header);
                        if let State::Data { left, file: true, .. } = self.state {
                            self.inner.file_contents_begin(left)?;
                        }
                    }
                }
                State::Data { left, pad, file } => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    self.inner.write_bytes(&bytes[..n])?;
                    bytes = &bytes[n..];
                    let left = left - n as u64;
                    if left > 0 {
                        self.state = State::Data { left, pad, file };
                    } else {
                        if file {
                            self.inner.file_contents_end()?;
                        }
                        self.state = if pad > 0 { State::Pad { left: pad } } else { State::Header };
                    }
                }
                State::Pad { left } => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    self.inner.write_bytes(&bytes[..n])?;
                    bytes = &bytes[n..];
                    let left = left - n as u64;
                    self.state = if left > 0 { State::Pad { left } } else { State::Header };
                }
            }
        }
        Ok(())
    }

    /// End of the stream: close a member cut short, and hand `inner` back.
    pub fn finish(mut self) -> io::Result<S> {
        if let State::Data { file: true, .. } = self.state {
            self.inner.file_contents_end()?;
        }
        Ok(self.inner)
    }
}

/// What follows a complete header block.
fn next_after_header(h: &[u8; BLOCK]) -> State {
    // Two zero blocks end an archive; one is enough to stop looking.
    if h.iter().all(|&b| b == 0) || !checksum_ok(h) {
        return State::Off;
    }
    let Some(size) = size_field(&h[124..136]) else { return State::Off };
    if size == 0 {
        return State::Header;
    }
    // Regular files (`0`, old `\0`, contiguous `7`) hold file contents; pax and GNU long-name records,
    // links, directories and the rest are metadata or unusual, passed on as they are.
    let file = matches!(h[156], b'0' | 0 | b'7');
    let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
    State::Data { left: size, pad, file }
}

/// The header checksum: the sum of its bytes with the checksum field read as spaces (unsigned, as POSIX
/// says; some old writers summed signed bytes, which is accepted too).
fn checksum_ok(h: &[u8; BLOCK]) -> bool {
    let Some(stored) = octal(&h[148..156]) else { return false };
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed)
}

/// A size field: octal digits (leading spaces, trailing NUL or space), or GNU's base-256 when the
/// first byte's top bit is set.
fn size_field(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(f[0] & 0x7f);
        for &b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    octal(f)
}

fn octal(f: &[u8]) -> Option<u64> {
    let s = f.iter().skip_while(|&&b| b == b' ').take_while(|&&b| b != 0 && b != b' ');
    let mut v: u64 = 0;
    let mut digits = 0;
    for &b in s {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what a chunker would see: bytes, and where contents begin and end.
    #[derive(Default)]
    struct Log {
        bytes: Vec<u8>,
        events: Vec<(char, u64)>,
    }

    impl NarSink for Log {
        fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.bytes.extend_from_slice(bytes);
            Ok(())
        }
        fn file_contents_begin(&mut self, len: u64) -> io::Result<()> {
            self.events.push(('b', self.bytes.len() as u64));
            self.events.push(('n', len));
            Ok(())
        }
        fn file_contents_end(&mut self) -> io::Result<()> {
            self.events.push(('e', self.bytes.len() as u64));
            Ok(())
        }
    }

    fn split(data: &[u8], piece: usize) -> Log {
        let mut t = TarSplit::new(Log::default());
        for p in data.chunks(piece.max(1)) {
            t.write(p).unwrap();
        }
        t.finish().unwrap()
    }

    /// A tar made by GNU tar (the real tool) of files whose contents are known.
    fn gnu_tar(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        let out = std::process::Command::new("tar")
            .args(["--sort=name", "--format=gnu", "-cf", "-", "-C"])
            .arg(dir.path())
            .arg(".")
            .output()
            .expect("GNU tar");
        assert!(out.status.success());
        out.stdout
    }

    #[test]
    fn regular_members_are_announced_where_their_contents_lie() {
        let long_name = format!("{}/file.txt", "d".repeat(120)); // needs a GNU long-name record
        let files = [
            ("a.txt", vec![b'a'; 1000]),
            ("b.bin", (0..70_000u32).map(|i| (i * 7) as u8).collect()),
            ("empty", Vec::new()),
            (long_name.as_str(), vec![b'z'; 512]),
        ];
        let tar = gnu_tar(&files);
        for piece in [usize::MAX, 511, 1] {
            let log = split(&tar, piece);
            assert!(log.bytes == tar, "bytes pass through unchanged");
            // Each non-empty file: begin at its contents, the announced length, end after it.
            let mut found = 0;
            for w in log.events.chunks(3) {
                let [('b', at), ('n', len), ('e', end)] = *w else { panic!("{:?}", log.events) };
                assert_eq!(end - at, len);
                let body = &tar[at as usize..end as usize];
                assert!(files.iter().any(|(_, b)| b.as_slice() == body), "announced bytes are a file's contents");
                found += 1;
            }
            assert_eq!(found, 3, "{:?}", log.events);
        }
    }

    #[test]
    fn anything_else_passes_through_without_boundaries() {
        let mut x = 7u64;
        let noise: Vec<u8> = (0..5000)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 33) as u8
            })
            .collect();
        for data in [&noise[..], &[0u8; 2048][..], b"short", &[]] {
            let log = split(data, 100);
            assert!(log.bytes == data);
            assert!(log.events.is_empty());
        }
        // A tar cut off inside a member: the member is closed, the bytes are all there.
        let tar = gnu_tar(&[("f", vec![1u8; 5000])]);
        let log = split(&tar[..512 + 700], 64);
        assert!(log.bytes == tar[..512 + 700]);
        assert_eq!(log.events.last().map(|e| e.0), Some('e'));
        // A damaged header checksum stops the boundaries, not the bytes.
        let mut bad = tar.clone();
        bad[148] = b'9';
        let log = split(&bad, 4096);
        assert!(log.bytes == bad && log.events.is_empty());
    }

    #[test]
    fn size_fields() {
        assert_eq!(size_field(b"00000001750\0"), Some(1000));
        assert_eq!(size_field(b"     1750 \0\0"), Some(1000));
        assert_eq!(size_field(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(size_field(b"0000000017x0"), None);
        assert_eq!(size_field(b"\0\0\0\0\0\0\0\0\0\0\0\0"), None);
        assert_eq!(size_field(&[0xff; 12]), None, "overflow");
    }
}
