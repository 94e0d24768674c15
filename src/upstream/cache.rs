//! One upstream binary cache over HTTP(S): its `nix-cache-info`, narinfos and NAR files.
//!
//! Every request is bounded: a connect timeout, a whole-answer timeout for small files, a size cap on
//! what is read of them, no redirects (an upstream cannot send us to another host) and no proxy from
//! the environment. An upstream that fails (cannot connect, times out, answers 5xx) rests for a while:
//! lookups skip it instead of waiting on it again.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Timeouts;
use crate::nix::compression::NarCompression;
use crate::nix::narinfo::{NarInfo, NarInfoError};
use crate::nix::store_path::StorePathHash;

/// Narinfos and nix-cache-info are a few KiB; more than this is not one.
const MAX_SMALL: usize = 1 << 20;

/// Nix's priority for a cache whose nix-cache-info does not give one.
const DEFAULT_PRIORITY: u32 = 50;

/// Why an upstream request gave no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// The URL is not an `http://` or `https://` URL.
    #[error("invalid upstream URL {url:?}: {why}")]
    BadUrl {
        /// As given.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// The HTTP client could not be set up.
    #[error("setting up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// Connecting, sending or receiving failed.
    #[error("{url}: {source}")]
    Http {
        /// What was asked for.
        url: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
    /// No answer, or no progress, within the time limit.
    #[error("{url}: no answer within {secs} s")]
    Timeout {
        /// What was asked for.
        url: String,
        /// The limit.
        secs: u64,
    },
    /// An unexpected HTTP status.
    #[error("{url}: HTTP {status}")]
    Status {
        /// What was asked for.
        url: String,
        /// The status.
        status: u16,
    },
    /// A small file longer than any real one.
    #[error("{url}: answer larger than {limit} bytes")]
    TooLarge {
        /// What was asked for.
        url: String,
        /// The cap.
        limit: u64,
    },
    /// The narinfo does not parse.
    #[error("{url}: {source}")]
    BadNarInfo {
        /// Where it came from.
        url: String,
        /// The parser's complaint.
        #[source]
        source: NarInfoError,
    },
    /// The cache is for another store directory, or its nix-cache-info is unreadable.
    #[error("{url}: {why}")]
    BadCacheInfo {
        /// Where it came from.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// A narinfo points at its NAR in a way this node does not follow.
    #[error("NAR URL {url:?}: {why}")]
    BadNarUrl {
        /// As written in the narinfo.
        url: String,
        /// What is wrong.
        why: String,
    },
}

/// The one HTTP client all upstreams share (its connection pool is bounded per host).
pub(super) fn client(t: Timeouts) -> Result<reqwest::Client, UpstreamError> {
    reqwest::Client::builder()
        .connect_timeout(t.connect)
        .read_timeout(t.idle)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(16)
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("nixdag/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(UpstreamError::Client)
}

/// One upstream cache.
pub struct Upstream {
    base: String,
    client: reqwest::Client,
    timeouts: Timeouts,
    priority: AtomicU32,
    /// Milliseconds after `epoch` until which the cache rests after a failure (0: not resting).
    rest_until: AtomicU64,
    epoch: Instant,
}

impl Upstream {
    pub(super) fn new(url: &str, client: reqwest::Client, timeouts: Timeouts) -> Result<Upstream, UpstreamError> {
        let bad = |why: &str| UpstreamError::BadUrl { url: url.to_string(), why: why.to_string() };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("only http:// and https:// upstreams are supported"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("no query or fragment allowed"));
        }
        Ok(Upstream {
            base: url.trim_end_matches('/').to_string(),
            client,
            timeouts,
            priority: AtomicU32::new(DEFAULT_PRIORITY),
            rest_until: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// The cache's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// How long a download may make no progress.
    pub(super) fn idle_timeout(&self) -> Duration {
        self.timeouts.idle
    }

    /// Its `Priority` (lower is preferred).
    pub fn priority(&self) -> u32 {
        self.priority.load(Ordering::Relaxed)
    }

    /// Whether it failed recently and is left alone for now.
    pub fn resting(&self) -> bool {
        let until = self.rest_until.load(Ordering::Relaxed);
        until != 0 && (self.epoch.elapsed().as_millis() as u64) < until
    }

    /// Note a failure of the cache itself (not of one path): it rests for `retry_after`.
    fn failed(&self) {
        let until = self.epoch.elapsed() + self.timeouts.retry_after;
        self.rest_until.store((until.as_millis() as u64).max(1), Ordering::Relaxed);
    }

    /// Read `/nix-cache-info`: the store directory must be /nix/store; `Priority` orders the caches.
    pub(super) async fn cache_info(&self) -> Result<(), UpstreamError> {
        let url = format!("{}/nix-cache-info", self.base);
        let Some(text) = self.small(&url).await? else {
            return Err(UpstreamError::BadCacheInfo { url, why: "no nix-cache-info (HTTP 404)".into() });
        };
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else { continue };
            match (k.trim(), v.trim()) {
                ("StoreDir", dir) if dir != crate::nix::store_path::STORE_DIR => {
                    return Err(UpstreamError::BadCacheInfo { url, why: format!("a cache for store {dir}") })
                }
                ("Priority", p) => {
                    let p = p.parse().map_err(|_| UpstreamError::BadCacheInfo {
                        url: url.clone(),
                        why: format!("invalid Priority {p:?}"),
                    })?;
                    self.priority.store(p, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The narinfo of the path with this hash, `None` when the cache does not have it. Not checked here
    /// beyond parsing: [`super::Upstreams::lookup`] checks what it says and who signed it.
    pub async fn narinfo(&self, hash: &StorePathHash) -> Result<Option<NarInfo>, UpstreamError> {
        let url = format!("{}/{hash}.narinfo", self.base);
        let Some(text) = self.small(&url).await? else { return Ok(None) };
        NarInfo::parse(&text).map(Some).map_err(|source| UpstreamError::BadNarInfo { url, source })
    }

    /// Start downloading the NAR file a (checked) narinfo points at; the body is read by
    /// [`super::NarDownload`].
    pub async fn nar(&self, info: &NarInfo) -> Result<(String, reqwest::Response), UpstreamError> {
        let (path, _) = nar_location(info)?;
        let url = format!("{}/{path}", self.base);
        let send = self.client.get(&url).send();
        let resp = match tokio::time::timeout(self.timeouts.small, send).await {
            Err(_) => {
                self.failed();
                return Err(UpstreamError::Timeout { url, secs: self.timeouts.small.as_secs() });
            }
            Ok(Err(source)) => {
                self.failed();
                return Err(UpstreamError::Http { url, source });
            }
            Ok(Ok(r)) => r,
        };
        if !resp.status().is_success() {
            if resp.status().is_server_error() {
                self.failed();
            }
            return Err(UpstreamError::Status { url, status: resp.status().as_u16() });
        }
        Ok((url, resp))
    }

    /// GET a small file whole, within the time and size limits; `None` on 404 or 403 (how S3-backed
    /// caches say "no such file").
    async fn small(&self, url: &str) -> Result<Option<String>, UpstreamError> {
        let fetch = async {
            let mut resp =
                self.client.get(url).send().await.map_err(|source| UpstreamError::Http { url: url.into(), source })?;
            let status = resp.status();
            if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::FORBIDDEN {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(UpstreamError::Status { url: url.into(), status: status.as_u16() });
            }
            let mut body = Vec::new();
            while let Some(c) = resp.chunk().await.map_err(|source| UpstreamError::Http { url: url.into(), source })? {
                if body.len() + c.len() > MAX_SMALL {
                    return Err(UpstreamError::TooLarge { url: url.into(), limit: MAX_SMALL as u64 });
                }
                body.extend_from_slice(&c);
            }
            String::from_utf8(body)
                .map(Some)
                .map_err(|_| UpstreamError::BadCacheInfo { url: url.into(), why: "not UTF-8 text".into() })
        };
        let r = match tokio::time::timeout(self.timeouts.small, fetch).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout { url: url.into(), secs: self.timeouts.small.as_secs() }),
        };
        // The cache itself failing (not answering, 5xx) makes it rest; a bad file does not.
        if matches!(&r, Err(UpstreamError::Http { .. } | UpstreamError::Timeout { .. }))
            || matches!(&r, Err(UpstreamError::Status { status, .. }) if *status >= 500)
        {
            self.failed();
        }
        r
    }
}

/// Where a narinfo's NAR file is, relative to the cache, and its compression. Only plain relative
/// URLs are followed (Nix writes `nar/<filehash>.nar.xz`): an absolute URL or `..` could point the node
/// at any host or file.
pub(super) fn nar_location(info: &NarInfo) -> Result<(&str, NarCompression), UpstreamError> {
    let url = info.url.as_deref().unwrap_or("");
    let bad = |why: &str| UpstreamError::BadNarUrl { url: url.to_string(), why: why.to_string() };
    if url.is_empty() {
        return Err(bad("the narinfo has no URL"));
    }
    let plain = url.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._/+".contains(&b));
    if !plain || url.starts_with('/') || url.split('/').any(|p| p == ".." || p == "." || p.is_empty()) {
        return Err(bad("only plain relative URLs are followed"));
    }
    let c = NarCompression::from_narinfo(info.compression.as_deref())
        .ok_or_else(|| bad(&format!("unknown compression {:?}", info.compression.as_deref().unwrap_or(""))))?;
    Ok((url, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "StorePath: /nix/store/xkqag603938xw013sv3hgqh30laryip9-hello\n\
        NarHash: sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73\nNarSize: 120\nReferences: \n";

    fn with(url: Option<&str>, compression: Option<&str>) -> NarInfo {
        let mut info = NarInfo::parse(INFO).unwrap();
        info.url = url.map(String::from);
        info.compression = compression.map(String::from);
        info
    }

    #[test]
    fn nar_urls_an_upstream_may_not_point_at() {
        for url in [
            None,
            Some(""),
            Some("/etc/passwd"),
            Some("http://10.0.0.1/nar/x.nar"),
            Some("//evil.example/x.nar"),
            Some("nar/../../x.nar"),
            Some("nar/./x.nar"),
            Some("nar//x.nar"),
            Some("nar/x.nar?y=1"),
            Some("nar/x y.nar"),
        ] {
            assert!(nar_location(&with(url, Some("xz"))).is_err(), "{url:?} accepted");
        }
        assert!(nar_location(&with(Some("nar/x.nar.gz"), Some("gzip"))).is_err(), "unknown compression accepted");
    }

    #[test]
    fn nar_urls_as_nix_writes_them() {
        let c = |comp| nar_location(&with(Some("nar/1abc.nar.xz"), comp)).map(|(_, c)| c).unwrap();
        assert_eq!(c(Some("xz")), NarCompression::Xz);
        assert_eq!(c(Some("zstd")), NarCompression::Zstd);
        assert_eq!(c(Some("none")), NarCompression::None);
        // Nix reads a missing Compression as bzip2.
        assert_eq!(c(None), NarCompression::Bzip2);
    }
}
