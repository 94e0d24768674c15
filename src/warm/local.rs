//! This machine's Nix store as a source: the closure from `nix-store --query --requisites`, each path's
//! narinfo from `nix path-info --json` (with whatever signatures Nix recorded), its NAR from
//! `nix-store --dump`.
//!
//! Trust: these paths are trusted as `nixdag add` trusts them, because the store's owner runs the
//! command on a machine whose Nix store they already rely on; no trusted key is needed and the paths'
//! own signatures are kept. The NAR is still checked against the NarHash and NarSize Nix recorded,
//! so a path damaged on disk is refused.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};

use super::source::{Found, Source};
use super::Meter;
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::{StorePath, StorePathHash};

/// Why the local Nix store could not be read.
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
}

/// The paths of this machine's Nix store the warmer was asked for.
pub struct LocalStore {
    infos: HashMap<StorePathHash, NarInfo>,
    meter: Meter,
}

impl LocalStore {
    /// Ask Nix for the closures of `paths`: returns the source and every path of the closures.
    pub fn query(paths: &[PathBuf]) -> Result<(LocalStore, Vec<StorePath>), LocalStoreError> {
        let requisites = "nix-store --query --requisites";
        let out = run(Command::new("nix-store").arg("--query").arg("--requisites").args(paths), requisites)?;
        let closure = String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| StorePath::parse(l).map_err(|e| bad(requisites, format!("path {l:?}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let path_info = "nix path-info --json";
        let mut infos = HashMap::new();
        // One process per few hundred paths (the command line stays short).
        for batch in closure.chunks(256) {
            let mut c = Command::new("nix");
            c.args(["--extra-experimental-features", "nix-command", "path-info", "--json"]);
            c.args(batch.iter().map(|p| p.to_absolute()));
            let out = run(&mut c, path_info)?;
            let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| bad(path_info, e.to_string()))?;
            for o in v.as_array().ok_or_else(|| bad(path_info, "no JSON array".into()))? {
                let info = crate::nix::path_info::from_json(o).map_err(|what| bad(path_info, what))?;
                infos.insert(*info.store_path.hash(), info);
            }
        }
        Ok((LocalStore { infos, meter: Meter::default() }, closure))
    }
}

fn bad(command: &'static str, what: String) -> LocalStoreError {
    LocalStoreError::Output { command, what }
}

fn run(c: &mut Command, command: &'static str) -> Result<Vec<u8>, LocalStoreError> {
    let out = c.stdin(Stdio::null()).output().map_err(|e| LocalStoreError::Nix { command, why: e.to_string() })?;
    if !out.status.success() {
        return Err(LocalStoreError::Nix { command, why: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(out.stdout)
}


impl Source for LocalStore {
    fn lookup(&self, path: &StorePath) -> Result<Found, String> {
        match self.infos.get(path.hash()) {
            Some(info) if info.store_path == *path => Ok(Found { info: info.clone(), at: 0 }),
            _ => Err("not in this machine's Nix store".into()),
        }
    }

    fn open(&self, found: &Found) -> Result<Box<dyn Read + '_>, String> {
        let path = found.info.store_path.to_absolute();
        let mut child = Command::new("nix-store")
            .arg("--dump")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("nix-store --dump {path}: {e}"))?;
        let out = child.stdout.take().ok_or("nix-store --dump: no output")?;
        Ok(Box::new(Dump { child, out, path }))
    }

    fn name(&self, _found: &Found) -> String {
        "local".into()
    }

    fn meter(&self) -> &Meter {
        &self.meter
    }
}

/// `nix-store --dump`'s output; at its end, the command must have succeeded.
struct Dump {
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
