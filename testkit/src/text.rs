//! Compressible text: words from a small vocabulary, each generator with its own vocabulary and its own
//! random source. They differ in how much they compress and how often a window repeats, and the tests
//! that use them were tuned on exactly that (frame and delta sizes, recompressors' levels, bench figures),
//! so each is kept as it was and named after its words.

use rand::rngs::StdRng;
use rand::Rng;

use crate::rng::{splitmix64, Xorshift};

/// `n` bytes of words from 24 words of the store's own vocabulary ("store", "block", "frame", …), one in
/// sixteen followed by a newline. zstd shrinks it to about a quarter. The store's form tests' compressible
/// blocks and tar members.
pub fn store_words(seed: u64, n: usize) -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "store", "block", "frame", "delta", "base", "chain", "nix", "path", "hash", "pack", "record", "index", "zstd",
        "level", "depth", "super", "feature", "commit", "ingest", "verify", "gc", "compact", "read", "write",
    ];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x7e47;
    let mut out = Vec::with_capacity(n + 16);
    while out.len() < n {
        x = splitmix64(x);
        out.extend_from_slice(WORDS[(x % WORDS.len() as u64) as usize].as_bytes());
        out.push(if x >> 60 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(n);
    out
}

/// `n` bytes of Nix words ("derivation", "output", …) with numbers in between, compressible about 3:1
/// but never repeating a 64-byte window, so content-defined chunking and similarity sampling see real
/// variety. The integration tests' package trees.
pub fn nix_words(rng: &mut Xorshift, n: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "derivation",
        "output",
        "store",
        "path",
        "hash",
        "closure",
        "builder",
        "system",
        "input",
        "source",
        "patch",
        "phase",
        "install",
        "check",
        "fixup",
        "unpack",
    ];
    let mut out = Vec::with_capacity(n + 32);
    while out.len() < n {
        let r = rng.next_u64();
        out.extend_from_slice(WORDS[(r % 16) as usize].as_bytes());
        match (r >> 8) % 8 {
            0 => out.extend_from_slice(format!(" {}\n", (r >> 16) % 100_000).as_bytes()),
            1 => out.extend_from_slice(b" = "),
            _ => out.push(b' '),
        }
    }
    out.truncate(n);
    out
}

/// `n` bytes of Rust tokens ("fn ", "Vec<u8>", "{\n", …) with a hex number one time in seventeen, from
/// Knuth's MMIX linear congruential generator: deflate finds matches in it at every level, so the
/// recompressors' tests see each level make a different stream.
pub fn rust_tokens(seed: u64, n: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "fn ",
        "let ",
        "mut ",
        "self",
        ".push(",
        "return ",
        "Vec<u8>",
        "{\n",
        "}\n",
        "    ",
        "match ",
        "=> ",
        "Some(",
        "None",
        "Ok(",
        "Err(",
        "impl ",
        "for ",
        "in ",
        "0x1f8b",
        "// comment ",
        "pub ",
        "struct ",
    ];
    const MUL: u64 = 6364136223846793005;
    const ADD: u64 = 1442695040888963407;
    let mut s = seed.wrapping_mul(MUL).wrapping_add(ADD);
    let mut out = Vec::with_capacity(n + 16);
    while out.len() < n {
        s = s.wrapping_mul(MUL).wrapping_add(ADD);
        let r = (s >> 33) as usize;
        if r.is_multiple_of(17) {
            out.extend_from_slice(format!("{:x}", s >> 20).as_bytes()); // some entropy
        } else {
            out.extend_from_slice(WORDS[r % WORDS.len()].as_bytes());
        }
    }
    out.truncate(n);
    out
}

/// `n` bytes of source-code-like words (keywords of several languages, punctuation, indentation) plus
/// random identifiers one time in twelve, from rand's `StdRng`. `zstd -3` shrinks it to roughly a third,
/// about what it does to the text in real store paths. The benches' text files.
pub fn source_words(rng: &mut StdRng, n: usize) -> Vec<u8> {
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
    let mut v = Vec::with_capacity(n + 32);
    while v.len() < n {
        if rng.gen_ratio(1, 12) {
            v.extend_from_slice(format!("id_{:x}", rng.gen::<u32>() & 0xfffff).as_bytes());
        } else {
            v.extend_from_slice(WORDS[rng.gen_range(0..WORDS.len())].as_bytes());
        }
        v.push(b' ');
    }
    v.truncate(n);
    v
}
