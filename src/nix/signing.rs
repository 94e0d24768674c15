//! Binary-cache signing keys and signatures, in Nix's formats.
//!
//! Keys are text `name:base64`, as `nix-store --generate-binary-cache-key name sk pk` writes
//! them: the secret key holds libsodium's 64-byte form (32-byte seed followed by the 32-byte
//! public key), the public key its 32 bytes. A signature is `name:base64(64-byte ed25519
//! signature)` over a path's [fingerprint](super::narinfo::NarInfo::fingerprint). The name
//! ties a signature to the key that made it, so verification only tries keys of that name.

use std::fmt;

use data_encoding::BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// Why a key was rejected or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No `name:` prefix, or an empty name.
    #[error("{what} has no key name (expected \"name:base64\")")]
    MissingName {
        /// "secret key" or "public key".
        what: &'static str,
    },
    /// The key name contains `:` or whitespace, which would make signatures ambiguous.
    #[error("invalid key name {name:?}")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// The part after the name is not base64.
    #[error("{what} \"{name}\" is not valid base64")]
    BadBase64 {
        /// "secret key" or "public key".
        what: &'static str,
        /// The key name.
        name: String,
    },
    /// The decoded key has the wrong length.
    #[error("{what} \"{name}\" must be {expected} bytes, got {got}")]
    WrongLength {
        /// "secret key" or "public key".
        what: &'static str,
        /// The key name.
        name: String,
        /// Required length.
        expected: usize,
        /// Decoded length.
        got: usize,
    },
    /// A secret key whose public half does not belong to its seed, or a public key that is not
    /// a valid curve point.
    #[error("{what} \"{name}\" is corrupt")]
    Corrupt {
        /// "secret key" or "public key".
        what: &'static str,
        /// The key name.
        name: String,
    },
    /// The system random number generator failed.
    #[error("cannot generate a key: {0}")]
    Random(String),
}

/// An ed25519 signing key with its Nix key name. Zeroed on drop (ed25519-dalek's `zeroize`).
///
/// `Debug` leaves the secret out; `Display` writes it, since that is the key file format.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

/// An ed25519 verifying key with its Nix key name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

fn split_key<'a>(s: &'a str, what: &'static str) -> Result<(&'a str, Vec<u8>), KeyError> {
    let (name, b64) =
        s.trim().split_once(':').filter(|(name, _)| !name.is_empty()).ok_or(KeyError::MissingName { what })?;
    check_name(name)?;
    let bytes = BASE64.decode(b64.as_bytes()).map_err(|_| KeyError::BadBase64 { what, name: name.to_owned() })?;
    Ok((name, bytes))
}

fn check_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty() {
        return Err(KeyError::MissingName { what: "key" });
    }
    if name.contains(':') || name.contains(char::is_whitespace) {
        return Err(KeyError::InvalidName { name: name.to_owned() });
    }
    Ok(())
}

impl SecretKey {
    /// Parses `name:base64(seed ‖ public)`, the contents of a Nix secret key file (surrounding
    /// whitespace, such as a trailing newline, is ignored). Checks that the public half matches
    /// the seed, as a mismatch would produce signatures nobody can verify.
    pub fn parse(s: &str) -> Result<SecretKey, KeyError> {
        const WHAT: &str = "secret key";
        let (name, bytes) = split_key(s, WHAT)?;
        let bytes: [u8; 64] = bytes.as_slice().try_into().map_err(|_| KeyError::WrongLength {
            what: WHAT,
            name: name.to_owned(),
            expected: 64,
            got: bytes.len(),
        })?;
        let key = SigningKey::from_keypair_bytes(&bytes)
            .map_err(|_| KeyError::Corrupt { what: WHAT, name: name.to_owned() })?;
        Ok(SecretKey { name: name.to_owned(), key })
    }

    /// A new random key named `name` (e.g. `cache.example.org-1`, Nix's convention).
    pub fn generate(name: &str) -> Result<SecretKey, KeyError> {
        check_name(name)?;
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(SecretKey { name: name.to_owned(), key })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey { name: self.name.clone(), key: self.key.verifying_key() }
    }

    /// Signs `fingerprint`, returning `name:base64(signature)` for a narinfo `Sig:` line.
    pub fn sign(&self, fingerprint: &str) -> String {
        let sig = self.key.sign(fingerprint.as_bytes());
        format!("{}:{}", self.name, BASE64.encode(&sig.to_bytes()))
    }
}

/// `name:base64(seed ‖ public)`: the key file format. Handle with care.
impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(&self.key.to_keypair_bytes()))
    }
}

/// Redacted: secret keys must not end up in logs.
impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.name)
            .field("public", &self.public().to_string())
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Parses `name:base64(32 bytes)`, the contents of a Nix public key file or a
    /// `trusted-public-keys` entry.
    pub fn parse(s: &str) -> Result<PublicKey, KeyError> {
        const WHAT: &str = "public key";
        let (name, bytes) = split_key(s, WHAT)?;
        let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::WrongLength {
            what: WHAT,
            name: name.to_owned(),
            expected: 32,
            got: bytes.len(),
        })?;
        let key =
            VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::Corrupt { what: WHAT, name: name.to_owned() })?;
        Ok(PublicKey { name: name.to_owned(), key })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `sig` (`name:base64`) is this key's signature of `fingerprint`. False, not an
    /// error, for another key's name or a malformed signature: a narinfo may carry signatures
    /// by keys we do not know, and those simply do not count.
    ///
    /// Uses strict verification (canonical `s`, no small-order keys or `R`), which matches
    /// libsodium's `crypto_sign_verify_detached` that Nix uses on genuine signatures.
    pub fn verify(&self, fingerprint: &str, sig: &str) -> bool {
        let Some((name, b64)) = sig.split_once(':') else {
            return false;
        };
        if name != self.name {
            return false;
        }
        let Ok(bytes) = BASE64.decode(b64.as_bytes()) else {
            return false;
        };
        let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return false;
        };
        let sig = Signature::from_bytes(&bytes);
        self.key.verify_strict(fingerprint.as_bytes(), &sig).is_ok()
    }
}

/// `name:base64(public key)`: the public key file format.
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }
}

/// Whether any of `sigs` is a valid signature of `fingerprint` by any of `keys`, which is how
/// Nix decides that a path from a binary cache is trusted.
pub fn verify_any(keys: &[PublicKey], fingerprint: &str, sigs: &[String]) -> bool {
    sigs.iter().any(|sig| keys.iter().any(|key| key.verify(fingerprint, sig)))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;
    use crate::nix::narinfo::tests::{FIXTURE, FIXTURE_DEP};
    use crate::nix::narinfo::NarInfo;

    /// The throwaway key pair the narinfo fixtures were signed with, made by Nix 2.8's
    /// `nix-store --generate-binary-cache-key fixturekey-1 sk pk`.
    const FIXTURE_SK: &str =
        "fixturekey-1:hRdrzVm2TNrgN1BKGywPvmreaHQa3ZheYX5tdKwPYJZiNSDI3bx4POrHnBRRRBnT6ONQaodP/tdY0Rnf6xKJLg==";
    const FIXTURE_PK: &str = "fixturekey-1:YjUgyN28eDzqx5wUUUQZ0+jjUGqHT/7XWNEZ3+sSiS4=";

    fn nix_available() -> bool {
        let found = Command::new("nix-store").arg("--version").output().is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("note: nix-store not found on PATH; skipping the live Nix interop part");
        }
        found
    }

    fn run(cmd: &mut Command) -> String {
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn keys_round_trip() {
        let sk = SecretKey::parse(FIXTURE_SK).unwrap();
        assert_eq!(sk.to_string(), FIXTURE_SK);
        assert_eq!(sk.name(), "fixturekey-1");
        let pk = PublicKey::parse(FIXTURE_PK).unwrap();
        assert_eq!(pk.to_string(), FIXTURE_PK);
        assert_eq!(sk.public(), pk);
        assert!(!format!("{sk:?}").contains("hRdrzVm2"));
        // Key files end with whatever the editor left there.
        assert_eq!(PublicKey::parse(&format!("{FIXTURE_PK}\n")).unwrap(), pk);
    }

    #[test]
    fn signatures_equal_nix_signatures() {
        // ed25519 is deterministic, so signing the fingerprint must give Nix's exact Sig.
        let sk = SecretKey::parse(FIXTURE_SK).unwrap();
        let pk = PublicKey::parse(FIXTURE_PK).unwrap();
        for text in [FIXTURE, FIXTURE_DEP] {
            let info = NarInfo::parse(text).unwrap();
            let fp = info.fingerprint();
            assert_eq!(sk.sign(&fp), info.sigs[0]);
            assert!(pk.verify(&fp, &info.sigs[0]));
            assert!(verify_any(std::slice::from_ref(&pk), &fp, &info.sigs));
        }
    }

    #[test]
    fn generated_key_signs_and_verifies() {
        let sk = SecretKey::generate("cache.example.org-1").unwrap();
        let pk = sk.public();
        let sig = sk.sign("1;/nix/store/x;sha256:y;1;");
        assert!(sig.starts_with("cache.example.org-1:"));
        assert!(pk.verify("1;/nix/store/x;sha256:y;1;", &sig));
        assert!(!pk.verify("1;/nix/store/x;sha256:y;2;", &sig));
        let reparsed = SecretKey::parse(&sk.to_string()).unwrap();
        assert_eq!(reparsed.public(), pk);
        assert_ne!(
            SecretKey::generate("k").unwrap().public().to_string(),
            SecretKey::generate("k").unwrap().public().to_string()
        );
    }

    #[test]
    fn reject_signature_by_other_name_or_malformed() {
        let info = NarInfo::parse(FIXTURE).unwrap();
        let fp = info.fingerprint();
        let pk = PublicKey::parse(FIXTURE_PK).unwrap();
        let sig = &info.sigs[0];
        let b64 = sig.split_once(':').unwrap().1;
        let other_name = PublicKey::parse(&FIXTURE_PK.replace("fixturekey-1", "other-1")).unwrap();
        assert!(!other_name.verify(&fp, sig));
        assert!(!pk.verify(&fp, &format!("other-1:{b64}")));
        assert!(!pk.verify(&fp, b64));
        assert!(!pk.verify(&fp, "fixturekey-1:not base64!"));
        assert!(!pk.verify(&fp, &format!("fixturekey-1:{}", &b64[..40])));
        assert!(!pk.verify(&fp.replace("1280", "1281"), sig));
        let mut flipped = BASE64.decode(b64.as_bytes()).unwrap();
        flipped[10] ^= 1;
        assert!(!pk.verify(&fp, &format!("fixturekey-1:{}", BASE64.encode(&flipped))));
        assert!(!verify_any(&[other_name], &fp, &info.sigs));
        assert!(!verify_any(&[pk], &fp, &[]));
    }

    #[test]
    fn reject_malformed_keys() {
        assert!(matches!(SecretKey::parse("no-colon"), Err(KeyError::MissingName { .. })));
        assert!(matches!(
            PublicKey::parse(":YjUgyN28eDzqx5wUUUQZ0+jjUGqHT/7XWNEZ3+sSiS4="),
            Err(KeyError::MissingName { .. })
        ));
        assert!(matches!(PublicKey::parse("k:***"), Err(KeyError::BadBase64 { .. })));
        // A public key where a secret key belongs, and the other way round.
        assert_eq!(
            SecretKey::parse(FIXTURE_PK).unwrap_err().to_string(),
            "secret key \"fixturekey-1\" must be 64 bytes, got 32"
        );
        assert!(matches!(PublicKey::parse(FIXTURE_SK), Err(KeyError::WrongLength { expected: 32, got: 64, .. })));
        // Seed and public half from different keys.
        let sk = SecretKey::parse(FIXTURE_SK).unwrap();
        let other = SecretKey::generate("fixturekey-1").unwrap();
        let mut mixed = sk.key.to_keypair_bytes();
        mixed[32..].copy_from_slice(other.key.verifying_key().as_bytes());
        assert!(matches!(
            SecretKey::parse(&format!("fixturekey-1:{}", BASE64.encode(&mixed))),
            Err(KeyError::Corrupt { .. })
        ));
        assert!(matches!(SecretKey::generate("bad name"), Err(KeyError::InvalidName { .. })));
    }

    /// Keys made by real Nix parse and work; a narinfo signed by real Nix verifies with our
    /// fingerprint and our verifier.
    #[test]
    fn interop_with_real_nix() {
        if !nix_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sk_path = dir.path().join("sk");
        let pk_path = dir.path().join("pk");
        run(Command::new("nix-store")
            .arg("--generate-binary-cache-key")
            .arg("nixdag-test-1")
            .arg(&sk_path)
            .arg(&pk_path));
        let sk = SecretKey::parse(&std::fs::read_to_string(&sk_path).unwrap()).unwrap();
        let pk = PublicKey::parse(&std::fs::read_to_string(&pk_path).unwrap()).unwrap();
        assert_eq!(sk.public(), pk);
        let fp = "1;/nix/store/5xly9ddp5hxxc824k8hd7rq0qfr4yznk-x;sha256:02rm38hn0n3c1803g0qjhw7dw05vzn6k1nw0hdy21aha302rjphh;128;";
        assert!(pk.verify(fp, &sk.sign(fp)));

        // A unique file, so the store path is new to this run's cache.
        let file = dir.path().join("nixdag-signing-test");
        let nonce = SecretKey::generate("n").unwrap().public().to_string();
        std::fs::write(&file, format!("nixdag signing test {nonce}\n")).unwrap();
        let store_path = run(Command::new("nix-store").arg("--add").arg(&file));
        let store_path = store_path.trim();
        let cache = dir.path().join("cache");
        let url = format!("file://{}?secret-key={}&compression=none", cache.display(), sk_path.display());
        run(Command::new("nix")
            .args(["--extra-experimental-features", "nix-command", "copy", "--to"])
            .arg(&url)
            .arg(store_path));
        let hash_part = Path::new(store_path).file_name().and_then(|n| n.to_str()).and_then(|n| n.get(..32)).unwrap();
        let text = std::fs::read_to_string(cache.join(format!("{hash_part}.narinfo"))).unwrap();
        let info = NarInfo::parse(&text).unwrap();
        assert_eq!(info.store_path.to_string(), store_path);
        assert_eq!(info.render(), text, "render differs from Nix's narinfo");
        assert_eq!(info.sigs.len(), 1, "nix copy did not sign:\n{text}");
        let fp = info.fingerprint();
        assert!(pk.verify(&fp, &info.sigs[0]), "Nix's Sig does not verify:\n{text}");
        assert_eq!(sk.sign(&fp), info.sigs[0]);
        assert!(verify_any(&[pk], &fp, &info.sigs));
    }
}
