//! The upload judgement: `service::judge_narinfo` (`service/accept.rs`) over a narinfo (`NarInfo::parse`) and
//! the NAR it describes (`nix::nar::parse`), plus `nix::ca::ContentAddress` on the `CA:` text. An uploader
//! controls both files; the judgement decides what the cache records and serves to every client.
//!
//! Input (see fuzz/README.md):
//!
//! ```text
//! input = flags:u8  refs:u8  narinfo-text  0x00  nar-bytes        (split at the first NUL)
//! flags bits 0-1  existing record: 0 none; 1 this narinfo as an upload of it was recorded (if one was);
//!                 2 this narinfo with another NarHash (bit 2: another NarSize instead);
//!                 3 that record with one more signature, by a key nobody knows
//!       bit 2     with existing 1 or 3: the record's signatures are dropped (so the upload's are new)
//!       bit 3     NarHash and NarSize := the NAR's, so mutated NARs can still be accepted
//!       bit 4     a NarHash that is not the NAR's: the store has a NAR of another size (else none)
//!       bit 5     keys = [K] (a fixed key), else none
//!       bit 6     append a valid signature by K
//!       bit 7     append a signature by K of another fingerprint
//! refs  bit i     the i-th reference (i < 8) is in the cache; later ones never are
//! ```
//!
//! The store holds the NAR (`stored_nar_size`) when the narinfo's NarHash is the NAR's SHA-256;
//! `flat_hash` hashes the NAR's contents when it is a single regular file.
//!
//! Properties: nothing panics and errors render;
//! - new path, `Ok(Record(i))`: `i` is the upload, the stored NAR has exactly NarSize bytes, every
//!   reference other than the path itself is in the cache, every signature by a known key verifies;
//!   a `CA:` claim parses, `check(store_path, references)` holds, a `fixed:r:sha256` claim is the
//!   NarHash and a flat or text claim is the hash of the NAR's single regular file;
//! - new path: never `Ok(Unchanged)`; no NAR stored means `Err`;
//! - a signature by a known key that does not verify: `Err(Refusal::Invalid)`;
//! - an existing record with another NarHash, NarSize or references: `Err(Refusal::Conflict)` (unless a signature
//!   by a known key is bad, which is refused first);
//! - an existing record and `Ok`: what is recorded (or kept) is for the uploaded store path, keeps the
//!   record's fields and signatures, adds only the upload's, and `Unchanged` means nothing to add;
//! - every recorded signature by a known key verifies against the recorded narinfo's fingerprint;
//! - `ContentAddress::parse` of the `CA:` text (or of the narinfo text when it does not parse): prints
//!   back to an equal value, `store_path` does not panic, and `check` holds exactly when `store_path`
//!   computes the claimed path.
#![no_main]

use std::io;

use libfuzzer_sys::fuzz_target;
use nixdag::nix::ca::ContentAddress;
use nixdag::nix::hash::{HashAlgo, Hasher, NixHash};
use nixdag::nix::nar::{parse, NarVisitor};
use nixdag::nix::narinfo::NarInfo;
use nixdag::nix::signing::{PublicKey, SecretKey};
use nixdag::nix::store_path::StorePath;
use nixdag::service::{judge_narinfo, Known, Refusal, Verdict};

/// K: made by `nix-store --generate-binary-cache-key nixdag-fuzz-1` for this target only.
const SECRET: &str =
    "nixdag-fuzz-1:jUPnr37sVLSgPxZaCVup4j0zN/5yuzucJtovoiXNLb2vNsixc8tHQhKIOxxraWTZbPfqsS3G9gZuyDFaOIxEAQ==";
const PUBLIC: &str = "nixdag-fuzz-1:rzbIsXPLR0ISiDsca2lk2Wz36rEtxvYGbsgxWjiMRAE=";
/// A signature by a key the gateway does not know: kept as it is.
const OTHER_SIG: &str =
    "cache.example.org-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";

/// Whether the NAR's root is a regular file, and if so its contents.
#[derive(Default)]
struct Root {
    events: usize,
    regular: bool,
    contents: Vec<u8>,
}

impl NarVisitor for Root {
    fn regular_begin(&mut self, _x: bool, _len: u64, _off: u64) -> io::Result<()> {
        self.regular = self.events == 0;
        self.events += 1;
        Ok(())
    }
    fn regular_data(&mut self, data: &[u8]) -> io::Result<()> {
        if self.regular {
            self.contents.extend_from_slice(data);
        }
        Ok(())
    }
    fn symlink(&mut self, _t: &[u8]) -> io::Result<()> {
        self.events += 1;
        Ok(())
    }
    fn directory_begin(&mut self) -> io::Result<()> {
        self.events += 1;
        Ok(())
    }
}

/// The `CA:` text alone: parse, print, compute the path.
fn check_ca_text(text: &str, claimed: &StorePath, references: &[StorePath]) {
    let ca = match ContentAddress::parse(text) {
        Ok(ca) => ca,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let printed = ca.to_string();
    assert_eq!(ContentAddress::parse(&printed).as_ref(), Ok(&ca), "{text:?} prints as {printed:?}");
    let computed = ca.store_path(claimed, references);
    match ca.check(claimed, references) {
        Ok(()) => assert_eq!(computed.as_ref(), Ok(claimed), "check passed, store_path disagrees"),
        Err(e) => {
            let _ = e.to_string();
            assert!(computed.as_ref() != Ok(claimed), "store_path computes {claimed}, check fails: {e}");
        }
    }
}

/// Every signature by a known key on `info` verifies against its fingerprint.
fn known_sigs_verify(info: &NarInfo, keys: &[PublicKey]) -> bool {
    let fp = info.fingerprint();
    info.sigs.iter().all(|sig| {
        let name = sig.split_once(':').map(|(n, _)| n).unwrap_or("");
        keys.iter().filter(|k| k.name() == name).all(|k| k.verify(&fp, sig))
    })
}

fn check_new_path_record(i: &NarInfo, known: &Known<'_>, root: &Root, in_cache: &dyn Fn(&StorePath) -> bool) {
    assert_eq!(known.stored_nar_size, Some(i.nar_size), "recorded without a stored NAR of NarSize bytes");
    for r in &i.references {
        assert!(*r == i.store_path || in_cache(r), "recorded {} with missing reference {r}", i.store_path);
    }
    if let Some(text) = &i.ca {
        let ca = ContentAddress::parse(text).unwrap_or_else(|e| panic!("recorded an unparsable CA {text:?}: {e}"));
        ca.check(&i.store_path, &i.references).unwrap_or_else(|e| panic!("recorded a CA claim that fails: {e}"));
        match &ca {
            ContentAddress::Fixed { recursive: true, hash } => {
                assert_eq!(hash.algo, HashAlgo::Sha256, "recorded an unchecked recursive {} claim", hash.algo);
                assert_eq!(hash.digest, i.nar_hash.0, "recursive CA claim is not the NarHash");
            }
            ContentAddress::Fixed { recursive: false, hash } | ContentAddress::Text(hash) => {
                assert!(root.regular, "recorded a flat/text CA claim for a NAR that is not one file");
                let mut h = Hasher::new(hash.algo);
                h.update(&root.contents);
                assert_eq!(h.finish(), *hash, "recorded a flat/text CA claim that is not the file's hash");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, refmask, rest @ ..] = data else { return };
    let (flags, refmask) = (*flags, *refmask);
    let (text, nar) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else { return };

    let mut info = match NarInfo::parse(text) {
        Ok(info) => info,
        Err(_) => {
            // Still fuzz the CA grammar with the text.
            let p = StorePath::parse("/nix/store/gwina1sjk7g95wq6fxc6b7s1hza53h74-hello").unwrap();
            check_ca_text(text.trim(), &p, &[]);
            return;
        }
    };
    if let Some(ca) = info.ca.clone() {
        check_ca_text(&ca, &info.store_path, &info.references);
    }

    let mut root = Root::default();
    let summary = parse(nar, &mut root).ok();
    if flags & 0x08 != 0 {
        if let Some(s) = &summary {
            info.nar_hash = s.nar_hash;
            info.nar_size = s.nar_size;
        }
    }

    let secret = SecretKey::parse(SECRET).unwrap();
    let key = PublicKey::parse(PUBLIC).unwrap();
    assert_eq!(secret.public(), key);
    let keys: &[PublicKey] = if flags & 0x20 != 0 { std::slice::from_ref(&key) } else { &[] };

    let in_set: Vec<StorePath> = info
        .references
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| refmask >> i & 1 == 1)
        .map(|(_, r)| r.clone())
        .collect();
    let in_cache = |p: &StorePath| in_set.contains(p);
    let stored_nar_size = match &summary {
        Some(s) if s.nar_hash == info.nar_hash => Some(s.nar_size),
        Some(_) if flags & 0x10 != 0 => Some(info.nar_size.wrapping_add(1)),
        _ => None,
    };
    let root = root;
    let flat = |h: &NixHash| {
        (summary.is_some() && root.regular).then(|| {
            let mut hasher = Hasher::new(h.algo);
            hasher.update(&root.contents);
            hasher.finish()
        })
    };
    // The base narinfo as a first upload: what the cache would have recorded.
    let known_none = Known { existing: None, stored_nar_size, has_path: &in_cache, flat_hash: &flat, keys };
    let first = judge_narinfo(&info, &known_none);
    if let Err(e) = &first {
        let _ = e.to_string();
    }
    match &first {
        Ok(Verdict::Record(i)) => {
            assert_eq!(**i, info, "a new path is recorded as uploaded");
            check_new_path_record(i, &known_none, &root, &in_cache);
        }
        Ok(Verdict::Unchanged) => panic!("a new path judged Unchanged"),
        Err(_) => {}
    }
    if stored_nar_size.is_none() {
        assert!(first.is_err(), "accepted {} without its NAR", info.store_path);
    }
    if !known_sigs_verify(&info, keys) {
        assert!(matches!(first, Err(Refusal::Invalid(_))), "a bad signature by a known key: {first:?}");
    }
    let recorded = match first {
        Ok(Verdict::Record(i)) => Some(*i),
        _ => None,
    };

    // The upload: the base plus signatures by K.
    let mut upload = info.clone();
    let fp = upload.fingerprint();
    if flags & 0x40 != 0 {
        upload.sigs.push(secret.sign(&fp));
    }
    if flags & 0x80 != 0 {
        upload.sigs.push(secret.sign(&format!("{fp};other")));
    }

    let existing: Option<NarInfo> = match flags & 3 {
        0 => None,
        1 | 3 => recorded.map(|mut r| {
            if flags & 0x04 != 0 {
                r.sigs.clear();
            }
            if flags & 3 == 3 {
                r.sigs.push(OTHER_SIG.to_owned());
            }
            r
        }),
        _ => {
            let mut r = info.clone();
            if flags & 0x04 != 0 {
                r.nar_size = r.nar_size.wrapping_add(1);
            } else {
                r.nar_hash.0[0] ^= 1;
            }
            Some(r)
        }
    };

    let known = Known { existing: existing.as_ref(), stored_nar_size, has_path: &in_cache, flat_hash: &flat, keys };
    let verdict = judge_narinfo(&upload, &known);
    if let Err(e) = &verdict {
        let _ = e.to_string();
    }

    if !known_sigs_verify(&upload, keys) {
        assert!(matches!(verdict, Err(Refusal::Invalid(_))), "a bad signature by a known key: {verdict:?}");
    }
    match &existing {
        None => match &verdict {
            Ok(Verdict::Record(i)) => {
                assert_eq!(**i, upload, "a new path is recorded as uploaded");
                check_new_path_record(i, &known, &root, &in_cache);
            }
            Ok(Verdict::Unchanged) => panic!("a new path judged Unchanged"),
            Err(_) => {}
        },
        Some(old) => {
            let differs = old.nar_hash != upload.nar_hash
                || old.nar_size != upload.nar_size
                || old.references != upload.references;
            // (A bad signature by a known key is refused first, as a bad request.)
            if differs && known_sigs_verify(&upload, keys) {
                assert!(matches!(verdict, Err(Refusal::Conflict(_))), "a second, different narinfo: {verdict:?}");
            }
            let kept = match &verdict {
                Ok(Verdict::Record(m)) => Some(&**m),
                Ok(Verdict::Unchanged) => Some(old),
                Err(_) => None,
            };
            if let Some(m) = kept {
                assert_eq!(m.store_path, upload.store_path, "an upload of one path was judged against another");
                let mut expect = old.clone();
                for s in &upload.sigs {
                    if !expect.sigs.contains(s) {
                        expect.sigs.push(s.clone());
                    }
                }
                assert_eq!(*m, expect, "the record may only gain the upload's signatures");
                if matches!(verdict, Ok(Verdict::Unchanged)) {
                    assert_eq!(expect.sigs, old.sigs, "Unchanged, but the upload had new signatures");
                }
                assert!(known_sigs_verify(m, keys), "recorded a signature by a known key that does not verify");
            }
        }
    }
});
