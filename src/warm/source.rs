//! Where the warmer takes paths from: a [`Source`] looks up a path's (verified) narinfo and opens its
//! NAR. Upstream caches are one source (signatures checked by [`Upstreams::lookup`]); this machine's
//! Nix store is the other (`local.rs`).

use std::io::Read;
use std::sync::Arc;

use super::Meter;
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePath;
use crate::upstream::{Lookup, NarDownload, Upstreams};

/// A path a source can provide: its narinfo (checked by the source), and where it is.
#[derive(Debug, Clone)]
pub struct Found {
    /// The narinfo as the source gave it.
    pub info: NarInfo,
    /// The source's own index of where the NAR is (an upstream's place in priority order).
    pub at: usize,
}

/// Where paths come from.
pub trait Source: Sync {
    /// A path's narinfo, trusted by this source's rules; the reason when there is none.
    fn lookup(&self, path: &StorePath) -> Result<Found, String>;
    /// The NAR of a path [`Source::lookup`] found.
    fn open(&self, found: &Found) -> Result<Box<dyn Read + '_>, String>;
    /// A name for where `found` comes from, for the summary.
    fn name(&self, found: &Found) -> String;
    /// Bytes received so far.
    fn meter(&self) -> &Meter;
}

/// Upstream binary caches, asked through a tokio runtime from the warmer's threads.
pub struct UpstreamSource {
    upstreams: Arc<Upstreams>,
    rt: tokio::runtime::Handle,
    meter: Meter,
}

impl UpstreamSource {
    /// Upstreams asked on `rt` (the warmer's threads block on it: they must not be its own).
    pub fn new(upstreams: Arc<Upstreams>, rt: tokio::runtime::Handle) -> Self {
        UpstreamSource { upstreams, rt, meter: Meter::default() }
    }
}

impl Source for UpstreamSource {
    fn lookup(&self, path: &StorePath) -> Result<Found, String> {
        match self.rt.block_on(self.upstreams.lookup(path.hash())) {
            Lookup::Found { info, .. } if info.store_path != *path => {
                Err(format!("refused: the upstream's narinfo describes {}", info.store_path))
            }
            Lookup::Found { upstream, info } => Ok(Found { info: *info, at: upstream }),
            Lookup::Missing => Err("no upstream has it".into()),
            Lookup::Refused(why) => Err(format!("refused: {why}")),
            Lookup::Failed(why) => Err(format!("upstreams failed: {why}")),
        }
    }

    fn open(&self, found: &Found) -> Result<Box<dyn Read + '_>, String> {
        let up = &self.upstreams.list()[found.at];
        let d = NarDownload::open(up, &found.info, &self.rt, Some(self.meter.downloaded.clone()))
            .map_err(|e| e.to_string())?;
        Ok(Box::new(d))
    }

    fn name(&self, found: &Found) -> String {
        self.upstreams.list()[found.at].url().to_string()
    }

    fn meter(&self) -> &Meter {
        &self.meter
    }
}
