//! bzip2 and xz: formats whose whole file (headers, checks, index, trailer) is what the library writes
//! for the content, so a recipe is only the library's settings, read off the file's first bytes.
//!
//! - bzip2: the block size (`BZh1`–`BZh9`) is the only setting that changes the output (the work factor
//!   only picks a sorting algorithm; the transform is the same). Rebuilt by libbz2-rs-sys, a port of
//!   bzip2 1.0.8, the `bzip2` of every distribution. One stream; pbzip2's many streams are not rebuilt.
//! - xz: one stream, one block without size fields (what `xz` writes single-threaded, its default before
//!   5.6), one LZMA2 filter. The presets (0–9, plain or `-e`) that could have written the block header's
//!   dictionary size race (up to preset 7; see [`XZ_MAX_DICT`]); the header's check type is kept. Rebuilt by liblzma 5.2.5 (lzma-sys, built from
//!   its bundled source so the output does not depend on the machine's liblzma).
use std::io::{Read, Write};

use super::race::{Encoder, Race};
use super::{io_read, Codec, Input, RecipeError, RecompressError};

/// Most decompressed bytes produced per decoder call, so memory stays bounded on a compression bomb.
const STEP: usize = 256 * 1024;
/// Largest xz dictionary accepted (preset 7's). An encoder needs about 11× its dictionary and two
/// candidates race, so presets 8 and 9 (32 and 64 MiB: 1.3 GiB for the pair) are stored as they are
/// rather than let any upload make the store allocate that much.
const XZ_MAX_DICT: u32 = 16 << 20;
/// The LZMA2 dictionary of each xz preset 0–9.
const XZ_PRESET_DICT: [u32; 10] =
    [256 << 10, 1 << 20, 2 << 20, 4 << 20, 4 << 20, 8 << 20, 8 << 20, 16 << 20, 32 << 20, 64 << 20];

/// How a bzip2 or xz file is rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamRecipe {
    /// bzip2 with 100 KB × `level` blocks.
    Bzip2 { level: u8 },
    /// xz preset `preset` (`-e` if `extreme`) with the given LZMA2 dictionary size and check type
    /// (liblzma's check id: 0 none, 1 CRC32, 4 CRC64, 10 SHA-256).
    Xz { preset: u8, extreme: bool, check: u8, dict_size: u32 },
}

impl StreamRecipe {
    pub(crate) fn codec(&self) -> Codec {
        match self {
            StreamRecipe::Bzip2 { .. } => Codec::Bzip2,
            StreamRecipe::Xz { .. } => Codec::Xz,
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            StreamRecipe::Bzip2 { level } => format!("libbz2-rs 0.2 (bzip2 1.0.8) -{level}"),
            StreamRecipe::Xz { preset, extreme, check, dict_size } => format!(
                "liblzma 5.2.5 -{preset}{}, dictionary {dict_size} bytes, check {}",
                if *extreme { "e" } else { "" },
                check_name(*check)
            ),
        }
    }

    fn valid(&self) -> bool {
        match *self {
            StreamRecipe::Bzip2 { level } => (1..=9).contains(&level),
            StreamRecipe::Xz { preset, check, dict_size, .. } => {
                preset <= 9 && xz_check(check).is_some() && (4096..=XZ_MAX_DICT).contains(&dict_size)
            }
        }
    }

    fn encoder(&self) -> Result<Box<dyn Encoder>, RecompressError> {
        let fail = |detail: String| RecompressError::Encoder { codec: self.codec().name(), detail };
        match *self {
            StreamRecipe::Bzip2 { level } => {
                Ok(Box::new(Whole(bzip2::Compress::new(bzip2::Compression::new(u32::from(level)), 30))))
            }
            StreamRecipe::Xz { preset, extreme, check, dict_size } => {
                let check = xz_check(check).ok_or_else(|| fail(format!("check {check}")))?;
                let mut opts =
                    xz2::stream::LzmaOptions::new_preset(u32::from(preset) | if extreme { 0x8000_0000 } else { 0 })
                        .map_err(|e| fail(e.to_string()))?;
                opts.dict_size(dict_size);
                let mut filters = xz2::stream::Filters::new();
                filters.lzma2(&opts);
                let s = xz2::stream::Stream::new_stream_encoder(&filters, check).map_err(|e| fail(e.to_string()))?;
                Ok(Box::new(Whole(s)))
            }
        }
    }
}

fn xz_check(id: u8) -> Option<xz2::stream::Check> {
    use xz2::stream::Check;
    Some(match id {
        0 => Check::None,
        1 => Check::Crc32,
        4 => Check::Crc64,
        10 => Check::Sha256,
        _ => return None,
    })
}

fn check_name(id: u8) -> &'static str {
    match id {
        0 => "none",
        1 => "CRC32",
        4 => "CRC64",
        10 => "SHA-256",
        _ => "unknown",
    }
}

/// Candidates for a file starting with `head` (at least its first 17 bytes when there are that many).
fn candidates(codec: Codec, head: &[u8]) -> Vec<StreamRecipe> {
    match codec {
        Codec::Bzip2 => match head {
            [b'B', b'Z', b'h', l @ b'1'..=b'9', ..] => vec![StreamRecipe::Bzip2 { level: l - b'0' }],
            _ => Vec::new(),
        },
        Codec::Xz => xz_candidates(head),
        _ => Vec::new(),
    }
}

/// Stream header (12 bytes: magic, flags `00 check`, CRC32), then the first block header: size, flags
/// (one filter, no size fields), filter id 0x21 (LZMA2), one property byte: the dictionary size.
fn xz_candidates(h: &[u8]) -> Vec<StreamRecipe> {
    if h.len() < 17 || h[6] != 0 || xz_check(h[7]).is_none() {
        return Vec::new();
    }
    if h[12] == 0 {
        // No block, straight to the index: empty content, which every preset writes alike.
        return vec![StreamRecipe::Xz { preset: 0, extreme: false, check: h[7], dict_size: XZ_PRESET_DICT[0] }];
    }
    let (flags, filter, props_len, dict_byte) = (h[13], h[14], h[15], h[16]);
    if flags != 0 || filter != 0x21 || props_len != 1 || dict_byte > 40 {
        return Vec::new();
    }
    let dict = if dict_byte == 40 { u32::MAX } else { (2 | u32::from(dict_byte & 1)) << (dict_byte / 2 + 11) };
    if dict > XZ_MAX_DICT {
        return Vec::new();
    }
    // A preset writes its own dictionary size, or a smaller one when `xz` fitted it to a small file.
    let exact: Vec<u8> = (0..10u8).filter(|&p| XZ_PRESET_DICT[p as usize] == dict).collect();
    let presets: Vec<u8> =
        if exact.is_empty() { (0..10u8).filter(|&p| XZ_PRESET_DICT[p as usize] > dict).collect() } else { exact };
    // Most common first: the default preset 6, then the rest.
    let mut order: Vec<u8> = presets;
    order.sort_by_key(|&p| (p != 6, p));
    order
        .into_iter()
        .flat_map(|preset| {
            [false, true].map(|extreme| StreamRecipe::Xz { preset, extreme, check: h[7], dict_size: dict })
        })
        .collect()
}

/// A decompressor stepping through the original file.
enum Decoder {
    Bzip2(bzip2::Decompress),
    Xz(xz2::stream::Stream),
}

impl Decoder {
    fn new(codec: Codec) -> Option<Decoder> {
        match codec {
            Codec::Bzip2 => Some(Decoder::Bzip2(bzip2::Decompress::new(false))),
            // One stream only (no CONCATENATED flag): what follows it is trailing bytes.
            Codec::Xz => xz2::stream::Stream::new_stream_decoder(u64::from(XZ_MAX_DICT) * 2, 0).ok().map(Decoder::Xz),
            _ => None,
        }
    }

    /// Decode from `input` into `out`'s spare capacity: (bytes consumed, stream ended), or `Err` for a
    /// corrupt stream.
    fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), ()> {
        match self {
            Decoder::Bzip2(d) => {
                let before = d.total_in();
                let s = d.decompress_vec(input, out).map_err(drop)?;
                Ok(((d.total_in() - before) as usize, s == bzip2::Status::StreamEnd))
            }
            Decoder::Xz(d) => {
                let before = d.total_in();
                let s = d.process_vec(input, out, xz2::stream::Action::Run).map_err(drop)?;
                Ok(((d.total_in() - before) as usize, s == xz2::stream::Status::StreamEnd))
            }
        }
    }
}

pub(crate) fn analyze<R: Read>(
    codec: Codec,
    input: &mut Input<R>,
    content: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<Option<StreamRecipe>, RecompressError> {
    let head = input.peek_at_least(17)?;
    let mut encoders = Vec::new();
    for r in candidates(codec, head) {
        encoders.push((r, r.encoder()?));
    }
    if encoders.is_empty() {
        return Ok(None);
    }
    let mut race = Race::new(encoders);
    let Some(mut dec) = Decoder::new(codec) else { return Ok(None) };
    let mut size = 0u64;
    let mut out = Vec::with_capacity(STEP);
    loop {
        let data = input.peek()?;
        out.clear();
        let Ok((consumed, done)) = dec.step(data, &mut out) else { return Ok(None) };
        if consumed == 0 && out.is_empty() && !done {
            return Ok(None); // truncated, or a decoder that makes no progress
        }
        race.original(&data[..consumed]);
        input.consume(consumed);
        if !out.is_empty() {
            content(&out).map_err(|source| RecompressError::Content { offset: size, source })?;
            size += out.len() as u64;
            race.content(&out);
        }
        if !race.alive() {
            return Ok(None);
        }
        if done {
            break;
        }
    }
    if !input.peek()?.is_empty() {
        return Ok(None); // another stream, or trailing bytes
    }
    Ok(race.finish())
}

/// Decompresses a bzip2 or xz file, handing the content on; `false` when it is not one stream of its codec
/// with nothing after.
pub(crate) fn decompress(
    codec: Codec,
    mut file: &[u8],
    content: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<bool, RecompressError> {
    let Some(mut dec) = Decoder::new(codec) else { return Ok(false) };
    let mut size = 0u64;
    let mut out = Vec::with_capacity(STEP);
    loop {
        out.clear();
        let Ok((consumed, done)) = dec.step(file, &mut out) else { return Ok(false) };
        if consumed == 0 && out.is_empty() && !done {
            return Ok(false);
        }
        file = &file[consumed..];
        if !out.is_empty() {
            content(&out).map_err(|source| RecompressError::Content { offset: size, source })?;
            size += out.len() as u64;
        }
        if done {
            return Ok(file.is_empty());
        }
    }
}

pub(crate) fn rebuild(
    recipe: &StreamRecipe,
    mut content: impl Read,
    mut out: impl Write,
) -> Result<(), RecompressError> {
    let codec = recipe.codec().name();
    let mut enc = recipe.encoder()?;
    let (mut read, mut written) = (0u64, 0u64);
    let mut buf = vec![0u8; STEP];
    let mut compressed = Vec::with_capacity(STEP);
    loop {
        let n =
            io_read(&mut content, &mut buf).map_err(|source| RecompressError::ReadContent { offset: read, source })?;
        compressed.clear();
        if n == 0 {
            enc.finish(&mut compressed).map_err(|detail| RecompressError::Encoder { codec, detail })?;
        } else {
            read += n as u64;
            enc.push(&buf[..n], &mut compressed).map_err(|detail| RecompressError::Encoder { codec, detail })?;
        }
        out.write_all(&compressed).map_err(|source| RecompressError::Write { offset: written, source })?;
        written += compressed.len() as u64;
        if n == 0 {
            return Ok(());
        }
    }
}

/// Recipe body: bzip2 (tag 2) `level`; xz (tag 3) `preset | extreme | check | dict_size u32 LE`.
pub(crate) fn encode(r: &StreamRecipe, out: &mut Vec<u8>) {
    match *r {
        StreamRecipe::Bzip2 { level } => out.push(level),
        StreamRecipe::Xz { preset, extreme, check, dict_size } => {
            out.extend_from_slice(&[preset, u8::from(extreme), check]);
            out.extend_from_slice(&dict_size.to_le_bytes());
        }
    }
}

pub(crate) fn decode(codec: Codec, b: &[u8]) -> Result<StreamRecipe, RecipeError> {
    let (r, len) = match codec {
        Codec::Bzip2 => (StreamRecipe::Bzip2 { level: *b.first().ok_or(RecipeError::Truncated)? }, 1),
        _ => {
            let f = b.first_chunk::<7>().ok_or(RecipeError::Truncated)?;
            let extreme = match f[1] {
                0 => false,
                1 => true,
                _ => return Err(RecipeError::Invalid("xz extreme flag is not 0 or 1")),
            };
            let dict_size = u32::from_le_bytes([f[3], f[4], f[5], f[6]]);
            (StreamRecipe::Xz { preset: f[0], extreme, check: f[2], dict_size }, 7)
        }
    };
    if b.len() > len {
        return Err(RecipeError::TrailingBytes);
    }
    if !r.valid() {
        return Err(RecipeError::Invalid("bzip2 or xz parameters out of range"));
    }
    Ok(r)
}

/// One call into a library's streaming compressor: compress from `input` into `out`'s spare capacity
/// (`finish`: end the stream); gives the bytes consumed and whether the stream has ended.
trait Step {
    fn step(&mut self, input: &[u8], out: &mut Vec<u8>, finish: bool) -> Result<(usize, bool), String>;
}

/// libbz2, driven as the `bzip2` tool drives it.
impl Step for bzip2::Compress {
    fn step(&mut self, input: &[u8], out: &mut Vec<u8>, finish: bool) -> Result<(usize, bool), String> {
        let before = self.total_in();
        let action = if finish { bzip2::Action::Finish } else { bzip2::Action::Run };
        let status = self.compress_vec(input, out, action).map_err(|e| format!("bzip2: {e}"))?;
        Ok(((self.total_in() - before) as usize, status == bzip2::Status::StreamEnd))
    }
}

/// liblzma's stream encoder.
impl Step for xz2::stream::Stream {
    fn step(&mut self, input: &[u8], out: &mut Vec<u8>, finish: bool) -> Result<(usize, bool), String> {
        let before = self.total_in();
        let action = if finish { xz2::stream::Action::Finish } else { xz2::stream::Action::Run };
        let status = self.process_vec(input, out, action).map_err(|e| format!("xz: {e}"))?;
        Ok(((self.total_in() - before) as usize, status == xz2::stream::Status::StreamEnd))
    }
}

/// A whole-file compressor as an [`Encoder`]: feeds it until the input is taken, then finishes the stream.
struct Whole<S>(S);

impl<S: Step> Encoder for Whole<S> {
    fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while !input.is_empty() {
            out.reserve(STEP);
            let (consumed, _) = self.0.step(input, out, false)?;
            input = &input[consumed..];
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        loop {
            out.reserve(STEP);
            if self.0.step(&[], out, true)?.1 {
                return Ok(());
            }
        }
    }
}
