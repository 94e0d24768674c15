//! Finding a stored block that resembles a new one, so the new one can be stored as a delta against it.
//!
//! Features in the style of Shilane et al. ("WAN optimized replication", FAST'12): a gear rolling hash
//! runs over the block; at content-defined sample positions (about one in 32 bytes) each of [`FEATURES`]
//! linear transforms of the rolling hash is applied and the maximum per transform kept. Groups of
//! [`PER_SUPER`] features are hashed into one super-feature; the ingest indexes each and picks the stored
//! block that most of a new block's super-features point to. Grouping 4 features (3 lookups) finds only
//! near-copies; single features (12 lookups, 12 index rows a block) also find blocks that share half
//! their content, and the delta still pays for them: on the corpus 1.5 points of stored bytes for 0.3
//! points more index (docs/STORAGE.md). Sampling keeps the cost at one gear step per byte plus a few
//! multiplications per sample. Written here: no crate offers super-features.

/// Features per block.
pub const FEATURES: usize = 12;
/// Features hashed into one super-feature.
pub const PER_SUPER: usize = 1;
/// Super-features per block.
pub const SUPERS: usize = FEATURES / PER_SUPER;
/// Blocks shorter than this are not worth a delta (the record header and base lookup cost more).
pub const MIN_LEN: usize = 4096;
/// A position is sampled when these bits of the rolling hash are zero: one in 32.
const SAMPLE_MASK: u64 = 0x1f << 40;

/// Gear table: 256 fixed pseudo-random words (splitmix64 of the byte), so features are stable forever:
/// they are stored in the index.
const GEAR: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = splitmix(i as u64 ^ 0x6e69_7864_6167_0001);
        i += 1;
    }
    t
};

/// Multipliers and addends of the feature transforms (odd multipliers, so each is a bijection).
const TRANSFORMS: [(u64, u64); FEATURES] = {
    let mut t = [(0u64, 0u64); FEATURES];
    let mut i = 0;
    while i < FEATURES {
        t[i] = (splitmix(1000 + i as u64) | 1, splitmix(2000 + i as u64));
        i += 1;
    }
    t
};

const fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The super-features of `block`, or `None` when it is too short or too uniform to sample.
/// Super-feature `i` has `i` in its top three bits, so they never collide with each other in one index
/// table.
pub fn super_features(block: &[u8]) -> Option<[u64; SUPERS]> {
    if block.len() < MIN_LEN {
        return None;
    }
    let mut max = [0u64; FEATURES];
    let mut fp = 0u64;
    let mut samples = 0u32;
    for &b in block {
        fp = (fp << 1).wrapping_add(GEAR[b as usize]);
        if fp & SAMPLE_MASK == 0 {
            samples += 1;
            for (m, &(a, c)) in max.iter_mut().zip(TRANSFORMS.iter()) {
                let v = fp.wrapping_mul(a).wrapping_add(c);
                if v > *m {
                    *m = v;
                }
            }
        }
    }
    if samples < 8 {
        return None;
    }
    let mut out = [0u64; SUPERS];
    for (i, group) in max.chunks_exact(PER_SUPER).enumerate() {
        let mut h = blake3::Hasher::new();
        for f in group {
            h.update(&f.to_le_bytes());
        }
        let d = h.finalize();
        let mut w = [0u8; 8];
        w.copy_from_slice(&d.as_bytes()[..8]);
        out[i] = (u64::from_le_bytes(w) >> 4) | ((i as u64) << 60);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use nixdag_testkit::splitmix_bytes as noise;

    use super::*;

    #[test]
    fn similar_blocks_share_a_super_feature_and_different_ones_do_not() {
        let a = noise(1, 64 * 1024);
        let mut b = a.clone();
        // A few scattered edits, as between two versions of a file.
        for i in [100usize, 9000, 30000, 50000] {
            b[i..i + 8].copy_from_slice(b"CHANGED!");
        }
        let c = noise(2, 64 * 1024);
        let (fa, fb, fc) = (super_features(&a).unwrap(), super_features(&b).unwrap(), super_features(&c).unwrap());
        assert!(fa.iter().zip(fb.iter()).any(|(x, y)| x == y), "{fa:x?} vs {fb:x?}");
        assert!(fa.iter().zip(fc.iter()).all(|(x, y)| x != y));
    }

    #[test]
    fn short_blocks_have_none() {
        assert!(super_features(&noise(3, 1000)).is_none());
    }

    /// Pinned: super-features are stored in the index, so they must never change.
    #[test]
    fn features_are_stable() {
        let f = super_features(&noise(7, 8192)).unwrap();
        assert_eq!(f[0] >> 60, 0);
        assert_eq!(f[SUPERS - 1] >> 60, SUPERS as u64 - 1);
        assert_eq!(super_features(&noise(7, 8192)).unwrap(), f);
    }
}
