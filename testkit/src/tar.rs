//! Tar streams, for the tests of source tarballs (kept decompressed, rebuilt byte for byte).

use crate::text::store_words;

/// A tar-like stream of `files` members `source-1.0/src/file<i>.txt`, each `file_len` bytes of
/// [`store_words`]: 512-byte ustar headers with name and size only, contents padded to 512, then two zero
/// records. The headers have no checksum, so nixdag's tar splitter (`src/chunk/tar.rs`) finds no members
/// in it and the chunker cuts it as plain bytes.
pub fn tar_stream(seed: u64, files: usize, file_len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..files {
        let mut h = vec![0u8; 512];
        let name = format!("source-1.0/src/file{i}.txt");
        h[..name.len()].copy_from_slice(name.as_bytes());
        let size = format!("{file_len:011o}\0");
        h[124..124 + size.len()].copy_from_slice(size.as_bytes());
        h[257..262].copy_from_slice(b"ustar");
        out.extend_from_slice(&h);
        out.extend_from_slice(&store_words(seed * 1000 + i as u64, file_len));
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// About 300 KiB of tar content: ten members of 30,000 bytes.
pub fn tarball_content(seed: u64) -> Vec<u8> {
    tar_stream(seed, 10, 30_000)
}

/// A tar stream of the given members (name, contents), with the header checksums `tar` checks, so that
/// nixdag's tar splitter finds its members (as a tarball shipped inside another must be found).
pub fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in members {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let size = format!("{:011o}\0", data.len());
        h[124..124 + size.len()].copy_from_slice(size.as_bytes());
        h[257..262].copy_from_slice(b"ustar");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}
