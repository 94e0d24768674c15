//! `nixdag cat`: stored bytes to stdout, whole or a range.

use std::io::{self, Write};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::RootArg;
use crate::dag::DagReader;
use crate::store::Store;

#[derive(Args, Debug)]
pub struct CatArgs {
    #[command(flatten)]
    root: RootArg,
    /// Bytes A through B inclusive, as in HTTP (`A-B`, or `A-` to the end)
    #[arg(long, value_name = "A-B")]
    range: Option<String>,
}

/// Parse `A-B` (inclusive) or `A-` into a half-open `[start, end)`.
fn parse_range(s: &str) -> Result<(u64, Option<u64>)> {
    let (a, b) = s.split_once('-').with_context(|| format!("invalid range {s:?}: expected A-B"))?;
    let start: u64 = a.trim().parse().with_context(|| format!("invalid range start in {s:?}"))?;
    if b.trim().is_empty() {
        return Ok((start, None));
    }
    let b = b.trim();
    // As in HTTP, a last position however large means "to the end".
    let last: u64 = match b.parse() {
        Err(_) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) => u64::MAX,
        r => r.with_context(|| format!("invalid range end in {s:?}"))?,
    };
    if last < start {
        bail!("invalid range {s:?}: end before start");
    }
    // `last` may be u64::MAX ("to the end", as in HTTP): `last + 1` would wrap to 0 and print nothing.
    Ok((start, last.checked_add(1)))
}

pub fn run(store: &Store, args: CatArgs) -> Result<()> {
    let root = args.root.resolve(store)?;
    let (start, end) = match &args.range {
        Some(r) => parse_range(r)?,
        None => (0, None),
    };
    let mut reader = DagReader::range(store, root, start, end)?;
    let stdout = io::stdout();
    // `io::copy` zeroes the buffer's unused part once; for a short range a 1 MiB buffer cost more page
    // faults than the read itself.
    let cap = reader.remaining().clamp(4096, 1 << 20) as usize;
    let mut out = io::BufWriter::with_capacity(cap, stdout.lock());
    match io::copy(&mut reader, &mut out).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {root}")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_are_inclusive() {
        assert_eq!(parse_range("0-0").unwrap(), (0, Some(1)));
        assert_eq!(parse_range("10-19").unwrap(), (10, Some(20)));
        assert_eq!(parse_range("5-").unwrap(), (5, None));
        assert!(parse_range("9-3").is_err());
        assert!(parse_range("x-3").is_err());
        assert!(parse_range("7").is_err());
    }

    #[test]
    fn range_overflow_means_to_the_end() {
        assert_eq!(parse_range("0-18446744073709551615").unwrap(), (0, None));
        assert_eq!(parse_range("5-18446744073709551614").unwrap(), (5, Some(u64::MAX)));
        assert_eq!(parse_range("0-99999999999999999999").unwrap(), (0, None));
        assert!(parse_range("99999999999999999999-").is_err(), "a start past any file: a clear error");
    }
}
