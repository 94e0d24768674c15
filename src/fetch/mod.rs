//! A source file by its hash, from wherever it still is (docs/FETCH-SRC.md): hashed mirrors
//! (`<mirror>/<algo>/<hex>`, the layout Nix's `builtin:fetchurl` asks) and plain URLs, over HTTP with
//! retries and `Range` resume. Every byte goes through [`import::add_file`] with the expected hash, so a
//! file is kept only when it is the one asked for; a mismatch stores nothing.
//!
//! Used by `nixdag fetch-src` and by the gateway's pull-through mirror ([`MirrorPull`]).

mod http;
mod pull;

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use self::pull::{FileFound, MirrorPull};
use crate::chunk::ChunkerConfig;
use crate::import::{self, FileAdded};
use crate::nix::hash::NixHash;
use crate::store::{Store, StoreError};

/// Where a file may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A hashed mirror: the file is at `<base>/<algo>/<lowercase hex>`.
    Mirror(String),
    /// The file's own URL.
    Url(String),
}

impl Source {
    /// The URL to ask for `hash` at.
    pub fn url(&self, hash: &NixHash) -> String {
        match self {
            Source::Mirror(m) => format!("{}/{}/{}", m.trim_end_matches('/'), hash.algo, hash.to_hex()),
            Source::Url(u) => u.clone(),
        }
    }
}

/// Why one source did not give the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Miss {
    /// The server says it does not have it (404, 410, or another refusal).
    #[error("not there ({0})")]
    NotThere(String),
    /// It sent bytes of another hash; nothing was kept.
    #[error("wrong bytes: expected {expected}, got {got}")]
    Mismatch {
        /// The hash asked for.
        expected: String,
        /// The hash of what arrived.
        got: String,
    },
    /// Unreachable, timed out, cut off more often than the retries allow, or a server error.
    #[error("{0}")]
    Network(String),
    /// More bytes than the limit.
    #[error("larger than the limit of {0} bytes")]
    TooLarge(u64),
}

/// What a failed fetch was, overall: the CLI's exit codes tell these apart (docs/FETCH-SRC.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// Every source said it does not have the file (or there was no source).
    NotFound,
    /// Some source sent wrong bytes, and none sent the right ones.
    Mismatch,
    /// Some source could not be reached or failed mid-way, and none had the file.
    Network,
    /// Our side failed: the store, the disk, the output file.
    Local,
}

/// A fetch that gave nothing.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No source gave the file; each one's reason, in the order tried.
    #[error("{hash}: {}", Misses(.misses))]
    Failed {
        /// The hash asked for.
        hash: NixHash,
        /// `(url, why)` for every source tried.
        misses: Vec<(String, Miss)>,
    },
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The output file or the download's thread.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: io::Error,
    },
    /// Too many downloads at once for longer than a client should wait.
    #[error("too many downloads at once")]
    Busy,
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
}

struct Misses<'a>(&'a [(String, Miss)]);

impl fmt::Display for Misses<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "not in the store, and no mirror or URL to try");
        }
        for (i, (url, m)) in self.0.iter().enumerate() {
            write!(f, "{}{url}: {m}", if i > 0 { "; " } else { "" })?;
        }
        Ok(())
    }
}

impl FetchError {
    /// Which kind of failure this is: a mismatch anywhere outranks a network fault, which outranks "not
    /// there", since each says more about what the user must do.
    pub fn kind(&self) -> FailKind {
        match self {
            FetchError::Failed { misses, .. } => {
                if misses.iter().any(|(_, m)| matches!(m, Miss::Mismatch { .. })) {
                    FailKind::Mismatch
                } else if misses.iter().any(|(_, m)| matches!(m, Miss::Network(_) | Miss::TooLarge(_))) {
                    FailKind::Network
                } else {
                    FailKind::NotFound
                }
            }
            _ => FailKind::Local,
        }
    }
}

/// Limits and patience of the HTTP client.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Further tries of a URL after a failure that may pass (a reset, a timeout, a 5xx), each resuming
    /// with `Range` where the last stopped.
    pub retries: u32,
    /// Time to connect.
    pub connect_timeout: Duration,
    /// Time a response may send nothing.
    pub read_timeout: Duration,
    /// Largest file taken.
    pub max_size: u64,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            retries: 3,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            max_size: 64 << 30,
        }
    }
}

/// How far a download is, for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes received of the current source.
    pub received: AtomicU64,
    /// The file's size when a server said it; 0 when unknown.
    pub total: AtomicU64,
    /// The URL being read.
    pub url: Mutex<String>,
}

impl Progress {
    fn start(&self, url: &str) {
        self.received.store(0, Ordering::Relaxed);
        self.total.store(0, Ordering::Relaxed);
        if let Ok(mut u) = self.url.lock() {
            *u = url.to_owned();
        }
    }
}

/// A file that is now in the store, and where it came from.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// What the store now holds.
    pub added: FileAdded,
    /// The URL it came from.
    pub from: String,
}

/// A file's bytes as they arrive from somewhere, and its size as stated there (a promise: the bytes are
/// checked against the hash as they are stored).
pub type FileStream = (Box<dyn Read + Send>, u64);

/// Somewhere asked for a file before any mirror or URL: the LAN's peers (`crate::peer::PeerClient`).
/// What it hands over goes through the same check against the hash as any download.
pub trait Nearby: Send + Sync {
    /// What to call it in messages and summaries (`peers`).
    fn label(&self) -> String;
    /// The file's bytes as they arrive and its size as stated; `Ok(None)` when none has it. Blocks (it is
    /// called on a blocking thread).
    fn open(&self, store: &Arc<Store>, hash: &NixHash) -> Result<Option<FileStream>, String>;
}

/// Downloads files into the store.
#[derive(Clone)]
pub struct Fetcher {
    client: http::Client,
    nearby: Option<Arc<dyn Nearby>>,
    max_size: u64,
}

impl Fetcher {
    /// A fetcher with these limits.
    pub fn new(opts: FetchOptions) -> Result<Fetcher, FetchError> {
        let max_size = opts.max_size;
        Ok(Fetcher { client: http::Client::new(opts)?, nearby: None, max_size })
    }

    /// Ask `nearby` first, before the mirrors and URLs each fetch names.
    pub fn with_nearby(mut self, nearby: Arc<dyn Nearby>) -> Fetcher {
        self.nearby = Some(nearby);
        self
    }

    /// Try `sources` in order until one gives the file with this hash; keep it in `store` (under
    /// `name`, with the URL recorded), and when `out` is given write it there too (only once it
    /// verified: a `.part` file is renamed into place).
    pub async fn fetch(
        &self,
        store: &Arc<Store>,
        hash: &NixHash,
        sources: &[Source],
        name: &str,
        out: Option<&Path>,
        progress: &Progress,
    ) -> Result<Fetched, FetchError> {
        let mut misses = Vec::new();
        if let Some(nearby) = &self.nearby {
            let label = nearby.label();
            progress.start(&label);
            match self.ask_nearby(nearby.clone(), store, hash, name, out).await? {
                Ok(added) => return Ok(Fetched { added, from: label }),
                Err(miss) => misses.push((label, miss)),
            }
        }
        for source in sources {
            let url = source.url(hash);
            progress.start(&url);
            match self.attempt(store, hash, &url, name, out, progress).await? {
                Ok(added) => return Ok(Fetched { added, from: url }),
                Err(miss) => misses.push((url, miss)),
            }
        }
        Err(FetchError::Failed { hash: hash.clone(), misses })
    }

    /// The nearby source, on a blocking thread: `Ok(Err(miss))` when it does not give the file.
    async fn ask_nearby(
        &self,
        nearby: Arc<dyn Nearby>,
        store: &Arc<Store>,
        hash: &NixHash,
        name: &str,
        out: Option<&Path>,
    ) -> Result<Result<FileAdded, Miss>, FetchError> {
        let (store, expected, name, max) = (store.clone(), hash.clone(), name.to_owned(), self.max_size);
        let out = out.map(Path::to_path_buf);
        let job = tokio::task::spawn_blocking(move || -> Result<Result<FileAdded, Miss>, FetchError> {
            let (reader, size) = match nearby.open(&store, &expected) {
                Ok(Some(found)) => found,
                Ok(None) => return Ok(Err(Miss::NotThere("none has it".into()))),
                Err(e) => return Ok(Err(Miss::Network(e))),
            };
            if size > max {
                return Ok(Err(Miss::TooLarge(max)));
            }
            let failed_read = Arc::new(Mutex::new(None));
            let watched = ReadFailure { inner: reader.take(size), failed: failed_read.clone() };
            let mut tee = Tee::new(watched, out.as_deref())?;
            match import::add_file(&store, &mut tee, &name, Vec::new(), ChunkerConfig::default(), Some(&expected)) {
                Ok(added) => {
                    tee.finish()?;
                    Ok(Ok(added))
                }
                Err(StoreError::HashMismatch { expected, got, .. }) => Ok(Err(Miss::Mismatch { expected, got })),
                // The fetch failed mid-way (the ingest saw a failed read and kept nothing).
                Err(e) => match failed_read.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    Some(why) => Ok(Err(Miss::Network(why))),
                    None => Err(e.into()),
                },
            }
        });
        job.await.map_err(|e| FetchError::Io { context: "the ingest thread".into(), source: io::Error::other(e) })?
    }

    /// One source: the download streams into an ingest on a blocking thread. `Ok(Err(miss))` when this
    /// source failed and the next may be tried; `Err` when our side failed.
    async fn attempt(
        &self,
        store: &Arc<Store>,
        hash: &NixHash,
        url: &str,
        name: &str,
        out: Option<&Path>,
        progress: &Progress,
    ) -> Result<Result<FileAdded, Miss>, FetchError> {
        let (tx, reader) = import::channel(32);
        let (store, expected, name, urls) = (store.clone(), hash.clone(), name.to_owned(), vec![url.to_owned()]);
        let out = out.map(Path::to_path_buf);
        let ingest = tokio::task::spawn_blocking(move || -> Result<FileAdded, FetchError> {
            let mut tee = Tee::new(reader, out.as_deref())?;
            let added = import::add_file(&store, &mut tee, &name, urls, ChunkerConfig::default(), Some(&expected))?;
            tee.finish()?;
            Ok(added)
        });
        let streamed = self.client.stream(url, &tx, progress).await;
        if streamed.is_err() {
            // The ingest sees a failed read and rolls back: nothing of a partial download is kept.
            let _ = tx.send(Err(io::Error::other("download failed"))).await;
        }
        drop(tx);
        let ingested = ingest.await.map_err(|e| FetchError::Io { context: "the ingest thread".into(), source: io::Error::other(e) })?;
        Ok(match (streamed, ingested) {
            (Err(miss), _) => Err(miss),
            (Ok(()), Ok(added)) => Ok(added),
            (Ok(()), Err(FetchError::Store(StoreError::HashMismatch { expected, got, .. }))) => {
                Err(Miss::Mismatch { expected, got })
            }
            (Ok(()), Err(e)) => return Err(e),
        })
    }
}

/// Remembers why its reader failed, to tell a source's fault from the store's.
struct ReadFailure<R> {
    inner: R,
    failed: Arc<Mutex<Option<String>>>,
}

impl<R: Read> Read for ReadFailure<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        })
    }
}

/// Copies what the ingest reads into `<out>.part`, renamed to `out` by [`Tee::finish`] once the file
/// verified. Dropped unfinished, it removes the part file.
struct Tee<R> {
    inner: R,
    file: Option<(BufWriter<File>, PathBuf, PathBuf)>,
}

impl<R: Read> Tee<R> {
    fn new(inner: R, out: Option<&Path>) -> Result<Self, FetchError> {
        let file = match out {
            Some(out) => {
                let mut part = out.as_os_str().to_owned();
                part.push(".part");
                let part = PathBuf::from(part);
                let f = File::create(&part)
                    .map_err(|e| FetchError::Io { context: format!("creating {}", part.display()), source: e })?;
                Some((BufWriter::with_capacity(1 << 20, f), part, out.to_path_buf()))
            }
            None => None,
        };
        Ok(Tee { inner, file })
    }

    fn finish(&mut self) -> Result<(), FetchError> {
        let Some((w, part, out)) = self.file.take() else { return Ok(()) };
        let io_err = |context: String| move |source| FetchError::Io { context, source };
        let f = w.into_inner().map_err(|e| e.into_error()).map_err(io_err(format!("writing {}", part.display())))?;
        f.sync_all().map_err(io_err(format!("syncing {}", part.display())))?;
        std::fs::rename(&part, &out).map_err(io_err(format!("renaming {} to {}", part.display(), out.display())))
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some((w, _, _)) = self.file.as_mut() {
            w.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

impl<R> Drop for Tee<R> {
    fn drop(&mut self) {
        if let Some((_, part, _)) = self.file.take() {
            let _ = std::fs::remove_file(part);
        }
    }
}
