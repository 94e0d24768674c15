//! Which uploaded narinfos the cache takes (docs/SECURITY.md, "Upload policy"): a pure function over
//! parsed values, so the rules are unit-tested and fuzzed without a server.

use crate::nix::ca::ContentAddress;
use crate::nix::hash::NixHash;
use crate::nix::narinfo::NarInfo;
use crate::nix::signing::PublicKey;
use crate::nix::store_path::StorePath;

/// Why an uploaded narinfo is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It contradicts what the cache holds for the path (a narinfo is written once): 409 over HTTP.
    #[error("{0}")]
    Conflict(String),
    /// It is wrong on its own terms (a bad signature, a missing NAR or reference, a false CA claim): 400.
    #[error("{0}")]
    Invalid(String),
}

/// What the cache knows when a narinfo is uploaded.
pub struct Known<'a> {
    /// The narinfo already recorded for this store path, if any.
    pub existing: Option<&'a NarInfo>,
    /// The size of the stored NAR with the uploaded NarHash, if it is stored.
    pub stored_nar_size: Option<u64>,
    /// Whether a store path is in the cache.
    pub has_path: &'a dyn Fn(&StorePath) -> bool,
    /// For a flat or text CA claim: the hash (in the claim's algorithm) of the NAR's one regular file,
    /// or `None` when the NAR is not a single regular file.
    pub flat_hash: &'a dyn Fn(&NixHash) -> Option<NixHash>,
    /// Keys whose signatures must verify when present (the gateway's own and the trusted ones).
    pub keys: &'a [PublicKey],
}

/// What to do with an accepted narinfo.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Record it.
    Record(Box<NarInfo>),
    /// Nothing new (the same narinfo, or only signatures the cache has).
    Unchanged,
}

/// Judge an uploaded narinfo (see docs/SECURITY.md, "Upload policy"):
/// - its NAR must be stored, with the same size;
/// - every signature by a key the gateway knows must verify;
/// - every referenced path must be in the cache already (Nix uploads references first);
/// - a CA claim must give exactly this store path (and, for a recursive SHA-256, this NarHash);
/// - a path is written once: a later upload may add signatures, one with another NarHash,
///   NarSize or references is a conflict (409).
pub fn judge_narinfo(info: &NarInfo, known: &Known<'_>) -> Result<Verdict, Refusal> {
    let path = info.store_path.to_absolute();
    let fingerprint = info.fingerprint();
    for sig in &info.sigs {
        let name = sig.split_once(':').map(|(n, _)| n).unwrap_or("");
        if let Some(k) = known.keys.iter().find(|k| k.name() == name) {
            if !k.verify(&fingerprint, sig) {
                return Err(Refusal::Invalid(format!("bad signature by {name} on {path}")));
            }
        }
    }
    if let Some(old) = known.existing {
        // `existing` is found by the hash part: another name under it is another path (a conflict too).
        if old.store_path != info.store_path
            || old.nar_hash != info.nar_hash || old.nar_size != info.nar_size || old.references != info.references {
            return Err(Refusal::Conflict(format!(
                "{path} is already in the cache with NarHash {} ({} bytes); a store path's narinfo is written once",
                old.nar_hash, old.nar_size
            )));
        }
        let mut merged = old.clone();
        for s in &info.sigs {
            if !merged.sigs.contains(s) {
                merged.sigs.push(s.clone());
            }
        }
        return Ok(if merged.sigs == old.sigs { Verdict::Unchanged } else { Verdict::Record(Box::new(merged)) });
    }
    match known.stored_nar_size {
        None => {
            return Err(Refusal::Invalid(format!(
                "NAR {} of {path} is not in the cache: upload it first",
                info.nar_hash
            )))
        }
        Some(size) if size != info.nar_size => {
            return Err(Refusal::Invalid(format!(
                "NarSize {} does not match the stored NAR's {size} bytes",
                info.nar_size
            )))
        }
        Some(_) => {}
    }
    for r in &info.references {
        if *r != info.store_path && !(known.has_path)(r) {
            return Err(Refusal::Invalid(format!(
                "{path} references {}, which is not in the cache: upload it first",
                r.to_absolute()
            )));
        }
    }
    if let Some(ca) = &info.ca {
        let ca = ContentAddress::parse(ca).map_err(|e| Refusal::Invalid(format!("{path}: {e}")))?;
        ca.check(&info.store_path, &info.references).map_err(|e| Refusal::Invalid(format!("{path}: {e}")))?;
        match &ca {
            ContentAddress::Fixed { recursive: true, hash } => {
                if hash.algo == crate::nix::hash::HashAlgo::Sha256 && hash.digest != info.nar_hash.0 {
                    return Err(Refusal::Invalid(format!(
                        "{path}: CA claims NAR hash {hash}, the NAR is {}",
                        info.nar_hash
                    )));
                }
                if hash.algo != crate::nix::hash::HashAlgo::Sha256 {
                    return Err(Refusal::Invalid(format!("{path}: cannot check a recursive {} CA claim", hash.algo)));
                }
            }
            ContentAddress::Fixed { recursive: false, hash } | ContentAddress::Text(hash) => {
                match (known.flat_hash)(hash) {
                    Some(got) if got == *hash => {}
                    Some(got) => return Err(Refusal::Invalid(format!("{path}: CA claims {hash}, the file is {got}"))),
                    None => return Err(Refusal::Invalid(format!("{path}: CA claims a flat file, the NAR is not one"))),
                }
            }
        }
    }
    Ok(Verdict::Record(Box::new(info.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "StorePath: /nix/store/xkqag603938xw013sv3hgqh30laryip9-hello\n\
        URL: nar/x.nar\nCompression: none\n\
        NarHash: sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73\nNarSize: 120\nReferences: \n";

    fn judge(upload: &NarInfo, existing: Option<&NarInfo>) -> Result<Verdict, Refusal> {
        let known = Known {
            existing,
            stored_nar_size: Some(120),
            has_path: &|_| true,
            flat_hash: &|_| None,
            keys: &[],
        };
        judge_narinfo(upload, &known)
    }

    #[test]
    fn a_narinfo_is_written_once_and_only_gains_signatures() {
        let old = NarInfo::parse(INFO).unwrap();
        assert!(matches!(judge(&old, None), Ok(Verdict::Record(_))));
        assert_eq!(judge(&old, Some(&old)), Ok(Verdict::Unchanged));
        let mut signed = old.clone();
        signed.sigs.push("cache.example.org-1:AAAA".into());
        match judge(&signed, Some(&old)) {
            Ok(Verdict::Record(merged)) => assert_eq!(merged.sigs, signed.sigs),
            other => panic!("{other:?}"),
        }
        let other_bytes =
            NarInfo::parse(&INFO.replace("0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73", &"1".repeat(52))).unwrap();
        assert!(matches!(judge(&other_bytes, Some(&old)), Err(Refusal::Conflict(_))));
        // Found by reading the fuzz target: the same hash part under another name is another path.
        let renamed = NarInfo::parse(&INFO.replace("-hello", "-hullo")).unwrap();
        assert!(matches!(judge(&renamed, Some(&old)), Err(Refusal::Conflict(_))));
    }
}
