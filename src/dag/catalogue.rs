//! The catalogue snapshot (`nixdag snapshot`, docs/IPFS.md "The catalogue"): the store's manifests as
//! dag-cbor nodes, so that one CID names a whole cache and any IPFS client can resolve a store path, a
//! NAR or a source file from it, verifying every node on the way.
//!
//! Three sharded maps hang off one root node: store-path hash part → narinfo fields and NAR root,
//! NarHash → NAR root, file SHA-256 → file root. A map is one node while it fits in [`MAX_NODE`]
//! bytes; a bigger one is split by the next character of its keys (a trie on the key's text), so no
//! node exceeds the block size IPFS implementations accept, and the split points follow from the keys
//! alone: the same manifests give the same CIDs.

use std::collections::BTreeMap;

use ipld_core::ipld::Ipld;

use super::cid::{BlockHash, Cid, DAG_CBOR_CODEC};
use super::BlockSink;
use crate::nix::narinfo::NarInfo;

/// Largest node written: kubo and bitswap take blocks up to 1 MiB (2 MiB hard), and a client reads a
/// node whole before it can follow one link, so a map is split before a node passes this.
pub const MAX_NODE: usize = 1 << 20;

/// The schema's name and version, in the root node's `catalogue` field.
pub const SCHEMA: &str = "nixdag-catalogue/1";

/// A store path as the catalogue lists it.
#[derive(Debug, Clone)]
pub struct PathRow {
    /// The narinfo as stored (its fingerprint fields and signatures; no URL or compression: those are
    /// how one gateway serves it, not what it is).
    pub info: NarInfo,
    /// The NAR's DAG root.
    pub root: Cid,
}

/// A stored NAR.
#[derive(Debug, Clone, Copy)]
pub struct NarRow {
    /// Its SHA-256 (the NarHash).
    pub nar_hash: [u8; 32],
    /// NAR bytes.
    pub size: u64,
    /// Its DAG root.
    pub root: Cid,
}

/// A stored flat file (a source tarball).
#[derive(Debug, Clone)]
pub struct FileRow {
    /// Its flat SHA-256.
    pub sha256: [u8; 32],
    /// File bytes.
    pub size: u64,
    /// The name it was added as.
    pub name: String,
    /// Its DAG root.
    pub root: Cid,
}

/// What a snapshot holds, and the blocks it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotSummary {
    /// Store paths listed.
    pub paths: u64,
    /// NARs listed.
    pub nars: u64,
    /// Files listed.
    pub files: u64,
    /// Catalogue nodes written (the root included).
    pub nodes: u64,
    /// Their bytes.
    pub node_bytes: u64,
}

/// Why a catalogue could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogueError {
    /// One entry alone is larger than a node may be (a narinfo with a huge reference list).
    #[error("catalogue entry {key} is {len} bytes encoded, more than a node may hold ({MAX_NODE})")]
    EntryTooLarge {
        /// The entry's key.
        key: String,
        /// Its encoded size.
        len: usize,
    },
    /// dag-cbor encoding failed (a bug: every value here is encodable).
    #[error("encoding a catalogue node: {0}")]
    Encode(String),
    /// A node is not dag-cbor.
    #[error("catalogue node {cid} is not valid dag-cbor: {reason}")]
    Decode {
        /// The node.
        cid: Cid,
        /// What the decoder said.
        reason: String,
    },
    /// Writing a block failed.
    #[error("storing a catalogue node: {0}")]
    Io(#[from] std::io::Error),
}

fn text(s: &str) -> Ipld {
    Ipld::String(s.to_string())
}

fn int(n: u64) -> Ipld {
    Ipld::Integer(i128::from(n))
}

/// A store path's entry: the narinfo's own field names, so a reader that knows narinfos knows these.
fn path_entry(row: &PathRow) -> Ipld {
    let i = &row.info;
    let mut m = BTreeMap::new();
    m.insert("StorePath".into(), text(&i.store_path.to_string()));
    m.insert("NarHash".into(), text(&i.nar_hash.to_string()));
    m.insert("NarSize".into(), int(i.nar_size));
    m.insert("References".into(), Ipld::List(i.references.iter().map(|r| text(&r.base_name())).collect()));
    if let Some(d) = &i.deriver {
        m.insert("Deriver".into(), text(d));
    }
    if !i.sigs.is_empty() {
        m.insert("Sig".into(), Ipld::List(i.sigs.iter().map(|s| text(s)).collect()));
    }
    if let Some(ca) = &i.ca {
        m.insert("CA".into(), text(ca));
    }
    m.insert("Root".into(), Ipld::Link(row.root));
    Ipld::Map(m)
}

fn nar_entry(row: &NarRow) -> Ipld {
    let mut m = BTreeMap::new();
    m.insert("NarSize".into(), int(row.size));
    m.insert("Root".into(), Ipld::Link(row.root));
    Ipld::Map(m)
}

fn file_entry(row: &FileRow) -> Ipld {
    let mut m = BTreeMap::new();
    m.insert("Size".into(), int(row.size));
    m.insert("Name".into(), text(&row.name));
    m.insert("Root".into(), Ipld::Link(row.root));
    Ipld::Map(m)
}

fn encode(node: &Ipld) -> Result<Vec<u8>, CatalogueError> {
    serde_ipld_dagcbor::to_vec(node).map_err(|e| CatalogueError::Encode(e.to_string()))
}

/// Writes catalogue nodes to a sink, counting them.
struct Writer<S> {
    sink: S,
    limit: usize,
    nodes: u64,
    bytes: u64,
}

impl<S: BlockSink> Writer<S> {
    fn put(&mut self, node: &Ipld) -> Result<Cid, CatalogueError> {
        let bytes = encode(node)?;
        let hash = BlockHash::of(&bytes);
        self.sink.put_block(hash, DAG_CBOR_CODEC, &bytes)?;
        self.nodes += 1;
        self.bytes += bytes.len() as u64;
        Ok(hash.cid(DAG_CBOR_CODEC))
    }

    /// A map node over `entries` (sorted by key, keys unique), split by the key character at `depth`
    /// when one node would exceed the limit: `{"entries": {key: entry}}` or `{"shards": {char: link}}`.
    fn map(&mut self, entries: &[(String, Ipld)], depth: usize) -> Result<Cid, CatalogueError> {
        let leaf = Ipld::Map(BTreeMap::from([(
            "entries".to_string(),
            Ipld::Map(entries.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        )]));
        // Sizes add up: the leaf's length is its entries' lengths plus a few bytes of framing, so it
        // is only encoded when it will fit.
        let estimate: usize = entries.iter().map(|(k, v)| k.len() + 9 + encoded_len(v)).sum::<usize>() + 20;
        if estimate <= self.limit || entries.len() <= 1 {
            if let [(key, v)] = entries {
                let len = encoded_len(v) + key.len() + 20;
                if len > self.limit {
                    return Err(CatalogueError::EntryTooLarge { key: key.clone(), len });
                }
            }
            return self.put(&leaf);
        }
        let mut shards = BTreeMap::new();
        let mut start = 0;
        while start < entries.len() {
            let c = shard_char(&entries[start].0, depth);
            let end = start + entries[start..].iter().take_while(|(k, _)| shard_char(k, depth) == c).count();
            let child = self.map(&entries[start..end], depth + 1)?;
            shards.insert(c, Ipld::Link(child));
            start = end;
        }
        self.put(&Ipld::Map(BTreeMap::from([("shards".to_string(), Ipld::Map(shards))])))
    }
}

/// The shard a key falls in at `depth`: its character there ("" for a key that ends before: keys are
/// all one length per map, so that never happens, but it keeps a malformed key from panicking).
fn shard_char(key: &str, depth: usize) -> String {
    key.get(depth..depth + 1).unwrap_or("").to_string()
}

fn encoded_len(v: &Ipld) -> usize {
    encode(v).map(|b| b.len()).unwrap_or(0)
}

/// Write the catalogue of `paths`, `nars` and `files` to `sink`; returns the root CID.
pub fn write(
    sink: impl BlockSink,
    paths: &[PathRow],
    nars: &[NarRow],
    files: &[FileRow],
) -> Result<(Cid, SnapshotSummary), CatalogueError> {
    write_with_limit(sink, paths, nars, files, MAX_NODE)
}

/// [`write`] with another node limit (small in tests, to exercise the split).
pub fn write_with_limit(
    sink: impl BlockSink,
    paths: &[PathRow],
    nars: &[NarRow],
    files: &[FileRow],
    limit: usize,
) -> Result<(Cid, SnapshotSummary), CatalogueError> {
    let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
    let mut w = Writer { sink, limit, nodes: 0, bytes: 0 };
    let sorted = |mut v: Vec<(String, Ipld)>| {
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        v
    };
    let p = sorted(paths.iter().map(|r| (r.info.store_path.hash().to_string(), path_entry(r))).collect());
    let n = sorted(nars.iter().map(|r| (hex(&r.nar_hash), nar_entry(r))).collect());
    let f = sorted(files.iter().map(|r| (hex(&r.sha256), file_entry(r))).collect());
    let (pc, nc, fc) = (w.map(&p, 0)?, w.map(&n, 0)?, w.map(&f, 0)?);
    let counts = BTreeMap::from([
        ("paths".to_string(), int(p.len() as u64)),
        ("nars".to_string(), int(n.len() as u64)),
        ("files".to_string(), int(f.len() as u64)),
    ]);
    let root = Ipld::Map(BTreeMap::from([
        ("catalogue".to_string(), text(SCHEMA)),
        ("paths".to_string(), Ipld::Link(pc)),
        ("nars".to_string(), Ipld::Link(nc)),
        ("files".to_string(), Ipld::Link(fc)),
        ("counts".to_string(), Ipld::Map(counts)),
    ]));
    let root = w.put(&root)?;
    let summary = SnapshotSummary {
        paths: p.len() as u64,
        nars: n.len() as u64,
        files: f.len() as u64,
        nodes: w.nodes,
        node_bytes: w.bytes,
    };
    Ok((root, summary))
}

/// Every link in a dag-cbor node, in the order they appear in its canonical encoding (map keys
/// length-first): how a CAR walks a catalogue.
pub fn links(cid: &Cid, bytes: &[u8]) -> Result<Vec<Cid>, CatalogueError> {
    let node: Ipld = serde_ipld_dagcbor::from_slice(bytes)
        .map_err(|e| CatalogueError::Decode { cid: *cid, reason: e.to_string() })?;
    let mut out = Vec::new();
    collect_links(&node, &mut out);
    Ok(out)
}

fn collect_links(node: &Ipld, out: &mut Vec<Cid>) {
    match node {
        Ipld::Link(c) => out.push(*c),
        Ipld::List(l) => l.iter().for_each(|n| collect_links(n, out)),
        Ipld::Map(m) => {
            // Canonical dag-cbor order: shorter keys first, then bytewise.
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
            for k in keys {
                collect_links(&m[k], out);
            }
        }
        _ => {}
    }
}

/// Resolve `key` in the sharded map under `map`, reading nodes through `get` (which verifies them):
/// the entry, or `None` when the map has no such key. What an IPFS client does with the schema.
pub fn lookup(
    get: &mut dyn FnMut(&Cid) -> Result<Vec<u8>, CatalogueError>,
    map: &Cid,
    key: &str,
) -> Result<Option<Ipld>, CatalogueError> {
    let mut at = *map;
    for depth in 0..=key.len() {
        let bytes = get(&at)?;
        let node: Ipld = serde_ipld_dagcbor::from_slice(&bytes)
            .map_err(|e| CatalogueError::Decode { cid: at, reason: e.to_string() })?;
        let Ipld::Map(m) = node else { return Err(bad(at, "a map node is not a map")) };
        if let Some(Ipld::Map(entries)) = m.get("entries") {
            return Ok(entries.get(key).cloned());
        }
        match m.get("shards") {
            Some(Ipld::Map(shards)) => match shards.get(&shard_char(key, depth)) {
                Some(Ipld::Link(next)) => at = *next,
                Some(_) => return Err(bad(at, "a shard is not a link")),
                None => return Ok(None),
            },
            _ => return Err(bad(at, "a map node has neither entries nor shards")),
        }
    }
    Err(bad(at, "the map is deeper than its keys are long"))
}

fn bad(cid: Cid, reason: &str) -> CatalogueError {
    CatalogueError::Decode { cid, reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::cid::RAW_CODEC;
    use crate::dag::{BlockSource, MemBlocks};
    use crate::nix::hash::NarHash;

    fn info(i: usize) -> NarInfo {
        let hash: String = (0..32)
            .map(|j| "0123456789abcdfghijklmnpqrsvwxyz".as_bytes()[(i * 7 + j * 13 + i / 32) % 32] as char)
            .collect();
        let text = format!(
            "StorePath: /nix/store/{hash}-pkg-{i}\nNarHash: sha256:{}\nNarSize: {}\nReferences: \nSig: k-1:{}\n",
            crate::nix::hash::nix32::encode(&NarHash([i as u8; 32]).0),
            100 + i,
            "A".repeat(88)
        );
        NarInfo::parse(&text).unwrap()
    }

    fn rows(n: usize) -> Vec<PathRow> {
        (0..n).map(|i| PathRow { info: info(i), root: BlockHash::of(&[i as u8]).cid(RAW_CODEC) }).collect()
    }

    fn get(blocks: &MemBlocks) -> impl FnMut(&Cid) -> Result<Vec<u8>, CatalogueError> + '_ {
        move |c: &Cid| {
            let h = crate::dag::cid::block_hash(c).unwrap();
            Ok(blocks.get_block(&h)?.expect("node present"))
        }
    }

    /// Small catalogue: one node per map, and every path found by its hash part.
    #[test]
    fn small_catalogue_resolves_every_path() {
        let paths = rows(20);
        let mut blocks = MemBlocks::default();
        let (root, sum) = write(&mut blocks, &paths, &[], &[]).unwrap();
        assert_eq!(root.codec(), DAG_CBOR_CODEC);
        assert_eq!((sum.paths, sum.nodes), (20, 4));
        let root_links =
            links(&root, &blocks.get_block(&crate::dag::cid::block_hash(&root).unwrap()).unwrap().unwrap()).unwrap();
        assert_eq!(root_links.len(), 3);
        let map = root_links[2]; // "nars" < "files" < "paths" by length then bytes: nars, files, paths
        for r in &paths {
            let e = lookup(&mut get(&blocks), &map, &r.info.store_path.hash().to_string()).unwrap().unwrap();
            let Ipld::Map(m) = e else { panic!() };
            assert_eq!(m["Root"], Ipld::Link(r.root));
            assert_eq!(m["StorePath"], Ipld::String(r.info.store_path.to_string()));
        }
        assert!(lookup(&mut get(&blocks), &map, &"z".repeat(32)).unwrap().is_none());
    }

    /// Past the limit, maps split by key prefix; every node stays under it, every key still resolves,
    /// and the same rows give the same root.
    #[test]
    fn big_catalogue_is_sharded_under_the_limit() {
        let paths = rows(600);
        let mut blocks = MemBlocks::default();
        let (root, sum) = write_with_limit(&mut blocks, &paths, &[], &[], 8 << 10).unwrap();
        assert!(sum.nodes > 10, "{sum:?}");
        let mut blocks2 = MemBlocks::default();
        assert_eq!(write_with_limit(&mut blocks2, &paths, &[], &[], 8 << 10).unwrap().0, root);
        let root_bytes = blocks.get_block(&crate::dag::cid::block_hash(&root).unwrap()).unwrap().unwrap();
        let map = links(&root, &root_bytes).unwrap()[2];
        // Walk every node: all under the limit.
        let mut todo = vec![map];
        while let Some(c) = todo.pop() {
            let b = blocks.get_block(&crate::dag::cid::block_hash(&c).unwrap()).unwrap().unwrap();
            assert!(b.len() <= 8 << 10, "node of {} bytes", b.len());
            todo.extend(links(&c, &b).unwrap().into_iter().filter(|l| l.codec() == DAG_CBOR_CODEC));
        }
        for r in &paths {
            assert!(lookup(&mut get(&blocks), &map, &r.info.store_path.hash().to_string()).unwrap().is_some());
        }
    }

    #[test]
    fn an_entry_larger_than_a_node_is_an_error() {
        let paths = rows(1);
        let err = write_with_limit(MemBlocks::default(), &paths, &[], &[], 64).unwrap_err();
        assert!(matches!(err, CatalogueError::EntryTooLarge { .. }), "{err}");
    }
}
