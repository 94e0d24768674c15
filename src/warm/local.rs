//! This machine's Nix store as a source ([`crate::local_nix`]): the closure, each path's narinfo with
//! whatever signatures Nix recorded, its NAR from `nix-store --dump`.
//!
//! Trust: these paths are trusted as `nixdag add` trusts them, because the store's owner runs the
//! command on a machine whose Nix store they already rely on; no trusted key is needed and the paths'
//! own signatures are kept. The NAR is still checked against the NarHash and NarSize Nix recorded,
//! so a path damaged on disk is refused.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

use super::source::{Found, Source};
use super::Meter;
pub use crate::local_nix::LocalStoreError;
use crate::local_nix::NixStore;
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::{StorePath, StorePathHash};

/// The paths of this machine's Nix store the warmer was asked for.
pub struct LocalStore {
    nix: NixStore,
    infos: HashMap<StorePathHash, NarInfo>,
    meter: Meter,
}

impl LocalStore {
    /// Ask Nix for the closures of `paths`: returns the source and every path of the closures.
    pub fn query(paths: &[PathBuf]) -> Result<(LocalStore, Vec<StorePath>), LocalStoreError> {
        let nix = NixStore::new(None);
        let closure = nix.requisites(paths)?;
        let infos = nix.path_infos(&closure)?.into_iter().map(|i| (*i.store_path.hash(), i)).collect();
        Ok((LocalStore { nix, infos, meter: Meter::default() }, closure))
    }
}

impl Source for LocalStore {
    fn lookup(&self, path: &StorePath) -> Result<Found, String> {
        match self.infos.get(path.hash()) {
            Some(info) if info.store_path == *path => Ok(Found { info: info.clone(), at: 0 }),
            _ => Err("not in this machine's Nix store".into()),
        }
    }

    fn open(&self, found: &Found) -> Result<Box<dyn Read + '_>, String> {
        Ok(Box::new(self.nix.dump(&found.info.store_path).map_err(|e| e.to_string())?))
    }

    fn name(&self, _found: &Found) -> String {
        "local".into()
    }

    fn meter(&self) -> &Meter {
        &self.meter
    }
}
