//! Upstream binary caches: ordinary Nix HTTP(S) caches nixdag fills itself from (`nixdag warm`, and
//! `serve --upstream` on a narinfo miss). Nothing an upstream says is believed on its own: a narinfo is
//! used only when a key the node trusts signed it (checked here, before any NAR is asked for), and a
//! NAR is stored only when its bytes hash to the signed NarHash and NarSize (checked by the ingest,
//! which commits nothing otherwise). docs/SECURITY.md, "Upstreams", lists the bounds.
//!
//! `cache.rs` is one cache over HTTP (nix-cache-info, narinfo, NAR download); `download.rs` turns a NAR
//! download into the synchronous, decompressed, bounded stream the ingest reads; this file is the set of
//! caches in priority order with the trust check.

mod cache;
mod download;

use std::sync::Arc;
use std::time::Duration;

pub use self::cache::{Upstream, UpstreamError};
pub use self::download::NarDownload;
use crate::nix::narinfo::NarInfo;
use crate::nix::signing::{verify_any, PublicKey};
use crate::nix::store_path::StorePathHash;

/// Time limits of every upstream request (docs/SECURITY.md).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To open a connection (TCP and TLS).
    pub connect: Duration,
    /// For a whole small answer (nix-cache-info, narinfo).
    pub small: Duration,
    /// Between two pieces of a NAR body: a download may take long, but not stall.
    pub idle: Duration,
    /// How long an upstream that failed is left alone before it is asked again.
    pub retry_after: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            small: Duration::from_secs(15),
            idle: Duration::from_secs(30),
            retry_after: Duration::from_secs(30),
        }
    }
}

/// What the upstreams say about a store path.
#[derive(Debug)]
pub enum Lookup {
    /// A narinfo signed by a trusted key, from the upstream at this index of [`Upstreams::list`].
    Found {
        /// Which upstream.
        upstream: usize,
        /// Its narinfo, signature checked.
        info: Box<NarInfo>,
    },
    /// No upstream has it.
    Missing,
    /// Some upstream has it, but no narinfo for it is signed by a trusted key (or it names another path).
    Refused(String),
    /// No upstream that was asked could answer (down, timed out, a bad answer).
    Failed(String),
}

/// The upstream caches and the keys their narinfos must be signed with.
pub struct Upstreams {
    list: Vec<Arc<Upstream>>,
    trusted: Vec<PublicKey>,
}

impl Upstreams {
    /// The caches at `urls` (`http://` or `https://`); nothing is asked yet. Until [`Upstreams::probe`]
    /// has read their nix-cache-info, each has Nix's default priority (50).
    pub fn new(urls: &[String], trusted: Vec<PublicKey>, timeouts: Timeouts) -> Result<Upstreams, UpstreamError> {
        let client = cache::client(timeouts)?;
        let list = urls.iter().map(|u| Upstream::new(u, client.clone(), timeouts).map(Arc::new)).collect::<Result<_, _>>()?;
        Ok(Upstreams { list, trusted })
    }

    /// Read every cache's nix-cache-info, in parallel: its `Priority` orders lookups (lower is
    /// preferred; on a tie the order given). A cache that does not answer keeps Nix's default and is
    /// asked again on later lookups: a node must start with every upstream offline. Returns one line
    /// per cache that failed.
    pub async fn probe(&self) -> Vec<String> {
        let probes: Vec<_> = self
            .list
            .iter()
            .map(|u| {
                let u = u.clone();
                tokio::spawn(async move { u.cache_info().await })
            })
            .collect();
        let mut problems = Vec::new();
        for (u, p) in self.list.iter().zip(probes) {
            match p.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => problems.push(format!("{}: {e}", u.url())),
                Err(e) => problems.push(format!("{}: {e}", u.url())),
            }
        }
        problems
    }

    /// The caches, in the order given.
    pub fn list(&self) -> &[Arc<Upstream>] {
        &self.list
    }

    /// Ask every cache (in parallel, skipping those resting after a failure) for the narinfo of the
    /// path with this hash; the best-priority cache whose narinfo is signed by a trusted key wins.
    pub async fn lookup(&self, hash: &StorePathHash) -> Lookup {
        let asks: Vec<_> = self
            .list
            .iter()
            .map(|u| {
                let (u, hash) = (u.clone(), *hash);
                tokio::spawn(async move { if u.resting() { None } else { Some(u.narinfo(&hash).await) } })
            })
            .collect();
        let mut answers = Vec::new();
        for (i, a) in asks.into_iter().enumerate() {
            answers.push((self.list[i].priority(), i, a.await));
        }
        // Answers taken in priority order: the first trusted one wins.
        answers.sort_by_key(|(p, i, _)| (*p, *i));
        let mut refused = Vec::new();
        let mut failed = Vec::new();
        for (_, i, a) in answers {
            let url = self.list[i].url();
            match a {
                Ok(Some(Ok(Some(info)))) => match self.check(hash, &info) {
                    Ok(()) => return Lookup::Found { upstream: i, info: Box::new(info) },
                    Err(why) => refused.push(format!("{url}: {why}")),
                },
                Ok(Some(Ok(None))) => {}
                Ok(Some(Err(e))) => failed.push(format!("{url}: {e}")),
                Ok(None) => failed.push(format!("{url}: not asked (it failed recently)")),
                Err(e) => failed.push(format!("{url}: {e}")),
            }
        }
        if !refused.is_empty() {
            Lookup::Refused(refused.join("; "))
        } else if !failed.is_empty() {
            Lookup::Failed(failed.join("; "))
        } else {
            Lookup::Missing
        }
    }

    /// Whether an upstream's narinfo may be used for the path with this hash: it describes that path,
    /// is signed by a trusted key, and points at its NAR with a relative URL in a compression we read.
    fn check(&self, hash: &StorePathHash, info: &NarInfo) -> Result<(), String> {
        if info.store_path.hash() != hash {
            return Err(format!("its narinfo describes {}", info.store_path));
        }
        if !verify_any(&self.trusted, &info.fingerprint(), &info.sigs) {
            return Err("not signed by a trusted key".into());
        }
        cache::nar_location(info).map(|_| ()).map_err(|e| e.to_string())
    }
}

/// The narinfo as nixdag keeps it: the upstream's signatures stay (the gateway adds its own when it
/// serves the path); where and how the upstream kept the NAR file does not.
pub fn as_stored(mut info: NarInfo) -> NarInfo {
    info.url = None;
    info.compression = None;
    info.file_hash = None;
    info.file_size = None;
    info
}
