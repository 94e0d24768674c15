//! dag-pb / UnixFS file nodes: `decode_file_node`, the parser every interior block of a DAG goes through.
//!
//! Properties: nothing panics; an accepted node is self-consistent (one blocksize per link, inline bytes
//! plus blocksizes add up to `filesize` without overflow, every link is a CID nixdag can follow); and a
//! node re-encoded with `encode_file_node` from the decoded links and sizes decodes to the same links,
//! sizes and filesize.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nixdag::dag::cid::block_hash;
use nixdag::dag::unixfs::{decode_file_node, encode_file_node};
use nixdag::dag::BlockHash;

fuzz_target!(|data: &[u8]| {
    let node = match decode_file_node(BlockHash::of(data), data) {
        Ok(node) => node,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(node.links.len(), node.blocksizes.len());
    let total = node
        .blocksizes
        .iter()
        .try_fold(node.inline.len() as u64, |acc, s| acc.checked_add(*s))
        .expect("accepted node whose sizes overflow");
    assert_eq!(total, node.filesize);
    for cid in &node.links {
        block_hash(cid).expect("accepted node links to a CID nixdag cannot follow");
    }

    if node.inline.is_empty() {
        let children: Vec<_> = node.links.iter().zip(&node.blocksizes).map(|(c, s)| (*c, *s, *s)).collect();
        let bytes = encode_file_node(&children);
        let again = decode_file_node(BlockHash::of(&bytes), &bytes).expect("re-encoded node does not decode");
        assert_eq!(again.links, node.links);
        assert_eq!(again.blocksizes, node.blocksizes);
        assert_eq!(again.filesize, node.filesize);
        assert!(again.inline.is_empty());
    }
});
