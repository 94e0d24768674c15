//! The fetch protocol between nodes (`peer::wire`, ALPN `/nixdag/fetch/1`): a node decodes requests
//! from any allowed peer and answers from any peer it asked, so both sides see hostile bytes.
//!
//! Input: `selector:u8 rest`. Properties:
//! - nothing panics, and no length in the input makes a decoder allocate past the protocol's bounds;
//! - a request that decodes encodes back to the same bytes;
//! - a BLOCKS answer that decodes has exactly the encoded length it was read from, and each block's
//!   decoding (zstd, delta with an arbitrary base) stays within `MAX_BLOCK` bytes or fails cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nixdag::peer::wire::{decode_blocks, decode_narinfo, Request, WireBlock, MAX_BLOCK};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    match sel % 3 {
        0 => {
            if let Ok(r) = Request::decode(rest) {
                assert_eq!(r.encode(), rest);
            }
        }
        1 => {
            let _ = decode_narinfo(rest);
        }
        _ => {
            let count = (sel / 3) as usize % 4 + 1;
            if let Ok(blocks) = decode_blocks(rest, count) {
                assert_eq!(blocks.iter().map(WireBlock::wire_len).sum::<usize>(), rest.len());
                for b in &blocks {
                    if let Ok(Some(bytes)) = b.decode_bytes(Some(&rest[..rest.len().min(64)])) {
                        assert!(bytes.len() <= MAX_BLOCK as usize);
                    }
                }
            }
        }
    }
});
