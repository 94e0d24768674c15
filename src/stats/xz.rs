//! What a standard Nix binary cache would store for the same NARs: each NAR on its own, xz-compressed
//! (what `nix copy --to file://…` and Hydra write by default, preset 6). Compressing every NAR would
//! take minutes on a big store, so a sample is compressed and the ratio extrapolated by bytes.
//!
//! The sample is deterministic (the same store gives the same sample, so two reports compare) yet
//! unrelated to content or age: NARs are ordered by BLAKE3 of a fixed seed and their NarHash, and taken
//! in that order. Each contributes at most `max_bytes / max_nars` bytes (its start, when larger), so one
//! huge NAR cannot be the whole sample. The estimate is the ratio estimator `R = Σ xz_i / Σ raw_i`; its
//! standard error is the usual one for a ratio estimator under simple random sampling without
//! replacement (Cochran, *Sampling Techniques*, 6.4): `SE(R) = sqrt((1 − f) · s² / n) / x̄` with
//! `f` the sampled share of the NAR bytes (NARs read only in part are not known whole), and
//! `s² = Σ (xz_i − R·raw_i)² / (n − 1)`. With every NAR sampled whole it is exact (SE 0).

use std::io::{self, Read, Write};

use crate::dag::{Cid, DagReader};
use crate::store::Store;

/// How big a sample to compress.
#[derive(Debug, Clone, Copy)]
pub struct XzOptions {
    /// NARs sampled at most.
    pub max_nars: usize,
    /// Bytes compressed at most, in all.
    pub max_bytes: u64,
    /// xz preset (Nix's default is 6).
    pub preset: u32,
}

impl Default for XzOptions {
    fn default() -> Self {
        XzOptions { max_nars: 20, max_bytes: 16 << 20, preset: 6 }
    }
}

/// The estimate, with what it rests on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct XzEstimate {
    /// xz preset used.
    pub preset: u32,
    /// NARs in the store.
    pub population_nars: u64,
    /// Their bytes.
    pub population_bytes: u64,
    /// NARs sampled.
    pub sampled_nars: u64,
    /// Of those, NARs of which only the start was compressed (larger than their share of the budget).
    pub sampled_partially: u64,
    /// Raw bytes compressed.
    pub sampled_bytes: u64,
    /// What they compressed to.
    pub sampled_xz_bytes: u64,
    /// `sampled_xz_bytes / sampled_bytes`.
    pub ratio: f64,
    /// Standard error of `ratio`; null with fewer than 2 NARs sampled out of more.
    pub ratio_standard_error: Option<f64>,
    /// `ratio × population_bytes`: the NARs as a standard cache keeps them.
    pub estimated_xz_bytes: u64,
    /// Its standard error in bytes.
    pub estimated_xz_bytes_standard_error: Option<u64>,
}

/// A writer that only counts.
struct Count(u64);

impl Write for Count {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why the sample could not be compressed.
#[derive(Debug, thiserror::Error)]
pub enum XzError {
    /// A sampled NAR could not be read.
    #[error("reading NAR {hash} for the xz sample: {source}")]
    Read {
        /// Its NarHash.
        hash: String,
        /// Why.
        source: io::Error,
    },
    /// liblzma refused.
    #[error("xz-compressing the sample: {0}")]
    Compress(io::Error),
}

/// Compress the sample of `nars` (`(NarHash text, root, size)`) and extrapolate.
pub fn estimate(store: &Store, nars: &[(String, Cid, u64)], opts: XzOptions) -> Result<XzEstimate, XzError> {
    let population_bytes: u64 = nars.iter().map(|n| n.2).sum();
    let mut order: Vec<(blake3::Hash, usize)> = nars
        .iter()
        .enumerate()
        .map(|(i, n)| (blake3::hash(format!("nixdag dedup-stats xz sample 1 {}", n.0).as_bytes()), i))
        .collect();
    order.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let max_nars = opts.max_nars.max(1);
    let per_nar = (opts.max_bytes / max_nars as u64).max(1);
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut partial = 0;
    let mut used = 0u64;
    for (_, i) in order.into_iter().take(max_nars) {
        if used >= opts.max_bytes {
            break;
        }
        let (hash, root, size) = &nars[i];
        let take = (*size).min(per_nar).min(opts.max_bytes - used);
        let read_err = |source| XzError::Read { hash: hash.clone(), source };
        let mut enc = xz2::write::XzEncoder::new(Count(0), opts.preset);
        if take > 0 {
            let reader = DagReader::range(store, *root, 0, Some(take)).map_err(|e| read_err(io::Error::other(e)))?;
            let n = io::copy(&mut reader.take(take), &mut enc).map_err(read_err)?;
            if n != take {
                return Err(read_err(io::Error::new(io::ErrorKind::UnexpectedEof, "the NAR ended early")));
            }
        }
        let xz = enc.finish().map_err(XzError::Compress)?.0;
        if take < *size {
            partial += 1;
        }
        used += take;
        samples.push((take as f64, xz as f64));
    }
    let n = samples.len();
    let (sx, sy): (f64, f64) = samples.iter().fold((0.0, 0.0), |a, s| (a.0 + s.0, a.1 + s.1));
    let ratio = if sx > 0.0 { sy / sx } else { 0.0 };
    let whole = n == nars.len() && partial == 0;
    let se = if whole {
        Some(0.0)
    } else if n >= 2 && sx > 0.0 {
        let s2 = samples.iter().map(|(x, y)| (y - ratio * x).powi(2)).sum::<f64>() / (n as f64 - 1.0);
        // The sampled share of the bytes, not of the NARs: a NAR compressed only in part is not known.
        let f = if population_bytes > 0 { sx / population_bytes as f64 } else { 1.0 };
        let mean_x = sx / n as f64;
        Some(((1.0 - f).max(0.0) * s2 / n as f64).sqrt() / mean_x)
    } else {
        None
    };
    Ok(XzEstimate {
        preset: opts.preset,
        population_nars: nars.len() as u64,
        population_bytes,
        sampled_nars: n as u64,
        sampled_partially: partial,
        sampled_bytes: sx as u64,
        sampled_xz_bytes: sy as u64,
        ratio,
        ratio_standard_error: se,
        estimated_xz_bytes: (ratio * population_bytes as f64).round() as u64,
        estimated_xz_bytes_standard_error: se.map(|se| (se * population_bytes as f64).round() as u64),
    })
}
