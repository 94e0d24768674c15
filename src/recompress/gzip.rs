//! gzip (RFC 1952), single member: the header is kept literally, the deflate body is rebuilt by zlib or
//! miniz_oxide with recorded parameters, and the trailer (CRC-32, ISIZE) is recomputed.
use std::io::{Read, Write};

use super::race::{Encoder, Race, Steady};
use super::zlib;
use super::{io_read, Input, RecipeError, RecompressError};

const FTEXT: u8 = 0x01;
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
/// Longest header we accept (FEXTRA is at most 64 KiB; names and comments are short in practice).
pub(crate) const MAX_HEADER: usize = 1 << 20;
/// Most decompressed bytes produced per inflate call, so memory stays bounded on a compression bomb.
const INFLATE_STEP: usize = 256 * 1024;

/// Which deflate implementation rebuilds the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// The C zlib, as used by Python's `gzip`/`tarfile`, node's `zlib` and flate2's `zlib` feature.
    Zlib,
    /// miniz_oxide, flate2's default Rust backend.
    MinizOxide,
    /// zlib-rs, flate2's `zlib-rs` backend, which recent cargo releases package crates with.
    ZlibRs,
}

impl Backend {
    fn tag(self) -> u8 {
        match self {
            Backend::Zlib => 1,
            Backend::MinizOxide => 2,
            Backend::ZlibRs => 3,
        }
    }
}

/// Deflate parameters of one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    pub backend: Backend,
    pub level: u8,
    pub window_bits: u8,
    pub mem_level: u8,
    pub strategy: u8,
}

impl Params {
    fn zlib(level: u8) -> Params {
        Params { backend: Backend::Zlib, level, window_bits: 15, mem_level: 8, strategy: 0 }
    }

    fn miniz(level: u8) -> Params {
        Params { backend: Backend::MinizOxide, level, window_bits: 15, mem_level: 8, strategy: 0 }
    }

    fn zlib_rs(level: u8) -> Params {
        Params { backend: Backend::ZlibRs, level, window_bits: 15, mem_level: 8, strategy: 0 }
    }

    fn valid(&self) -> bool {
        match self.backend {
            Backend::Zlib => {
                self.level <= 9
                    && (9..=15).contains(&self.window_bits)
                    && (1..=9).contains(&self.mem_level)
                    && self.strategy <= 4
            }
            Backend::MinizOxide => {
                self.level <= 10 && self.window_bits == 15 && self.mem_level == 8 && self.strategy == 0
            }
            Backend::ZlibRs => self.level <= 9 && self.window_bits == 15 && self.mem_level == 8 && self.strategy == 0,
        }
    }

    fn encoder(&self) -> Option<Box<dyn Encoder>> {
        match self.backend {
            Backend::Zlib => zlib::Deflate::new(self.level, self.window_bits, self.mem_level, self.strategy)
                .map(|d| Box::new(d) as Box<dyn Encoder>),
            Backend::MinizOxide => Some(Box::new(Steady::new(Miniz::new(self.level)))),
            Backend::ZlibRs => Some(Box::new(Steady::new(ZlibRs::new(self.level)))),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self.backend {
            Backend::Zlib => format!(
                "zlib {} level {} windowBits {} memLevel {} strategy {}",
                zlib::version(),
                self.level,
                self.window_bits,
                self.mem_level,
                self.strategy
            ),
            Backend::MinizOxide => format!("miniz_oxide 0.9 level {}", self.level),
            Backend::ZlibRs => format!("zlib-rs 0.6 level {}", self.level),
        }
    }
}

impl Encoder for zlib::Deflate {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        zlib::Deflate::push(self, input, out)
    }
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        zlib::Deflate::finish(self, out)
    }
}

/// miniz_oxide configured as flate2's Rust backend configures it for a raw deflate stream.
struct Miniz {
    c: Box<miniz_oxide::deflate::core::CompressorOxide>,
    buf: Vec<u8>,
}

impl Miniz {
    fn new(level: u8) -> Miniz {
        let mut c = Box::<miniz_oxide::deflate::core::CompressorOxide>::default();
        c.set_format_and_level(miniz_oxide::DataFormat::Raw, level);
        Miniz { c, buf: vec![0; 64 * 1024] }
    }

    fn run(&mut self, mut input: &[u8], flush: miniz_oxide::MZFlush, out: &mut Vec<u8>) -> Result<(), String> {
        let mut stalls = 0;
        loop {
            let r = miniz_oxide::deflate::stream::deflate(&mut self.c, input, &mut self.buf, flush);
            out.extend_from_slice(&self.buf[..r.bytes_written]);
            input = &input[r.bytes_consumed..];
            match r.status {
                Ok(miniz_oxide::MZStatus::StreamEnd) => return Ok(()),
                Ok(_) | Err(miniz_oxide::MZError::Buf) => {
                    let finishing = flush == miniz_oxide::MZFlush::Finish;
                    if !finishing && input.is_empty() && r.bytes_written < self.buf.len() {
                        return Ok(());
                    }
                    if r.bytes_consumed == 0 && r.bytes_written == 0 {
                        stalls += 1;
                        if stalls > 3 {
                            return Err("miniz_oxide made no progress".into());
                        }
                    }
                }
                Err(e) => return Err(format!("miniz_oxide deflate: {e:?}")),
            }
        }
    }
}

impl Encoder for Miniz {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        self.run(input, miniz_oxide::MZFlush::None, out)
    }
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        self.run(&[], miniz_oxide::MZFlush::Finish, out)
    }
}

/// zlib-rs through its safe API, as flate2 drives it.
struct ZlibRs {
    d: zlib_rs::Deflate,
    buf: Vec<u8>,
}

impl ZlibRs {
    fn new(level: u8) -> ZlibRs {
        ZlibRs { d: zlib_rs::Deflate::new(i32::from(level), false, 15), buf: vec![0; 64 * 1024] }
    }

    fn run(&mut self, mut input: &[u8], flush: zlib_rs::DeflateFlush, out: &mut Vec<u8>) -> Result<(), String> {
        let finishing = flush == zlib_rs::DeflateFlush::Finish;
        let mut stalls = 0;
        loop {
            let (in0, out0) = (self.d.total_in(), self.d.total_out());
            let status =
                self.d.compress(input, &mut self.buf, flush).map_err(|e| format!("zlib-rs deflate: {}", e.as_str()))?;
            let consumed = (self.d.total_in() - in0) as usize;
            let written = (self.d.total_out() - out0) as usize;
            out.extend_from_slice(&self.buf[..written]);
            input = &input[consumed..];
            if status == zlib_rs::Status::StreamEnd {
                return Ok(());
            }
            if !finishing && input.is_empty() && written < self.buf.len() {
                return Ok(());
            }
            if consumed == 0 && written == 0 {
                stalls += 1;
                if stalls > 3 {
                    return Err("zlib-rs made no progress".into());
                }
            }
        }
    }
}

impl Encoder for ZlibRs {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        self.run(input, zlib_rs::DeflateFlush::NoFlush, out)
    }
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        self.run(&[], zlib_rs::DeflateFlush::Finish, out)
    }
}

/// Whether a writer that compressed at `level` sets the header's XFL byte to `xfl`.
///
/// zlib's gzip wrapper (used by Python's `gzip` module, node, GNU gzip and flate2 alike) writes 2 for the
/// best level, 4 for the fastest, 0 otherwise; an unusual XFL rules nothing out. Trusting it divides the
/// candidates by three; a writer that sets XFL otherwise is simply not rebuilt.
fn level_fits_xfl(level: u8, xfl: u8) -> bool {
    match xfl {
        2 => level >= 9,
        4 => level <= 1,
        0 => (2..=8).contains(&level),
        _ => true,
    }
}

/// The candidates tried by [`analyze`] for a header whose XFL byte is `xfl`, in order of preference.
fn candidates(xfl: u8) -> Vec<Params> {
    let mut v: Vec<Params> = [9, 6, 1, 2, 3, 4, 5, 7, 8].into_iter().map(Params::zlib).collect();
    v.extend([9, 6, 1, 2, 3, 4, 5, 7, 8].into_iter().map(Params::zlib_rs));
    v.extend([9, 6, 1, 2, 3, 4, 5, 7, 8, 10].into_iter().map(Params::miniz));
    v.retain(|p| level_fits_xfl(p.level, xfl));
    v
}

/// How a gzip file is rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GzipRecipe {
    /// The member header, byte for byte (mtime, XFL, OS, name, comment, extra field, header CRC).
    pub header: Vec<u8>,
    pub params: Params,
}

/// Result of parsing a (possibly incomplete) gzip header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// The header is `len` bytes long.
    Complete(usize),
    NeedMore,
    Invalid,
}

/// Parses an RFC 1952 member header at the start of `b`.
pub(crate) fn parse_header(b: &[u8]) -> Header {
    if b.len() < 10 {
        let magic = [0x1f, 0x8b, 8];
        let n = b.len().min(3);
        return if b[..n] == magic[..n] { Header::NeedMore } else { Header::Invalid };
    }
    if b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 || b[3] & 0xe0 != 0 {
        return Header::Invalid;
    }
    let flags = b[3];
    let mut at = 10usize;
    if flags & FEXTRA != 0 {
        let Some(x) = b.get(at..at + 2) else { return Header::NeedMore };
        at += 2 + usize::from(u16::from_le_bytes([x[0], x[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let Some(rest) = b.get(at..) else { return Header::NeedMore };
            match rest.iter().position(|&c| c == 0) {
                Some(nul) => at += nul + 1,
                None => return Header::NeedMore,
            }
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    let _ = FTEXT; // informative only
    if at > b.len() {
        Header::NeedMore
    } else {
        Header::Complete(at)
    }
}

pub(crate) fn analyze<R: Read>(
    input: &mut Input<R>,
    content: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<Option<GzipRecipe>, RecompressError> {
    // Header: gather bytes until it parses.
    let mut header = Vec::new();
    loop {
        let data = input.peek()?;
        if data.is_empty() {
            return Ok(None);
        }
        let before = header.len();
        let take = data.len().min(MAX_HEADER + 1 - before);
        header.extend_from_slice(&data[..take]);
        match parse_header(&header) {
            Header::Complete(len) => {
                input.consume(len - before);
                header.truncate(len);
                break;
            }
            Header::Invalid => return Ok(None),
            Header::NeedMore if header.len() > MAX_HEADER => return Ok(None),
            Header::NeedMore => input.consume(take),
        }
    }

    let params = candidates(header[8]);
    let mut encoders: Vec<(Params, Box<dyn Encoder>)> = Vec::with_capacity(params.len());
    for p in params {
        let enc = p.encoder().ok_or_else(|| RecompressError::Encoder {
            codec: "gzip",
            detail: format!("cannot start {}", p.describe()),
        })?;
        encoders.push((p, enc));
    }
    let mut race = Race::new(encoders);
    let mut inflate = zlib::Inflate::new()
        .ok_or_else(|| RecompressError::Encoder { codec: "gzip", detail: "cannot start inflate".into() })?;
    let (mut crc, mut size) = (0u32, 0u64);
    let mut out = Vec::with_capacity(INFLATE_STEP);
    loop {
        let data = input.peek()?;
        if data.is_empty() {
            return Ok(None); // truncated
        }
        out.clear();
        let Ok(step) = inflate.inflate(data, &mut out, INFLATE_STEP) else { return Ok(None) };
        if step.consumed == 0 && out.is_empty() && !step.done {
            return Ok(None);
        }
        race.original(&data[..step.consumed]);
        input.consume(step.consumed);
        if !out.is_empty() {
            content(&out).map_err(|source| RecompressError::Content { offset: size, source })?;
            crc = zlib::crc32(crc, &out);
            size += out.len() as u64;
            race.content(&out);
        }
        if !race.alive() {
            return Ok(None);
        }
        if step.done {
            break;
        }
    }
    // Trailer, then nothing.
    let mut trailer = [0u8; 8];
    if !input.read_exact_or_eof(&mut trailer)? {
        return Ok(None);
    }
    if trailer[..4] != crc.to_le_bytes() || trailer[4..] != (size as u32).to_le_bytes() {
        return Ok(None);
    }
    if !input.peek()?.is_empty() {
        return Ok(None); // another member or trailing bytes
    }
    Ok(race.finish().map(|params| GzipRecipe { header, params }))
}

pub(crate) fn rebuild(recipe: &GzipRecipe, mut content: impl Read, mut out: impl Write) -> Result<(), RecompressError> {
    let mut written = 0u64;
    let mut write = |b: &[u8], written: &mut u64| {
        out.write_all(b).map_err(|source| RecompressError::Write { offset: *written, source })?;
        *written += b.len() as u64;
        Ok::<(), RecompressError>(())
    };
    write(&recipe.header, &mut written)?;
    let mut enc = recipe.params.encoder().ok_or_else(|| RecompressError::Encoder {
        codec: "gzip",
        detail: format!("cannot start {}", recipe.params.describe()),
    })?;
    let (mut crc, mut size) = (0u32, 0u64);
    let mut buf = vec![0u8; 256 * 1024];
    let mut compressed = Vec::with_capacity(256 * 1024);
    loop {
        let n =
            io_read(&mut content, &mut buf).map_err(|source| RecompressError::ReadContent { offset: size, source })?;
        if n == 0 {
            break;
        }
        crc = zlib::crc32(crc, &buf[..n]);
        size += n as u64;
        compressed.clear();
        enc.push(&buf[..n], &mut compressed).map_err(|detail| RecompressError::Encoder { codec: "gzip", detail })?;
        write(&compressed, &mut written)?;
    }
    compressed.clear();
    enc.finish(&mut compressed).map_err(|detail| RecompressError::Encoder { codec: "gzip", detail })?;
    compressed.extend_from_slice(&crc.to_le_bytes());
    compressed.extend_from_slice(&(size as u32).to_le_bytes());
    write(&compressed, &mut written)
}

/// Recipe body: backend, level, windowBits, memLevel, strategy, header length (u32 LE), header.
pub(crate) fn encode(r: &GzipRecipe, out: &mut Vec<u8>) {
    let p = &r.params;
    out.extend_from_slice(&[p.backend.tag(), p.level, p.window_bits, p.mem_level, p.strategy]);
    out.extend_from_slice(&(r.header.len() as u32).to_le_bytes());
    out.extend_from_slice(&r.header);
}

pub(crate) fn decode(b: &[u8]) -> Result<GzipRecipe, RecipeError> {
    let Some((fixed, rest)) = b.split_first_chunk::<9>() else { return Err(RecipeError::Truncated) };
    let backend = match fixed[0] {
        1 => Backend::Zlib,
        2 => Backend::MinizOxide,
        3 => Backend::ZlibRs,
        other => return Err(RecipeError::Unknown { what: "gzip backend", got: other }),
    };
    let params = Params { backend, level: fixed[1], window_bits: fixed[2], mem_level: fixed[3], strategy: fixed[4] };
    if !params.valid() {
        return Err(RecipeError::Invalid("gzip parameters out of range"));
    }
    let len = u32::from_le_bytes([fixed[5], fixed[6], fixed[7], fixed[8]]) as usize;
    if rest.len() < len {
        return Err(RecipeError::Truncated);
    }
    if rest.len() > len {
        return Err(RecipeError::TrailingBytes);
    }
    if parse_header(rest) != Header::Complete(len) {
        return Err(RecipeError::Invalid("gzip header does not parse to its stored length"));
    }
    Ok(GzipRecipe { header: rest.to_vec(), params })
}

#[cfg(test)]
pub(crate) fn encoder_for_tests(p: &Params) -> Box<dyn Encoder> {
    p.encoder().expect("test parameters are valid")
}

/// Inflates a gzip file whose header is `recipe`'s, handing the content on; `false` when it is not one
/// member with a matching trailer and nothing after.
pub(crate) fn decompress(
    recipe: &GzipRecipe,
    file: &[u8],
    content: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<bool, RecompressError> {
    let Some(mut rest) = file.strip_prefix(recipe.header.as_slice()) else { return Ok(false) };
    let mut inflate = zlib::Inflate::new()
        .ok_or_else(|| RecompressError::Encoder { codec: "gzip", detail: "cannot start inflate".into() })?;
    let (mut crc, mut size) = (0u32, 0u64);
    let mut out = Vec::with_capacity(INFLATE_STEP);
    loop {
        out.clear();
        let Ok(step) = inflate.inflate(rest, &mut out, INFLATE_STEP) else { return Ok(false) };
        if step.consumed == 0 && out.is_empty() && !step.done {
            return Ok(false);
        }
        rest = &rest[step.consumed..];
        if !out.is_empty() {
            content(&out).map_err(|source| RecompressError::Content { offset: size, source })?;
            crc = zlib::crc32(crc, &out);
            size += out.len() as u64;
        }
        if step.done {
            break;
        }
    }
    let mut trailer = crc.to_le_bytes().to_vec();
    trailer.extend_from_slice(&(size as u32).to_le_bytes());
    Ok(rest == trailer.as_slice())
}
