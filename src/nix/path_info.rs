//! `nix path-info --json` (Nix 2.8's shape): what the local Nix records of a store path, as a narinfo
//! without a URL (used by `add` and `warm --from-local-store`).

use crate::nix::hash::NarHash;
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePath;

/// One entry of `nix path-info --json` (Nix 2.8's shape) as a narinfo.
pub fn from_json(o: &serde_json::Value) -> Result<NarInfo, String> {
    let s = |k: &str| o.get(k).and_then(|v| v.as_str());
    let path = s("path").ok_or("an entry without a path")?;
    if o.get("valid").and_then(|v| v.as_bool()) == Some(false) {
        return Err(format!("{path} is not valid in the Nix store"));
    }
    let store_path = StorePath::parse(path).map_err(|e| format!("{path}: {e}"))?;
    let nar_hash: NarHash =
        s("narHash").ok_or("an entry without narHash")?.parse().map_err(|e| format!("{path}: narHash: {e}"))?;
    let nar_size = o.get("narSize").and_then(|v| v.as_u64()).ok_or("an entry without narSize")?;
    let mut references = Vec::new();
    for r in o.get("references").and_then(|v| v.as_array()).into_iter().flatten() {
        let r = r.as_str().ok_or("a reference that is not a string")?;
        references.push(StorePath::parse(r).map_err(|e| format!("{path}: reference {r}: {e}"))?);
    }
    let deriver = s("deriver").map(|d| d.rsplit('/').next().unwrap_or(d).to_string());
    let sigs = o
        .get("signatures")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default();
    Ok(NarInfo {
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
    })
}
