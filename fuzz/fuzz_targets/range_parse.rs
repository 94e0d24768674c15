//! `Range:` headers against RFC 9110 (section 14): `gateway::http_path::parse_range`, fed by any HTTP
//! client, decides which bytes of a NAR or listing the gateway sends.
//!
//! Input: `size:u64le header` (the header must be UTF-8). Each header is judged against `size`,
//! `size % 1024` and 0, where the edge cases are.
//!
//! Properties, from what `parse_range` documents (only single `bytes=` ranges are served partially;
//! multiple ranges and malformed headers get the full body; positions are unbounded decimals), checked
//! against decimal strings, so numbers past `u64::MAX` are compared exactly rather than saturated:
//! - nothing panics; a `Partial { start, end }` has `start < end <= size`;
//! - a header without the `bytes=` prefix (after trimming), or with a `,`, or without a `-`, is `Full`;
//! - `bytes=A-` and `bytes=A-B` with all-digit `A`, `B` and `A <= B`: `Unsatisfiable` if `A >= size`, else
//!   `Partial { start: A, end: min(B + 1, size) }` (`end: size` for `bytes=A-`, and for a `B >= size`
//!   however many digits it has);
//! - `bytes=A-B` with `A > B` (an invalid range-spec) is `Full`, as for small numbers;
//! - `bytes=-N`: `N = 0` is `Unsatisfiable`; for `N > 0` and `size > 0` it is
//!   `Partial { start: size.saturating_sub(N), end: size }`;
//! - anything else whose positions are not all digits is `Full`;
//! - `parse_range(None, _)` is `Full`.
#![no_main]

use std::cmp::Ordering;

use libfuzzer_sys::fuzz_target;
use nixdag::gateway::http_path::{parse_range, RangeRequest};

const U64_MAX: &str = "18446744073709551615";

/// An unbounded decimal: all ASCII digits, non-empty; leading zeros stripped ("0" for zero).
fn decimal(s: &str) -> Option<&str> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let t = s.trim_start_matches('0');
    Some(if t.is_empty() { "0" } else { t })
}

/// Numeric order of two canonical decimals.
fn cmp_dec(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The value of a canonical decimal known to be below some u64.
fn small(d: &str) -> u64 {
    d.parse().expect("a decimal below a u64 fits a u64")
}

/// What RFC 9110 and `parse_range`'s documentation say the answer is; `None` where they leave it open
/// (`bytes=-N` of an empty body).
fn expected(header: &str, size: u64) -> Option<RangeRequest> {
    use RangeRequest::*;
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return Some(Full) };
    if spec.contains(',') {
        return Some(Full);
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return Some(Full) };
    let (a, b) = (a.trim(), b.trim());
    let size_dec = size.to_string();
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Some(Full),
        (true, false) => match decimal(b) {
            None => Some(Full),
            Some("0") => Some(Unsatisfiable),
            Some(_) if size == 0 => None,
            Some(n) => {
                let start = if cmp_dec(n, &size_dec) != Ordering::Less { 0 } else { size - small(n) };
                Some(Partial { start, end: size })
            }
        },
        (false, _) => {
            let Some(first) = decimal(a) else { return Some(Full) };
            let last = if b.is_empty() {
                None
            } else {
                match decimal(b) {
                    None => return Some(Full),
                    // A backwards range is ignored, however large its numbers (regressions/range_parse/:
                    // parse_range once saturated both to u64::MAX before comparing them).
                    Some(l) if cmp_dec(first, l) == Ordering::Greater => return Some(Full),
                    Some(l) => Some(l),
                }
            };
            if cmp_dec(first, &size_dec) != Ordering::Less {
                return Some(Unsatisfiable);
            }
            let start = small(first);
            let end = match last {
                Some(l) if cmp_dec(l, &size_dec) == Ordering::Less => small(l) + 1,
                _ => size,
            };
            Some(Partial { start, end })
        }
    }
}

fn check(header: &str, size: u64) {
    let got = parse_range(Some(header), size);
    if let RangeRequest::Partial { start, end } = got {
        assert!(start < end && end <= size, "{header:?} on {size} bytes gave {start}..{end}");
    }
    if let Some(want) = expected(header, size) {
        assert_eq!(got, want, "Range: {header:?} on a body of {size} bytes");
    }
    // Deterministic, and a function of the header alone.
    assert_eq!(parse_range(Some(header), size), got);
}

fuzz_target!(|data: &[u8]| {
    assert_eq!(parse_range(None, 0), RangeRequest::Full);
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().unwrap());
    assert_eq!(parse_range(None, size), RangeRequest::Full);
    let Ok(header) = std::str::from_utf8(&data[8..]) else { return };
    check(header, size);
    check(header, size % 1024);
    check(header, 0);
});
