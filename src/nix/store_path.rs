//! Nix store paths: `/nix/store/<32 nix32 chars>-<name>`.
//!
//! Validation follows Nix 2.8 (`StorePath::StorePath` and `checkName` in `libstore/path.cc`) so that
//! nixdag accepts exactly the paths Nix can have produced and a hostile narinfo cannot smuggle a
//! `..` or a slash into a file name we later build from it.

use std::fmt;
use std::str::FromStr;

use super::hash::nix32;

/// The only store directory nixdag supports; narinfo files and signatures embed it.
pub const STORE_DIR: &str = "/nix/store";

/// Length of a store path hash in nix32 characters.
pub const HASH_CHARS: usize = 32;

/// Longest name Nix accepts: 255 (`NAME_MAX`) minus the hash, the dash and room for a suffix.
pub const MAX_NAME_LEN: usize = 211;

/// The 160-bit hash part of a store path.
///
/// Ordering follows the nix32 text (so sorting store paths here sorts them as Nix and `ls` do):
/// nix32 emits the last byte's high bits first, so the text order is the order of the bytes
/// read from the end.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct StorePathHash(pub [u8; 20]);

impl Ord for StorePathHash {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.iter().rev().cmp(other.0.iter().rev())
    }
}

impl PartialOrd for StorePathHash {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The 32 nix32 characters, as in the path.
impl fmt::Display for StorePathHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&nix32::encode(&self.0))
    }
}

impl FromStr for StorePathHash {
    type Err = StorePathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || StorePathError::InvalidHash { hash: s.to_owned() };
        if s.len() != HASH_CHARS {
            return Err(bad());
        }
        let bytes = nix32::decode(s).map_err(|_| bad())?;
        bytes.try_into().map(StorePathHash).map_err(|_| bad())
    }
}

/// Why a store path was rejected. Messages quote the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorePathError {
    /// The path does not start with `/nix/store/` or has more components.
    #[error("\"{path}\" is not a path directly inside {STORE_DIR}")]
    NotInStore {
        /// The path as given.
        path: String,
    },
    /// The base name is not `<32 chars>-<name>`.
    #[error("\"{base_name}\" is not of the form <hash>-<name>")]
    BadShape {
        /// The base name as given.
        base_name: String,
    },
    /// The hash part is not 32 valid nix32 characters.
    #[error("invalid store path hash \"{hash}\"")]
    InvalidHash {
        /// The hash part as given.
        hash: String,
    },
    /// The name is empty.
    #[error("store path \"{base_name}\" has an empty name")]
    EmptyName {
        /// The base name.
        base_name: String,
    },
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("store path name \"{name}\" is {len} bytes long, more than {MAX_NAME_LEN}")]
    NameTooLong {
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The name starts with `.`, which Nix forbids so that `.` and `..` cannot occur.
    #[error("store path name \"{name}\" starts with a period")]
    NameStartsWithDot {
        /// The name.
        name: String,
    },
    /// The name contains a character outside `[A-Za-z0-9+\-._?=]`.
    #[error("invalid character {ch:?} at position {pos} in store path name \"{name}\"")]
    InvalidNameChar {
        /// The character.
        ch: char,
        /// Its byte position in the name.
        pos: usize,
        /// The name.
        name: String,
    },
}

/// A validated store path. Only the store directory [`STORE_DIR`] is supported.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct StorePath {
    hash: StorePathHash,
    name: String,
}

impl StorePath {
    /// Builds a store path from its parts, validating the name.
    pub fn new(hash: StorePathHash, name: &str) -> Result<StorePath, StorePathError> {
        check_name(name)?;
        Ok(StorePath { hash, name: name.to_owned() })
    }

    /// Parses an absolute path `/nix/store/<hash>-<name>`.
    pub fn parse(abs: &str) -> Result<StorePath, StorePathError> {
        let base = abs
            .strip_prefix(STORE_DIR)
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|base| !base.is_empty() && !base.contains('/'))
            .ok_or_else(|| StorePathError::NotInStore { path: abs.to_owned() })?;
        StorePath::from_base_name(base)
    }

    /// Parses a base name `<hash>-<name>`, as narinfo `References:` and `Deriver:` hold them.
    pub fn from_base_name(s: &str) -> Result<StorePath, StorePathError> {
        let bad_shape = || StorePathError::BadShape { base_name: s.to_owned() };
        // `get` rather than slicing: the input may have a multi-byte char at the boundary.
        let hash = s.get(..HASH_CHARS).ok_or_else(bad_shape)?;
        let name = s.get(HASH_CHARS..).and_then(|rest| rest.strip_prefix('-')).ok_or_else(bad_shape)?;
        let hash: StorePathHash = hash.parse()?;
        if name.is_empty() {
            return Err(StorePathError::EmptyName { base_name: s.to_owned() });
        }
        StorePath::new(hash, name)
    }

    /// The hash part.
    pub fn hash(&self) -> &StorePathHash {
        &self.hash
    }

    /// The name part (after the dash).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<hash>-<name>`.
    pub fn base_name(&self) -> String {
        format!("{}-{}", self.hash, self.name)
    }

    /// `/nix/store/<hash>-<name>`.
    pub fn to_absolute(&self) -> String {
        format!("{STORE_DIR}/{}-{}", self.hash, self.name)
    }
}

/// The absolute path.
impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE_DIR}/{}-{}", self.hash, self.name)
    }
}

impl FromStr for StorePath {
    type Err = StorePathError;

    /// Same as [`StorePath::parse`]: an absolute path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StorePath::parse(s)
    }
}

/// Nix's `checkName`.
fn check_name(name: &str) -> Result<(), StorePathError> {
    if name.is_empty() {
        return Err(StorePathError::EmptyName { base_name: name.to_owned() });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong { name: name.to_owned(), len: name.len() });
    }
    if name.starts_with('.') {
        return Err(StorePathError::NameStartsWithDot { name: name.to_owned() });
    }
    if let Some((pos, ch)) = name.char_indices().find(|&(_, c)| !(c.is_ascii_alphanumeric() || "+-._?=".contains(c))) {
        return Err(StorePathError::InvalidNameChar { ch, pos, name: name.to_owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = "/nix/store/saclvf5w5pnp7y8jbydrp47b935jqs5m-nixdag-fixture";

    #[test]
    fn parse_and_render() {
        let p = StorePath::parse(FIXTURE).unwrap();
        assert_eq!(p.name(), "nixdag-fixture");
        assert_eq!(p.hash().to_string(), "saclvf5w5pnp7y8jbydrp47b935jqs5m");
        assert_eq!(p.base_name(), "saclvf5w5pnp7y8jbydrp47b935jqs5m-nixdag-fixture");
        assert_eq!(p.to_absolute(), FIXTURE);
        assert_eq!(p.to_string(), FIXTURE);
        assert_eq!(StorePath::from_base_name(&p.base_name()).unwrap(), p);
        assert_eq!(FIXTURE.parse::<StorePath>().unwrap(), p);
        // Every character Nix allows.
        let odd = "/nix/store/5xly9ddp5hxxc824k8hd7rq0qfr4yznk-a+b-c.d_e?f=g-1.0";
        assert_eq!(StorePath::parse(odd).unwrap().to_string(), odd);
    }

    #[test]
    fn ordering_matches_text() {
        let mut paths: Vec<StorePath> = [
            "/nix/store/saclvf5w5pnp7y8jbydrp47b935jqs5m-b",
            "/nix/store/5xly9ddp5hxxc824k8hd7rq0qfr4yznk-z",
            "/nix/store/saclvf5w5pnp7y8jbydrp47b935jqs5m-a",
            "/nix/store/0000000000000000000000000000000z-x",
            "/nix/store/z0000000000000000000000000000000-x",
            "/nix/store/10000000000000000000000000000000-x",
        ]
        .iter()
        .map(|s| StorePath::parse(s).unwrap())
        .collect();
        paths.sort();
        let mut texts: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        let sorted = {
            let mut t = texts.clone();
            t.sort();
            t
        };
        assert_eq!(texts, sorted);
        texts.dedup();
        assert_eq!(texts.len(), 6);
    }

    #[test]
    fn reject_outside_store() {
        for p in [
            "/nix/store",
            "/nix/store/",
            "/nix/storex/saclvf5w5pnp7y8jbydrp47b935jqs5m-x",
            "/tmp/saclvf5w5pnp7y8jbydrp47b935jqs5m-x",
            "nix/store/saclvf5w5pnp7y8jbydrp47b935jqs5m-x",
            "/nix/store/saclvf5w5pnp7y8jbydrp47b935jqs5m-x/bin",
        ] {
            assert!(matches!(StorePath::parse(p), Err(StorePathError::NotInStore { .. })), "{p}");
        }
    }

    #[test]
    fn reject_bad_hash() {
        for b in [
            "saclvf5w5pnp7y8jbydrp47b935jqs5e-x", // 'e' is not nix32
            "SACLVF5W5PNP7Y8JBYDRP47B935JQS5M-x",
        ] {
            assert!(matches!(StorePath::from_base_name(b), Err(StorePathError::InvalidHash { .. })), "{b}");
        }
        for b in ["short-x", "saclvf5w5pnp7y8jbydrp47b935jqs5m_x", "saclvf5w5pnp7y8jbydrp47b935jqs5é"] {
            assert!(matches!(StorePath::from_base_name(b), Err(StorePathError::BadShape { .. })), "{b}");
        }
    }

    #[test]
    fn reject_bad_names() {
        let h = "saclvf5w5pnp7y8jbydrp47b935jqs5m";
        assert!(matches!(StorePath::from_base_name(&format!("{h}-")), Err(StorePathError::EmptyName { .. })));
        assert!(matches!(
            StorePath::from_base_name(&format!("{h}-.hidden")),
            Err(StorePathError::NameStartsWithDot { .. })
        ));
        assert!(matches!(StorePath::from_base_name(&format!("{h}-..")), Err(StorePathError::NameStartsWithDot { .. })));
        let err = StorePath::from_base_name(&format!("{h}-a b")).unwrap_err();
        assert_eq!(err, StorePathError::InvalidNameChar { ch: ' ', pos: 1, name: "a b".into() });
        assert!(matches!(
            StorePath::from_base_name(&format!("{h}-ü")),
            Err(StorePathError::InvalidNameChar { ch: 'ü', .. })
        ));
        let ok = "a".repeat(MAX_NAME_LEN);
        assert!(StorePath::from_base_name(&format!("{h}-{ok}")).is_ok());
        assert!(matches!(
            StorePath::from_base_name(&format!("{h}-{ok}a")),
            Err(StorePathError::NameTooLong { len: 212, .. })
        ));
    }
}
