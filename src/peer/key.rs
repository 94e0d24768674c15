//! The endpoint's secret key: kept in the store (`STORE/keys/peer.secret`, mode 0600), so a node keeps
//! one endpoint id across restarts and the peers that allow it keep allowing it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use iroh::SecretKey;

use super::PeerError;

/// Where the store keeps the endpoint's secret key.
pub fn key_path(store_dir: &Path) -> PathBuf {
    store_dir.join("keys").join("peer.secret")
}

/// Read the store's key, if it has one.
pub fn load(store_dir: &Path) -> Result<Option<SecretKey>, PeerError> {
    let path = key_path(store_dir);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PeerError::File { what: "peer key", path, source }),
    };
    let bad = |reason: &str| PeerError::BadFile { what: "peer key", path: path.clone(), reason: reason.into() };
    let bytes = data_encoding::HEXLOWER_PERMISSIVE.decode(text.trim().as_bytes()).map_err(|_| bad("not hex"))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad("not 32 bytes"))?;
    Ok(Some(SecretKey::from_bytes(&bytes)))
}

/// Read the store's key, creating it (mode 0600) when missing.
pub fn load_or_create(store_dir: &Path) -> Result<SecretKey, PeerError> {
    if let Some(k) = load(store_dir)? {
        return Ok(k);
    }
    let path = key_path(store_dir);
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| PeerError::Random(e.to_string()))?;
    let key = SecretKey::from_bytes(&bytes);
    let file_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PeerError::File { what: "peer key", path, source }
    };
    // Written whole under a temporary name, then renamed: a crash never leaves an empty or partial key,
    // and the file is 0600 from its creation on (never readable by others, not even for a moment).
    let dir = path.parent().unwrap_or(store_dir);
    fs::create_dir_all(dir).map_err(file_err(dir))?;
    let tmp = dir.join(format!(".peer.secret.{}", std::process::id()));
    let mut f =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(file_err(&tmp))?;
    writeln!(f, "{}", data_encoding::HEXLOWER.encode(&key.to_bytes()))
        .and_then(|_| f.sync_all())
        .map_err(file_err(&tmp))?;
    // Two processes creating the key at once: the first rename wins and both use the file as it is now.
    if path.exists() {
        let _ = fs::remove_file(&tmp);
    } else {
        fs::rename(&tmp, &path).map_err(file_err(&path))?;
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(file_err(dir))?;
    }
    load(store_dir)?.ok_or_else(|| PeerError::BadFile {
        what: "peer key",
        path,
        reason: "vanished right after it was written".into(),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_key_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let k = load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(key_path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(dir.path()).unwrap().public(), k.public());
        fs::write(key_path(dir.path()), "zz\n").unwrap();
        assert!(matches!(load(dir.path()), Err(PeerError::BadFile { .. })));
    }
}
