//! Flat files (source tarballs) into the store, byte-exact, under every hash Nix may ask for them by.

use std::io::{self, Read};

use sha2::Digest;

use super::tarball::{build_rebuilt, queues_for_repack};
use crate::chunk::ChunkerConfig;
use crate::chunk::Chunker;
use crate::dag::{Cid, DagBuilder};
use crate::nix::hash::{HashAlgo, NixHash};
use crate::recompress;
use crate::store::rebuilt::REBUILD_MAX;
use crate::store::tables::{FileEntry, REPACK_FILE};
use crate::store::{Manifest, Store, StoreError, Tarballs};

/// A flat file that is now in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAdded {
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// Its other hashes.
    pub aliases: Vec<NixHash>,
    /// Its size.
    pub size: u64,
    /// Its DAG root.
    pub root: Cid,
    /// Blocks it added to the store.
    pub new_blocks: u64,
}

/// Store a flat file (a source tarball) byte-exact, keyed by its SHA-256 with SHA-512, SHA-1 and MD5 as
/// aliases. When `expected` is given the file must hash to it, or nothing is stored.
pub fn add_file(
    store: &Store,
    mut r: impl Read,
    name: &str,
    urls: Vec<String>,
    cfg: ChunkerConfig,
    expected: Option<&NixHash>,
) -> Result<FileAdded, StoreError> {
    let mut ingest = store.begin_ingest();
    let mut sha256 = sha2::Sha256::new();
    let mut sha512 = sha2::Sha512::new();
    let mut sha1 = sha1::Sha1::new();
    let mut md5 = md5::Md5::new();
    let mut update = |b: &[u8]| {
        sha256.update(b);
        sha512.update(b);
        sha1.update(b);
        md5.update(b);
    };
    let read_err = |e: io::Error| StoreError::Io { context: format!("reading {name}"), source: e };
    // A compressed tarball small enough to hold is tried as content plus recipe first.
    let mut head = Vec::new();
    if ingest.storage().tarballs != Tarballs::Off {
        (&mut r).take(6).read_to_end(&mut head).map_err(read_err)?;
        if recompress::detect(&head).is_some() {
            (&mut r).take(REBUILD_MAX + 1 - head.len() as u64).read_to_end(&mut head).map_err(read_err)?;
        }
    }
    let whole = recompress::detect(&head).is_some() && head.len() as u64 <= REBUILD_MAX;
    let rebuilt = if whole { build_rebuilt(&mut ingest, &head, 0..head.len(), cfg, false)? } else { None };
    let dag = match rebuilt {
        Some(dag) => {
            update(&head);
            dag
        }
        None => {
            let queue = whole && queues_for_repack(&ingest, &head, head.len());
            ingest.set_as_is(queue);
            let mut builder = DagBuilder::new(&mut ingest);
            let mut chunker = Chunker::new(cfg.with_large_file_threshold(u64::MAX), |c: &[u8]| builder.push_leaf(c));
            update(&head);
            chunker.write(&head).map_err(StoreError::from_io)?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(read_err(e)),
                };
                update(&buf[..n]);
                chunker.write(&buf[..n]).map_err(StoreError::from_io)?;
            }
            chunker.finish().map_err(StoreError::from_io)?;
            let dag = builder.finish().map_err(StoreError::from_io)?.0;
            if queue && ingest.new_blocks().0 > 0 {
                ingest.queue_repack(dag.root, REPACK_FILE);
            }
            dag
        }
    };
    let sha256: [u8; 32] = sha256.finalize().into();
    let aliases = vec![
        NixHash { algo: HashAlgo::Sha512, digest: sha512.finalize().to_vec() },
        NixHash { algo: HashAlgo::Sha1, digest: sha1.finalize().to_vec() },
        NixHash { algo: HashAlgo::Md5, digest: md5.finalize().to_vec() },
    ];
    if let Some(want) = expected {
        let got = if want.algo == HashAlgo::Sha256 {
            NixHash { algo: HashAlgo::Sha256, digest: sha256.to_vec() }
        } else {
            aliases.iter().find(|a| a.algo == want.algo).cloned().unwrap_or_else(|| want.clone())
        };
        if &got != want {
            return Err(StoreError::HashMismatch {
                what: name.to_string(),
                expected: want.to_string(),
                got: got.to_string(),
            });
        }
    }
    let entry = FileEntry { root: dag.root.to_string(), size: dag.size, name: name.to_string(), urls };
    let (new_blocks, _) = ingest.new_blocks();
    ingest.commit(&[Manifest::File { sha256, entry, aliases: aliases.clone() }])?;
    Ok(FileAdded { sha256, aliases, size: dag.size, root: dag.root, new_blocks })
}
