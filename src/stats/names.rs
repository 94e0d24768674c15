//! Package names and versions out of store path names and file names, for `dedup-stats --by-name`:
//! the versions of one package are what dedup is expected to pay off on, so the report groups them.
//!
//! The split is Nix's own (`DrvName` in libexpr's `names.cc`, what `builtins.parseDrvName` does): the
//! name ends at the first `-` followed by a character that is not a letter, and the version is the
//! rest. Two additions, because store paths are outputs rather than derivations: a trailing output
//! name (`-man`, `-dev`, …) is moved from the version to the name, so `hello-2.12.1-man` groups with the
//! other `man` outputs and not with `hello-2.12.1`; and file names lose their archive extension first.
//! Versions are ordered as `builtins.compareVersions` orders them.

use std::cmp::Ordering;

/// Output names moved from the version to the name (nixpkgs' common `outputs`).
const OUTPUTS: &[&str] =
    &["bin", "dev", "doc", "devdoc", "info", "lib", "man", "out", "static", "debug", "python", "dist", "data"];

/// Archive extensions taken off a file name before it is split.
const EXTENSIONS: &[&str] = &[
    ".tar.gz", ".tar.xz", ".tar.bz2", ".tar.zst", ".tar.lz", ".tgz", ".tbz2", ".txz", ".tar", ".zip", ".crate",
    ".gem", ".whl", ".gz", ".xz", ".bz2", ".zst",
];

/// A package name and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameVersion {
    /// The name (with the output appended as `-<output>`, when there is one).
    pub name: String,
    /// The version; empty when the name has none.
    pub version: String,
}

/// Split a store path's name (`hello-2.12.1`, without the hash part) as Nix does, the output moved to
/// the name.
pub fn parse_store_name(s: &str) -> NameVersion {
    let b = s.as_bytes();
    let cut = (0..b.len()).find(|&i| b[i] == b'-' && i + 1 < b.len() && !b[i + 1].is_ascii_alphabetic());
    let Some(i) = cut else { return NameVersion { name: s.to_string(), version: String::new() } };
    let (name, mut version) = (&s[..i], &s[i + 1..]);
    let mut out = None;
    if let Some(j) = version.rfind('-') {
        if OUTPUTS.contains(&&version[j + 1..]) {
            out = Some(&version[j + 1..]);
            version = &version[..j];
        }
    }
    let name = match out {
        Some(o) => format!("{name}-{o}"),
        None => name.to_string(),
    };
    NameVersion { name, version: version.to_string() }
}

/// Split a file name (`src-1.0.tar.gz`): the archive extension off, then as [`parse_store_name`].
pub fn parse_file_name(s: &str) -> NameVersion {
    let lower = s.to_ascii_lowercase();
    let stem = EXTENSIONS.iter().find(|e| lower.ends_with(*e)).map(|e| &s[..s.len() - e.len()]).unwrap_or(s);
    parse_store_name(stem)
}

/// The name part of an absolute store path or a base name: what follows the 32-character hash part
/// and its dash.
pub fn store_path_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    match base.split_once('-') {
        Some((hash, name)) if hash.len() == 32 => name,
        _ => base,
    }
}

/// One component of a version: a run of digits, or a run of other characters; `.` and `-` separate.
fn components(v: &str) -> Vec<&str> {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'.' || b[i] == b'-' {
            i += 1;
            continue;
        }
        let digit = b[i].is_ascii_digit();
        let start = i;
        while i < b.len() && b[i] != b'.' && b[i] != b'-' && b[i].is_ascii_digit() == digit {
            i += 1;
        }
        out.push(&v[start..i]);
    }
    out
}

/// `componentsLT` of Nix's `names.cc`: numbers by value; an empty component before a number; `pre`
/// before anything else; other strings before numbers, and by bytes among themselves.
fn component_lt(a: &str, b: &str) -> bool {
    let num = |s: &str| if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) { s.parse::<u128>().ok() } else { None };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x < y,
        _ if a.is_empty() && num(b).is_some() => true,
        _ if a == "pre" && b != "pre" => true,
        _ if b == "pre" => false,
        (Some(_), None) => false,
        (None, Some(_)) => true,
        (None, None) => a < b,
    }
}

/// `builtins.compareVersions`.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (ca, cb) = (components(a), components(b));
    for i in 0..ca.len().max(cb.len()) {
        let (x, y) = (ca.get(i).copied().unwrap_or(""), cb.get(i).copied().unwrap_or(""));
        if component_lt(x, y) {
            return Ordering::Less;
        }
        if component_lt(y, x) {
            return Ordering::Greater;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nv(s: &str) -> (String, String) {
        let p = parse_store_name(s);
        (p.name, p.version)
    }

    #[test]
    fn names_split_as_nix_does() {
        assert_eq!(nv("hello-2.12.1"), ("hello".into(), "2.12.1".into()));
        assert_eq!(nv("python3.11-pygments-2.17.2"), ("python3.11-pygments".into(), "2.17.2".into()));
        assert_eq!(nv("glibc-2.39-52"), ("glibc".into(), "2.39-52".into()));
        assert_eq!(nv("hello-2.12.1-man"), ("hello-man".into(), "2.12.1".into()));
        assert_eq!(nv("openssl-3.0.13-dev"), ("openssl-dev".into(), "3.0.13".into()));
        assert_eq!(nv("source"), ("source".into(), "".into()));
        assert_eq!(nv("nix-env-test-"), ("nix-env-test-".into(), "".into()));
        assert_eq!(nv("foo-bar"), ("foo-bar".into(), "".into()));
        let f = parse_file_name("src-1.0.tar.gz");
        assert_eq!((f.name.as_str(), f.version.as_str()), ("src", "1.0"));
        assert_eq!(store_path_name("/nix/store/00000000000000000000000000000000-hello-2.12.1"), "hello-2.12.1");
        assert_eq!(store_path_name("hello"), "hello");
    }

    #[test]
    fn versions_order_as_compare_versions() {
        use Ordering::*;
        // The examples of the Nix manual's `builtins.compareVersions` and names.cc's tests.
        for (a, b, want) in [
            ("1.0", "2.3", Less),
            ("2.1", "2.3", Less),
            ("2.3", "2.3", Equal),
            ("2.5", "2.3", Greater),
            ("3.1", "2.3", Greater),
            ("2.3.1", "2.3", Greater),
            ("2.3pre1", "2.3", Less),
            ("2.3", "2.3a", Less),
            ("2.3a", "2.3c", Less),
            ("2.3pre1", "2.3c", Less),
            ("2.3pre1", "2.3q", Less),
            ("2.10", "2.9", Greater),
            ("1.0", "1.0.0", Less),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }
}
