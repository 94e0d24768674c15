//! Content-defined chunking (FastCDC 2020) with NAR-aware boundaries.
//!
//! Why NAR-aware: plain CDC over a NAR lets a file's chunks depend on what precedes it in the archive only
//! until the first boundary re-synchronises, but a large file that starts mid-chunk still shares that first
//! chunk with its predecessor's tail. When a regular file's contents are at least
//! [`ChunkerConfig::large_file_threshold`] bytes, the chunker ends the current chunk where the contents
//! begin and again where they end, so the file's chunks are a function of its bytes alone (a renamed
//! directory, a new sibling or a different archive order no longer changes them). Smaller files and the NAR
//! framing are packed into ordinary CDC chunks, so tiny files never become tiny blocks.
//!
//! The chunker is push-based: bytes arrive through [`NarSink`] (or [`Chunker::write`] for flat files) and
//! finished chunks leave through a callback. It buffers at most twice `max_size`.

use std::io;

use fastcdc::v2020::{self, Normalization};

mod tar;
pub use tar::TarSplit;

use crate::nix::nar::NarSink;

/// Chunking parameters. Construct with [`ChunkerConfig::default`] and adjust with the builder methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerConfig {
    min_size: usize,
    avg_size: usize,
    max_size: usize,
    large_file_threshold: u64,
    fixed: bool,
}

/// Error for chunker parameters outside what FastCDC supports.
#[derive(Debug, thiserror::Error)]
#[error("invalid chunker parameters: {0}")]
pub struct ChunkerConfigError(String);

impl Default for ChunkerConfig {
    /// 16/64/256 KiB, the parameters attic uses, so dedup compares on equal terms (DESIGN §3).
    fn default() -> Self {
        ChunkerConfig {
            min_size: 16 * 1024,
            avg_size: 64 * 1024,
            max_size: 256 * 1024,
            large_file_threshold: 64 * 1024,
            fixed: false,
        }
    }
}

impl ChunkerConfig {
    /// FastCDC with the given minimum, average and maximum chunk sizes (bytes, even numbers).
    pub fn cdc(min: usize, avg: usize, max: usize) -> Result<Self, ChunkerConfigError> {
        let even = min.is_multiple_of(2) && avg.is_multiple_of(2) && max.is_multiple_of(2);
        let in_bounds = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min)
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg)
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&max);
        if !(in_bounds && min <= avg && avg <= max && even) {
            return Err(ChunkerConfigError(format!(
                "cdc:{min}/{avg}/{max} (need even sizes, min {}..={}, avg {}..={}, max {}..={}, min <= avg <= max)",
                v2020::MINIMUM_MIN,
                v2020::MINIMUM_MAX,
                v2020::AVERAGE_MIN,
                v2020::AVERAGE_MAX,
                v2020::MAXIMUM_MIN,
                v2020::MAXIMUM_MAX
            )));
        }
        Ok(ChunkerConfig { min_size: min, avg_size: avg, max_size: max, ..Self::default() })
    }

    /// Fixed-size chunks of `size` bytes. Exists to reproduce other tools' layouts (e.g. `ipfs-car pack`'s
    /// 1 MiB chunks) so DAG shapes can be compared block for block; it dedups poorly.
    pub fn fixed(size: usize) -> Result<Self, ChunkerConfigError> {
        if size == 0 || size > 16 * 1024 * 1024 {
            return Err(ChunkerConfigError(format!("fixed:{size} (need 1..=16777216)")));
        }
        Ok(ChunkerConfig {
            min_size: size,
            avg_size: size,
            max_size: size,
            large_file_threshold: u64::MAX,
            fixed: true,
        })
    }

    /// Parse `cdc:MIN/AVG/MAX` or `fixed:SIZE` (sizes in bytes, or with a `K`/`M` suffix for KiB/MiB),
    /// optionally followed by `,files=SIZE` (the NAR-aware threshold, default 64K) or `,files=off`.
    pub fn parse(s: &str) -> Result<Self, ChunkerConfigError> {
        match s.split_once(",files=") {
            Some((base, t)) => {
                let cfg = Self::parse_sizes(base)?;
                let threshold = match t {
                    "off" => u64::MAX,
                    _ => Self::size(t)? as u64,
                };
                if cfg.fixed && threshold != u64::MAX {
                    return Err(ChunkerConfigError(format!("{s:?}: fixed-size chunks have no NAR-aware boundaries")));
                }
                Ok(cfg.with_large_file_threshold(threshold))
            }
            None => Self::parse_sizes(s),
        }
    }

    fn size(t: &str) -> Result<usize, ChunkerConfigError> {
        let (num, mul) = match t.as_bytes().last() {
            Some(b'K' | b'k') => (&t[..t.len() - 1], 1024),
            Some(b'M' | b'm') => (&t[..t.len() - 1], 1024 * 1024),
            _ => (t, 1),
        };
        num.parse::<usize>()
            .ok()
            .and_then(|n| n.checked_mul(mul))
            .ok_or_else(|| ChunkerConfigError(format!("{t:?} is not a size")))
    }

    fn parse_sizes(s: &str) -> Result<Self, ChunkerConfigError> {
        let size = Self::size;
        if let Some(rest) = s.strip_prefix("fixed:") {
            return Self::fixed(size(rest)?);
        }
        if let Some(rest) = s.strip_prefix("cdc:") {
            let parts: Vec<&str> = rest.split('/').collect();
            if let [min, avg, max] = parts[..] {
                return Self::cdc(size(min)?, size(avg)?, size(max)?);
            }
        }
        Err(ChunkerConfigError(format!("{s:?}: expected cdc:MIN/AVG/MAX or fixed:SIZE, then optionally ,files=SIZE")))
    }

    /// Regular files whose contents are at least this long get chunk boundaries of their own.
    /// `u64::MAX` turns NAR-aware boundaries off.
    pub fn with_large_file_threshold(mut self, bytes: u64) -> Self {
        self.large_file_threshold = bytes;
        self
    }

    /// The largest chunk this configuration can emit.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// The NAR-aware boundary threshold.
    pub fn large_file_threshold(&self) -> u64 {
        self.large_file_threshold
    }
}

/// Splits a byte stream into chunks and hands each finished chunk to `emit`.
pub struct Chunker<F> {
    cfg: ChunkerConfig,
    mask_s: u64,
    mask_l: u64,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`; consumed bytes are dropped in bulk to keep cuts O(n).
    start: usize,
    in_large_file: bool,
    emit: F,
}

impl<F: FnMut(&[u8]) -> io::Result<()>> Chunker<F> {
    /// A chunker that calls `emit` once per chunk, in stream order.
    pub fn new(cfg: ChunkerConfig, emit: F) -> Self {
        let (mask_s, mask_l) = v2020::select_masks(cfg.avg_size, Normalization::Level1);
        Chunker { cfg, mask_s, mask_l, buf: Vec::with_capacity(cfg.max_size * 2), start: 0, in_large_file: false, emit }
    }

    /// Feed bytes; emits every chunk whose end is already certain.
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            // Keep the buffer bounded: take at most what fills it to 2 × max, then cut.
            let room = (2 * self.cfg.max_size).saturating_sub(self.buf.len() - self.start).max(1);
            let take = room.min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            while self.buf.len() - self.start >= self.cfg.max_size {
                self.cut_one()?;
            }
            self.compact();
        }
        Ok(())
    }

    /// End the current chunk here (if any bytes are pending), whatever the content says.
    pub fn boundary(&mut self) -> io::Result<()> {
        while self.buf.len() > self.start {
            self.cut_one()?;
        }
        self.buf.clear();
        self.start = 0;
        Ok(())
    }

    /// Emit whatever is pending.
    pub fn finish(mut self) -> io::Result<()> {
        self.boundary()
    }

    fn cut_one(&mut self) -> io::Result<()> {
        let pending = &self.buf[self.start..];
        let len = if self.cfg.fixed {
            pending.len().min(self.cfg.max_size)
        } else {
            let (_, cut) = v2020::cut(
                pending,
                self.cfg.min_size,
                self.cfg.avg_size,
                self.cfg.max_size,
                self.mask_s,
                self.mask_l,
                self.mask_s << 1,
                self.mask_l << 1,
            );
            cut
        };
        (self.emit)(&pending[..len])?;
        self.start += len;
        Ok(())
    }

    fn compact(&mut self) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

impl<F: FnMut(&[u8]) -> io::Result<()>> NarSink for Chunker<F> {
    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write(bytes)
    }

    fn file_contents_begin(&mut self, len: u64) -> io::Result<()> {
        if len >= self.cfg.large_file_threshold {
            self.boundary()?;
            self.in_large_file = true;
        }
        Ok(())
    }

    fn file_contents_end(&mut self) -> io::Result<()> {
        if self.in_large_file {
            self.boundary()?;
            self.in_large_file = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use nixdag_testkit::xorshift_bytes;

    use super::*;

    fn chunk_all(cfg: ChunkerConfig, data: &[u8], write_size: usize) -> Vec<usize> {
        let mut sizes = Vec::new();
        let mut c = Chunker::new(cfg, |b: &[u8]| {
            sizes.push(b.len());
            Ok(())
        });
        for part in data.chunks(write_size) {
            c.write(part).unwrap();
        }
        c.finish().unwrap();
        sizes
    }

    #[test]
    fn cuts_match_fastcdc_reference_and_ignore_write_sizes() {
        let data = xorshift_bytes(7, 3 * 1024 * 1024 + 123);
        let reference: Vec<usize> = v2020::FastCDC::new(&data, 16384, 65536, 262144).map(|c| c.length).collect();
        for write_size in [1 << 20, 4096, 777] {
            assert_eq!(chunk_all(ChunkerConfig::default(), &data, write_size), reference);
        }
    }

    #[test]
    fn chunk_sizes_respect_bounds() {
        let data = xorshift_bytes(3, 4 * 1024 * 1024);
        let sizes = chunk_all(ChunkerConfig::default(), &data, 65536);
        assert_eq!(sizes.iter().sum::<usize>(), data.len());
        for s in &sizes[..sizes.len() - 1] {
            assert!((16384..=262144).contains(s), "{s}");
        }
    }

    #[test]
    fn large_file_chunks_do_not_depend_on_preceding_bytes() {
        let file = xorshift_bytes(11, 1024 * 1024);
        let collect = |prefix: &[u8]| {
            let mut chunks = Vec::new();
            let mut c = Chunker::new(ChunkerConfig::default(), |b: &[u8]| {
                chunks.push(blake3::hash(b));
                Ok(())
            });
            c.write_bytes(prefix).unwrap();
            c.file_contents_begin(file.len() as u64).unwrap();
            c.write_bytes(&file).unwrap();
            c.file_contents_end().unwrap();
            c.write_bytes(b"trailer").unwrap();
            c.finish().unwrap();
            chunks
        };
        let a = collect(&xorshift_bytes(1, 5000));
        let b = collect(&xorshift_bytes(2, 90000));
        // Everything but the prefix chunk(s) is shared: the file's chunks and the identical trailer.
        let shared = a.iter().filter(|h| b.contains(h)).count();
        let file_chunks = chunk_all(ChunkerConfig::default(), &file, 1 << 20).len();
        assert_eq!(shared, file_chunks + 1);
    }

    #[test]
    fn fixed_chunker_cuts_exact_sizes() {
        let data = xorshift_bytes(5, 2500);
        assert_eq!(chunk_all(ChunkerConfig::fixed(1000).unwrap(), &data, 333), vec![1000, 1000, 500]);
    }

    #[test]
    fn parse_configs() {
        assert_eq!(ChunkerConfig::parse("cdc:16K/64K/256K").unwrap(), ChunkerConfig::default());
        assert_eq!(ChunkerConfig::parse("fixed:1M").unwrap(), ChunkerConfig::fixed(1 << 20).unwrap());
        assert!(ChunkerConfig::parse("cdc:1/2/3").is_err());
        assert!(ChunkerConfig::parse("bogus").is_err());
        let c = ChunkerConfig::parse("cdc:16K/64K/256K,files=1M").unwrap();
        assert_eq!(c.large_file_threshold(), 1 << 20);
        assert_eq!(c.max_size(), 256 * 1024);
        assert_eq!(ChunkerConfig::parse("cdc:16K/64K/256K,files=off").unwrap().large_file_threshold(), u64::MAX);
        assert_eq!(
            ChunkerConfig::parse("cdc:16K/64K/256K,files=64K").unwrap(),
            ChunkerConfig::default(),
            "64K is the default threshold"
        );
        for bad in ["cdc:16K/64K/256K,files=", "cdc:16K/64K/256K,files=x", "fixed:1M,files=64K", "cdc:1/2/3,files=1M"] {
            assert!(ChunkerConfig::parse(bad).is_err(), "{bad}");
        }
        assert!(ChunkerConfig::parse("fixed:1M,files=off").is_ok());
    }
}
