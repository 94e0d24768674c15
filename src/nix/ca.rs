//! Content-addressed store paths: what a narinfo's `CA:` field claims, and the store path that claim
//! implies. Nix accepts a CA path without any signature, because its name is computed from its
//! content; so a cache that takes a CA narinfo from an uploader must check that the name really follows
//! from the claimed hash, or an uploader could name any content after any CA path.
//!
//! The rules are Nix's own (`makeStorePath`, `makeFixedOutputPath`, `makeTextPath` in libstore), written
//! here because no crate offers them; `tests/it/gateway.rs` checks them against paths real Nix made.

use sha2::{Digest, Sha256};

use super::hash::{HashAlgo, HashParseError, NixHash};
use super::store_path::{StorePath, StorePathError, StorePathHash};

/// A `CA:` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentAddress {
    /// `text:sha256:…`: a file written by `builtins.toFile` (or a `.drv`); may reference other paths.
    Text(NixHash),
    /// `fixed:r:<algo>:…` (`recursive`, the NAR's hash) or `fixed:<algo>:…` (a single file's flat hash).
    Fixed {
        /// Whether the hash is of the NAR (`r:`) rather than of one file's contents.
        recursive: bool,
        /// The claimed hash.
        hash: NixHash,
    },
}

/// A `CA:` claim that cannot be checked or does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaError {
    /// The field is not one of Nix's forms.
    #[error("malformed CA field {0:?}")]
    Malformed(String),
    /// The hash in the field does not parse.
    #[error("CA field {field:?}: {source}")]
    Hash {
        /// The field.
        field: String,
        /// Why its hash is invalid.
        source: HashParseError,
    },
    /// Nix does not make such a path (a text hash other than SHA-256, references on a flat path, ...).
    #[error("CA field {0:?} describes no path Nix makes")]
    Impossible(String),
    /// The claim implies another store path.
    #[error("CA claim makes store path {computed}, not {claimed}")]
    WrongPath {
        /// What the claim computes to.
        computed: String,
        /// What the narinfo names.
        claimed: String,
    },
    /// The name could not be part of a store path.
    #[error(transparent)]
    Name(#[from] StorePathError),
}

impl ContentAddress {
    /// Parse `text:sha256:<h>`, `fixed:r:<algo>:<h>` or `fixed:<algo>:<h>` (hash in any Nix form).
    pub fn parse(field: &str) -> Result<ContentAddress, CaError> {
        let hash = |s: &str| NixHash::parse(s).map_err(|source| CaError::Hash { field: field.to_owned(), source });
        if let Some(rest) = field.strip_prefix("text:") {
            return Ok(ContentAddress::Text(hash(rest)?));
        }
        if let Some(rest) = field.strip_prefix("fixed:r:") {
            return Ok(ContentAddress::Fixed { recursive: true, hash: hash(rest)? });
        }
        if let Some(rest) = field.strip_prefix("fixed:") {
            return Ok(ContentAddress::Fixed { recursive: false, hash: hash(rest)? });
        }
        Err(CaError::Malformed(field.to_owned()))
    }

    /// The store path Nix gives content with this address, `name` and `references` (base names, the
    /// path itself included if it refers to itself).
    pub fn store_path(&self, claimed: &StorePath, references: &[StorePath]) -> Result<StorePath, CaError> {
        let name = claimed.name();
        let self_ref = references.iter().any(|r| r == claimed);
        let mut others: Vec<String> = references.iter().filter(|r| *r != claimed).map(|r| r.to_absolute()).collect();
        others.sort();
        others.dedup();
        let impossible = || CaError::Impossible(self.to_string());
        match self {
            ContentAddress::Text(h) => {
                if h.algo != HashAlgo::Sha256 || self_ref {
                    return Err(impossible());
                }
                make_store_path(&make_type("text", &others, false), h, name)
            }
            ContentAddress::Fixed { recursive: true, hash } if hash.algo == HashAlgo::Sha256 => {
                make_store_path(&make_type("source", &others, self_ref), hash, name)
            }
            ContentAddress::Fixed { recursive, hash } => {
                if !others.is_empty() || self_ref {
                    return Err(impossible());
                }
                let inner = format!("fixed:out:{}{}:{}:", if *recursive { "r:" } else { "" }, hash.algo, hash.to_hex());
                let digest = NixHash::new(HashAlgo::Sha256, Sha256::digest(inner.as_bytes()).to_vec())
                    .map_err(|_| impossible())?;
                make_store_path("output:out", &digest, name)
            }
        }
    }

    /// Check that `claimed` is the path this address gives it.
    pub fn check(&self, claimed: &StorePath, references: &[StorePath]) -> Result<(), CaError> {
        let computed = self.store_path(claimed, references)?;
        if &computed != claimed {
            return Err(CaError::WrongPath { computed: computed.to_absolute(), claimed: claimed.to_absolute() });
        }
        Ok(())
    }
}

impl std::fmt::Display for ContentAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContentAddress::Text(h) => write!(f, "text:{h}"),
            ContentAddress::Fixed { recursive: true, hash } => write!(f, "fixed:r:{hash}"),
            ContentAddress::Fixed { recursive: false, hash } => write!(f, "fixed:{hash}"),
        }
    }
}

fn make_type(kind: &str, references: &[String], self_ref: bool) -> String {
    let mut s = kind.to_owned();
    for r in references {
        s.push(':');
        s.push_str(r);
    }
    if self_ref {
        s.push_str(":self");
    }
    s
}

/// `makeStorePath`: SHA-256 of `<type>:<algo>:<hex>:/nix/store:<name>`, folded to 20 bytes.
fn make_store_path(kind: &str, hash: &NixHash, name: &str) -> Result<StorePath, CaError> {
    let s = format!("{kind}:{}:{}:{}:{name}", hash.algo, hash.to_hex(), super::store_path::STORE_DIR);
    let digest = Sha256::digest(s.as_bytes());
    let mut folded = [0u8; 20];
    for (i, b) in digest.iter().enumerate() {
        folded[i % 20] ^= b;
    }
    Ok(StorePath::new(StorePathHash(folded), name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Paths real Nix 2.8 made for a file holding "hello\n": `nix-store --add` (recursive SHA-256 of the
    // NAR), `nix-store --add-fixed sha256` (flat) and `builtins.toFile "hello.txt"` (text); the CA fields
    // are what `nix path-info --json` printed.
    #[test]
    fn matches_paths_nix_made() {
        let cases = [
            (
                "fixed:r:sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw",
                "/nix/store/gwina1sjk7g95wq6fxc6b7s1hza53h74-hello",
            ),
            (
                "fixed:sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq",
                "/nix/store/8zv8i345w2xn27jrxj4cyjc6x3b4am1q-hello",
            ),
            (
                "text:sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq",
                "/nix/store/qa1w9gdfrba6jl2r57mb3c43863gqywp-hello.txt",
            ),
        ];
        for (ca, path) in cases {
            let ca = ContentAddress::parse(ca).unwrap();
            let path = StorePath::parse(path).unwrap();
            assert_eq!(ca.check(&path, &[]), Ok(()), "{ca}");
            // The same claim under another name is another path, so an uploader cannot move content.
            let renamed = StorePath::new(*path.hash(), "other").unwrap();
            assert!(matches!(ca.check(&renamed, &[]), Err(CaError::WrongPath { .. })), "{ca}");
        }
    }

    #[test]
    fn impossible_claims_are_refused() {
        let p = StorePath::parse("/nix/store/00000000000000000000000000000000-x").unwrap();
        let r = StorePath::parse("/nix/store/11111111111111111111111111111111-y").unwrap();
        let flat = ContentAddress::parse("fixed:sha256:1rpm6wbjs6gw3x2l3q5rr8bnpasvzphj7dn07zxb2lh3ik3jhdi0").unwrap();
        assert!(matches!(flat.store_path(&p, &[r]), Err(CaError::Impossible(_))));
        let text = ContentAddress::parse("text:sha1:0000000000000000000000000000000000000000").unwrap();
        assert!(matches!(text.store_path(&p, &[]), Err(CaError::Impossible(_))));
        assert!(matches!(ContentAddress::parse("fixed:r:"), Err(CaError::Hash { .. })));
        assert!(matches!(ContentAddress::parse("ipfs:abc"), Err(CaError::Malformed(_))));
    }
}
