//! Asking the local Nix for what only it knows: a store path's references, deriver, signatures and CA,
//! and its closure. Used only when `nix` is on PATH.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::nix::narinfo::NarInfo;

/// The narinfo fields Nix records for `path` (`nix path-info --json`), or `None` when `nix` is not
/// installed or does not know the path.
pub fn path_info(path: &Path) -> Result<Option<NarInfo>> {
    let out = match Command::new("nix")
        .args(["--extra-experimental-features", "nix-command", "path-info", "--json"])
        .arg(path)
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("running nix path-info"),
    };
    if !out.status.success() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("parsing nix path-info --json")?;
    let Some(o) = v.as_array().and_then(|a| a.first()) else { return Ok(None) };
    if o.get("valid").and_then(|v| v.as_bool()) == Some(false) {
        return Ok(None);
    }
    crate::nix::path_info::from_json(o).map(Some).map_err(|e| anyhow::anyhow!("nix path-info: {e}"))
}

/// Every store path the given paths reference, recursively, dependencies first (`nix-store -qR`).
pub fn closure(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let out = Command::new("nix-store")
        .arg("-qR")
        .args(paths)
        .output()
        .context("running nix-store -qR (is Nix installed?)")?;
    if !out.status.success() {
        bail!("nix-store -qR failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(PathBuf::from).collect())
}
