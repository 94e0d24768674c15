//! The disk budget (`--max-size`): give up the least recently served roots until the store fits, then
//! collect their blocks with the ordinary GC and compact the packs that freed bytes.
//!
//! Eviction only removes manifests (`nars-0`, `files-0` and the rows that hang off them) in one write
//! transaction; blocks are removed by [`Store::gc`]'s mark and sweep, which marks from every root that is
//! left and spares blocks in-flight ingests protect. So a block a kept root shares is never lost, and a
//! crash at any point leaves a consistent store: before the commit nothing changed, after it the evicted
//! roots are gone and their blocks are garbage the next collection frees.
//!
//! Which roots go is decided twice: a plan from a read transaction (walking every root's DAG to learn
//! which pack records it alone holds, so that just enough is evicted), then again inside the write
//! transaction that removes them, against the index as it is then: a root pinned, uploaded, served or
//! newly referenced by a kept path since the plan stays.

mod order;

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ReadableTable, TableHandle};

pub use self::order::{eviction_order, Node};
use super::error::{Sha256Key, StoreError};
use super::gc::GcReport;
use super::pack::{HEADER_LEN, RECORD_HEADER_LEN};
use super::tables::*;
use super::Store;
use crate::dag::cid::block_hash;
use crate::dag::{walk, BlockHash, Cid, WalkMode};
use crate::nix::hash::NarHash;
use crate::nix::narinfo::NarInfo;

/// Milliseconds since the Unix epoch: the unit of `served-0`.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What to evict for.
#[derive(Debug, Clone, Copy)]
pub struct EvictPolicy {
    /// Bytes the store may take on disk: packs plus index (`dedup-stats`' `stored_bytes`).
    pub max_size: u64,
    /// Evict uploaded roots too (`--evict-uploads`); otherwise they are kept like pinned ones.
    pub evict_uploads: bool,
}

/// What an eviction did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct EvictReport {
    /// The budget.
    pub max_size: u64,
    /// Bytes on disk before.
    pub stored_before: u64,
    /// Bytes on disk after.
    pub stored_after: u64,
    /// NARs evicted.
    pub evicted_nars: u64,
    /// Store paths evicted with them.
    pub evicted_paths: u64,
    /// Flat files evicted.
    pub evicted_files: u64,
    /// Roots kept because a pinned path names them.
    pub kept_pinned: u64,
    /// Roots kept because they were uploaded.
    pub kept_uploaded: u64,
    /// The collections that freed the evicted roots' blocks (summed).
    pub gc: GcReport,
    /// Still over the budget: what is left is kept (pinned, uploaded, referenced by those, being read)
    /// or lies in packs another process appends to.
    pub over_budget: bool,
}

/// Which manifest a root is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RootKey {
    Nar(NarHash),
    File([u8; 32]),
}

/// One root with what eviction needs to know about it.
#[derive(Debug, Clone)]
struct Root {
    key: RootKey,
    cid: Cid,
    size: u64,
    last: u64,
    pinned: bool,
    uploaded: bool,
    /// Store-path hash parts recorded with this NAR.
    paths: Vec<String>,
    /// Roots its store paths reference.
    refs: Vec<usize>,
}

/// The rows eviction reads, from either kind of transaction.
#[derive(Default)]
struct Rows {
    nars: Vec<(Vec<u8>, Vec<u8>)>,
    files: Vec<(Vec<u8>, Vec<u8>)>,
    paths: Vec<(String, String)>,
    served: HashMap<Vec<u8>, u64>,
    pins: HashSet<String>,
    uploaded: HashSet<Vec<u8>>,
}

fn scan<K, V, T, F>(t: &T, name: &'static str, mut f: F) -> Result<(), StoreError>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
    T: ReadableTable<K, V>,
    F: FnMut(redb::AccessGuard<'_, K>, redb::AccessGuard<'_, V>) -> Result<(), StoreError>,
{
    for row in t.iter().map_err(StoreError::table_op("scan", name))? {
        let (k, v) = row.map_err(StoreError::table_op("scan", name))?;
        f(k, v)?;
    }
    Ok(())
}

/// Opens the tables [`Rows`] is read from; a table a read transaction lacks reads as empty.
macro_rules! read_rows {
    ($txn:expr, $optional:expr) => {{
        let txn = $txn;
        let mut rows = Rows::default();
        let open = |name| StoreError::table_op::<redb::TableError>("open", name);
        scan(&txn.open_table(NARS).map_err(open(NARS.name()))?, NARS.name(), |k, v| {
            rows.nars.push((k.value().to_vec(), v.value().to_vec()));
            Ok(())
        })?;
        scan(&txn.open_table(FILES).map_err(open(FILES.name()))?, FILES.name(), |k, v| {
            rows.files.push((k.value().to_vec(), v.value().to_vec()));
            Ok(())
        })?;
        scan(&txn.open_table(PATHS).map_err(open(PATHS.name()))?, PATHS.name(), |k, v| {
            rows.paths.push((k.value().to_string(), v.value().to_string()));
            Ok(())
        })?;
        if let Some(t) = $optional(txn.open_table(SERVED), SERVED.name())? {
            scan(&t, SERVED.name(), |k, v| {
                rows.served.insert(k.value().to_vec(), v.value());
                Ok(())
            })?;
        }
        if let Some(t) = $optional(txn.open_table(PINS), PINS.name())? {
            scan(&t, PINS.name(), |k, _| {
                rows.pins.insert(k.value().to_string());
                Ok(())
            })?;
        }
        if let Some(t) = $optional(txn.open_table(UPLOADED), UPLOADED.name())? {
            scan(&t, UPLOADED.name(), |k, _| {
                rows.uploaded.insert(k.value().to_vec());
                Ok(())
            })?;
        }
        rows
    }};
}

/// A table that may not exist yet (created by its first write): `None` then.
fn optional<T>(r: Result<T, redb::TableError>, name: &'static str) -> Result<Option<T>, StoreError> {
    match r {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(StoreError::table_op("open", name)(e)),
    }
}

/// The roots and the references between them.
struct Snapshot {
    roots: Vec<Root>,
    by_cid: HashMap<Cid, usize>,
}

impl Snapshot {
    fn build(rows: Rows) -> Result<Snapshot, StoreError> {
        let mut roots = Vec::new();
        let mut by_nar = HashMap::new();
        for (k, v) in &rows.nars {
            let hash = NarHash(
                k.as_slice()
                    .try_into()
                    .map_err(|_| StoreError::CorruptIndex { table: "nars-0", reason: "key is not 32 bytes".into() })?,
            );
            let e = NarEntry::decode(v)?;
            by_nar.insert(hash, roots.len());
            roots.push(Root::new(RootKey::Nar(hash), e.root, e.nar_size, &rows));
        }
        for (k, v) in &rows.files {
            let sha: [u8; 32] = k
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::CorruptIndex { table: "files-0", reason: "key is not 32 bytes".into() })?;
            let e = FileEntry::decode(v)?;
            roots.push(Root::new(RootKey::File(sha), e.root_cid()?, e.size, &rows));
        }
        // Store paths: which root each names, then the references between roots.
        let mut infos = Vec::new();
        let mut root_of_path: HashMap<String, usize> = HashMap::new();
        for (k, v) in &rows.paths {
            let info = NarInfo::parse(v)
                .map_err(|e| StoreError::CorruptIndex { table: "paths-0", reason: format!("{k}: {e}") })?;
            // A path whose NAR is gone names nothing (a forgotten NAR's paths go with it).
            let Some(&i) = by_nar.get(&info.nar_hash) else { continue };
            roots[i].paths.push(k.clone());
            roots[i].pinned |= rows.pins.contains(k);
            root_of_path.insert(k.clone(), i);
            infos.push((i, info));
        }
        for (i, info) in infos {
            for r in &info.references {
                if let Some(&t) = root_of_path.get(&r.hash().to_string()) {
                    roots[i].refs.push(t);
                }
            }
        }
        let by_cid = roots.iter().enumerate().map(|(i, r)| (r.cid, i)).collect();
        Ok(Snapshot { roots, by_cid })
    }

    /// The policy's view: which roots are kept outright, and the references.
    fn nodes(&self, policy: &EvictPolicy, busy: &dyn Fn(&Cid) -> bool) -> Vec<Node> {
        self.roots
            .iter()
            .map(|r| Node {
                last: r.last,
                keep: r.pinned || (r.uploaded && !policy.evict_uploads) || busy(&r.cid),
                refs: r.refs.clone(),
            })
            .collect()
    }
}

impl Root {
    fn new(key: RootKey, cid: Cid, size: u64, rows: &Rows) -> Root {
        let k = cid.to_bytes();
        Root {
            key,
            cid,
            size,
            // Never stamped (stored by an older build): the oldest.
            last: rows.served.get(&k).copied().unwrap_or(0),
            pinned: false,
            uploaded: rows.uploaded.contains(&k),
            paths: Vec::new(),
            refs: Vec::new(),
        }
    }
}

/// A pack record: (pack, offset).
type Record = (u32, u64);

impl Store {
    /// Bytes the store takes on disk: pack files plus the index (what `--max-size` bounds).
    pub fn stored_bytes(&self) -> Result<u64, StoreError> {
        let packs: u64 = self.packs().list()?.iter().map(|(_, len)| len).sum();
        let index = self.dir().join("index.redb");
        let index = std::fs::metadata(&index).map(|m| m.len()).unwrap_or(0);
        Ok(packs + index)
    }

    /// Record that these roots were served at these times (ms since the epoch), in one transaction; a
    /// later time already recorded stays. Callers batch: one write per request would cost more than
    /// the request.
    pub fn record_served(&self, served: &[(Cid, u64)]) -> Result<(), StoreError> {
        if served.is_empty() {
            return Ok(());
        }
        let txn = self.db().begin_write().map_err(StoreError::txn("begin write"))?;
        {
            let mut t = txn.open_table(SERVED).map_err(StoreError::table_op("open", SERVED.name()))?;
            for (root, at) in served {
                let key = root.to_bytes();
                let old = t.get(key.as_slice()).map_err(StoreError::row("read", SERVED.name(), root))?.map(|v| v.value());
                // A root evicted since it was served gets a row back; gc prunes rows no root names.
                if old.is_none_or(|o| o < *at) {
                    t.insert(key.as_slice(), *at).map_err(StoreError::row("write", SERVED.name(), root))?;
                }
            }
        }
        txn.commit().map_err(StoreError::txn("commit"))
    }

    /// Pin store paths (by hash part): they and their closures are never evicted. Every path must be in
    /// the store; nothing is pinned otherwise.
    pub fn pin(&self, hash_parts: &[String]) -> Result<(), StoreError> {
        let txn = self.db().begin_write().map_err(StoreError::txn("begin write"))?;
        {
            let paths = txn.open_table(PATHS).map_err(StoreError::table_op("open", PATHS.name()))?;
            let mut pins = txn.open_table(PINS).map_err(StoreError::table_op("open", PINS.name()))?;
            for h in hash_parts {
                if paths.get(h.as_str()).map_err(StoreError::row("read", PATHS.name(), h))?.is_none() {
                    return Err(StoreError::NoSuchPath(h.clone()));
                }
                pins.insert(h.as_str(), 0).map_err(StoreError::row("write", PINS.name(), h))?;
            }
        }
        txn.commit().map_err(StoreError::txn("commit"))
    }

    /// Unpin store paths (by hash part); returns those that were pinned.
    pub fn unpin(&self, hash_parts: &[String]) -> Result<Vec<String>, StoreError> {
        let txn = self.db().begin_write().map_err(StoreError::txn("begin write"))?;
        let mut removed = Vec::new();
        {
            let mut pins = txn.open_table(PINS).map_err(StoreError::table_op("open", PINS.name()))?;
            for h in hash_parts {
                if pins.remove(h.as_str()).map_err(StoreError::row("remove", PINS.name(), h))?.is_some() {
                    removed.push(h.clone());
                }
            }
        }
        txn.commit().map_err(StoreError::txn("commit"))?;
        Ok(removed)
    }

    /// The pinned store paths (hash parts).
    pub fn pins(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db().begin_read().map_err(StoreError::txn("begin read"))?;
        let Some(t) = optional(txn.open_table(PINS), PINS.name())? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        scan(&t, PINS.name(), |k, _| {
            out.push(k.value().to_string());
            Ok(())
        })?;
        Ok(out)
    }

    /// Evict least recently served roots until the store takes at most `policy.max_size` bytes on disk,
    /// then free their blocks (mark and sweep) and compact the packs with the most dead bytes until it
    /// fits. Roots `busy` names (being read) are kept, as are pinned and uploaded ones and everything
    /// they reference. Safe beside ingests and readers in this and other processes (see the module doc).
    pub fn evict(&self, policy: &EvictPolicy, busy: &dyn Fn(&Cid) -> bool) -> Result<EvictReport, StoreError> {
        let mut report = EvictReport { max_size: policy.max_size, ..EvictReport::default() };
        report.stored_before = self.stored_bytes()?;
        let mut stored = report.stored_before;
        // A few rounds: an estimate that came out short (frames shared with kept roots, index pages)
        // is made up by the next; a round that freed nothing ends it (what is left is kept, or lies in
        // packs another process holds).
        for round in 0..4 {
            if stored <= policy.max_size {
                break;
            }
            if round == 0 {
                // Garbage first: what earlier forgets and evictions left may be enough.
                self.collect(&mut report.gc, policy.max_size)?;
                stored = self.stored_bytes()?;
                if stored <= policy.max_size {
                    break;
                }
            }
            let started = now_ms();
            let victims = self.plan(policy, busy, stored - policy.max_size, &mut report)?;
            if victims.is_empty() {
                break;
            }
            self.remove_roots(&victims, started, policy, busy, &mut report)?;
            self.collect(&mut report.gc, policy.max_size)?;
            let now = self.stored_bytes()?;
            if now >= stored {
                stored = now;
                break;
            }
            stored = now;
        }
        report.stored_after = stored;
        report.over_budget = stored > policy.max_size;
        Ok(report)
    }

    /// Mark and sweep, then compact packs, the deadest first, until the store fits `max_size`.
    fn collect(&self, report: &mut GcReport, max_size: u64) -> Result<(), StoreError> {
        let swept = self.without_other_ingests(|| self.mark_and_sweep())?;
        report.roots = swept.roots;
        report.live_blocks = swept.live_blocks;
        report.removed_blocks += swept.removed_blocks;
        report.removed_bytes += swept.removed_bytes;
        let live = self.live_bytes_per_pack()?;
        let mut packs: Vec<(u32, u64)> = self
            .committed_packs()?
            .into_iter()
            .map(|(id, len)| (id, len.saturating_sub(HEADER_LEN).saturating_sub(live.get(&id).copied().unwrap_or(0))))
            .filter(|(_, dead)| *dead > 0)
            .collect();
        packs.sort_by_key(|(id, dead)| (std::cmp::Reverse(*dead), *id));
        for (id, _) in packs {
            if self.stored_bytes()? <= max_size {
                break;
            }
            self.compact_pack(id, report)?;
        }
        self.drop_empty_active_pack()
    }

    /// The roots to evict, in order, so that the pack bytes only they hold add up to `excess` (less the
    /// bytes already dead in packs, which compaction frees anyway).
    fn plan(
        &self,
        policy: &EvictPolicy,
        busy: &dyn Fn(&Cid) -> bool,
        excess: u64,
        report: &mut EvictReport,
    ) -> Result<Vec<(RootKey, Cid)>, StoreError> {
        let snap = {
            let txn = self.db().begin_read().map_err(StoreError::txn("begin read"))?;
            Snapshot::build(read_rows!(&txn, optional))?
        };
        report.kept_pinned = snap.roots.iter().filter(|r| r.pinned).count() as u64;
        report.kept_uploaded = snap.roots.iter().filter(|r| r.uploaded && !r.pinned && !policy.evict_uploads).count() as u64;
        let order = eviction_order(&snap.nodes(policy, busy));
        if order.is_empty() {
            return Ok(Vec::new());
        }
        // Which pack records each root needs, and how many roots need each.
        let records = self.records_per_root(&snap)?;
        let mut holders: HashMap<Record, u32> = HashMap::new();
        for recs in &records {
            for (r, _) in recs {
                *holders.entry(*r).or_insert(0) += 1;
            }
        }
        let mut freed = 0u64;
        let mut out = Vec::new();
        for i in order {
            if freed >= excess {
                break;
            }
            for (r, bytes) in &records[i] {
                let n = holders.get_mut(r).expect("counted above");
                *n -= 1;
                if *n == 0 {
                    freed += bytes;
                }
            }
            out.push((snap.roots[i].key, snap.roots[i].cid));
        }
        Ok(out)
    }

    /// For each root of `snap`, the pack records its DAG needs (blocks, and the blocks their forms are
    /// read through) with their sizes on disk. A root whose DAG cannot be walked needs none (it frees
    /// nothing we can count; `verify` reports it).
    fn records_per_root(&self, snap: &Snapshot) -> Result<Vec<Vec<(Record, u64)>>, StoreError> {
        let txn = self.db().begin_read().map_err(StoreError::txn("begin read"))?;
        let blocks = txn.open_table(BLOCKS).map_err(StoreError::table_op("open", BLOCKS.name()))?;
        let loc = |h: &BlockHash| -> Result<Option<BlockLoc>, StoreError> {
            blocks.get(h.0.as_slice()).map_err(StoreError::row("read", BLOCKS.name(), h))?.map(|v| BlockLoc::decode(v.value())).transpose()
        };
        let mut out = Vec::with_capacity(snap.roots.len());
        for root in &snap.roots {
            let mut seen = crate::dag::reader::Seen::new();
            let mut hashes = Vec::new();
            let walked = walk(self, &root.cid, Some(root.size), &mut seen, WalkMode::NodesOnly, &mut |cid, _| {
                if let Ok(h) = block_hash(cid) {
                    hashes.push(h);
                }
                Ok(())
            });
            if let Err(e) = walked {
                tracing::warn!("eviction: root {} cannot be walked: {e}", root.cid);
                out.push(Vec::new());
                continue;
            }
            let mut done: HashSet<BlockHash> = HashSet::new();
            let mut recs: HashMap<Record, u64> = HashMap::new();
            while let Some(h) = hashes.pop() {
                if !done.insert(h) {
                    continue;
                }
                let Some(l) = loc(&h)? else { continue };
                if !matches!(l.form, Form::Rebuilt { .. }) {
                    recs.insert((l.pack, l.offset), RECORD_HEADER_LEN + u64::from(l.stored_len));
                }
                hashes.extend(l.form.base());
            }
            out.push(recs.into_iter().collect());
        }
        Ok(out)
    }

    /// Remove the planned roots' manifests in one transaction, judged again against the index as it is
    /// now: a root since pinned, uploaded, served or being read stays, and so does every root a kept
    /// store path references (until nothing changes).
    fn remove_roots(
        &self,
        planned: &[(RootKey, Cid)],
        started: u64,
        policy: &EvictPolicy,
        busy: &dyn Fn(&Cid) -> bool,
        report: &mut EvictReport,
    ) -> Result<(), StoreError> {
        let txn = self.db().begin_write().map_err(StoreError::txn("begin write"))?;
        {
            let snap = Snapshot::build(read_rows!(&txn, optional))?;
            let nodes = snap.nodes(policy, busy);
            let mut doomed: HashSet<usize> = planned
                .iter()
                .filter_map(|(key, cid)| snap.by_cid.get(cid).copied().filter(|&i| snap.roots[i].key == *key))
                .filter(|&i| !nodes[i].keep && snap.roots[i].last <= started)
                .collect();
            loop {
                let spared: Vec<usize> = (0..nodes.len())
                    .filter(|i| !doomed.contains(i))
                    .flat_map(|i| nodes[i].refs.iter().copied())
                    .filter(|r| doomed.contains(r))
                    .collect();
                if spared.is_empty() {
                    break;
                }
                for r in spared {
                    doomed.remove(&r);
                }
            }
            let open = |name| StoreError::table_op::<redb::TableError>("open", name);
            let mut nars = txn.open_table(NARS).map_err(open(NARS.name()))?;
            let mut paths = txn.open_table(PATHS).map_err(open(PATHS.name()))?;
            let mut foreign = txn.open_table(FOREIGN).map_err(open(FOREIGN.name()))?;
            let mut files = txn.open_table(FILES).map_err(open(FILES.name()))?;
            let mut served = txn.open_table(SERVED).map_err(open(SERVED.name()))?;
            let mut uploaded = txn.open_table(UPLOADED).map_err(open(UPLOADED.name()))?;
            let mut gone_files: HashSet<[u8; 32]> = HashSet::new();
            // In the plan's order (referrers before what they reference), so the log reads in that order.
            let ordered: Vec<usize> = planned
                .iter()
                .filter_map(|(_, cid)| snap.by_cid.get(cid).copied())
                .filter(|i| doomed.contains(i))
                .collect();
            for &i in &ordered {
                let root = &snap.roots[i];
                match root.key {
                    RootKey::Nar(h) => {
                        nars.remove(h.0.as_slice()).map_err(StoreError::row("remove", NARS.name(), h))?;
                        for p in &root.paths {
                            paths.remove(p.as_str()).map_err(StoreError::row("remove", PATHS.name(), p))?;
                            foreign.remove(p.as_str()).map_err(StoreError::row("remove", FOREIGN.name(), p))?;
                            report.evicted_paths += 1;
                        }
                        report.evicted_nars += 1;
                    }
                    RootKey::File(sha) => {
                        files.remove(sha.as_slice()).map_err(StoreError::row("remove", FILES.name(), Sha256Key(&sha)))?;
                        gone_files.insert(sha);
                        report.evicted_files += 1;
                    }
                }
                let key = root.cid.to_bytes();
                served.remove(key.as_slice()).map_err(StoreError::row("remove", SERVED.name(), root.cid))?;
                uploaded.remove(key.as_slice()).map_err(StoreError::row("remove", UPLOADED.name(), root.cid))?;
                let what = match root.key {
                    RootKey::Nar(h) => format!("NAR {h}, paths {}", root.paths.join(" ")),
                    RootKey::File(sha) => format!("file sha256:{}", crate::nix::hash::nix32::encode(&sha)),
                };
                tracing::info!("evicting {} ({} bytes; {what})", root.cid, root.size);
            }
            if !gone_files.is_empty() {
                let mut aliases = txn.open_table(FILE_ALIASES).map_err(open(FILE_ALIASES.name()))?;
                aliases
                    .retain(|_, v| <[u8; 32]>::try_from(v).map_or(true, |s| !gone_files.contains(&s)))
                    .map_err(StoreError::table_op("remove from", FILE_ALIASES.name()))?;
            }
        }
        txn.commit().map_err(StoreError::txn("commit"))
    }
}
