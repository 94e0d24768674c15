//! NAR encoding (`nixdag::nix::nar::dump_path` of a generated tree on disk, page cache warm) and
//! NAR parsing/validation (`nixdag::nix::nar::copy_validated` of the same NAR held in memory), both
//! into `WriteSink(std::io::sink())`.
//!
//! Two trees: a 32 MiB package-like tree (binaries, text files of mixed sizes, duplicates, symlinks)
//! and 3000 small files (0–4 KiB), where per-entry costs dominate.
//!
//! Baselines in the same groups:
//! - encode: `read_tree`, a sorted walk that opens and `io::copy`s every file into a sink (the file
//!   system work `dump_path` cannot avoid).
//! - parse: `read_64k` (moving the bytes through a 64 KiB buffer, as the parser does) and `sha256` of the NAR (the NarHash every
//!   validation must compute).

mod common;

use std::fs;
use std::hint::black_box;
use std::io;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nixdag::nix::nar::{copy_validated, dump_path, WriteSink};
use nixdag_testkit::{package_tree, small_files_tree, MIB};
use sha2::{Digest, Sha256};

use common::{nar_of, slow_group};

/// Read every file under `path` in NAR order; returns the bytes read.
fn read_tree(path: &Path) -> u64 {
    let meta = fs::symlink_metadata(path).unwrap();
    if meta.is_file() {
        let mut f = fs::File::open(path).unwrap();
        io::copy(&mut f, &mut io::sink()).unwrap()
    } else if meta.is_dir() {
        let mut names: Vec<_> = fs::read_dir(path).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        names.iter().map(|n| read_tree(&path.join(n))).sum()
    } else {
        fs::read_link(path).unwrap();
        0
    }
}

fn nar(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let trees =
        [("package_32MiB", tmp.path().join("pkg"), true), ("small_files_3000", tmp.path().join("small"), false)];
    for (label, dir, big) in &trees {
        if *big {
            package_tree(dir, 32 * MIB, 3);
        } else {
            small_files_tree(dir, 3000, 4);
        }
        let nar = nar_of(dir);
        read_tree(dir); // warm the page cache

        let mut g = c.benchmark_group(format!("nar_encode_{label}"));
        slow_group(&mut g, 3);
        g.throughput(Throughput::Bytes(nar.len() as u64));
        g.bench_function("dump_path", |b| b.iter(|| dump_path(black_box(dir), &mut WriteSink(io::sink())).unwrap()));
        g.bench_function("baseline_read_tree", |b| b.iter(|| read_tree(black_box(dir))));
        g.finish();

        let mut g = c.benchmark_group(format!("nar_parse_{label}"));
        slow_group(&mut g, 3);
        g.throughput(Throughput::Bytes(nar.len() as u64));
        g.bench_function("copy_validated", |b| {
            b.iter(|| copy_validated(black_box(&nar[..]), &mut WriteSink(io::sink())).unwrap())
        });
        g.bench_function("baseline_read_64k", |b| b.iter(|| common::read_64k(black_box(&nar[..]))));
        g.bench_function("baseline_sha256", |b| b.iter(|| Sha256::digest(black_box(&nar[..]))));
        g.finish();
    }
}

criterion_group!(benches, nar);
criterion_main!(benches);
