//! Incompressible bytes, and edited copies of any bytes.
//!
//! Four generators of incompressible bytes, kept apart because the tests that use them were tuned on
//! their exact output (see the crate's documentation): which one a test uses says nothing about the data
//! but its origin. New tests take [`Xorshift::bytes`](crate::Xorshift::bytes) (the fastest) or [`noise`].

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::rng::{splitmix64, Xorshift};

/// `n` incompressible bytes for `seed`: [`splitmix_bytes`] from a spread seed. The store's form tests
/// (frames, deltas, damage, GC) use it for blocks zstd cannot shrink and deltas are made against.
pub fn noise(seed: u64, n: usize) -> Vec<u8> {
    splitmix_bytes(seed.wrapping_mul(0x1234_5678_9abc_def1) ^ 0x5eed, n)
}

/// `n` bytes: the low byte of each step of SplitMix64 iterated from `state`. The similarity tests'
/// blocks, whose super-features they pin.
pub fn splitmix_bytes(state: u64, n: usize) -> Vec<u8> {
    let mut x = state;
    (0..n)
        .map(|_| {
            x = splitmix64(x);
            x as u8
        })
        .collect()
}

/// `n` bytes: the low byte of each step of xorshift64 from state `seed | 1`. The chunker tests' data,
/// whose cut points they compare with fastcdc's.
pub fn xorshift_bytes(seed: u64, n: usize) -> Vec<u8> {
    Xorshift::from_state(seed | 1).low_bytes(n)
}

/// `n` bytes from rand's `StdRng` seeded with `seed`: the benches' data, so that a bench measures the same
/// bytes as it did before this kit (and figures in docs/BENCHMARKS.md stay comparable).
pub fn std_rng_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// `prev` with four small edits (8 bytes each, overwritten in place) at places derived from `seed`: the
/// next version of a block or a file, which a delta on `prev` stores in a few hundred bytes.
/// `prev` must be longer than 8 bytes.
pub fn edited(prev: &[u8], seed: u64) -> Vec<u8> {
    let mut v = prev.to_vec();
    for i in 0..4u64 {
        let at = (splitmix64(seed * 31 + i) % (v.len() as u64 - 8)) as usize;
        v[at..at + 8].copy_from_slice(&splitmix64(seed ^ (i << 32)).to_le_bytes());
    }
    v
}
