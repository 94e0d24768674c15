//! Reading a UnixFS DAG made of hostile blocks: `DagReader` (whole file and ranges), `file_size`, `walk`
//! in both modes, and CAR export.
//!
//! Blocks are content-addressed, so random bytes could never link to each other. The input is therefore
//! a small block language (see `fuzz/README.md`):
//!
//! ```text
//! input  = flags:u8 start:u32le len:u32le block { SEP block }
//! SEP    = ff 42 4c 4b ff                       ("\xffBLK\xff")
//! block  = bytes, where each 4-byte placeholder  fe 4c <idx> <codec>  ("\xfeL..")
//!          becomes the 36 binary bytes of a CIDv1 (blake3) naming block idx
//! ```
//!
//! `idx` below the current block's index names that (earlier) block; any other idx names a block that
//! is not in the store. `codec` `r` is raw, `p` dag-pb, anything else that byte as a codec. The root is
//! the last block, read as dag-pb unless flags bit 0 says raw. Blocks are hashed and stored honestly
//! (`BlockSink`), so the store itself never lies; only the DAG's structure and sizes are hostile.
//!
//! Properties: nothing panics, hangs or allocates without bound (reads are capped at `READ_CAP` bytes,
//! since a small DAG can legitimately describe a huge file); a complete read returns exactly `file_size`
//! bytes; every range read, through `Read` and through `next_bytes` pieces of at most 1..=64 bytes (flags
//! bits 2-7), returns the matching slice of the whole-file read; both walk modes agree on
//! an honest store; and if `walk` accepts a DAG then the whole file reads back (so `verify` and `gc`
//! never bless a DAG that `cat` cannot read; fixed finding, see `regressions/dag_read/`).
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use nixdag::dag::car::write_car;
use nixdag::dag::cid::{DAG_PB_CODEC, RAW_CODEC};
use nixdag::dag::reader::file_size;
use nixdag::dag::{walk, BlockHash, BlockSink, Cid, DagReader, MemBlocks, WalkMode};

const SEP: &[u8] = b"\xffBLK\xff";
const PLACEHOLDER: &[u8] = b"\xfeL";
const MAX_BLOCKS: usize = 64;
/// Most bytes read out of one DAG per read.
const READ_CAP: u64 = 256 << 10;

fn split<'a>(mut data: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(i) = data.windows(sep.len()).position(|w| w == sep) {
        out.push(&data[..i]);
        data = &data[i + sep.len()..];
    }
    out.push(data);
    out
}

fn codec_of(b: u8) -> u64 {
    match b {
        b'r' => RAW_CODEC,
        b'p' => DAG_PB_CODEC,
        other => u64::from(other),
    }
}

/// Replace placeholders in `block` (the `i`th) with CIDs of earlier blocks (or of absent ones).
fn link(block: &[u8], i: usize, hashes: &[BlockHash]) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.len() + 64);
    let mut rest = block;
    while !rest.is_empty() {
        if rest.len() >= 4 && rest.starts_with(PLACEHOLDER) {
            let (idx, codec) = (rest[2] as usize, codec_of(rest[3]));
            let hash = if idx < i { hashes[idx] } else { BlockHash::of(&[0xa5, rest[2]]) };
            out.extend_from_slice(&hash.cid(codec).to_bytes());
            rest = &rest[4..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// Reads at most `READ_CAP` bytes; `Ok((bytes, complete))`.
fn read_capped(mut r: impl Read) -> std::io::Result<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok((out, true));
        }
        assert!(n <= buf.len());
        out.extend_from_slice(&buf[..n]);
        if out.len() as u64 >= READ_CAP {
            return Ok((out, false));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let flags = data[0];
    let start_in = u64::from(u32::from_le_bytes(data[1..5].try_into().unwrap()));
    let len_in = u64::from(u32::from_le_bytes(data[5..9].try_into().unwrap()));
    let parts = split(&data[9..], SEP);
    if parts.len() > MAX_BLOCKS {
        return;
    }

    let mut store = MemBlocks::default();
    let mut hashes = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let bytes = link(part, i, &hashes);
        let hash = BlockHash::of(&bytes);
        store.put_block(hash, DAG_PB_CODEC, &bytes).unwrap();
        hashes.push(hash);
    }
    let root_codec = if flags & 1 == 1 { RAW_CODEC } else { DAG_PB_CODEC };
    let root: Cid = hashes.last().unwrap().cid(root_codec);

    // Walks: both modes must agree on an honest store and visit each distinct block once.
    let mut visits_all = 0usize;
    // `Default` rather than a named type: the seen-set's type is walk's business.
    let mut seen = Default::default();
    let walked = walk(&store, &root, None, &mut seen, WalkMode::Everything, &mut |_, bytes| {
        assert!(bytes.is_some());
        visits_all += 1;
        Ok(())
    });
    let mut visits_nodes = 0usize;
    let mut seen2 = Default::default();
    let walked_nodes = walk(&store, &root, None, &mut seen2, WalkMode::NodesOnly, &mut |_, _| {
        visits_nodes += 1;
        Ok(())
    });
    assert_eq!(walked.is_ok(), walked_nodes.is_ok(), "walk modes disagree: {walked:?} vs {walked_nodes:?}");
    if walked.is_ok() {
        assert_eq!(visits_all, visits_nodes);
        assert!(visits_all <= store.len());
    }

    // CAR export goes through the same walk.
    let mut car = Vec::new();
    let exported = write_car(&store, &root, &mut car);
    assert_eq!(exported.is_ok(), walked.is_ok(), "write_car and walk disagree");

    let size = file_size(&store, &root);
    let whole = DagReader::new(&store, root).map(read_capped);
    match (&size, &whole) {
        (Ok(size), Ok(Ok((bytes, complete)))) => {
            if *complete {
                assert_eq!(bytes.len() as u64, *size, "complete read returned the wrong number of bytes");
            } else {
                assert!(*size >= READ_CAP);
            }
        }
        (Err(_), Ok(_)) => panic!("DagReader::new accepted a root whose file_size fails"),
        _ => {}
    }

    if walked.is_ok() {
        assert!(size.is_ok(), "walk accepted a root whose file_size fails");
        match &whole {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("walk accepted the DAG but reading it fails: {e}"),
            Err(e) => panic!("walk accepted the DAG but DagReader::new fails: {e}"),
        }
    }

    // A range: [start, start + len) folded into the file, read and compared with the whole-file read.
    if let Ok(size) = size {
        let start = if size == 0 { 0 } else { start_in % size };
        let end = if flags & 2 == 2 { None } else { Some(start.saturating_add(len_in)) };
        match DagReader::range(&store, root, start, end) {
            Ok(r) => {
                let want = end.unwrap_or(size).min(size) - start;
                assert_eq!(r.remaining(), want);
                if let (Ok(Ok((all, true))), Ok((part, complete))) = (&whole, read_capped(r)) {
                    let end = end.unwrap_or(size).min(size) as usize;
                    if complete {
                        assert!(
                            part[..] == all[start as usize..end],
                            "range {start}..{end} differs from the whole read"
                        );
                    } else {
                        assert!(part[..] == all[start as usize..start as usize + part.len()]);
                    }
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        // The same range in `next_bytes` pieces of at most `max` bytes (what the gateway streams):
        // non-empty pieces no longer than asked, adding up to the `Read` result, then `None` for good.
        if let Ok(mut r) = DagReader::range(&store, root, start, end) {
            let max = usize::from(flags >> 2) + 1;
            let mut pieces = Vec::new();
            let mut ended = false;
            while (pieces.len() as u64) < READ_CAP {
                match r.next_bytes(max) {
                    Ok(Some(b)) => {
                        assert!(!b.is_empty() && b.len() <= max, "piece of {} bytes for max {max}", b.len());
                        pieces.extend_from_slice(&b);
                    }
                    Ok(None) => {
                        ended = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if ended {
                assert!(matches!(r.next_bytes(max), Ok(None)));
                assert_eq!(r.remaining(), 0);
                if let Ok(Ok((all, true))) = &whole {
                    let end = end.unwrap_or(size).min(size) as usize;
                    assert!(pieces[..] == all[start as usize..end], "next_bytes pieces differ from the whole read");
                }
            }
        }
        // Past the end is refused for non-empty files.
        if size > 0 {
            assert!(DagReader::range(&store, root, size, None).is_err());
        }
    }
});
