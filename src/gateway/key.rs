//! The gateway's signing key: created in the store on first start, so a cache has one identity.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::nix::signing::SecretKey;

/// Where the store keeps the gateway's secret key.
pub fn key_path(store_dir: &Path) -> PathBuf {
    store_dir.join("keys").join("gateway.secret")
}

/// Read the key in `file`, or the store's key, creating the latter (mode 0600) when missing.
pub fn load_or_create(store_dir: &Path, file: Option<&Path>) -> Result<SecretKey> {
    if let Some(f) = file {
        let text = fs::read_to_string(f).with_context(|| format!("reading key {}", f.display()))?;
        return SecretKey::parse(text.trim()).with_context(|| format!("parsing key {}", f.display()));
    }
    let path = key_path(store_dir);
    if path.exists() {
        let text = fs::read_to_string(&path).with_context(|| format!("reading key {}", path.display()))?;
        return SecretKey::parse(text.trim()).with_context(|| format!("parsing key {}", path.display()));
    }
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.').collect();
    let name = format!("{}-nixdag-1", if host.is_empty() { "localhost" } else { &host });
    let key = SecretKey::generate(&name).context("generating a signing key")?;
    // Written whole to a temporary name, then renamed: a crash never leaves an empty or partial key.
    let dir = path.parent().expect("key path has a parent");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".gateway.secret.{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    writeln!(f, "{key}").and_then(|_| f.sync_all()).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("fsync of {}", dir.display()))?;
    eprintln!("nixdag: created signing key {}", path.display());
    Ok(key)
}
