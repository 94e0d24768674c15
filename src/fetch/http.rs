//! One URL streamed into a channel: bounded in time and size, retried after failures that may pass,
//! resumed with `Range` from the byte where the last try stopped.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{CONTENT_RANGE, RANGE, USER_AGENT};
use reqwest::StatusCode;

use super::{FetchError, FetchOptions, Miss, Progress};
use crate::import::ChannelSender;

#[derive(Clone)]
pub(super) struct Client {
    inner: reqwest::Client,
    opts: FetchOptions,
}

/// How one try ended.
enum Try {
    /// The whole body arrived (or the reader stopped wanting it).
    Done,
    /// Worth another try from where it stopped.
    Again(String),
    /// Not worth another try.
    Stop(Miss),
}

impl Client {
    pub(super) fn new(opts: FetchOptions) -> Result<Client, FetchError> {
        let inner = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            // No proxy from the environment: a hashed mirror on the LAN is asked directly.
            .no_proxy()
            .build()
            .map_err(|e| FetchError::Client(e.to_string()))?;
        Ok(Client { inner, opts })
    }

    /// Send the body of `url` into `tx`, trying again (resuming) up to `retries` times.
    pub(super) async fn stream(&self, url: &str, tx: &ChannelSender, progress: &Progress) -> Result<(), Miss> {
        let mut received = 0u64;
        let mut failures = 0u32;
        loop {
            match self.try_once(url, &mut received, tx, progress).await {
                Try::Done => return Ok(()),
                Try::Stop(miss) => return Err(miss),
                Try::Again(why) => {
                    failures += 1;
                    if failures > self.opts.retries {
                        return Err(Miss::Network(format!("{why} (after {failures} tries, {received} bytes in)")));
                    }
                    tracing::info!("{url}: {why}; trying again from byte {received}");
                    tokio::time::sleep(Duration::from_millis(200 << failures.min(5))).await;
                }
            }
        }
    }

    async fn try_once(&self, url: &str, received: &mut u64, tx: &ChannelSender, progress: &Progress) -> Try {
        let mut req = self.inner.get(url).header(USER_AGENT, concat!("nixdag/", env!("CARGO_PKG_VERSION")));
        if *received > 0 {
            req = req.header(RANGE, format!("bytes={received}-"));
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_builder() => return Try::Stop(Miss::NotThere(format!("bad URL: {e}"))),
            // Nothing listens there: trying again would only make the next source wait.
            Err(e) if e.is_connect() && !e.is_timeout() => return Try::Stop(Miss::Network(describe(&e))),
            Err(e) => return Try::Again(describe(&e)),
        };
        let status = resp.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Try::Again(format!("HTTP {status}"));
        }
        if !status.is_success() {
            return Try::Stop(Miss::NotThere(format!("HTTP {status}")));
        }
        // Resuming: a 206 must start where we stopped; a 200 is the whole body again, of which the part
        // already sent is skipped.
        let mut skip = 0u64;
        if *received > 0 {
            if status == StatusCode::PARTIAL_CONTENT {
                let cr = resp.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok()).unwrap_or("");
                if !cr.starts_with(&format!("bytes {received}-")) {
                    return Try::Stop(Miss::Network(format!("resumed at byte {received}, got Content-Range {cr:?}")));
                }
            } else {
                skip = *received;
            }
        }
        if let Some(len) = resp.content_length() {
            let total = if status == StatusCode::PARTIAL_CONTENT { *received + len } else { len };
            if total > self.opts.max_size {
                return Try::Stop(Miss::TooLarge(self.opts.max_size));
            }
            progress.total.store(total, Ordering::Relaxed);
        }
        let mut body = resp.bytes_stream();
        while let Some(piece) = body.next().await {
            let mut b: Bytes = match piece {
                Ok(b) => b,
                Err(e) => return Try::Again(format!("cut off: {}", describe(&e))),
            };
            if skip > 0 {
                let k = (skip as usize).min(b.len());
                b = b.slice(k..);
                skip -= k as u64;
            }
            if b.is_empty() {
                continue;
            }
            *received += b.len() as u64;
            if *received > self.opts.max_size {
                return Try::Stop(Miss::TooLarge(self.opts.max_size));
            }
            progress.received.store(*received, Ordering::Relaxed);
            if tx.send(Ok::<Bytes, io::Error>(b)).await.is_err() {
                // The ingest stopped reading: it failed, and says why.
                return Try::Done;
            }
        }
        if skip > 0 {
            return Try::Again(format!("the whole body again was shorter than the {received} bytes had"));
        }
        Try::Done
    }
}

/// reqwest's error with its causes, in one line.
fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() { "timed out".to_string() } else { e.to_string() };
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
