//! `GET|HEAD /ipfs/<cid>`: the IPFS trustless gateway (docs/IPFS.md), so that a client holding only a
//! root CID verifies every byte it is given: one raw block (`format=raw`), or a CAR of the blocks under
//! a root (`format=car`), the whole DAG (`dag-scope=all|entity`), the root alone (`block`) or only the
//! blocks that prove a byte range (`entity-bytes=from:to`). CARs are streamed a block at a time. A
//! catalogue snapshot's root (dag-cbor) with `dag-scope=all` is the whole cache: its nodes and every
//! NAR and file DAG they name.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::error::AppError;
use super::http_path::IpfsTarget;
use super::stream::{pulled, Produce};
use super::Gateway;
use crate::dag::car::{CarScope, CarStream};
use crate::dag::cid::{block_hash, DAG_CBOR_CODEC};
use crate::dag::BlockSource;
use crate::store::Store;

const RAW: &str = "application/vnd.ipld.raw";
const CAR: &str = "application/vnd.ipld.car";

/// What the request asks for, from `format=` and the `car-*` parameters, else `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Raw,
    Car { dups: bool },
}

/// The request's scope before the file size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Block,
    /// `dag-scope=entity`: a file's whole DAG; for a catalogue node (dag-cbor), the node alone.
    Entity,
    All,
    /// `entity-bytes=from:to`: inclusive; `None` for `*`; negative counts from the end.
    Bytes(i64, Option<i64>),
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// `format=`, else the first `Accept` media type naming raw or CAR; `*/*` and the like count as none.
fn format(query: &str, headers: &HeaderMap) -> Result<Format, AppError> {
    let bad = |why: &str| Err(AppError::BadRequest(why.to_string()));
    let mut dups = None;
    let (mut order, mut version) = (None, None);
    let format = match param(query, "format") {
        Some("raw") => Some(Format::Raw),
        Some("car") => Some(Format::Car { dups: false }),
        Some(other) => return bad(&format!("format={other}: only raw and car are served")),
        None => None,
    };
    let format = match format {
        Some(f) => f,
        None => {
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
            let mut found = None;
            for media in accept.split(',') {
                let mut parts = media.split(';').map(str::trim);
                match parts.next() {
                    Some(RAW) => found = Some(Format::Raw),
                    Some(CAR) => {
                        for p in parts {
                            match p.split_once('=') {
                                Some(("version", v)) => version = Some(v.to_string()),
                                Some(("order", v)) => order = Some(v.to_string()),
                                Some(("dups", v)) => dups = Some(v == "y"),
                                _ => {}
                            }
                        }
                        found = Some(Format::Car { dups: false });
                    }
                    _ => continue,
                }
                break;
            }
            match found {
                Some(f) => f,
                None => return bad("ask for ?format=raw or ?format=car, or Accept: application/vnd.ipld.raw or .car"),
            }
        }
    };
    let Format::Car { .. } = format else { return Ok(format) };
    // The query's car-* parameters override Accept's.
    if let Some(v) = param(query, "car-version") {
        version = Some(v.to_string());
    }
    if let Some(v) = param(query, "car-order") {
        order = Some(v.to_string());
    }
    if let Some(v) = param(query, "car-dups") {
        dups = Some(match v {
            "y" => true,
            "n" => false,
            _ => return bad("car-dups is y or n"),
        });
    }
    if version.as_deref().is_some_and(|v| v != "1") {
        return bad("only CAR version 1 is served");
    }
    if order.as_deref().is_some_and(|o| o != "dfs" && o != "unk") {
        return bad("car-order is dfs or unk");
    }
    Ok(Format::Car { dups: dups.unwrap_or(false) })
}

fn scope(query: &str) -> Result<Scope, AppError> {
    let bad = |why: String| AppError::BadRequest(why);
    let dag = match param(query, "dag-scope") {
        None | Some("all") => Scope::All,
        Some("entity") => Scope::Entity,
        Some("block") => Scope::Block,
        Some(other) => return Err(bad(format!("dag-scope={other}: block, entity or all"))),
    };
    let Some(range) = param(query, "entity-bytes") else { return Ok(dag) };
    let (from, to) = range.split_once(':').ok_or_else(|| bad(format!("entity-bytes={range}: from:to")))?;
    let from: i64 = from.parse().map_err(|_| bad(format!("entity-bytes={range}: bad start")))?;
    let to = match to {
        "*" => None,
        t => Some(t.parse::<i64>().map_err(|_| bad(format!("entity-bytes={range}: bad end")))?),
    };
    Ok(Scope::Bytes(from, to))
}

/// `from:to` (inclusive, negative from the end) on a file of `size` bytes, as `from..to`.
fn resolve(from: i64, to: Option<i64>, size: u64) -> Result<(u64, u64), AppError> {
    let at = |v: i64| if v < 0 { size.saturating_sub(v.unsigned_abs()) } else { v as u64 };
    let (from, last) = (at(from), to.map(at).unwrap_or(size.saturating_sub(1)));
    if from >= size {
        return Err(AppError::BadRequest(format!("entity-bytes starts at {from}, past the end ({size} bytes)")));
    }
    if last < from {
        return Err(AppError::BadRequest("entity-bytes ends before it starts".into()));
    }
    Ok((from, last.min(size - 1) + 1))
}

pub(super) async fn get(
    gw: &Gateway,
    target: IpfsTarget,
    query: &str,
    headers: &HeaderMap,
    head: bool,
    client: IpAddr,
) -> Result<Response, AppError> {
    let format = format(query, headers)?;
    let scope = scope(query)?;
    let only_if_cached = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|d| d.trim() == "only-if-cached"));
    let missing = || if only_if_cached { AppError::PreconditionFailed } else { AppError::NotFound };
    let (cid, inline) = match target {
        IpfsTarget::Block(cid) => (cid, None),
        IpfsTarget::Inline(cid, bytes) => (cid, Some(Bytes::from(bytes))),
        IpfsTarget::Elsewhere => return Err(missing()),
    };
    let store = gw.service.store().clone();
    // The root must be here before any status is sent; never asked of anyone else.
    let root_len = match &inline {
        Some(b) => Some(b.len() as u64),
        None => {
            let hash = block_hash(&cid).map_err(|e| AppError::BadRequest(e.to_string()))?;
            let s = store.clone();
            gw.lookup(move |_| s.block_len(&hash).map_err(AppError::internal)).await?
        }
    };
    let Some(root_len) = root_len else { return Err(missing()) };
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=29030400, immutable"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    let value = |s: String| HeaderValue::from_str(&s).map_err(AppError::internal);
    match format {
        Format::Raw => {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(RAW));
            h.insert(header::ETAG, value(format!("\"{cid}.raw\""))?);
            h.insert(header::CONTENT_DISPOSITION, value(format!("attachment; filename=\"{cid}.bin\""))?);
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(root_len));
            if head {
                return Ok((StatusCode::OK, h).into_response());
            }
            let bytes = match inline {
                Some(b) => b,
                None => {
                    let hash = block_hash(&cid).map_err(|e| AppError::BadRequest(e.to_string()))?;
                    let s = store.clone();
                    gw.lookup(move |_| s.get_block_bytes(&hash).map_err(AppError::internal))
                        .await?
                        .ok_or_else(missing)?
                }
            };
            Ok((StatusCode::OK, h, bytes).into_response())
        }
        Format::Car { dups } => {
            let catalogue = cid.codec() == DAG_CBOR_CODEC;
            let car_scope = match scope {
                Scope::Block => CarScope::Block,
                Scope::Entity if catalogue => CarScope::Block,
                Scope::Entity | Scope::All => CarScope::All,
                Scope::Bytes(..) if catalogue => {
                    return Err(AppError::BadRequest("entity-bytes applies to a file; this CID is a catalogue node".into()))
                }
                Scope::Bytes(from, to) => {
                    let size = match &inline {
                        Some(b) => b.len() as u64,
                        None => {
                            let s = store.clone();
                            gw.lookup(move |_| crate::dag::reader::file_size(&s, &cid).map_err(AppError::internal))
                                .await?
                        }
                    };
                    let (from, to) = resolve(from, to, size)?;
                    CarScope::Bytes { from, to }
                }
            };
            let d = if dups { "y" } else { "n" };
            h.insert(header::CONTENT_TYPE, value(format!("{CAR}; version=1; order=dfs; dups={d}"))?);
            let tag = match car_scope {
                CarScope::Block => "block".to_string(),
                CarScope::All => "all".to_string(),
                CarScope::Bytes { from, to } => format!("bytes-{from}-{}", to - 1),
            };
            h.insert(header::ETAG, value(format!("\"{cid}.car.{tag}.dups-{d}\""))?);
            h.insert(header::CONTENT_DISPOSITION, value(format!("attachment; filename=\"{cid}.car\""))?);
            if head {
                return Ok((StatusCode::OK, h).into_response());
            }
            let body = match inline {
                Some(bytes) => {
                    let mut car = crate::dag::car::header(&cid);
                    let cid_bytes = cid.to_bytes();
                    crate::dag::put_varint(&mut car, (cid_bytes.len() + bytes.len()) as u64);
                    car.extend_from_slice(&cid_bytes);
                    car.extend_from_slice(&bytes);
                    axum::body::Body::from(car)
                }
                None => {
                    if !gw.budget.has_room() {
                        return Err(AppError::Busy("too many bytes in flight"));
                    }
                    let stream = CarStream::new(store, cid, car_scope, dups);
                    pulled(Car(stream), gw.budget.clone(), client)
                }
            };
            Ok((StatusCode::OK, h, body).into_response())
        }
    }
}

/// A CAR as a response body; a block that fails to read ends the stream (the status is sent), which
/// the client's own verification catches.
struct Car(CarStream<Arc<Store>>);

impl Produce for Car {
    fn next_batch(&mut self, max: usize, out: &mut Vec<Bytes>) -> io::Result<()> {
        let mut n = 0;
        while n < max {
            match self.0.next_frame().map_err(io::Error::other)? {
                Some(pieces) => {
                    n += pieces.iter().map(Bytes::len).sum::<usize>();
                    out.extend(pieces);
                }
                None => break,
            }
        }
        Ok(())
    }
}
