//! The store: ingest of a 64 MiB NAR stream (`nixdag::import::add_nar`) into a temporary store, and
//! reading the whole NAR back (`nixdag::dag::DagReader` over `&Store`).
//!
//! The NAR is a generated package-like tree (incompressible binaries, text, duplicate files). The temp
//! store lives under `$TMPDIR`, so ingest includes its real fsyncs.
//!
//! `store_ingest_64MiB`:
//! - `add_nar_fresh_store`: a new, empty store per iteration (opening it is not timed).
//! - `add_nar_again`: the same NAR into a store that already holds it (every block deduplicated;
//!   the manifest commit is still made).
//! - `baseline_copy_validated`: parse, validate and hash the NAR, nothing else.
//! - `baseline_cpu_pipeline`: copy_validated → Chunker → BLAKE3 + zstd-3 per chunk, in memory: the
//!   CPU work ingest cannot avoid. `add_nar_fresh_store / this` is the cost of the DAG and the store.
//! - `baseline_read_64k`: moving the bytes through a 64 KiB buffer.
//!
//! `store_read_64MiB`:
//! - `dag_reader_whole_nar`: `DagReader::new(&store, root)` read to the end (page cache warm).
//! - `baseline_read_pack_file`: reading the pack file itself (compressed bytes) through 64 KiB.
//! - `baseline_decompress_verify`: zstd-decompressing (one reused context and buffer) and BLAKE3-checking
//!   the same chunks from memory: the CPU work a read cannot avoid.
//! - `baseline_read_64k`: the NAR from memory.

mod common;

use std::fs;
use std::hint::black_box;
use std::io;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use nixdag::chunk::{Chunker, ChunkerConfig};
use nixdag::dag::DagReader;
use nixdag::import::add_nar;
use nixdag::nix::nar::copy_validated;
use nixdag::store::Store;
use nixdag_testkit::{package_tree, MIB};

use common::{nar_of, read_64k, slow_group};

fn fresh_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn store(c: &mut Criterion) {
    let src = tempfile::tempdir().unwrap();
    package_tree(&src.path().join("pkg"), 64 * MIB, 5);
    let nar = nar_of(&src.path().join("pkg"));
    let cfg = ChunkerConfig::default();

    let mut g = c.benchmark_group("store_ingest_64MiB");
    slow_group(&mut g, 10);
    g.throughput(Throughput::Bytes(nar.len() as u64));

    g.bench_function("add_nar_fresh_store", |b| {
        b.iter_batched(
            fresh_store,
            |(dir, store)| {
                black_box(add_nar(&store, &nar[..], cfg, None).unwrap());
                (dir, store) // dropped (and deleted) outside the timing
            },
            BatchSize::PerIteration,
        )
    });

    let (_dir, full) = fresh_store();
    let added = add_nar(&full, &nar[..], cfg, None).unwrap();
    g.bench_function("add_nar_again", |b| b.iter(|| add_nar(&full, black_box(&nar[..]), cfg, None).unwrap()));

    g.bench_function("baseline_copy_validated", |b| {
        b.iter(|| copy_validated(black_box(&nar[..]), &mut nixdag::nix::nar::WriteSink(io::sink())).unwrap())
    });

    let mut zstd = zstd::bulk::Compressor::new(3).unwrap();
    g.bench_function("baseline_cpu_pipeline", |b| {
        b.iter(|| {
            let mut stored = 0usize;
            let mut chunker = Chunker::new(cfg, |chunk: &[u8]| {
                black_box(blake3::hash(chunk));
                stored += zstd.compress(chunk)?.len().min(chunk.len());
                Ok(())
            });
            copy_validated(black_box(&nar[..]), &mut chunker).unwrap();
            chunker.finish().unwrap();
            stored
        })
    });

    g.bench_function("baseline_read_64k", |b| b.iter(|| read_64k(black_box(&nar[..]))));
    g.finish();

    // Reading back. The chunks as the store keeps them: zstd-3, or raw when that does not shrink them.
    let mut chunks = Vec::new();
    let mut chunker = Chunker::new(cfg, |chunk: &[u8]| {
        let z = zstd::bulk::compress(chunk, 3)?;
        let stored = if z.len() < chunk.len() { z } else { chunk.to_vec() };
        chunks.push((blake3::hash(chunk), chunk.len(), stored));
        Ok(())
    });
    copy_validated(&nar[..], &mut chunker).unwrap();
    chunker.finish().unwrap();
    let packs: Vec<_> = fs::read_dir(full.dir().join("packs")).unwrap().map(|e| e.unwrap().path()).collect();

    let mut g = c.benchmark_group("store_read_64MiB");
    slow_group(&mut g, 3);
    g.throughput(Throughput::Bytes(nar.len() as u64));
    g.bench_function("dag_reader_whole_nar", |b| b.iter(|| read_64k(DagReader::new(&full, added.root).unwrap())));
    g.bench_function("baseline_read_pack_file", |b| {
        b.iter(|| packs.iter().map(|p| read_64k(fs::File::open(p).unwrap())).sum::<u64>())
    });
    let mut unzstd = zstd::bulk::Decompressor::new().unwrap();
    let mut raw = Vec::with_capacity(cfg.max_size());
    g.bench_function("baseline_decompress_verify", |b| {
        b.iter(|| {
            let mut out = 0;
            for (hash, len, stored) in &chunks {
                let bytes = if stored.len() == *len {
                    &stored[..]
                } else {
                    raw.clear();
                    unzstd.decompress_to_buffer(&stored[..], &mut raw).unwrap();
                    &raw[..]
                };
                assert_eq!(blake3::hash(bytes), *hash);
                out += black_box(bytes).len();
            }
            out
        })
    });
    g.bench_function("baseline_read_64k", |b| b.iter(|| read_64k(black_box(&nar[..]))));
    g.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
