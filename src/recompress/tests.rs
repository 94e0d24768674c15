use std::io::{self, Read};

use nixdag_testkit::rust_tokens;

use super::zlib;
use super::*;

/// A header as zlib's gzip wrapper writes it for `level` (XFL 2 for the best level, 4 for the fastest).
fn gzip_header_for(level: u8, flags: u8, extra: &[u8]) -> Vec<u8> {
    let xfl = match level {
        9.. => 2,
        0 | 1 => 4,
        _ => 0,
    };
    let mut h = vec![0x1f, 0x8b, 8, flags, 0x12, 0x34, 0x56, 0x78, xfl, 3];
    h.extend_from_slice(extra);
    h
}

fn trailer(data: &[u8]) -> Vec<u8> {
    let mut t = zlib::crc32(0, data).to_le_bytes().to_vec();
    t.extend_from_slice(&(data.len() as u32).to_le_bytes());
    t
}

/// A gzip file whose body is raw deflate by `enc`, data pushed in one piece.
fn gzip_with(header: Vec<u8>, mut enc: Box<dyn race::Encoder>, data: &[u8]) -> Vec<u8> {
    let mut out = header;
    enc.push(data, &mut out).unwrap();
    enc.finish(&mut out).unwrap();
    out.extend_from_slice(&trailer(data));
    out
}

fn zlib_gzip(data: &[u8], level: u8, mem_level: u8, strategy: u8) -> Vec<u8> {
    let d = zlib::Deflate::new(level, 15, mem_level, strategy).unwrap();
    gzip_with(gzip_header_for(level, 0, &[]), Box::new(d), data)
}

/// A reader that returns at most `step` bytes per call.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Runs analyze (with a trickling reader) and returns the recipe and what `content` saw.
fn run(file: &[u8], step: usize) -> (Option<Recipe>, Vec<u8>) {
    let mut seen = Vec::new();
    let r = analyze(Trickle { data: file, step }, |b| {
        seen.extend_from_slice(b);
        Ok(())
    })
    .unwrap();
    (r, seen)
}

fn rebuilt(recipe: &Recipe, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    rebuild(recipe, Trickle { data, step: 10_000 }, &mut out).unwrap();
    out
}

fn assert_round_trip(file: &[u8], data: &[u8]) -> Recipe {
    for step in [usize::MAX, 4093] {
        let (recipe, seen) = run(file, step);
        let recipe = recipe.unwrap_or_else(|| panic!("no recipe found (read step {step})"));
        assert!(seen == data, "content differs from the decompressed stream");
        assert!(rebuilt(&recipe, data) == file, "rebuild differs ({})", recipe.describe());
        assert_eq!(Recipe::decode(&recipe.encode()).unwrap(), recipe);
    }
    run(file, usize::MAX).0.unwrap()
}

#[test]
fn zlib_levels_round_trip() {
    let data = rust_tokens(1, 700_000);
    for level in 1..=9 {
        let file = zlib_gzip(&data, level, 8, 0);
        let recipe = assert_round_trip(&file, &data);
        assert_eq!(recipe.codec_name(), "gzip");
    }
}

#[test]
fn rust_backend_levels_round_trip() {
    let data = rust_tokens(2, 400_000);
    for (backend, levels) in [(gzip::Backend::MinizOxide, 1..=10), (gzip::Backend::ZlibRs, 1..=9)] {
        for level in levels {
            let p = gzip::Params { backend, level, window_bits: 15, mem_level: 8, strategy: 0 };
            let file = gzip_with(gzip_header_for(level, 0, &[]), gzip_encoder(&p), &data);
            assert_round_trip(&file, &data);
        }
    }
}

/// The XFL byte narrows the levels tried (see `gzip::level_fits_xfl`): behind a header that claims a middle
/// level, level 9 is not tried (a middle level may still happen to give the same bytes).
#[test]
fn xfl_narrows_the_levels_tried() {
    let data = rust_tokens(9, 200_000);
    let mut file = zlib_gzip(&data, 9, 8, 0);
    file[8] = 0;
    let (recipe, seen) = run(&file, usize::MAX);
    if let Some(recipe) = recipe {
        assert!(!recipe.describe().contains("level 9"), "{}", recipe.describe());
        assert!(rebuilt(&recipe, &seen) == file);
    }
    file[8] = 4;
    assert!(run(&file, usize::MAX).0.is_none(), "level 9 rebuilt by level 1");
    file[8] = 0x55; // not a value zlib writes: every level is tried
    assert_round_trip(&file, &data);
}

fn gzip_encoder(p: &gzip::Params) -> Box<dyn race::Encoder> {
    // Same constructor analyze and rebuild use.
    let r = gzip::GzipRecipe { header: gzip_header_for(p.level, 0, &[]), params: *p };
    let mut enc_out = Vec::new();
    // Encode/decode checks the params are valid before we build from them.
    Recipe { kind: Kind::Gzip(r.clone()) }.encode().clone_into(&mut enc_out);
    assert!(Recipe::decode(&enc_out).is_ok());
    gzip::encoder_for_tests(p)
}

#[test]
fn empty_and_tiny_content_round_trip() {
    for data in [&b""[..], b"a", b"hello hello hello hello\n"] {
        for level in [1, 6, 9] {
            let file = zlib_gzip(data, level, 8, 0);
            assert_round_trip(&file, data);
        }
    }
}

#[test]
fn header_fields_are_kept_literally() {
    let data = rust_tokens(3, 50_000);
    // FEXTRA, FNAME, FCOMMENT, FHCRC (the CRC16 is not checked, only kept).
    let mut extra = vec![4, 0, b'A', b'B', 0, 0];
    extra.extend_from_slice(b"name.tar\0a comment\0");
    extra.extend_from_slice(&[0xaa, 0xbb]);
    let header = gzip_header_for(9, FEXTRA_ALL, &extra);
    let file = gzip_with(header.clone(), Box::new(zlib::Deflate::new(9, 15, 8, 0).unwrap()), &data);
    let recipe = assert_round_trip(&file, &data);
    let Kind::Gzip(g) = &recipe.kind else { panic!("not gzip") };
    assert_eq!(g.header, header);
}

const FEXTRA_ALL: u8 = 0x02 | 0x04 | 0x08 | 0x10;

#[test]
fn unsupported_compressor_gives_none_and_a_prefix_of_content() {
    let data = rust_tokens(4, 600_000);
    // Huffman-only, memLevel 1 and stored blocks are not among the candidates.
    for (level, mem, strategy) in [(6, 8, 2), (6, 1, 0), (0, 8, 0)] {
        let file = zlib_gzip(&data, level, mem, strategy);
        let (recipe, seen) = run(&file, 65_536);
        assert!(recipe.is_none(), "level {level} memLevel {mem} strategy {strategy}");
        assert!(data.starts_with(&seen));
    }
}

#[test]
fn trailing_bytes_and_second_member_give_none() {
    let data = rust_tokens(5, 100_000);
    let one = zlib_gzip(&data, 9, 8, 0);
    let mut garbage = one.clone();
    garbage.extend_from_slice(b"\0\0\0\0");
    let mut two = one.clone();
    two.extend_from_slice(&zlib_gzip(b"second", 9, 8, 0));
    for file in [garbage, two] {
        let (recipe, seen) = run(&file, usize::MAX);
        assert!(recipe.is_none());
        // The first member decodes fully before the tail is seen.
        assert!(seen == data);
    }
}

#[test]
fn corrupt_gzip_never_gives_a_wrong_recipe() {
    let data = rust_tokens(6, 80_000);
    let file = zlib_gzip(&data, 6, 8, 0);
    // Truncations.
    for cut in [0, 1, 3, 9, 10, 11, 100, file.len() / 2, file.len() - 8, file.len() - 1] {
        let (recipe, _) = run(&file[..cut], usize::MAX);
        assert!(recipe.is_none(), "truncated at {cut}");
    }
    // Bad CRC and ISIZE.
    for at in [file.len() - 8, file.len() - 1] {
        let mut bad = file.clone();
        bad[at] ^= 1;
        assert!(run(&bad, usize::MAX).0.is_none());
    }
    // Flipped body bytes: whatever analyze accepts must rebuild to exactly that file.
    for i in 0..200 {
        let mut bad = file.clone();
        let at = 10 + (i * 7919) % (file.len() - 18);
        bad[at] ^= 1 << (i % 8);
        let (recipe, seen) = run(&bad, usize::MAX);
        if let Some(recipe) = recipe {
            assert!(rebuilt(&recipe, &seen) == bad);
        }
    }
}

#[test]
fn not_gzip_gives_none() {
    for file in [&b""[..], b"\x1f", b"\x1f\x8b", b"hello world", b"\x1f\x8b\x08\xe0\0\0\0\0\0\x03xx", b"\xfd7zXZ\0\0\0"]
    {
        let (recipe, seen) = run(file, usize::MAX);
        assert!(recipe.is_none());
        assert!(seen.is_empty());
    }
}

#[test]
fn io_errors_are_errors() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    assert!(matches!(analyze(Failing, |_| Ok(())), Err(RecompressError::ReadInput { offset: 0, .. })));
    let file = zlib_gzip(&rust_tokens(7, 10_000), 9, 8, 0);
    let r = analyze(&file[..], |_| Err(io::Error::other("full")));
    assert!(matches!(r, Err(RecompressError::Content { offset: 0, .. })));
}

#[test]
fn recipe_decode_rejects_garbage_without_panicking() {
    let data = rust_tokens(8, 1_000);
    let mut extra = vec![2, 0, 1, 2];
    extra.extend_from_slice(b"n\0");
    let header = gzip_header_for(9, 0x04 | 0x08, &extra);
    let file = gzip_with(header, Box::new(zlib::Deflate::new(9, 15, 8, 0).unwrap()), &data);
    let recipe = run(&file, usize::MAX).0.unwrap();
    let enc = recipe.encode();
    assert_eq!(enc[0], RECIPE_VERSION);
    assert_eq!(Recipe::decode(&enc).unwrap(), recipe);
    for cut in 0..enc.len() {
        assert!(Recipe::decode(&enc[..cut]).is_err(), "prefix of {cut} bytes decoded");
    }
    let mut long = enc.clone();
    long.push(0);
    assert!(Recipe::decode(&long).is_err());
    let mut v2 = enc.clone();
    v2[0] = 2;
    assert!(matches!(Recipe::decode(&v2), Err(RecompressError::Recipe(RecipeError::Version { got: 2, .. }))));
    // Every single-byte change either fails or decodes to something that re-encodes identically.
    for i in 0..enc.len() {
        for bit in 0..8 {
            let mut m = enc.clone();
            m[i] ^= 1 << bit;
            if let Ok(r) = Recipe::decode(&m) {
                assert_eq!(r.encode(), m);
            }
        }
    }
    // Random bytes.
    let mut s = 0x9e3779b97f4a7c15u64;
    for n in 0..20_000 {
        let len = n % 40;
        let b: Vec<u8> = (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                if n % 3 == 0 && len > 2 {
                    (s % 3) as u8
                } else {
                    s as u8
                }
            })
            .collect();
        let _ = Recipe::decode(&b);
    }
}

/// Real `.crate` files from cargo's cache, if any: whatever qualifies must rebuild exactly.
#[test]
fn real_crates_from_cargo_cache() {
    let Some(home) = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")))
    else {
        return;
    };
    let Ok(registries) = std::fs::read_dir(home.join("registry/cache")) else { return };
    let mut files: Vec<_> = registries
        .flatten()
        .filter_map(|d| std::fs::read_dir(d.path()).ok())
        .flat_map(|d| d.flatten().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "crate"))
        .collect();
    files.sort();
    files.truncate(40);
    let (mut ok, mut total) = (0, 0);
    for path in files {
        let Ok(file) = std::fs::read(&path) else { continue };
        total += 1;
        let (recipe, seen) = run(&file, usize::MAX);
        if let Some(recipe) = recipe {
            ok += 1;
            assert!(rebuilt(&recipe, &seen) == file, "{}", path.display());
        }
    }
    eprintln!("{ok} of {total} cached crates rebuild exactly");
}

// ---------------------------------------------------------------------------------------------------
// bzip2 and xz, as Debian's `bzip2` and `xz` write them.

/// `data` compressed by the command `tool args…` (stdin to stdout). The tools are part of the test
/// set-up (scripts/test installs them); a missing one fails the test rather than skipping it.
fn compressed_by(tool: &str, args: &[&str], data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {tool} (scripts/test installs it): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{tool} {args:?} failed");
    out.stdout
}

/// `rust_tokens` with some bytes changed, so a tool's output differs from run to run of the tests' data.
fn varied_text(len: usize, seed: u64) -> Vec<u8> {
    let mut t = rust_tokens(seed, len);
    for i in (0..t.len()).step_by(4099) {
        t[i] = (i as u64 ^ seed) as u8;
    }
    t
}

#[test]
fn bzip2_files_from_the_bzip2_tool_round_trip() {
    let data = varied_text(450_000, 71);
    for (level, args) in [(9, &["-c"][..]), (1, &["-1", "-c"]), (5, &["-5", "-c"])] {
        let file = compressed_by("bzip2", args, &data);
        let recipe = assert_round_trip(&file, &data);
        assert_eq!(recipe.codec(), Codec::Bzip2);
        assert!(recipe.describe().ends_with(&format!("-{level}")), "{}", recipe.describe());
    }
    // Empty content too.
    assert_round_trip(&compressed_by("bzip2", &["-c"], b""), b"");
}

#[test]
fn xz_files_from_the_xz_tool_round_trip() {
    let data = varied_text(700_000, 72);
    for (want, args) in [
        ("-6,", &["-c"][..]),
        ("-0,", &["-0", "-c"]),
        ("-3e,", &["-3e", "-c"]),
        ("-6,", &["-c", "--check=crc32"]),
        ("-6,", &["-c", "--check=sha256"]),
        ("-1,", &["-1", "-c", "--check=none"]),
    ] {
        let file = compressed_by("xz", args, &data);
        let recipe = assert_round_trip(&file, &data);
        assert_eq!(recipe.codec(), Codec::Xz);
        assert!(recipe.describe().contains(want), "xz {args:?}: {}", recipe.describe());
    }
    assert_round_trip(&compressed_by("xz", &["-c"], b""), b"");
}

#[test]
fn unsupported_bzip2_and_xz_layouts_give_none() {
    let data = varied_text(300_000, 73);
    // Two bzip2 streams back to back (as pbzip2 writes), xz in two streams, and trailing bytes.
    let bz = compressed_by("bzip2", &["-c"], &data);
    let two_bz = [bz.clone(), bz.clone()].concat();
    assert!(run(&two_bz, usize::MAX).0.is_none());
    let xz = compressed_by("xz", &["-c"], &data);
    assert!(run(&[xz.clone(), xz.clone()].concat(), usize::MAX).0.is_none());
    assert!(run(&[&xz[..], b"\0"].concat(), usize::MAX).0.is_none());
    // Multi-threaded xz writes size fields in its block headers: not what the single-threaded encoder writes.
    let mt = compressed_by("xz", &["-c", "-T2", "--block-size=65536"], &data);
    assert!(run(&mt, usize::MAX).0.is_none());
    // A raw LZMA2 filter chain with a BCJ filter in front: not a plain preset.
    let bcj = compressed_by("xz", &["-c", "--x86", "--lzma2=preset=6"], &data);
    assert!(run(&bcj, usize::MAX).0.is_none());
    // Truncated or damaged files: never a recipe.
    for file in [&bz, &xz] {
        assert!(run(&file[..file.len() - 5], usize::MAX).0.is_none());
        let mut bad = file.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        assert!(run(&bad, usize::MAX).0.is_none());
    }
}

#[test]
fn bzip2_and_xz_recipes_decode_strictly() {
    let bz = Recipe { kind: Kind::Stream(stream::StreamRecipe::Bzip2 { level: 7 }) };
    let xz = Recipe {
        kind: Kind::Stream(stream::StreamRecipe::Xz { preset: 6, extreme: true, check: 4, dict_size: 8 << 20 }),
    };
    for r in [&bz, &xz] {
        let b = r.encode();
        assert_eq!(&Recipe::decode(&b).unwrap(), r);
        assert!(Recipe::decode(&b[..b.len() - 1]).is_err());
        assert!(Recipe::decode(&[&b[..], &[0]].concat()).is_err());
    }
    assert_eq!(bz.encode(), [1, 2, 7]);
    assert_eq!(xz.encode(), [1, 3, 6, 1, 4, 0, 0, 0x80, 0]);
    for bad in [
        &[1u8, 2, 0][..],
        &[1, 2, 10],
        &[1, 3, 10, 0, 4, 0, 0, 0x80, 0],
        &[1, 3, 6, 2, 4, 0, 0, 0x80, 0],
        &[1, 3, 6, 0, 5, 0, 0, 0x80, 0],
        &[1, 3, 6, 0, 4, 0, 0, 0, 0x10],
    ] {
        assert!(Recipe::decode(bad).is_err(), "{bad:?}");
    }
}

/// `decompress` (the ingest's half when a recipe is proven ahead) gives the content for each codec, and
/// `false` for a file that is cut short or has bytes after it.
#[test]
fn decompress_gives_the_content_or_false() {
    let data = varied_text(200_000, 74);
    let files =
        [compressed_by("xz", &["-c"], &data), compressed_by("bzip2", &["-c"], &data), zlib_gzip(&data, 9, 8, 0)];
    for file in &files {
        let recipe = assert_round_trip(file, &data);
        let mut seen = Vec::new();
        assert!(decompress(&recipe, file, |c| {
            seen.extend_from_slice(c);
            Ok(())
        })
        .unwrap());
        assert!(seen == data, "{}", recipe.describe());
        assert!(!decompress(&recipe, &file[..file.len() - 3], |_| Ok(())).unwrap());
        assert!(!decompress(&recipe, &[&file[..], b"x"].concat(), |_| Ok(())).unwrap());
    }
}
