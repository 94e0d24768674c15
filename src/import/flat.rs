//! Recognising a NAR of one compressed regular file (a source tarball) from its first bytes: what the
//! ingest, the proving helpers and the repack all ask, so it sits below all three.

use crate::recompress;

/// Bytes of a NAR enough to see whether it is one regular file and what its contents start with.
pub(super) const FLAT_HEAD: usize = 256;

/// When `head` starts a NAR of a single regular file whose contents start like a compressed stream
/// (gzip, xz, bzip2, zstd), the NAR's whole length.
pub(super) fn flat_compressed_nar_len(head: &[u8]) -> Option<u64> {
    flat_compressed_parts(head).map(|(_, _, total)| total)
}

/// [`flat_compressed_nar_len`]'s NAR: where its file's contents start, their length, the NAR's length.
pub(super) fn flat_compressed_parts(head: &[u8]) -> Option<(usize, u64, u64)> {
    let mut p = head;
    let token = |p: &mut &[u8]| -> Option<Vec<u8>> {
        let len = usize::try_from(u64::from_le_bytes(p.get(..8)?.try_into().ok()?)).ok()?;
        let padded = len.checked_add(7)? / 8 * 8;
        let t = p.get(8..8usize.checked_add(len)?)?.to_vec();
        *p = p.get(8usize.checked_add(padded)?..)?;
        Some(t)
    };
    for want in [&b"nix-archive-1"[..], b"(", b"type", b"regular"] {
        if token(&mut p)? != want {
            return None;
        }
    }
    let mut t = token(&mut p)?;
    if t == b"executable" {
        if !token(&mut p)?.is_empty() {
            return None;
        }
        t = token(&mut p)?;
    }
    if t != b"contents" {
        return None;
    }
    let len = u64::from_le_bytes(p.get(..8)?.try_into().ok()?);
    recompress::detect(p.get(8..)?)?;
    let header = (head.len() - p.len()) as u64 + 8;
    // Contents, padding, then the closing ")" token (8 + 8 bytes).
    let total = header.checked_add(len.checked_add(7)? / 8 * 8)?.checked_add(16)?;
    Some((header as usize, len, total))
}
