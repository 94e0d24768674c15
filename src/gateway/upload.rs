//! `PUT /nix-cache-info`, `PUT /nar/…` and `PUT /<hash>.narinfo`: what `nix copy --to http://…` sends.
//!
//! A NAR upload is decompressed, validated and chunked while it streams in; the SHA-256 of the bytes
//! received must equal the hash in its name (Nix names uploads by their file hash) before the ingest
//! commits, so a truncated or corrupted upload leaves nothing behind. A narinfo is accepted only when its
//! NAR is present with the same NarHash and NarSize, and every signature by a key we know verifies.

use std::io::{self, BufReader, Read};

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use data_encoding::BASE64;
use sha2::Digest;

use super::error::AppError;
use super::http_path::NarCompression;
use super::stream::{reader_from_body, ChannelReader};
use super::{blocking, Gateway, UploadPolicy};
use crate::chunk::ChunkerConfig;
use crate::nix::hash::NarHash;
use crate::nix::nar::NarErrorKind;
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePathHash;
use crate::store::{self, Manifest, StoreError};

/// Nix's narinfos are a few KiB; anything this large is not one.
const MAX_NARINFO: usize = 1 << 20;

fn authorize(gw: &Gateway, headers: &HeaderMap) -> Result<(), AppError> {
    let token = match &gw.cfg.uploads {
        UploadPolicy::Denied => return Err(AppError::UploadsDisabled),
        UploadPolicy::Open => return Ok(()),
        UploadPolicy::Token(t) => t,
    };
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let presented = if let Some(b) = auth.strip_prefix("Bearer ") {
        Some(b.trim().to_string())
    } else if let Some(b) = auth.strip_prefix("Basic ") {
        BASE64
            .decode(b.trim().as_bytes())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .and_then(|s| s.split_once(':').map(|(_, pass)| pass.to_string()))
    } else {
        None
    };
    match presented {
        Some(p) if p.as_bytes() == token.as_bytes() => Ok(()),
        _ => Err(AppError::Unauthorized),
    }
}

pub(super) fn put_cache_info(gw: &Gateway, headers: &HeaderMap) -> Result<Response, AppError> {
    authorize(gw, headers)?;
    // Our nix-cache-info is fixed by configuration; accept the upload so `nix copy --to` proceeds.
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The raw upload, hashed as it passes; at its end the hash must match the name.
struct Checked {
    inner: ChannelReader,
    sha: sha2::Sha256,
    expected: NarHash,
    /// The hash was compared already (a reader may be asked for more after its end, and must say 0 again).
    finished: bool,
}

impl Checked {
    /// Read whatever the decoder left unread and compare hashes (once).
    fn finish(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let mut buf = [0u8; 8192];
        while self.read(&mut buf)? > 0 {}
        let got = NarHash(self.sha.finalize_reset().into());
        if got != self.expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("upload hash mismatch: named {}, content is {}", self.expected, got),
            ));
        }
        Ok(())
    }
}

impl Read for Checked {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.sha.update(&out[..n]);
        Ok(n)
    }
}

/// The decompressed NAR; when the decoder ends, the raw upload is drained and its hash checked, so a
/// mismatch fails the ingest before it commits.
enum Decoded {
    None(Checked),
    Xz(xz2::read::XzDecoder<Checked>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<Checked>>),
    Bzip2(bzip2::read::MultiBzDecoder<Checked>),
}

impl Decoded {
    fn new(c: NarCompression, raw: Checked) -> io::Result<Self> {
        Ok(match c {
            NarCompression::None => Decoded::None(raw),
            NarCompression::Xz => Decoded::Xz(xz2::read::XzDecoder::new_multi_decoder(raw)),
            NarCompression::Zstd => Decoded::Zstd(zstd::stream::read::Decoder::new(raw)?),
            NarCompression::Bzip2 => Decoded::Bzip2(bzip2::read::MultiBzDecoder::new(raw)),
        })
    }

    fn raw(&mut self) -> &mut Checked {
        match self {
            Decoded::None(r) => r,
            Decoded::Xz(d) => d.get_mut(),
            Decoded::Zstd(d) => d.get_mut().get_mut(),
            Decoded::Bzip2(d) => d.get_mut(),
        }
    }
}

impl Read for Decoded {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = match self {
            Decoded::None(r) => r.read(out),
            Decoded::Xz(d) => d.read(out),
            Decoded::Zstd(d) => d.read(out),
            Decoded::Bzip2(d) => d.read(out),
        }?;
        if n == 0 && !out.is_empty() {
            self.raw().finish()?;
        }
        Ok(n)
    }
}

pub(super) async fn put_nar(
    gw: &Gateway,
    headers: &HeaderMap,
    file_hash: NarHash,
    compression: NarCompression,
    body: Body,
) -> Result<Response, AppError> {
    authorize(gw, headers)?;
    let (reader, pump) = reader_from_body(body);
    let store = gw.store.clone();
    let ingest = tokio::task::spawn_blocking(move || {
        let raw = Checked { inner: reader, sha: sha2::Sha256::new(), expected: file_hash, finished: false };
        let decoded = Decoded::new(compression, raw)
            .map_err(|e| StoreError::Io { context: "starting decompression".into(), source: e })?;
        store::add_nar(&store, BufReader::with_capacity(1 << 20, decoded), ChunkerConfig::default(), None)
    });
    let ((), result) = tokio::join!(pump, ingest);
    match result? {
        Ok(added) => {
            Ok((StatusCode::OK, format!("stored {} ({} bytes)\n", added.nar_hash, added.nar_size)).into_response())
        }
        // The store failing to take the bytes (a full disk, say) is ours to answer for, not the client's.
        Err(StoreError::Nar(e)) if matches!(e.kind(), NarErrorKind::Output(_)) => Err(AppError::internal(e)),
        Err(e @ (StoreError::Nar(_) | StoreError::HashMismatch { .. })) => Err(AppError::BadRequest(e.to_string())),
        Err(e) => Err(AppError::internal(e)),
    }
}

pub(super) async fn put_narinfo(
    gw: &Gateway,
    headers: &HeaderMap,
    hash: StorePathHash,
    body: Body,
) -> Result<Response, AppError> {
    authorize(gw, headers)?;
    let bytes = axum::body::to_bytes(body, MAX_NARINFO).await.map_err(|_| AppError::TooLarge("narinfo"))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| AppError::BadRequest("narinfo is not UTF-8".into()))?;
    let info = NarInfo::parse(text).map_err(|e| AppError::BadRequest(format!("invalid narinfo: {e}")))?;
    if *info.store_path.hash() != hash {
        return Err(AppError::BadRequest(format!("narinfo for {} uploaded as {hash}.narinfo", info.store_path)));
    }
    let fingerprint = info.fingerprint();
    for sig in &info.sigs {
        let name = sig.split_once(':').map(|(n, _)| n).unwrap_or("");
        let own = gw.cfg.key.public();
        let key = std::iter::once(&own).chain(&gw.cfg.trusted_keys).find(|k| k.name() == name);
        if let Some(k) = key {
            if !k.verify(&fingerprint, sig) {
                return Err(AppError::BadRequest(format!("bad signature by {name} on {}", info.store_path)));
            }
        }
    }
    blocking(gw, move |s| {
        let entry = s.nar(&info.nar_hash)?.ok_or_else(|| {
            AppError::BadRequest(format!(
                "NAR {} of {} is not in the cache: upload it first",
                info.nar_hash, info.store_path
            ))
        })?;
        if entry.nar_size != info.nar_size {
            return Err(AppError::BadRequest(format!(
                "NarSize {} does not match the stored NAR's {} bytes",
                info.nar_size, entry.nar_size
            )));
        }
        s.begin_ingest().commit(&[Manifest::Path(Box::new(info))])?;
        Ok(())
    })
    .await?;
    // After the commit: bumps the generation, so a GET that read before the commit cannot cache its answer.
    gw.narinfos.invalidate(&hash);
    Ok(StatusCode::OK.into_response())
}
