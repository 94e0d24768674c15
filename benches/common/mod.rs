//! Input generators shared by the criterion benches. Everything is generated from fixed seeds, so
//! every run measures the same bytes; nothing is read from outside the bench.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, SamplingMode};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// One mebibyte.
pub const MIB: usize = 1 << 20;

/// `len` incompressible bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Source-code-like bytes: words from a small vocabulary plus random identifiers. `zstd -3` shrinks
/// this to roughly a third, about what it does to the text in real store paths.
pub fn text_bytes(len: usize, rng: &mut StdRng) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "fn",
        "let",
        "mut",
        "self",
        "return",
        "struct",
        "impl",
        "the",
        "of",
        "and",
        "a",
        "to",
        "in",
        "is",
        "for",
        "if",
        "else",
        "while",
        "match",
        "Some",
        "None",
        "Ok(",
        "Err(",
        "=>",
        "{",
        "}",
        "(",
        ")",
        ";",
        "\n",
        "\n    ",
        "\n        ",
        "value",
        "index",
        "buffer",
        "length",
        "error",
        "config",
        "default",
        "import",
        "from",
        "def",
        "class",
        "module",
        "export",
        "const",
        "require",
        "#",
        "//",
        "=",
        "==",
    ];
    let mut v = Vec::with_capacity(len + 32);
    while v.len() < len {
        if rng.gen_ratio(1, 12) {
            v.extend_from_slice(format!("id_{:x}", rng.gen::<u32>() & 0xfffff).as_bytes());
        } else {
            v.extend_from_slice(WORDS[rng.gen_range(0..WORDS.len())].as_bytes());
        }
        v.push(b' ');
    }
    v.truncate(len);
    v
}

/// What [`package_tree`] wrote.
pub struct TreeStats {
    /// Bytes of regular-file contents.
    pub bytes: u64,
    /// Regular files.
    pub files: usize,
}

/// Write a package-like tree of about `total` content bytes under `root` (which must not exist):
/// a few incompressible binaries in `bin/` (~35 %), many text files of log-uniform sizes
/// (256 B – 512 KiB) in `lib/`, some of them repeated under `share/doc/` (~10 %), and a few symlinks.
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
        let bytes = random_bytes(len, seed ^ ((i as u64 + 1) * 0x9e37_79b9));
        put(&root.join(format!("bin/tool-{i}")), &bytes, true, &mut stats);
        i += 1;
    }
    let text_budget = total * 90 / 100;
    let mut kept = Vec::new();
    let mut i = 0;
    while (stats.bytes as usize) < text_budget {
        let len = (256.0 * 2048f64.powf(rng.gen::<f64>())) as usize;
        let bytes = text_bytes(len, &mut rng);
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
        let bytes = text_bytes(len, &mut rng);
        fs::write(dir.join(format!("f{i:05}.txt")), &bytes).unwrap();
        stats.bytes += len as u64;
        stats.files += 1;
    }
    stats
}

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
