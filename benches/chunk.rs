//! Chunking throughput: `nixdag::chunk::Chunker` (default 16/64/256 KiB FastCDC) over 64 MiB of
//! pseudo-random bytes, fed in 64 KiB writes as the NAR parser feeds it.
//!
//! Baselines in the same group:
//! - `fastcdc_slice`: the `fastcdc` crate's own v2020 iterator over the whole buffer (same cut points);
//!   the ratio shows what the push-based, bounded-buffer wrapper costs.
//! - `blake3`: one single-threaded BLAKE3 hash of the buffer, the other per-byte cost every ingested
//!   byte pays.

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nixdag::chunk::{Chunker, ChunkerConfig};
use nixdag_testkit::{std_rng_bytes, MIB};

use common::slow_group;

fn chunking(c: &mut Criterion) {
    let data = std_rng_bytes(1, 64 * MIB);
    let mut g = c.benchmark_group("chunk_64MiB");
    slow_group(&mut g, 3);
    g.throughput(Throughput::Bytes(data.len() as u64));

    g.bench_function("nixdag_chunker", |b| {
        b.iter(|| {
            let mut chunks = 0usize;
            let mut chunker = Chunker::new(ChunkerConfig::default(), |c: &[u8]| {
                chunks += black_box(c).len().min(1);
                Ok(())
            });
            for part in data.chunks(64 * 1024) {
                chunker.write(part).unwrap();
            }
            chunker.finish().unwrap();
            chunks
        })
    });

    g.bench_function("baseline_fastcdc_slice", |b| {
        b.iter(|| fastcdc::v2020::FastCDC::new(black_box(&data), 16 * 1024, 64 * 1024, 256 * 1024).count())
    });

    g.bench_function("baseline_blake3", |b| b.iter(|| blake3::hash(black_box(&data))));
    g.finish();
}

criterion_group!(benches, chunking);
criterion_main!(benches);
