//! DAG building: `nixdag::dag::DagBuilder` (174-link balanced layout) into `nixdag::dag::MemBlocks`.
//!
//! Two shapes: 32 MiB in 64 KiB leaves (what the default chunker produces: few interior nodes) and
//! 8 MiB in 1 KiB leaves (8192 leaves, 49 interior nodes: per-block overhead shows).
//!
//! Baselines in the same group:
//! - `blake3_per_leaf`: hashing each leaf, the least any builder must do.
//! - `blake3_per_leaf_and_copy`: hashing and copying each leaf into a `Vec` of blocks, which is what
//!   `MemBlocks` must do at least; the gap to the builder is node encoding plus the `HashMap`.

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nixdag::dag::{DagBuilder, MemBlocks};
use nixdag_testkit::{std_rng_bytes, MIB};

use common::slow_group;

fn build(c: &mut Criterion, name: &str, total: usize, leaf: usize) {
    let data = std_rng_bytes(2, total);
    let leaves: Vec<&[u8]> = data.chunks(leaf).collect();
    let mut g = c.benchmark_group(name);
    slow_group(&mut g, 3);
    g.throughput(Throughput::Bytes(data.len() as u64));

    g.bench_function("dag_builder_memblocks", |b| {
        b.iter_with_large_drop(|| {
            let mut builder = DagBuilder::new(MemBlocks::default());
            for l in &leaves {
                builder.push_leaf(l).unwrap();
            }
            builder.finish().unwrap()
        })
    });

    g.bench_function("baseline_blake3_per_leaf", |b| {
        b.iter(|| {
            for l in &leaves {
                black_box(blake3::hash(l));
            }
        })
    });

    g.bench_function("baseline_blake3_per_leaf_and_copy", |b| {
        b.iter_with_large_drop(|| leaves.iter().map(|l| (blake3::hash(l), l.to_vec())).collect::<Vec<_>>())
    });
    g.finish();
}

fn dag(c: &mut Criterion) {
    build(c, "dag_32MiB_64KiB_leaves", 32 * MIB, 64 * 1024);
    build(c, "dag_8MiB_1KiB_leaves", 8 * MIB, 1024);
}

criterion_group!(benches, dag);
criterion_main!(benches);
