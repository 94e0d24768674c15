//! Rebuilding a compressed tarball's exact bytes from its decompressed stream.
//!
//! Storing the decompressed stream of a `.crate`, `.tgz` or `.tar.gz` lets versions of one source share
//! chunks; that is only allowed when the compressed file can be rebuilt byte for byte. [`analyze`] reads the
//! compressed file once, hands the decompressed bytes to the caller, and meanwhile races a fixed set of
//! candidate compressors (module `race`) against the original bytes; the first that reproduces every byte
//! becomes a [`Recipe`]. [`rebuild`] runs that recipe over the decompressed stream.
//!
//! Supported: single-member gzip whose deflate body was made by the C zlib (levels 1–9, windowBits 15,
//! memLevel 8, default strategy: Python's `gzip`/`tarfile`, older cargo, older node), by zlib-rs 0.6
//! (levels 1–9: cargo since it moved flate2 to zlib-rs) or by miniz_oxide 0.9 (flate2's default backend,
//! levels 1–10). Only levels consistent with the header's XFL byte are tried (2: level 9, 4: level 1,
//! 0: levels 2–8, anything else: all). The gzip header is kept literally in the recipe; the trailer is
//! recomputed. bzip2 and xz files are rebuilt whole by libbz2-rs and liblzma (module `stream`, which says
//! which files qualify). zstd is detected but not rebuilt (`analyze` returns `None`): its output changes
//! between library releases and with the size the writer pledged, and no `.tar.zst` was at hand to try.
//!
//! A recipe's output depends on the compressor's implementation, not only on its parameters: a different
//! zlib, zlib-rs or miniz_oxide release may emit different bytes for the same input, so these dependencies
//! are pinned exactly. Callers must still check the rebuilt bytes against the stored hash (they do anyway)
//! and must keep the compressed original whenever that check fails at ingest.
use std::io::{self, Read, Write};

mod gzip;
mod race;
mod stream;
pub(crate) mod zlib;

/// The compressed formats [`detect`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Codec {
    /// gzip (RFC 1952): `.tar.gz`, `.tgz`, `.crate`.
    Gzip,
    /// xz: `.tar.xz`.
    Xz,
    /// bzip2: `.tar.bz2`.
    Bzip2,
    /// Zstandard: `.tar.zst`.
    Zstd,
}

impl Codec {
    /// Lower-case name: `gzip`, `xz`, `bzip2`, `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Xz => "xz",
            Codec::Bzip2 => "bzip2",
            Codec::Zstd => "zstd",
        }
    }
}

/// Sniffs the codec from a file's first bytes (six are enough), not from its name.
pub fn detect(prefix: &[u8]) -> Option<Codec> {
    if prefix.starts_with(&[0x1f, 0x8b, 8]) {
        Some(Codec::Gzip)
    } else if prefix.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Codec::Xz)
    } else if prefix.len() >= 4 && prefix.starts_with(b"BZh") && (b'1'..=b'9').contains(&prefix[3]) {
        Some(Codec::Bzip2)
    } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Codec::Zstd)
    } else {
        None
    }
}

/// First byte of every encoded [`Recipe`].
const RECIPE_VERSION: u8 = 1;
const TAG_GZIP: u8 = 1;
const TAG_BZIP2: u8 = 2;
const TAG_XZ: u8 = 3;

/// How to rebuild a compressed file from its decompressed bytes. Stored in the index: see
/// [`Recipe::encode`] for the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Gzip(gzip::GzipRecipe),
    Stream(stream::StreamRecipe),
}

impl Recipe {
    /// Compact binary form: `[version = 1][codec tag]` then the codec's fields. For gzip (tag 1):
    /// backend (1 = C zlib, 2 = miniz_oxide, 3 = zlib-rs), level, windowBits, memLevel, strategy, the header's length as
    /// u32 little-endian, and the header bytes. For bzip2 (tag 2): the level. For xz (tag 3): preset,
    /// extreme (0/1), check id, dictionary size as u32 little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECIPE_VERSION];
        match &self.kind {
            Kind::Gzip(g) => {
                out.push(TAG_GZIP);
                gzip::encode(g, &mut out);
            }
            Kind::Stream(s) => {
                out.push(if s.codec() == Codec::Bzip2 { TAG_BZIP2 } else { TAG_XZ });
                stream::encode(s, &mut out);
            }
        }
        out
    }

    /// Parses [`Recipe::encode`]'s output. Strict (no trailing bytes, parameters in range, the gzip header
    /// must parse to exactly its stored length); never panics.
    pub fn decode(b: &[u8]) -> Result<Recipe, RecompressError> {
        let err = |e| RecompressError::Recipe(e);
        let [version, tag, rest @ ..] = b else { return Err(err(RecipeError::Truncated)) };
        if *version != RECIPE_VERSION {
            return Err(err(RecipeError::Version { expected: RECIPE_VERSION, got: *version }));
        }
        let kind = match *tag {
            TAG_GZIP => Kind::Gzip(gzip::decode(rest).map_err(err)?),
            TAG_BZIP2 => Kind::Stream(stream::decode(Codec::Bzip2, rest).map_err(err)?),
            TAG_XZ => Kind::Stream(stream::decode(Codec::Xz, rest).map_err(err)?),
            other => return Err(err(RecipeError::Unknown { what: "codec tag", got: other })),
        };
        Ok(Recipe { kind })
    }

    /// The codec this recipe rebuilds.
    pub fn codec(&self) -> Codec {
        match &self.kind {
            Kind::Gzip(_) => Codec::Gzip,
            Kind::Stream(s) => s.codec(),
        }
    }

    /// `"gzip"`, `"xz"`, …
    pub fn codec_name(&self) -> &'static str {
        self.codec().name()
    }

    /// Human-readable parameters, e.g. `zlib 1.2.13 level 9 windowBits 15 memLevel 8 strategy 0`.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Gzip(g) => format!("{}, {}-byte header", g.params.describe(), g.header.len()),
            Kind::Stream(s) => s.describe(),
        }
    }
}

/// What is wrong with a stored recipe.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecipeError {
    /// The recipe ends early.
    #[error("truncated")]
    Truncated,
    /// Bytes follow the recipe.
    #[error("trailing bytes")]
    TrailingBytes,
    /// Written by another format version.
    #[error("format version {got}, expected {expected}")]
    Version {
        /// The version this build reads.
        expected: u8,
        /// The version found.
        got: u8,
    },
    /// An unknown enum value.
    #[error("unknown {what} {got}")]
    Unknown {
        /// Which field.
        what: &'static str,
        /// Its value.
        got: u8,
    },
    /// Values that no analysis produces.
    #[error("{0}")]
    Invalid(&'static str),
}

/// Errors of [`analyze`], [`rebuild`] and [`Recipe::decode`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecompressError {
    /// Reading the compressed input failed.
    #[error("reading the compressed input at byte {offset}")]
    ReadInput {
        /// Compressed bytes read before the failure.
        offset: u64,
        /// The reader's error.
        #[source]
        source: io::Error,
    },
    /// The `content` callback of [`analyze`] failed.
    #[error("content callback failed at decompressed byte {offset}")]
    Content {
        /// Decompressed bytes delivered before the failing piece.
        offset: u64,
        /// The callback's error.
        #[source]
        source: io::Error,
    },
    /// Reading the decompressed content given to [`rebuild`] failed.
    #[error("reading the content to rebuild from at byte {offset}")]
    ReadContent {
        /// Content bytes read before the failure.
        offset: u64,
        /// The reader's error.
        #[source]
        source: io::Error,
    },
    /// Writing the rebuilt bytes failed.
    #[error("writing the rebuilt file at byte {offset}")]
    Write {
        /// Bytes written before the failure.
        offset: u64,
        /// The writer's error.
        #[source]
        source: io::Error,
    },
    /// A compressor could not be started or failed (out of memory, or a library bug).
    #[error("{codec} compressor: {detail}")]
    Encoder {
        /// Which codec.
        codec: &'static str,
        /// The library's complaint.
        detail: String,
    },
    /// A stored recipe does not decode.
    #[error("invalid recompression recipe: {0}")]
    Recipe(#[source] RecipeError),
}

/// `Read::read`, retrying on `Interrupted`.
fn io_read(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Buffered compressed input that counts what it has read (for error offsets).
pub(crate) struct Input<R> {
    r: R,
    buf: Box<[u8]>,
    lo: usize,
    hi: usize,
    offset: u64,
}

impl<R: Read> Input<R> {
    fn new(r: R) -> Input<R> {
        Input { r, buf: vec![0; 256 * 1024].into_boxed_slice(), lo: 0, hi: 0, offset: 0 }
    }

    /// Buffered bytes, reading more if there are none; empty at end of input.
    pub(crate) fn peek(&mut self) -> Result<&[u8], RecompressError> {
        if self.lo == self.hi {
            self.lo = 0;
            self.hi = io_read(&mut self.r, &mut self.buf)
                .map_err(|source| RecompressError::ReadInput { offset: self.offset, source })?;
            self.offset += self.hi as u64;
        }
        Ok(&self.buf[self.lo..self.hi])
    }

    /// Buffers at least `n` bytes (n ≤ buffer size) unless the input ends first.
    fn peek_at_least(&mut self, n: usize) -> Result<&[u8], RecompressError> {
        if self.hi - self.lo < n {
            self.buf.copy_within(self.lo..self.hi, 0);
            self.hi -= self.lo;
            self.lo = 0;
            while self.hi < n {
                let got = io_read(&mut self.r, &mut self.buf[self.hi..])
                    .map_err(|source| RecompressError::ReadInput { offset: self.offset, source })?;
                if got == 0 {
                    break;
                }
                self.hi += got;
                self.offset += got as u64;
            }
        }
        Ok(&self.buf[self.lo..self.hi])
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.lo = (self.lo + n).min(self.hi);
    }

    /// Fills `out` and returns true, or returns false if the input ends first.
    pub(crate) fn read_exact_or_eof(&mut self, out: &mut [u8]) -> Result<bool, RecompressError> {
        let data = self.peek_at_least(out.len())?;
        if data.len() < out.len() {
            return Ok(false);
        }
        out.copy_from_slice(&data[..out.len()]);
        self.consume(out.len());
        Ok(true)
    }
}

/// Finds a recipe that rebuilds `compressed` from its decompressed stream.
///
/// Reads `compressed` once and calls `content` with each piece of the decompressed stream, in order, while
/// every candidate compressor runs on the same pieces and is compared with the original bytes as they come.
/// Memory stays bounded (a few MiB per candidate at worst) whatever the file size.
///
/// Returns `Ok(Some(recipe))` only if a candidate reproduced the whole input, byte for byte, with nothing
/// left over; then `content` has seen the whole decompressed stream. Returns `Ok(None)` when the input is
/// not a supported format, is corrupt or truncated, has more than one member or trailing bytes, or no
/// candidate matches. **On `None`, `content` has seen only a prefix of the decompressed stream** (possibly
/// empty, possibly all of it): analysis stops as soon as every candidate has failed, so the caller must
/// discard what it received and store the compressed file as it is. `Err` only for an I/O error of
/// `compressed` or of `content`, or a compressor that cannot be started.
pub fn analyze(
    compressed: impl Read,
    mut content: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<Option<Recipe>, RecompressError> {
    let mut input = Input::new(compressed);
    let prefix = input.peek_at_least(6)?;
    match detect(prefix) {
        Some(Codec::Gzip) => Ok(gzip::analyze(&mut input, &mut content)?.map(|g| Recipe { kind: Kind::Gzip(g) })),
        Some(c @ (Codec::Bzip2 | Codec::Xz)) => {
            Ok(stream::analyze(c, &mut input, &mut content)?.map(|s| Recipe { kind: Kind::Stream(s) }))
        }
        _ => Ok(None),
    }
}

/// Decompresses `compressed`, handing its content to `content`: the cheap half of [`analyze`], for a file
/// whose recipe an earlier analysis of the same bytes found (the caller matches them by hash). `Ok(false)`
/// when the file does not decode as `recipe`'s codec (header, one member or stream, nothing after); the
/// caller then analyzes it after all. Decoding proves nothing about the recipe: only [`analyze`] does.
pub fn decompress(
    recipe: &Recipe,
    compressed: &[u8],
    mut content: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<bool, RecompressError> {
    match &recipe.kind {
        Kind::Gzip(g) => gzip::decompress(g, compressed, &mut content),
        Kind::Stream(s) => stream::decompress(s.codec(), compressed, &mut content),
    }
}

/// Compresses `content` (the decompressed stream) with `recipe`, writing the original file to `out`.
///
/// Given other content than [`analyze`] saw, it writes a valid compressed file of that content, not the
/// original: the caller verifies the result's hash.
pub fn rebuild(recipe: &Recipe, content: impl Read, out: impl Write) -> Result<(), RecompressError> {
    match &recipe.kind {
        Kind::Gzip(g) => gzip::rebuild(g, content, out),
        Kind::Stream(s) => stream::rebuild(s, content, out),
    }
}

#[cfg(test)]
mod tests;
