//! The two small generators the tests draw from: SplitMix64 and xorshift64. Both are a few lines, need
//! no crate, and are fast enough to make gigabytes of test data.

/// One step of SplitMix64 (Steele, Lea and Flood): a bijection of `u64` whose outputs look random even
/// for consecutive inputs, so `splitmix64(seed + i)` gives independent-looking words for small seeds.
pub const fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Marsaglia's xorshift64 (shifts 13, 7, 17): the integration tests' stream of incompressible data,
/// about a gigabyte a second, for inputs of hundreds of megabytes.
#[derive(Clone, Debug)]
pub struct Xorshift(u64);

impl Xorshift {
    /// A generator for `seed`, any value, 0 included: the seed is spread by the golden ratio and made odd,
    /// so nearby seeds start far apart and the state is never 0 (where xorshift would stay).
    pub fn new(seed: u64) -> Self {
        Xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A generator whose state is `state` itself, which must not be 0 (for data that was defined by its
    /// raw state, as [`xorshift_bytes`](crate::xorshift_bytes)'s).
    pub fn from_state(state: u64) -> Self {
        assert_ne!(state, 0, "xorshift's state must not be 0");
        Xorshift(state)
    }

    /// The next word.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Fill `buf`, eight bytes (one word, little-endian) a step.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }

    /// `n` bytes, as [`fill`](Self::fill) makes them.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.fill(&mut b);
        b
    }

    /// A number below `n` (below 1 when `n` is 0); slightly biased to small numbers, which no test minds.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// `n` bytes, one a step: the low byte of each word.
    pub fn low_bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
