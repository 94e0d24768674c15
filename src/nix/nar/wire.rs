//! The NAR wire primitives: padded strings, the tokens of the grammar and the parser's limits.
//!
//! Kept apart from the encoder and the parser so both spell the grammar with the same
//! constants; `tokens_match_grammar` checks them against the grammar in the module doc.

/// The first string of every NAR.
pub const MAGIC: &[u8] = b"nix-archive-1";

/// Opens a node or a directory entry.
pub const OPEN: &[u8] = b"(";
/// Closes a node or a directory entry.
pub const CLOSE: &[u8] = b")";
/// Precedes the node type.
pub const TYPE: &[u8] = b"type";
/// Node type of a regular file.
pub const REGULAR: &[u8] = b"regular";
/// Marks a regular file executable; followed by [`EMPTY`].
pub const EXECUTABLE: &[u8] = b"executable";
/// The empty string that follows [`EXECUTABLE`].
pub const EMPTY: &[u8] = b"";
/// Precedes the contents of a regular file.
pub const CONTENTS: &[u8] = b"contents";
/// Node type of a symlink.
pub const SYMLINK: &[u8] = b"symlink";
/// Precedes a symlink's target.
pub const TARGET: &[u8] = b"target";
/// Node type of a directory.
pub const DIRECTORY: &[u8] = b"directory";
/// Starts a directory entry.
pub const ENTRY: &[u8] = b"entry";
/// Precedes an entry's name.
pub const NAME: &[u8] = b"name";
/// Precedes an entry's node.
pub const NODE: &[u8] = b"node";

/// Longest string accepted where a tag is expected. The longest tag is 13 bytes (the magic);
/// anything much longer is garbage, and the cap lets the parser read tags into a stack buffer
/// and quote them in errors.
pub const MAX_TAG_LEN: u64 = 32;

/// Longest entry name accepted. Nix itself sets no limit (Linux's is 255 bytes); the cap only
/// stops a hostile length field from making the parser allocate gigabytes before reading.
pub const MAX_NAME_LEN: u64 = 64 * 1024;

/// Longest symlink target accepted (Linux's `PATH_MAX` is 4096); same reason as [`MAX_NAME_LEN`].
pub const MAX_TARGET_LEN: u64 = 64 * 1024;

/// Longest entry path (all names of the open directories joined with `/`) accepted. The parser
/// keeps the path for error messages and the names for sort checks, so this bounds its memory.
pub const MAX_PATH_LEN: usize = 1024 * 1024;

/// Deepest directory nesting accepted. `nix-store --dump` works on full paths limited to
/// `PATH_MAX` = 4096 bytes, so no NAR Nix can produce nests deeper than about 2040 levels; the
/// cap keeps the recursive consumers (listings, their `Drop`) far from a stack overflow.
pub const MAX_DEPTH: usize = 2048;

/// Number of zero bytes that follow a string or contents of `len` bytes.
pub fn padding_len(len: u64) -> usize {
    // Both operands are below 8, so the cast is exact.
    ((8 - len % 8) % 8) as usize
}

/// Appends `s` in wire form: u64 little-endian length, the bytes, zero padding to 8.
pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.extend_from_slice(&[0u8; 8][..padding_len(s.len() as u64)]);
}

/// Renders a byte string for an error message: lossy UTF-8, at most 80 characters.
pub(super) fn quote_bytes(s: &[u8]) -> String {
    let text = String::from_utf8_lossy(s);
    if text.chars().count() <= 80 {
        text.into_owned()
    } else {
        let mut short: String = text.chars().take(80).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_grammar() {
        let doc = include_str!("mod.rs");
        for tok in [
            MAGIC, OPEN, CLOSE, TYPE, REGULAR, EXECUTABLE, EMPTY, CONTENTS, SYMLINK, TARGET, DIRECTORY, ENTRY, NAME,
            NODE,
        ] {
            let quoted = format!("\"{}\"", std::str::from_utf8(tok).unwrap());
            assert!(doc.contains(&quoted), "grammar in nar/mod.rs lacks {quoted}");
            assert!(tok.len() as u64 <= MAX_TAG_LEN);
        }
    }

    #[test]
    fn padded_strings() {
        let mut out = Vec::new();
        put_str(&mut out, b"");
        assert_eq!(out, [0u8; 8]);
        out.clear();
        put_str(&mut out, b"type");
        assert_eq!(out, b"\x04\0\0\0\0\0\0\0type\0\0\0\0");
        out.clear();
        put_str(&mut out, b"12345678");
        assert_eq!(out, [&8u64.to_le_bytes()[..], b"12345678"].concat());
        assert_eq!(padding_len(13), 3);
    }
}
