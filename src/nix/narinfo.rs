//! `.narinfo` files: a binary cache's metadata about one store path.
//!
//! ```text
//! StorePath: /nix/store/saclvf5w5pnp7y8jbydrp47b935jqs5m-nixdag-fixture
//! URL: nar/07p4bn1pmyp6b486sa7mz6il3rm3q2n479xyc4lbknj9fpfxp5rl.nar
//! Compression: none
//! FileHash: sha256:07p4bn1pmyp6b486sa7mz6il3rm3q2n479xyc4lbknj9fpfxp5rl
//! FileSize: 1280
//! NarHash: sha256:07p4bn1pmyp6b486sa7mz6il3rm3q2n479xyc4lbknj9fpfxp5rl
//! NarSize: 1280
//! References: 5xly9ddp5hxxc824k8hd7rq0qfr4yznk-nixdag-dep
//! Deriver: 49xsxwwk48x4q2dyzms3kc2s4pm7jzn8-nixdag-fixture.drv
//! Sig: fixturekey-1:QjTJKMNCn9TXqbPd/aJWbG5w5bVrodHePIAfhdYvBCl4zM624GnwmiOqbP0wbqTfeDFaJeLRmMY9xA0qbRO5DQ==
//! ```
//!
//! Parsing follows Nix 2.8 (`NarInfo::NarInfo` in `libstore/nar-info.cc`) where that is sound:
//! unknown keys are ignored so newer caches stay readable, a repeated key overrides the earlier
//! one except `Sig`, which accumulates, and `Deriver: unknown-deriver` means none. Unlike Nix,
//! `URL` is optional, because nixdag also keeps path metadata for NARs it serves itself.

use std::fmt::Write as _;

use super::hash::{NarHash, NixHash};
use super::store_path::StorePath;

/// The contents of a `.narinfo` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfo {
    /// The store path described.
    pub store_path: StorePath,
    /// Where the (possibly compressed) NAR lives, relative to the cache root.
    pub url: Option<String>,
    /// Compression of the file at `url` (`none`, `xz`, `zstd`, …). Nix assumes `bzip2` when absent.
    pub compression: Option<String>,
    /// Hash of the file at `url`.
    pub file_hash: Option<NixHash>,
    /// Size of the file at `url`.
    pub file_size: Option<u64>,
    /// SHA-256 of the uncompressed NAR.
    pub nar_hash: NarHash,
    /// Size of the uncompressed NAR.
    pub nar_size: u64,
    /// Store paths referenced, in file order (Nix writes them sorted).
    pub references: Vec<StorePath>,
    /// Base name of the deriver, e.g. `…-foo.drv`.
    pub deriver: Option<String>,
    /// Signatures `keyname:base64`, in file order.
    pub sigs: Vec<String>,
    /// Content address, e.g. `fixed:r:sha256:…` or `text:sha256:…`, as written.
    pub ca: Option<String>,
}

/// Why a narinfo was rejected. Line numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NarInfoError {
    /// A required field is absent.
    #[error("narinfo lacks the required field {field}")]
    MissingField {
        /// `StorePath`, `NarHash` or `NarSize`.
        field: &'static str,
    },
    /// A non-empty line without `Key: value` shape.
    #[error("narinfo line {line}: expected \"Key: value\", got {text:?}")]
    BadLine {
        /// Line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A known field whose value does not parse.
    #[error("narinfo line {line}: invalid {field} {value:?}: {reason}")]
    InvalidField {
        /// Line number.
        line: usize,
        /// The key.
        field: &'static str,
        /// The value as written.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
}

impl NarInfo {
    /// Parses narinfo text.
    pub fn parse(text: &str) -> Result<NarInfo, NarInfoError> {
        let mut store_path = None;
        let mut url = None;
        let mut compression = None;
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references = Vec::new();
        let mut deriver = None;
        let mut sigs = Vec::new();
        let mut ca = None;

        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = raw.split_once(':') else {
                return Err(NarInfoError::BadLine { line, text: raw.to_owned() });
            };
            // Nix writes "Key: value"; tolerate missing or extra blanks.
            let value = value.trim();
            let invalid = |field: &'static str, reason: String| NarInfoError::InvalidField {
                line,
                field,
                value: value.to_owned(),
                reason,
            };
            match key {
                "StorePath" => {
                    store_path = Some(StorePath::parse(value).map_err(|e| invalid("StorePath", e.to_string()))?)
                }
                "URL" => url = Some(value.to_owned()),
                "Compression" => compression = Some(value.to_owned()),
                "FileHash" => file_hash = Some(NixHash::parse(value).map_err(|e| invalid("FileHash", e.to_string()))?),
                "FileSize" => file_size = Some(value.parse::<u64>().map_err(|e| invalid("FileSize", e.to_string()))?),
                "NarHash" => nar_hash = Some(value.parse::<NarHash>().map_err(|e| invalid("NarHash", e.to_string()))?),
                "NarSize" => nar_size = Some(value.parse::<u64>().map_err(|e| invalid("NarSize", e.to_string()))?),
                "References" => {
                    references = value
                        .split_ascii_whitespace()
                        .map(StorePath::from_base_name)
                        .collect::<Result<_, _>>()
                        .map_err(|e| invalid("References", e.to_string()))?
                }
                "Deriver" => {
                    deriver = if value == "unknown-deriver" {
                        None
                    } else {
                        StorePath::from_base_name(value).map_err(|e| invalid("Deriver", e.to_string()))?;
                        Some(value.to_owned())
                    }
                }
                "Sig" => sigs.push(value.to_owned()),
                "CA" => ca = Some(value.to_owned()),
                _ => {}
            }
        }

        Ok(NarInfo {
            store_path: store_path.ok_or(NarInfoError::MissingField { field: "StorePath" })?,
            url,
            compression,
            file_hash,
            file_size,
            nar_hash: nar_hash.ok_or(NarInfoError::MissingField { field: "NarHash" })?,
            nar_size: nar_size.ok_or(NarInfoError::MissingField { field: "NarSize" })?,
            references,
            deriver,
            sigs,
            ca,
        })
    }

    /// Renders the narinfo in Nix's field order, one `Key: value` line each, absent optional
    /// fields left out. `References:` is always written, empty if there are none, as Nix does.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(out, "StorePath: {}", self.store_path);
        if let Some(url) = &self.url {
            let _ = writeln!(out, "URL: {url}");
        }
        if let Some(compression) = &self.compression {
            let _ = writeln!(out, "Compression: {compression}");
        }
        if let Some(file_hash) = &self.file_hash {
            let _ = writeln!(out, "FileHash: {file_hash}");
        }
        if let Some(file_size) = self.file_size {
            let _ = writeln!(out, "FileSize: {file_size}");
        }
        let _ = writeln!(out, "NarHash: {}", self.nar_hash);
        let _ = writeln!(out, "NarSize: {}", self.nar_size);
        let refs: Vec<String> = self.references.iter().map(StorePath::base_name).collect();
        let _ = writeln!(out, "References: {}", refs.join(" "));
        if let Some(deriver) = &self.deriver {
            let _ = writeln!(out, "Deriver: {deriver}");
        }
        for sig in &self.sigs {
            let _ = writeln!(out, "Sig: {sig}");
        }
        if let Some(ca) = &self.ca {
            let _ = writeln!(out, "CA: {ca}");
        }
        out
    }

    /// The string binary-cache signatures sign:
    /// `1;<store path>;sha256:<nix32 NarHash>;<NarSize>;<references>`, the references being
    /// absolute paths, sorted and deduplicated (Nix keeps them in a set), joined with commas.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.store_path, &self.nar_hash, self.nar_size, &self.references)
    }
}

/// [`NarInfo::fingerprint`] for callers that hold path metadata in another shape.
pub fn fingerprint(store_path: &StorePath, nar_hash: &NarHash, nar_size: u64, references: &[StorePath]) -> String {
    let mut refs: Vec<String> = references.iter().map(StorePath::to_absolute).collect();
    refs.sort_unstable();
    refs.dedup();
    format!("1;{store_path};{nar_hash};{nar_size};{}", refs.join(","))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Written by Nix 2.8: `nix copy --to 'file:///tmp/nixfix/cache?secret-key=…&compression=none'`
    /// of a derivation output (`testdata/fixture.nar`) that references a `builtins.toFile` path.
    pub(crate) const FIXTURE: &str = "\
StorePath: /nix/store/saclvf5w5pnp7y8jbydrp47b935jqs5m-nixdag-fixture
URL: nar/07p4bn1pmyp6b486sa7mz6il3rm3q2n479xyc4lbknj9fpfxp5rl.nar
Compression: none
FileHash: sha256:07p4bn1pmyp6b486sa7mz6il3rm3q2n479xyc4lbknj9fpfxp5rl
FileSize: 1280
NarHash: sha256:07p4bn1pmyp6b486sa7mz6il3rm3q2n479xyc4lbknj9fpfxp5rl
NarSize: 1280
References: 5xly9ddp5hxxc824k8hd7rq0qfr4yznk-nixdag-dep
Deriver: 49xsxwwk48x4q2dyzms3kc2s4pm7jzn8-nixdag-fixture.drv
Sig: fixturekey-1:QjTJKMNCn9TXqbPd/aJWbG5w5bVrodHePIAfhdYvBCl4zM624GnwmiOqbP0wbqTfeDFaJeLRmMY9xA0qbRO5DQ==
";

    /// The same copy's narinfo for the referenced path: no references (note the trailing
    /// blank after `References:`), no deriver, a content address.
    pub(crate) const FIXTURE_DEP: &str = "\
StorePath: /nix/store/5xly9ddp5hxxc824k8hd7rq0qfr4yznk-nixdag-dep
URL: nar/02rm38hn0n3c1803g0qjhw7dw05vzn6k1nw0hdy21aha302rjphh.nar
Compression: none
FileHash: sha256:02rm38hn0n3c1803g0qjhw7dw05vzn6k1nw0hdy21aha302rjphh
FileSize: 128
NarHash: sha256:02rm38hn0n3c1803g0qjhw7dw05vzn6k1nw0hdy21aha302rjphh
NarSize: 128
References: 
Sig: fixturekey-1:NZGJFpcee1Nt4iqq7wSPCFzy1xGn6RQ/fPTXnwcizsmOOywjrBnswHxvecq66756wl31lmd5QDeIzKEN9hZBCA==
CA: text:sha256:1mr25dj3si5q7mmqy8m94a8f10a8z4svf7ssnq4ji6vyxvhcfn2r
";

    #[test]
    fn parse_real_narinfo() {
        let info = NarInfo::parse(FIXTURE).unwrap();
        assert_eq!(info.store_path.name(), "nixdag-fixture");
        assert_eq!(info.url.as_deref(), Some("nar/07p4bn1pmyp6b486sa7mz6il3rm3q2n479xyc4lbknj9fpfxp5rl.nar"));
        assert_eq!(info.compression.as_deref(), Some("none"));
        assert_eq!(info.file_size, Some(1280));
        assert_eq!(info.nar_size, 1280);
        assert_eq!(info.nar_hash, NarHash::of_bytes(include_bytes!("testdata/fixture.nar")));
        assert_eq!(info.file_hash, Some(info.nar_hash.into()));
        assert_eq!(info.references.len(), 1);
        assert_eq!(info.references[0].name(), "nixdag-dep");
        assert_eq!(info.deriver.as_deref(), Some("49xsxwwk48x4q2dyzms3kc2s4pm7jzn8-nixdag-fixture.drv"));
        assert_eq!(info.sigs.len(), 1);
        assert_eq!(info.ca, None);

        let dep = NarInfo::parse(FIXTURE_DEP).unwrap();
        assert!(dep.references.is_empty());
        assert_eq!(dep.deriver, None);
        assert_eq!(dep.ca.as_deref(), Some("text:sha256:1mr25dj3si5q7mmqy8m94a8f10a8z4svf7ssnq4ji6vyxvhcfn2r"));
    }

    #[test]
    fn render_round_trips_real_narinfo() {
        for text in [FIXTURE, FIXTURE_DEP] {
            assert_eq!(NarInfo::parse(text).unwrap().render(), text);
        }
    }

    #[test]
    fn fingerprint_of_real_narinfo() {
        let info = NarInfo::parse(FIXTURE).unwrap();
        assert_eq!(
            info.fingerprint(),
            "1;/nix/store/saclvf5w5pnp7y8jbydrp47b935jqs5m-nixdag-fixture;\
             sha256:07p4bn1pmyp6b486sa7mz6il3rm3q2n479xyc4lbknj9fpfxp5rl;1280;\
             /nix/store/5xly9ddp5hxxc824k8hd7rq0qfr4yznk-nixdag-dep"
        );
    }

    #[test]
    fn fingerprint_sorts_and_dedups_references() {
        let mut info = NarInfo::parse(FIXTURE).unwrap();
        let dep = info.references[0].clone();
        info.references = vec![dep.clone(), info.store_path.clone(), dep];
        assert!(info.fingerprint().ends_with(
            ";1280;/nix/store/5xly9ddp5hxxc824k8hd7rq0qfr4yznk-nixdag-dep,\
             /nix/store/saclvf5w5pnp7y8jbydrp47b935jqs5m-nixdag-fixture"
        ));
    }

    #[test]
    fn minimal_narinfo_and_tolerances() {
        let text = "\
StorePath: /nix/store/5xly9ddp5hxxc824k8hd7rq0qfr4yznk-nixdag-dep\r
NarHash: sha256-EF6ZBRgKqiB8g4DbMI39uwDeDocSgzcACmxYYCEaNQs=

NarSize: 128
FutureField: whatever
Sig: a:b
Sig: c:d
Deriver: unknown-deriver
References:";
        let info = NarInfo::parse(text).unwrap();
        assert_eq!(info.url, None);
        assert_eq!(info.sigs, ["a:b", "c:d"]);
        assert_eq!(info.deriver, None);
        assert!(info.references.is_empty());
        assert_eq!(
            info.render(),
            "StorePath: /nix/store/5xly9ddp5hxxc824k8hd7rq0qfr4yznk-nixdag-dep\n\
             NarHash: sha256:02rm38hn0n3c1803g0qjhw7dw05vzn6k1nw0hdy21aha302rjphh\n\
             NarSize: 128\n\
             References: \n\
             Sig: a:b\n\
             Sig: c:d\n"
        );
    }

    #[test]
    fn reject_missing_fields() {
        for (field, text) in [
            ("StorePath", FIXTURE.replace("StorePath:", "Xtore:")),
            ("NarHash", FIXTURE.replace("NarHash:", "XarHash:")),
            ("NarSize", FIXTURE.replace("NarSize:", "XarSize:")),
        ] {
            assert_eq!(NarInfo::parse(&text).unwrap_err(), NarInfoError::MissingField { field });
        }
    }

    #[test]
    fn reject_invalid_fields() {
        let cases = [
            ("StorePath", 1, FIXTURE.replace("/nix/store/sac", "/nix/stor/sac")),
            ("FileHash", 4, FIXTURE.replace("FileHash: sha256", "FileHash: sha3")),
            ("FileSize", 5, FIXTURE.replace("FileSize: 1280", "FileSize: -1")),
            ("NarHash", 6, FIXTURE.replace("NarHash: sha256:07", "NarHash: sha256:e7")),
            ("NarSize", 7, FIXTURE.replace("NarSize: 1280", "NarSize: 12k")),
            ("References", 8, FIXTURE.replace("References: 5x", "References: ../")),
            ("Deriver", 9, FIXTURE.replace("Deriver: 49", "Deriver: /nix/store/49")),
        ];
        for (want_field, want_line, text) in cases {
            match NarInfo::parse(&text).unwrap_err() {
                NarInfoError::InvalidField { line, field, .. } => {
                    assert_eq!((field, line), (want_field, want_line))
                }
                other => panic!("{want_field}: unexpected {other}"),
            }
        }
        let err = NarInfo::parse(&FIXTURE.replace("NarSize: 1280", "NarSize: 12k")).unwrap_err();
        assert_eq!(err.to_string(), "narinfo line 7: invalid NarSize \"12k\": invalid digit found in string");
    }

    #[test]
    fn reject_line_without_colon() {
        let text = format!("{FIXTURE}garbage\n");
        assert!(matches!(NarInfo::parse(&text), Err(NarInfoError::BadLine { line: 11, .. })));
    }
}
