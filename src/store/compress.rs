//! Block compression on worker threads, so zstd (the costliest step of an ingest) runs beside hashing,
//! chunking and NAR parsing instead of after them. Workers own nothing of the store: they take raw bytes
//! (a frame of neighbouring blocks, or one block and its delta base) and give back what to write; the
//! ingest thread alone appends to packs, so ordering and rollback stay where they were.
//!
//! How blocks are stored is set by [`StorageConfig`]; docs/STORAGE.md measures each choice.

use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use zstd::zstd_safe;

use super::error::StoreError;
use super::tables::Form;
use crate::dag::BlockHash;

/// How new blocks are stored. Reading never needs it: every stored form is described by the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageConfig {
    /// Neighbouring new blocks are compressed together in zstd frames of about this many raw bytes;
    /// `0` compresses each block alone (format 1's way).
    pub frame_bytes: usize,
    /// zstd level for frames and single blocks.
    pub level: i32,
    /// zstd level for deltas.
    pub delta_level: i32,
    /// Longest delta chain (a delta against a delta …); `0` turns deltas off.
    pub max_delta_depth: u8,
    /// Take store-path hash parts out of NARs before chunking (`normalize.rs`).
    pub normalize: bool,
    /// Whether and when compressed tarballs that can be rebuilt byte for byte are kept as their content
    /// plus a recipe (`rebuilt.rs`).
    pub tarballs: Tarballs,
    /// Compress frames with a zstd dictionary trained from the store's own blocks (the first ingest that
    /// stores enough new blocks trains it; later frames name it). Pays for small frames only.
    pub dict: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            frame_bytes: 1 << 20,
            level: 6,
            delta_level: 6,
            max_delta_depth: 3,
            normalize: true,
            tarballs: Tarballs::Later,
            dict: false,
        }
    }
}

/// When a compressed tarball becomes content plus a recipe.
///
/// Proving a rebuild exact means compressing the whole content again, with the original's deflate -9 for
/// nearly every real tarball: ~14 MiB/s of content per core, several times the cost of everything else an
/// ingest does (docs/STORAGE.md). So by default the ingest stores the file as it is, at full speed, and
/// notes it; `import::repack` (`nixdag repack`, or the gateway when idle) converts
/// it later, as post-process deduplication does in file systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tarballs {
    /// Always stored as they are.
    Off,
    /// Converted during the ingest (`tarballs=on`): smallest at once, slowest ingest.
    Now,
    /// Stored as they are and queued for `import::repack` (`tarballs=later`).
    Later,
}

/// A `--storage` value that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("storage option {0}")]
pub struct StorageConfigError(String);

impl StorageConfig {
    /// Format 1's way: every block alone, zstd level 3, no deltas, no normalization.
    pub fn per_block() -> Self {
        StorageConfig {
            frame_bytes: 0,
            level: 3,
            delta_level: 3,
            max_delta_depth: 0,
            normalize: false,
            tarballs: Tarballs::Off,
            dict: false,
        }
    }

    /// Parse `key=value,…` over the defaults: `frames=1M` (`0`/`off`: per block), `level=6`,
    /// `delta-level=6`, `delta=3` (max chain depth, `0`/`off`: no deltas), `normalize=on|off`, `tarballs=later|on|off`, `dict=on|off`; `legacy` is
    /// [`per_block`](Self::per_block).
    pub fn parse(s: &str) -> Result<Self, StorageConfigError> {
        let mut c = StorageConfig::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "legacy" {
                c = StorageConfig::per_block();
                continue;
            }
            let (k, v) =
                part.split_once('=').ok_or_else(|| StorageConfigError(format!("{part:?}: expected KEY=VALUE")))?;
            let num = |v: &str| -> Result<u64, StorageConfigError> {
                let (n, mul) = match v.as_bytes().last() {
                    Some(b'K' | b'k') => (&v[..v.len() - 1], 1024),
                    Some(b'M' | b'm') => (&v[..v.len() - 1], 1024 * 1024),
                    _ if v == "off" => ("0", 1),
                    _ => (v, 1),
                };
                n.parse::<u64>()
                    .ok()
                    .and_then(|n| n.checked_mul(mul))
                    .ok_or_else(|| StorageConfigError(format!("{k}={v}: not a number")))
            };
            let level = |v: &str| -> Result<i32, StorageConfigError> {
                match v.parse::<i32>() {
                    Ok(l) if (1..=22).contains(&l) => Ok(l),
                    _ => Err(StorageConfigError(format!("{k}={v}: zstd levels are 1 to 22"))),
                }
            };
            match k {
                "frames" => {
                    let n = num(v)?;
                    if n > 16 << 20 {
                        return Err(StorageConfigError(format!("frames={v}: at most 16M")));
                    }
                    c.frame_bytes = n as usize;
                }
                "level" => c.level = level(v)?,
                "delta-level" => c.delta_level = level(v)?,
                "delta" => {
                    let n = num(v)?;
                    if n > 8 {
                        return Err(StorageConfigError(format!("delta={v}: chains longer than 8 are not allowed")));
                    }
                    c.max_delta_depth = n as u8;
                }
                "tarballs" => {
                    c.tarballs = match v {
                        "later" => Tarballs::Later,
                        "on" => Tarballs::Now,
                        "off" => Tarballs::Off,
                        _ => return Err(StorageConfigError(format!("{k}={v}: expected later, on or off"))),
                    }
                }
                "normalize" | "dict" => {
                    let on = match v {
                        "on" => true,
                        "off" => false,
                        _ => return Err(StorageConfigError(format!("{k}={v}: expected on or off"))),
                    };
                    match k {
                        "normalize" => c.normalize = on,
                        _ => c.dict = on,
                    }
                }
                _ => {
                    return Err(StorageConfigError(format!(
                        "{k:?} is unknown (frames, level, delta-level, delta, normalize, tarballs, dict)"
                    )))
                }
            }
        }
        Ok(c)
    }
}

/// A record ready to be written.
pub enum Compressed {
    /// One block in a record of its own.
    Single {
        /// Its name.
        hash: BlockHash,
        /// Its length.
        raw_len: u32,
        /// What goes into the pack.
        payload: Vec<u8>,
        /// What `payload` is: raw, zstd, or a delta.
        form: Form,
    },
    /// A delta that did not pay: the block goes into a frame after all.
    Rejected {
        /// Its name.
        hash: BlockHash,
        /// Its bytes.
        raw: Vec<u8>,
    },
    /// Blocks zstd could not shrink (random data, compressed files): each goes into a raw record of its
    /// own. A frame of them would save nothing and cost every read a copy of the whole frame (zstd's
    /// "decompression" of stored blocks is a memcpy), a fifth of a NAR download's CPU.
    Incompressible(Vec<(BlockHash, Vec<u8>)>),
    /// Several blocks in one zstd frame.
    Frame {
        /// Members in order: name, length, start in the decompressed frame.
        members: Vec<(BlockHash, u32, u32)>,
        /// Decompressed length.
        frame_len: u32,
        /// The zstd frame.
        payload: Vec<u8>,
        /// The dictionary block it was compressed with.
        dict: Option<BlockHash>,
    },
}

/// A trained zstd dictionary and the block that holds it.
#[derive(Clone)]
pub struct Dictionary {
    /// The block's name.
    pub hash: BlockHash,
    /// Its bytes.
    pub bytes: Arc<Vec<u8>>,
}

/// Largest dictionary trained (zstd's default size).
pub const DICT_MAX: usize = 112_640;

/// Train a dictionary on `samples` (blocks or pieces of them, concatenated) of the given sizes; `None`
/// when zstd finds too little to learn from.
pub fn train_dictionary(samples: &[u8], sizes: &[usize]) -> Option<Vec<u8>> {
    zstd::dict::from_continuous(samples, sizes, DICT_MAX).ok().filter(|d| d.len() >= 1024)
}

/// Undo a frame compressed with [`Dictionary`] `dict`: exactly `len` bytes or an error.
pub fn dict_decompress(dict: &[u8], payload: &[u8], len: usize) -> std::io::Result<Vec<u8>> {
    let out = zstd::bulk::Decompressor::with_dictionary(dict)?.decompress(payload, len)?;
    if out.len() != len {
        return Err(std::io::Error::other(format!("{} bytes after decompression, expected {len}", out.len())));
    }
    Ok(out)
}

/// Compress one block alone; raw when zstd does not shrink it.
fn single(c: &mut zstd::bulk::Compressor<'_>, hash: BlockHash, raw: Vec<u8>) -> std::io::Result<Compressed> {
    let raw_len = raw.len() as u32;
    let z = c.compress(&raw)?;
    Ok(if z.len() < raw.len() {
        Compressed::Single { hash, raw_len, payload: z, form: Form::Zstd }
    } else {
        Compressed::Single { hash, raw_len, payload: raw, form: Form::Raw }
    })
}

/// Compress `raw` with `base`'s bytes as a zstd raw-content prefix (zstd's `--patch-from`).
pub fn delta_compress(level: i32, base: &[u8], raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut c = zstd_safe::CCtx::create();
    let err = |code: usize| std::io::Error::other(zstd_safe::get_error_name(code));
    c.set_parameter(zstd_safe::CParameter::CompressionLevel(level)).map_err(err)?;
    c.set_parameter(zstd_safe::CParameter::ContentSizeFlag(true)).map_err(err)?;
    c.ref_prefix(base).map_err(err)?;
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(raw.len()));
    c.compress2(&mut out, raw).map_err(err)?;
    Ok(out)
}

thread_local! {
    /// A decompression context per thread for deltas: creating one per block cost a fifth of a read.
    static DELTA_DCTX: std::cell::RefCell<zstd_safe::DCtx<'static>> = std::cell::RefCell::new(zstd_safe::DCtx::create());
}

/// zstd's magic for a structured dictionary: a prefix starting with it would be parsed, not used raw.
const DICT_MAGIC: [u8; 4] = 0xEC30_A437u32.to_le_bytes();

/// Undo [`delta_compress`]: exactly `raw_len` bytes or an error.
pub fn delta_decompress(base: &[u8], payload: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    let err = |code: usize| std::io::Error::other(zstd_safe::get_error_name(code));
    let mut out = Vec::with_capacity(raw_len);
    // `decompress_using_dict` takes a dictionary without the magic as raw content, which is what
    // `ref_prefix` gave the compressor; a base that happens to start with the magic takes the slow road.
    let n = if base.starts_with(&DICT_MAGIC) {
        let mut d = zstd_safe::DCtx::create();
        d.ref_prefix(base).map_err(err)?;
        d.decompress(&mut out, payload).map_err(err)?
    } else {
        DELTA_DCTX.with_borrow_mut(|d| d.decompress_using_dict(&mut out, payload, base)).map_err(err)?
    };
    if n != raw_len {
        return Err(std::io::Error::other(format!("{n} bytes after decompression, expected {raw_len}")));
    }
    Ok(out)
}

/// Work for a compression thread.
pub enum Job {
    /// One block alone.
    Single(BlockHash, Vec<u8>),
    /// Neighbouring blocks into one frame, with a dictionary if the store has one.
    Frame(Vec<(BlockHash, Vec<u8>)>, Option<Dictionary>),
    /// One block against a similar stored one.
    Delta {
        /// The new block.
        hash: BlockHash,
        /// Its bytes.
        raw: Vec<u8>,
        /// The base's name.
        base: BlockHash,
        /// The base's bytes.
        base_raw: Arc<Vec<u8>>,
        /// The chain length the delta will have.
        depth: u8,
    },
}

struct Worker {
    cfg: StorageConfig,
    single: zstd::bulk::Compressor<'static>,
    /// Level 3, to judge whether a delta pays.
    fast: zstd::bulk::Compressor<'static>,
    /// A compressor loaded with the dictionary last used (loading one costs more than a small frame).
    with_dict: Option<(BlockHash, zstd::bulk::Compressor<'static>)>,
}

impl Worker {
    fn run(&mut self, job: Job) -> std::io::Result<Compressed> {
        match job {
            Job::Single(hash, raw) => single(&mut self.single, hash, raw),
            Job::Frame(blocks, None) if blocks.len() == 1 => {
                let (hash, raw) = blocks.into_iter().next().expect("one block");
                single(&mut self.single, hash, raw)
            }
            Job::Frame(blocks, dict) => {
                let total: usize = blocks.iter().map(|(_, b)| b.len()).sum();
                let mut joined = Vec::with_capacity(total);
                let mut members = Vec::with_capacity(blocks.len());
                for (hash, raw) in &blocks {
                    members.push((*hash, raw.len() as u32, joined.len() as u32));
                    joined.extend_from_slice(raw);
                }
                let payload = match &dict {
                    None => self.single.compress(&joined)?,
                    Some(d) => {
                        if self.with_dict.as_ref().map(|(h, _)| *h) != Some(d.hash) {
                            let c = zstd::bulk::Compressor::with_dictionary(self.cfg.level, &d.bytes)?;
                            self.with_dict = Some((d.hash, c));
                        }
                        let (_, c) = self.with_dict.as_mut().expect("just loaded");
                        c.compress(&joined)?
                    }
                };
                // Less than 1/64 saved: not worth a frame (see `Compressed::Incompressible`).
                if payload.len() + total / 64 >= total {
                    return Ok(Compressed::Incompressible(blocks));
                }
                Ok(Compressed::Frame { members, frame_len: joined.len() as u32, payload, dict: dict.map(|d| d.hash) })
            }
            Job::Delta { hash, raw, base, base_raw, depth } => {
                let d = delta_compress(self.cfg.delta_level, &base_raw, &raw)?;
                // A weak match: when the delta is not clearly smaller than the block compressed alone, the
                // block does better in a frame with its neighbours (and stays off a chain). A delta under a
                // sixteenth of the block is a strong one whatever the block would compress to alone, so
                // the trial compression (a tenth of the ingest's CPU) is skipped for it.
                let strong = d.len() * 16 <= raw.len();
                if !strong && d.len() * 4 >= self.fast.compress(&raw)?.len() * 3 {
                    return Ok(if self.cfg.frame_bytes == 0 {
                        single(&mut self.single, hash, raw)?
                    } else {
                        Compressed::Rejected { hash, raw }
                    });
                }
                Ok(Compressed::Single {
                    hash,
                    raw_len: raw.len() as u32,
                    payload: d,
                    form: Form::Delta { base, depth },
                })
            }
        }
    }
}

/// A few threads compressing; results come back in any order.
pub struct CompressPool {
    jobs: Option<SyncSender<Job>>,
    results: Receiver<std::io::Result<Compressed>>,
    in_flight: usize,
    workers: Vec<JoinHandle<()>>,
}

impl CompressPool {
    /// One worker per available core.
    pub fn new(cfg: StorageConfig) -> Result<Self, StoreError> {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(2 * n);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (result_tx, results) = mpsc::channel();
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let job_rx = job_rx.clone();
            let result_tx = result_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("nixdag-zstd-{i}"))
                .spawn(move || {
                    let compressors = zstd::bulk::Compressor::new(cfg.level)
                        .and_then(|single| Ok((single, zstd::bulk::Compressor::new(3)?)));
                    let mut w = match compressors {
                        Ok((single, fast)) => Worker { cfg, single, fast, with_dict: None },
                        Err(e) => {
                            let _ = result_tx.send(Err(e));
                            return;
                        }
                    };
                    loop {
                        let job = job_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(job) = job else { return };
                        if result_tx.send(w.run(job)).is_err() {
                            return;
                        }
                    }
                })
                .map_err(StoreError::io("starting a compression thread"))?;
            workers.push(handle);
        }
        Ok(CompressPool { jobs: Some(jobs), results, in_flight: 0, workers })
    }

    /// Queue work; waits while the queue is full, which bounds memory.
    pub fn submit(&mut self, job: Job) -> Result<(), StoreError> {
        let jobs = self.jobs.as_ref().expect("pool is open until dropped");
        jobs.send(job).map_err(|_| StoreError::Io {
            context: "compression threads".into(),
            source: std::io::Error::other("all compression threads stopped"),
        })?;
        self.in_flight += 1;
        Ok(())
    }

    /// The next finished record: without waiting (`wait = false`) or, while work is in flight, waiting.
    pub fn next(&mut self, wait: bool) -> Result<Option<Compressed>, StoreError> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        let r =
            if wait { self.results.recv().map_err(|_| TryRecvError::Disconnected) } else { self.results.try_recv() };
        match r {
            Ok(c) => {
                self.in_flight -= 1;
                c.map(Some).map_err(StoreError::io("zstd compression"))
            }
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(StoreError::Io {
                context: "compression threads".into(),
                source: std::io::Error::other("compression threads stopped with blocks in flight"),
            }),
        }
    }
}

impl Drop for CompressPool {
    fn drop(&mut self) {
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_round_trips_and_is_small_for_a_similar_block() {
        let mut x = 1u64;
        let base: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut new = base.clone();
        new[1000..1032].copy_from_slice(&[b'x'; 32]);
        let d = delta_compress(3, &base, &new).unwrap();
        assert!(d.len() < 200, "{} bytes", d.len());
        assert_eq!(delta_decompress(&base, &d, new.len()).unwrap(), new);
        // The wrong base, a wrong length, a damaged payload: errors, never wrong bytes.
        let other = vec![7u8; 65536];
        assert!(delta_decompress(&other, &d, new.len()).map(|b| b != new).unwrap_or(true));
        assert!(delta_decompress(&base, &d, new.len() + 1).is_err());
        assert!(delta_decompress(&base, &d[..d.len() / 2], new.len()).is_err());
    }

    /// A base that starts like a zstd dictionary must still be taken as raw bytes on both sides.
    #[test]
    fn delta_against_a_base_starting_with_the_dictionary_magic() {
        let mut base = vec![0u8; 8192];
        base[..4].copy_from_slice(&DICT_MAGIC);
        for (i, b) in base.iter_mut().enumerate().skip(4) {
            *b = (i * 7 % 251) as u8;
        }
        let mut new = base.clone();
        new[5000] ^= 1;
        let d = delta_compress(6, &base, &new).unwrap();
        assert_eq!(delta_decompress(&base, &d, new.len()).unwrap(), new);
    }

    #[test]
    fn storage_options_parse() {
        assert_eq!(StorageConfig::parse("").unwrap(), StorageConfig::default());
        let c = StorageConfig::parse("frames=1M,level=19,delta=off").unwrap();
        assert_eq!((c.frame_bytes, c.level, c.max_delta_depth), (1 << 20, 19, 0));
        assert_eq!(StorageConfig::parse("legacy").unwrap(), StorageConfig::per_block());
        assert!(StorageConfig::parse("dict=on").unwrap().dict);
        assert!(!StorageConfig::parse("dict=on,legacy").unwrap().dict);
        for bad in ["frames", "level=0", "level=23", "delta=9", "frames=17M", "colour=blue", "frames=x", "dict=yes"] {
            assert!(StorageConfig::parse(bad).is_err(), "{bad}");
        }
    }
}
