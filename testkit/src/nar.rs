//! NAR bytes written by hand, for NARs no tree dumps to (hostile ones too).

/// A NAR string token: u64 LE length, bytes, zero padding to 8.
pub fn tok(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v.resize(v.len() + (8 - s.len() % 8) % 8, 0);
    v
}

/// Several NAR tokens in a row.
pub fn toks(parts: &[&[u8]]) -> Vec<u8> {
    parts.iter().flat_map(|p| tok(p)).collect()
}
