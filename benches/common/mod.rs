//! What the criterion benches share besides their inputs: the settings and readers they measure with.
//! The inputs come from the test kit (`nixdag_testkit`, testkit/), generated from fixed seeds so that
//! every run measures the same bytes and nothing is read from outside the bench.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, SamplingMode};

/// The NAR of `path`, in memory.
pub fn nar_of(path: &Path) -> Vec<u8> {
    let mut nar = Vec::new();
    nixdag::nix::nar::dump_path(path, &mut nar).unwrap();
    nar
}

/// Settings for groups whose iterations take tens to hundreds of milliseconds: ten flat samples,
/// so each benchmark finishes in a few seconds.
pub fn slow_group(g: &mut BenchmarkGroup<'_, WallTime>, measure_secs: u64) {
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(measure_secs));
}

/// Read `r` to the end through a 64 KiB buffer (`io::copy` into `io::sink()` would skip the copy
/// for in-memory readers). Returns the bytes read.
pub fn read_64k(mut r: impl std::io::Read) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match r.read(&mut buf).unwrap() {
            0 => return total,
            n => {
                std::hint::black_box(&buf[..n]);
                total += n as u64;
            }
        }
    }
}
