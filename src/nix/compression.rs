//! How a binary cache compresses NAR files (`Compression:` in a narinfo, the extension of `nar/…`), and
//! a streaming decoder for each. Uploads (`gateway/upload.rs`) and upstream downloads (`upstream/`) read
//! through the same [`Decoder`], so both accept exactly the same files.

use std::io::{self, BufReader, Read};

/// A NAR file's compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NarCompression {
    /// `.nar`
    None,
    /// `.nar.xz`
    Xz,
    /// `.nar.zst`
    Zstd,
    /// `.nar.bz2`
    Bzip2,
}

impl NarCompression {
    /// The narinfo `Compression:` value.
    pub fn name(self) -> &'static str {
        match self {
            NarCompression::None => "none",
            NarCompression::Xz => "xz",
            NarCompression::Zstd => "zstd",
            NarCompression::Bzip2 => "bzip2",
        }
    }

    /// The file extension after `.nar`.
    pub fn extension(self) -> &'static str {
        match self {
            NarCompression::None => ".nar",
            NarCompression::Xz => ".nar.xz",
            NarCompression::Zstd => ".nar.zst",
            NarCompression::Bzip2 => ".nar.bz2",
        }
    }

    /// A narinfo's `Compression:` value; Nix reads a missing one as `bzip2` (its first caches' format).
    pub fn from_narinfo(value: Option<&str>) -> Option<NarCompression> {
        Some(match value.unwrap_or("bzip2") {
            "none" | "" => NarCompression::None,
            "xz" => NarCompression::Xz,
            "zstd" => NarCompression::Zstd,
            "bzip2" => NarCompression::Bzip2,
            _ => return None,
        })
    }
}

/// A NAR file decompressed as it is read. xz and bzip2 take concatenated streams, as Nix writes
/// them when compressing in parallel.
pub enum Decoder<R: Read> {
    /// Uncompressed.
    None(R),
    /// xz.
    Xz(xz2::read::XzDecoder<R>),
    /// zstd.
    Zstd(zstd::stream::read::Decoder<'static, BufReader<R>>),
    /// bzip2.
    Bzip2(bzip2::read::MultiBzDecoder<R>),
}

impl<R: Read> Decoder<R> {
    /// Decode `raw` compressed with `c`.
    pub fn new(c: NarCompression, raw: R) -> io::Result<Self> {
        Ok(match c {
            NarCompression::None => Decoder::None(raw),
            NarCompression::Xz => Decoder::Xz(xz2::read::XzDecoder::new_multi_decoder(raw)),
            NarCompression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::new(raw)?),
            NarCompression::Bzip2 => Decoder::Bzip2(bzip2::read::MultiBzDecoder::new(raw)),
        })
    }

    /// The compressed stream underneath.
    pub fn get_mut(&mut self) -> &mut R {
        match self {
            Decoder::None(r) => r,
            Decoder::Xz(d) => d.get_mut(),
            Decoder::Zstd(d) => d.get_mut().get_mut(),
            Decoder::Bzip2(d) => d.get_mut(),
        }
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::None(r) => r.read(out),
            Decoder::Xz(d) => d.read(out),
            Decoder::Zstd(d) => d.read(out),
            Decoder::Bzip2(d) => d.read(out),
        }
    }
}
