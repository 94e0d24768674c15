//! This machine's Nix store, asked through the Nix command line: a path's closure
//! (`nix-store --query --requisites`), what Nix records of it (`nix path-info --json`, signatures
//! included), its NAR (`nix-store --dump`), and which path a hash part names.
//!
//! Through the command line and not Nix's SQLite database: the CLI is Nix's stable interface, works the
//! same with a daemon, and answers only for valid paths. Nix 2.8 has no command that maps a hash part to
//! its path, so [`NixStore::find`] keeps a listing of the store directory, read again whenever the
//! directory changed (its mtime), and confirms the path with `nix path-info`.
//!
//! Used by `warm --from-local-store` and by `serve --local-nix-store`.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::{StorePath, StorePathHash};

/// Why this machine's Nix store could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalStoreError {
    /// A Nix command could not run or failed.
    #[error("{command}: {why}")]
    Nix {
        /// The command.
        command: &'static str,
        /// What went wrong (its stderr, or the OS error).
        why: String,
    },
    /// Its output did not parse.
    #[error("{command} gave {what}")]
    Output {
        /// The command.
        command: &'static str,
        /// What is wrong with it.
        what: String,
    },
    /// The store directory could not be listed.
    #[error("listing {dir}: {source}")]
    List {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// This machine's Nix store: Nix's default store, or a local store rooted elsewhere (`--store ROOT`,
/// Nix's "chroot store", whose files live under `ROOT/nix/store`).
pub struct NixStore {
    root: Option<PathBuf>,
    listing: Mutex<Listing>,
}

/// The store directory's entries by hash part, as of its mtime.
#[derive(Default)]
struct Listing {
    mtime: Option<SystemTime>,
    names: HashMap<StorePathHash, Vec<String>>,
}

impl NixStore {
    /// Nix's default store (whatever `nix.conf`, `NIX_REMOTE` say), or the local store rooted at `root`.
    pub fn new(root: Option<PathBuf>) -> NixStore {
        NixStore { root, listing: Mutex::default() }
    }

    /// Where the paths' files are on this machine.
    pub fn real_dir(&self) -> PathBuf {
        match &self.root {
            Some(r) => r.join("nix/store"),
            None => PathBuf::from(std::env::var_os("NIX_STORE_DIR").unwrap_or_else(|| "/nix/store".into())),
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        if program == "nix" {
            c.args(["--extra-experimental-features", "nix-command"]);
        }
        if let Some(r) = &self.root {
            c.arg("--store").arg(r);
        }
        c.stdin(Stdio::null());
        c
    }

    /// The closures of `paths`, every path once.
    pub fn requisites(&self, paths: &[PathBuf]) -> Result<Vec<StorePath>, LocalStoreError> {
        const CMD: &str = "nix-store --query --requisites";
        let out = run(self.command("nix-store").arg("--query").arg("--requisites").args(paths), CMD)?;
        String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| StorePath::parse(l).map_err(|e| bad(CMD, format!("path {l:?}: {e}"))))
            .collect()
    }

    /// What Nix records of each of `paths` (all must be valid), signatures included.
    pub fn path_infos(&self, paths: &[StorePath]) -> Result<Vec<NarInfo>, LocalStoreError> {
        const CMD: &str = "nix path-info --json";
        let mut infos = Vec::with_capacity(paths.len());
        // One process per few hundred paths (the command line stays short).
        for batch in paths.chunks(256) {
            let mut c = self.command("nix");
            c.args(["path-info", "--json"]).args(batch.iter().map(|p| p.to_absolute()));
            let out = run(&mut c, CMD)?;
            let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| bad(CMD, e.to_string()))?;
            for o in v.as_array().ok_or_else(|| bad(CMD, "no JSON array".into()))? {
                infos.push(crate::nix::path_info::from_json(o).map_err(|what| bad(CMD, what))?);
            }
        }
        Ok(infos)
    }

    /// The valid path whose hash part is `hash`, with what Nix records of it; `None` when the store has
    /// no such valid path.
    pub fn find(&self, hash: &StorePathHash) -> Result<Option<NarInfo>, LocalStoreError> {
        for name in self.names(hash)? {
            let Ok(path) = StorePath::parse(&format!("/nix/store/{name}")) else { continue };
            // An entry being written or deleted now is not valid: `nix path-info` says so (or fails).
            match self.path_infos(std::slice::from_ref(&path)) {
                Ok(mut infos) if infos.len() == 1 => return Ok(infos.pop()),
                Ok(_) => {}
                Err(LocalStoreError::Nix { .. } | LocalStoreError::Output { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Whether the path's files are still on disk (a path deleted or collected by Nix's gc is gone).
    pub fn exists(&self, path: &StorePath) -> bool {
        let name = path.to_absolute();
        let base = name.rsplit('/').next().unwrap_or(&name);
        std::fs::symlink_metadata(self.real_dir().join(base)).is_ok()
    }

    /// The store directory's entries with this hash part (listing it again if it changed).
    fn names(&self, hash: &StorePathHash) -> Result<Vec<String>, LocalStoreError> {
        let dir = self.real_dir();
        let list_err = |source| LocalStoreError::List { dir: dir.clone(), source };
        let mtime = std::fs::metadata(&dir).and_then(|m| m.modified()).map_err(list_err)?;
        let mut listing = self.listing.lock().unwrap_or_else(|p| p.into_inner());
        if listing.mtime != Some(mtime) {
            listing.names = list(&dir).map_err(list_err)?;
            listing.mtime = Some(mtime);
        }
        Ok(listing.names.get(hash).cloned().unwrap_or_default())
    }

    /// The NAR of a path, as `nix-store --dump` writes it.
    pub fn dump(&self, path: &StorePath) -> Result<Dump, LocalStoreError> {
        let abs = path.to_absolute();
        let mut child = self
            .command("nix-store")
            .arg("--dump")
            .arg(&abs)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| LocalStoreError::Nix { command: "nix-store --dump", why: e.to_string() })?;
        let out = child.stdout.take().ok_or(LocalStoreError::Nix { command: "nix-store --dump", why: "no output".into() })?;
        Ok(Dump { child, out, path: abs })
    }
}

/// The entries of a store directory by hash part (lock files and other non-paths skipped).
fn list(dir: &Path) -> io::Result<HashMap<StorePathHash, Vec<String>>> {
    let mut names: HashMap<StorePathHash, Vec<String>> = HashMap::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".lock") || name.ends_with(".chroot") || name.as_bytes().get(32) != Some(&b'-') {
            continue;
        }
        let Ok(hash) = name[..32].parse::<StorePathHash>() else { continue };
        names.entry(hash).or_default().push(name.to_string());
    }
    Ok(names)
}

fn bad(command: &'static str, what: String) -> LocalStoreError {
    LocalStoreError::Output { command, what }
}

fn run(c: &mut Command, command: &'static str) -> Result<Vec<u8>, LocalStoreError> {
    let out = c.output().map_err(|e| LocalStoreError::Nix { command, why: e.to_string() })?;
    if !out.status.success() {
        return Err(LocalStoreError::Nix { command, why: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(out.stdout)
}

/// `nix-store --dump`'s output; at its end, the command must have succeeded.
pub struct Dump {
    child: Child,
    out: ChildStdout,
    path: String,
}

impl Read for Dump {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.out.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let status = self.child.wait()?;
            if !status.success() {
                return Err(io::Error::other(format!("nix-store --dump {} failed ({status})", self.path)));
            }
        }
        Ok(n)
    }
}

impl Drop for Dump {
    fn drop(&mut self) {
        // A dump abandoned mid-way (the ingest failed) is stopped, not left writing into a closed pipe.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_keeps_store_paths_by_hash_part_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let h = "025a8wjhsc4p43g5bh43i1585shpfv2k";
        for n in [format!("{h}-hello"), format!("{h}-hello.lock"), ".links".into(), "short-x".into()] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let names = list(dir.path()).unwrap();
        assert_eq!(names.len(), 1);
        assert_eq!(names[&h.parse().unwrap()], vec![format!("{h}-hello")]);
    }
}
