//! Files and trees on disk: a large random file written as a stream, and the benches' package-like trees.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::bytes::std_rng_bytes;
use crate::rng::Xorshift;
use crate::text::source_words;

/// One mebibyte.
pub const MIB: usize = 1 << 20;

/// Write `len` bytes of [`Xorshift::bytes`] for `seed` to `path`, a mebibyte at a time, so files of
/// gigabytes need no memory.
pub fn write_random(path: &Path, len: u64, seed: u64) {
    let mut f = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let mut rng = Xorshift::new(seed);
    let mut buf = vec![0u8; MIB];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// What [`package_tree`] or [`small_files_tree`] wrote.
pub struct TreeStats {
    /// Bytes of regular-file contents.
    pub bytes: u64,
    /// Regular files.
    pub files: usize,
}

/// Write a package-like tree of about `total` content bytes under `root` (which must not exist):
/// a few incompressible binaries in `bin/` (~35 %), many text files of log-uniform sizes
/// (256 B – 512 KiB) in `lib/`, some of them repeated under `share/doc/` (~10 %), and a few symlinks.
/// Drawn from rand's `StdRng`, as the benches' inputs always were.
pub fn package_tree(root: &Path, total: usize, seed: u64) -> TreeStats {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = TreeStats { bytes: 0, files: 0 };
    let put = |path: &Path, bytes: &[u8], exec: bool, stats: &mut TreeStats| {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
        if exec {
            fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        stats.bytes += bytes.len() as u64;
        stats.files += 1;
    };
    let bin_budget = total * 35 / 100;
    let mut i = 0;
    while (stats.bytes as usize) < bin_budget {
        let len = rng.gen_range(MIB..4 * MIB).min(bin_budget - stats.bytes as usize).max(1);
        let bytes = std_rng_bytes(seed ^ ((i as u64 + 1) * 0x9e37_79b9), len);
        put(&root.join(format!("bin/tool-{i}")), &bytes, true, &mut stats);
        i += 1;
    }
    let text_budget = total * 90 / 100;
    let mut kept = Vec::new();
    let mut i = 0;
    while (stats.bytes as usize) < text_budget {
        let len = (256.0 * 2048f64.powf(rng.gen::<f64>())) as usize;
        let bytes = source_words(&mut rng, len);
        let path = root.join(format!("lib/mod{:02}/file{i:04}.src", i % 23));
        put(&path, &bytes, false, &mut stats);
        if rng.gen_ratio(1, 5) {
            kept.push((i, bytes));
        }
        i += 1;
    }
    let mut j = 0;
    while (stats.bytes as usize) < total && !kept.is_empty() {
        let (i, bytes) = &kept[j % kept.len()];
        put(&root.join(format!("share/doc/copy{j:04}-of-{i}.src")), bytes, false, &mut stats);
        j += 1;
    }
    fs::create_dir_all(root.join("share/man")).unwrap();
    std::os::unix::fs::symlink("../bin/tool-0", root.join("share/man/tool")).unwrap();
    std::os::unix::fs::symlink("mod00", root.join("lib/current")).unwrap();
    stats
}

/// A tree of `n` small text files (0 – 4 KiB) in 50 directories: where per-entry costs show.
pub fn small_files_tree(root: &Path, n: usize, seed: u64) -> TreeStats {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = TreeStats { bytes: 0, files: 0 };
    for i in 0..n {
        let dir = root.join(format!("d{:02}", i % 50));
        fs::create_dir_all(&dir).unwrap();
        let len = rng.gen_range(0..4096);
        let bytes = source_words(&mut rng, len);
        fs::write(dir.join(format!("f{i:05}.txt")), &bytes).unwrap();
        stats.bytes += len as u64;
        stats.files += 1;
    }
    stats
}
