//! Asking the local Nix for what only it knows: a store path's references, deriver, signatures and CA,
//! and its closure. Used only when `nix` is on PATH.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::nix::hash::NarHash;
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePath;

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
    let s = |k: &str| o.get(k).and_then(|v| v.as_str());
    let store_path = StorePath::parse(s("path").context("nix path-info gave no path")?)?;
    let nar_hash: NarHash = s("narHash").context("nix path-info gave no narHash")?.parse()?;
    let nar_size = o.get("narSize").and_then(|v| v.as_u64()).context("nix path-info gave no narSize")?;
    let mut references = Vec::new();
    for r in o.get("references").and_then(|v| v.as_array()).into_iter().flatten() {
        references.push(StorePath::parse(r.as_str().context("reference is not a string")?)?);
    }
    let deriver = s("deriver").map(|d| d.rsplit('/').next().unwrap_or(d).to_string());
    let sigs = o
        .get("signatures")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default();
    Ok(Some(NarInfo {
        store_path,
        url: None,
        compression: None,
        file_hash: None,
        file_size: None,
        nar_hash,
        nar_size,
        references,
        deriver,
        sigs,
        ca: s("ca").map(String::from),
    }))
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
