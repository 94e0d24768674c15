//! The block engine: `index.redb` (manifests and block index, typed table access in `tables.rs`) plus
//! append-only `packs/`, the stored forms a block may take (frame, delta, patched, rebuilt), and the one
//! transaction type that makes anything visible ([`Ingest`], `txn.rs`), which ingests, repacks and
//! compaction all go through. GC, verify and stats read and prune what it wrote. The pipelines that
//! feed it (NARs, files, tarball recipes, repack) live above it in `crate::import`; nothing here calls
//! them.
//!
//! Durability order, kept in the transaction type: append block records → fsync the pack → commit one
//! redb transaction holding the new block locations *and* the manifests that use them. A crash before
//! the commit leaves only an unindexed pack tail, which [`Store::open`] cuts off; a crash after it leaves
//! everything. So no manifest ever names a block that is not durably stored.
//!
//! Many processes may open one store at once (`docs/FORMAT.md`, "Many processes"): redb's multi-writer
//! mode, a shared `flock` on `STORE/lock`, a lock per pack for the process appending to it, and
//! `STORE/gc.lock` that ingests hold shared and a GC sweep exclusive. Inside a process, an ingest
//! *protects* every existing block it decides to reuse before it looks it up, and GC sweeps only
//! unprotected blocks while holding the protection registry, so reuse and deletion cannot cross.

pub(crate) mod chain;
mod compress;
mod error;
mod evict;
#[cfg(test)]
mod backend_tests;
#[cfg(test)]
mod form_tests;
mod gc;
mod provenance;
pub mod pack;
pub(crate) mod patch;
pub(crate) mod proven;
mod read;
pub(crate) mod rebuilt;
mod similar;
mod snapshot;
mod stats;
pub mod tables;
mod txn;
mod verify;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fs2::FileExt;
use redb::{Database, ReadableDatabase, ReadableTable, TableHandle};

#[cfg_attr(not(feature = "internals"), allow(unused_imports))] // for fuzz targets and benches
pub use self::compress::{StorageConfig, StorageConfigError, Tarballs};
pub(crate) use self::compress::{delta_compress, delta_decompress};
use self::error::{IoContext, Sha256Key};
pub use self::error::StoreError;
pub use self::evict::EvictPolicy;
pub(crate) use self::evict::now_ms;
pub use self::gc::GcReport;
use self::pack::Packs;
#[allow(unused_imports)] // public API: `take_snapshot`'s error and `catalogue_rows`' value
pub use self::snapshot::{CatalogueRows, SnapshotError};
pub use self::stats::{Census, CensusRoot, StoreStats};
use self::tables::*;
pub use self::tables::{BlockLoc, FileEntry, NarEntry};
pub use self::txn::{Ingest, Manifest};
pub use self::verify::VerifyReport;
use crate::dag::cid::cid_from_bytes;
use crate::dag::{BlockHash, BlockSource, Cid};
use crate::nix::hash::{HashAlgo, NarHash, NixHash};
use crate::nix::narinfo::NarInfo;

/// Blocks that in-flight ingests rely on, with a count per ingest holding them.
#[derive(Default)]
pub(crate) struct Protected(Mutex<HashMap<BlockHash, u32>>);

impl Protected {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BlockHash, u32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Keeps `gc`'s sweep and other processes' ingests apart. Inside one process, [`Protected`] does: an
/// ingest protects every stored block it reuses, and the sweep spares protected blocks. That registry
/// lives in one process's memory, so across processes `STORE/gc.lock` does the same coarsely: a process
/// holds it shared while any of its ingests is open, and a sweep holds it exclusively.
#[derive(Default)]
pub(crate) struct GcGate(Mutex<(Option<File>, usize)>);

impl GcGate {
    /// An ingest begins: the first one of this process waits for another process's sweep to end.
    fn enter(&self, dir: &Path) -> Result<(), StoreError> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.1 == 0 {
            let path = dir.join("gc.lock");
            let f = match g.0.take() {
                Some(f) => f,
                None => open_lock_file(&path)?,
            };
            f.lock_shared().context(|| format!("locking {}", path.display()))?;
            g.0 = Some(f);
        }
        g.1 += 1;
        Ok(())
    }

    /// An ingest ended.
    fn leave(&self) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.1 = g.1.saturating_sub(1);
        if g.1 == 0 {
            if let Some(f) = &g.0 {
                let _ = FileExt::unlock(f);
            }
        }
    }

    /// Exclude every other process's ingests (and wait for those under way) while `f` runs.
    fn exclusive<T>(&self, dir: &Path, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let path = dir.join("gc.lock");
        let lock = open_lock_file(&path)?;
        if lock.try_lock_exclusive().is_err() {
            eprintln!("nixdag: gc waits for ingests under way in other processes to commit");
            lock.lock_exclusive().context(|| format!("locking {}", path.display()))?;
        }
        f()
    }
}

/// The index, open for writing, or only for reading (see [`Store::open_read_only`]).
pub(crate) enum Index {
    ReadWrite(Database),
    ReadOnly(redb::ReadOnlyDatabase),
}

impl Index {
    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction, redb::TransactionError> {
        match self {
            Index::ReadWrite(d) => d.begin_read(),
            Index::ReadOnly(d) => d.begin_read(),
        }
    }

    pub(crate) fn begin_write(&self) -> Result<redb::WriteTransaction, redb::TransactionError> {
        match self {
            Index::ReadWrite(d) => d.begin_write(),
            Index::ReadOnly(_) => Err(redb::TransactionError::Storage(redb::StorageError::Io(io::Error::other(
                "the store was opened read-only",
            )))),
        }
    }
}

/// An open store.
pub struct Store {
    dir: PathBuf,
    db: Index,
    packs: Packs,
    protected: Protected,
    /// How new blocks are stored.
    storage: Mutex<StorageConfig>,
    frames: read::FrameCache,
    outputs: rebuilt::OutputCache,
    proven: proven::Proven,
    gc_gate: GcGate,
    _lock: File,
}

impl Store {
    /// The store directory used when none is given: `$XDG_DATA_HOME/nixdag`, else
    /// `~/.local/share/nixdag`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return Some(PathBuf::from(x).join("nixdag"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/nixdag"))
    }

    /// Open (creating if needed) the store in `dir` for reading and writing. Other processes may have it
    /// open at the same time, reading and writing (see [`Store::open_with`]). Cuts uncommitted tails off
    /// the packs no live process holds, and removes packs no commit ever referenced.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, true)
    }

    /// [`Store::open`], failing at once with [`StoreError::Busy`] instead of waiting when another process
    /// holds the store exclusively (`wait = false`, the CLI's `--no-wait`).
    ///
    /// Many processes share one store: each holds `STORE/lock` shared for as long as it has the store
    /// open, and the index is opened in redb's multi-writer mode (one write transaction at a time, across
    /// processes; readers follow commits). Each process appends to packs it has locked, so appends never
    /// interleave (see `pack.rs`). The lock is taken exclusively only for what needs the store alone:
    /// compacting the index file.
    pub fn open_with(dir: &Path, wait: bool) -> Result<Store, StoreError> {
        fs::create_dir_all(dir.join("packs")).context(|| format!("creating store {}", dir.display()))?;
        Store::open_read_write(dir, wait, Box::new(pack::FilePacks::new(dir.join("packs"))))
    }

    /// A store whose index lives in `dir` and whose packs live in `packs` (another [`pack::PackBackend`]
    /// than the `packs/` directory: memory in tests, object storage later).
    pub fn open_with_packs(dir: &Path, packs: Box<dyn pack::PackBackend>) -> Result<Store, StoreError> {
        Store::open_read_write(dir, true, packs)
    }

    fn open_read_write(dir: &Path, wait: bool, packs: Box<dyn pack::PackBackend>) -> Result<Store, StoreError> {
        fs::create_dir_all(dir).context(|| format!("creating store {}", dir.display()))?;
        let lock = open_lock_file(&dir.join("lock"))?;
        lock_shared(&lock, dir, wait)?;
        let db = redb::Builder::new()
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .create(dir.join("index.redb"))
            .map_err(StoreError::txn("open"))?;
        let store = Store::with_index(dir, Index::ReadWrite(db), lock, packs);
        store.init_tables()?;
        store.recover_packs()?;
        Ok(store)
    }

    /// Open an existing store only to read it (`cat`, `restore`, `export-car`, `verify`, `dedup-stats`): nothing is
    /// written, on open or on close, and other readers may hold it too; a writer waits for them, they wait
    /// for a writer. Opening for writing costs a header write and several fsyncs of the index (10 ms of a
    /// 16 ms `cat --range`). Falls back to [`open`](Self::open) when the store must be written first: it
    /// does not exist yet, was not closed cleanly, or has an older format to upgrade.
    ///
    /// A directory without `index.redb` is [`StoreError::NotAStore`]: a reader never creates a store. On a
    /// store the process may not write (a read-only mount, another user's files), a clean index is read
    /// as it is; only a store that needs writing first fails.
    pub fn open_read_only(dir: &Path) -> Result<Store, StoreError> {
        Store::open_read_only_with(dir, true)
    }

    /// [`Store::open_read_only`], failing at once with [`StoreError::Busy`] instead of waiting (`wait =
    /// false`).
    pub fn open_read_only_with(dir: &Path, wait: bool) -> Result<Store, StoreError> {
        if !dir.join("index.redb").is_file() {
            return Err(StoreError::NotAStore { path: dir.to_path_buf() });
        }
        let lock_path = dir.join("lock");
        let lock = match OpenOptions::new().read(true).open(&lock_path) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Store::open_with(dir, wait),
            Err(e) => return Err(StoreError::Io { context: format!("opening {}", lock_path.display()), source: e }),
        };
        lock_shared(&lock, dir, wait)?;
        let db = match redb::Builder::new()
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .open_read_only(dir.join("index.redb"))
        {
            Ok(db) => db,
            Err(_) => {
                drop(lock);
                return Store::open_with(dir, wait);
            }
        };
        let store = Store::with_index(dir, Index::ReadOnly(db), lock, Box::new(pack::FilePacks::new(dir.join("packs"))));
        match store.tables_ready() {
            Ok(true) => Ok(store),
            Ok(false) => {
                drop(store);
                Store::open_with(dir, wait)
            }
            Err(e) => Err(e),
        }
    }

    fn with_index(dir: &Path, db: Index, lock: File, packs: Box<dyn pack::PackBackend>) -> Store {
        Store {
            dir: dir.to_path_buf(),
            db,
            packs: Packs::new(packs),
            protected: Protected::default(),
            storage: Mutex::new(StorageConfig::default()),
            frames: read::FrameCache::default(),
            outputs: rebuilt::OutputCache::default(),
            proven: proven::Proven::default(),
            gc_gate: GcGate::default(),
            _lock: lock,
        }
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Create missing tables and record the format version. A store that has them all is only read, so
    /// opening never changes the index file.
    fn init_tables(&self) -> Result<(), StoreError> {
        if self.tables_ready()? {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(StoreError::txn("begin write"))?;
        {
            let mut meta = txn.open_table(META).map_err(StoreError::table_op("open", META.name()))?;
            let version = meta.get("format").map_err(StoreError::row("read", META.name(), "format"))?.map(|v| v.value().to_vec());
            match version {
                None => {
                    meta.insert("format", FORMAT_VERSION.to_le_bytes().as_slice())
                        .map_err(StoreError::row("write", META.name(), "format"))?;
                }
                Some(v) => {
                    let got = <[u8; 4]>::try_from(v.as_slice()).map(u32::from_le_bytes).unwrap_or(u32::MAX);
                    if !READABLE_VERSIONS.contains(&got) {
                        return Err(StoreError::Version { path: self.dir.clone(), expected: FORMAT_VERSION, got });
                    }
                    // Each older format is the newer one without its new tables and forms: adding the
                    // tables is the whole upgrade, and after it an older build refuses the store.
                    meta.insert("format", FORMAT_VERSION.to_le_bytes().as_slice())
                        .map_err(StoreError::row("write", META.name(), "format"))?;
                }
            }
            let open = |name| StoreError::table_op::<redb::TableError>("open", name);
            txn.open_table(BLOCKS).map_err(open(BLOCKS.name()))?;
            txn.open_table(PACKS).map_err(open(PACKS.name()))?;
            txn.open_table(NARS).map_err(open(NARS.name()))?;
            txn.open_table(PATHS).map_err(open(PATHS.name()))?;
            txn.open_table(FILES).map_err(open(FILES.name()))?;
            txn.open_table(FILE_ALIASES).map_err(open(FILE_ALIASES.name()))?;
            txn.open_table(SIMILAR).map_err(open(SIMILAR.name()))?;
        }
        txn.commit().map_err(StoreError::txn("commit"))
    }

    fn tables_ready(&self) -> Result<bool, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::txn("begin read"))?;
        let meta = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(StoreError::table_op("open", META.name())(e)),
        };
        let version = meta.get("format").map_err(StoreError::row("read", META.name(), "format"))?.map(|v| v.value().to_vec());
        let got = match version {
            None => return Ok(false),
            Some(v) => <[u8; 4]>::try_from(v.as_slice()).map(u32::from_le_bytes).unwrap_or(u32::MAX),
        };
        if !READABLE_VERSIONS.contains(&got) {
            return Err(StoreError::Version { path: self.dir.clone(), expected: FORMAT_VERSION, got });
        }
        if got != FORMAT_VERSION {
            return Ok(false);
        }
        let exists = |name, r: Result<(), redb::TableError>| match r {
            Ok(()) => Ok(true),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
            Err(e) => Err(StoreError::table_op("open", name)(e)),
        };
        Ok(exists(BLOCKS.name(), txn.open_table(BLOCKS).map(drop))?
            && exists(PACKS.name(), txn.open_table(PACKS).map(drop))?
            && exists(NARS.name(), txn.open_table(NARS).map(drop))?
            && exists(PATHS.name(), txn.open_table(PATHS).map(drop))?
            && exists(FILES.name(), txn.open_table(FILES).map(drop))?
            && exists(FILE_ALIASES.name(), txn.open_table(FILE_ALIASES).map(drop))?
            && exists(SIMILAR.name(), txn.open_table(SIMILAR).map(drop))?)
    }

    /// Make the packs match the last commit: cut tails nobody committed, delete packs nobody committed.
    /// Packs another live process holds (it appends to them, or has uncommitted records there) are left
    /// alone; so are its half-made packs (`*.tmp`, locked while they are made).
    fn recover_packs(&self) -> Result<(), StoreError> {
        let committed = self.committed_packs()?;
        let backend = self.packs.backend();
        for (id, len) in self.packs.list()? {
            let stale = match committed.get(&id) {
                None => true,
                Some(&c) => len > c,
            };
            if !stale {
                continue;
            }
            let Some(mut f) = self.packs.try_lock(id)? else { continue };
            match committed.get(&id) {
                None => {
                    drop(f);
                    backend.remove(id)?;
                }
                Some(&c) => f.set_len(c).context(|| format!("truncating {}", backend.name(id)))?,
            }
        }
        backend.remove_abandoned()?;
        Ok(())
    }

    pub(crate) fn committed_packs(&self) -> Result<HashMap<u32, u64>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::txn("begin read"))?;
        let t = txn.open_table(PACKS).map_err(StoreError::table_op("open", PACKS.name()))?;
        let mut out = HashMap::new();
        for row in t.iter().map_err(StoreError::table_op("scan", PACKS.name()))? {
            let (k, v) = row.map_err(StoreError::table_op("scan", PACKS.name()))?;
            out.insert(k.value(), v.value());
        }
        Ok(out)
    }

    /// A new, empty pack numbered after every pack committed, on disk or ever compacted away (so no id
    /// is reused: another process may still cache a read handle or frames under an old one).
    pub(crate) fn new_pack(&self) -> Result<pack::ActivePack, StoreError> {
        let committed = self.committed_packs()?;
        let on_disk = self.packs.list()?;
        let hwm = self.pack_high_water()?;
        let next = committed.keys().chain(on_disk.iter().map(|(i, _)| i)).copied().chain([hwm]).max().unwrap_or(0) + 1;
        self.packs.create(next)
    }

    /// The highest pack id a compaction deleted (`meta-0` `pack-hwm`), or 0.
    fn pack_high_water(&self) -> Result<u32, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::txn("begin read"))?;
        let t = txn.open_table(META).map_err(StoreError::table_op("open", META.name()))?;
        let v = t.get(META_PACK_HWM).map_err(StoreError::row("read", META.name(), META_PACK_HWM))?;
        Ok(v.and_then(|v| <[u8; 4]>::try_from(v.value()).ok()).map(u32::from_le_bytes).unwrap_or(0))
    }

    /// The pack to append to when this process has none yet: the newest committed pack that has room,
    /// is not `avoid` (the one being compacted) and no other process appends to; else a new one.
    pub(crate) fn resume_pack(&self, avoid: Option<u32>) -> Result<pack::ActivePack, StoreError> {
        let committed = self.committed_packs()?;
        let mut candidates: Vec<(u32, u64)> = committed
            .into_iter()
            .filter(|(id, len)| *len < pack::PACK_TARGET && Some(*id) != avoid)
            .filter(|(id, _)| self.packs.backend().exists(*id))
            .collect();
        candidates.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
        for (id, len) in candidates.into_iter().take(4) {
            if let Some(p) = self.packs.reopen(id, len)? {
                return Ok(p);
            }
        }
        self.new_pack()
    }

    /// Start an ingest: blocks written through it become visible only with its [`Ingest::commit`].
    pub fn begin_ingest(&self) -> Ingest<'_> {
        Ingest::new(self)
    }

    /// Streams waiting for `import::repack`: root and [`REPACK_NAR`] or [`REPACK_FILE`].
    pub fn repack_queue(&self) -> Result<Vec<(Cid, u8)>, StoreError> {
        let txn = self.db().begin_read().map_err(StoreError::txn("begin read"))?;
        let t = match txn.open_table(REPACK) {
            Ok(t) => t,
            // A store no ingest has queued anything in (or opened read-only before any did).
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::table_op("open", REPACK.name())(e)),
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(StoreError::table_op("scan", REPACK.name()))? {
            let (k, v) = row.map_err(StoreError::table_op("scan", REPACK.name()))?;
            let root = cid_from_bytes(k.value()).map_err(|e| StoreError::CorruptIndex {
                table: "repack-0",
                reason: format!("a key is not a CID: {e}"),
            })?;
            out.push((root, v.value()));
        }
        Ok(out)
    }

    /// The block holding the dictionary new frames are compressed with, once one has been trained.
    pub fn dictionary(&self) -> Result<Option<BlockHash>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::txn("begin read"))?;
        let t = txn.open_table(META).map_err(StoreError::table_op("open", META.name()))?;
        let Some(v) = t.get(META_DICT).map_err(StoreError::row("read", META.name(), META_DICT))? else { return Ok(None) };
        let h = <[u8; 32]>::try_from(v.value())
            .map_err(|_| StoreError::CorruptIndex { table: "meta-0", reason: "dict is not 32 bytes".into() })?;
        Ok(Some(BlockHash(h)))
    }

    /// Where a block is stored, if it is.
    pub fn block_loc(&self, hash: &BlockHash) -> Result<Option<BlockLoc>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::txn("begin read"))?;
        let t = txn.open_table(BLOCKS).map_err(StoreError::table_op("open", BLOCKS.name()))?;
        let v = t.get(hash.0.as_slice()).map_err(StoreError::row("read", BLOCKS.name(), hash))?;
        v.map(|v| BlockLoc::decode(v.value())).transpose()
    }

    /// Give the index file's free pages back. redb grows its file in steps and keeps freed pages for
    /// reuse, which left the index at 3x its live size after a large `add`; `stored_bytes` counts the
    /// file, so a command that wrote much compacts it before it exits (measured in docs/STORAGE.md).
    /// Skipped while the index is small (< 4 MiB) or at least two thirds live.
    pub fn compact_index(&mut self) -> Result<(), StoreError> {
        let path = self.dir.join("index.redb");
        let len = fs::metadata(&path).context(|| format!("stat of {}", path.display()))?.len();
        if len < 4 << 20 {
            return Ok(());
        }
        let live = {
            let txn = self.db.begin_write().map_err(StoreError::txn("begin write"))?;
            let st = txn.stats().map_err(StoreError::txn("stats"))?;
            txn.abort().map_err(StoreError::txn("abort"))?;
            st.stored_bytes() + st.metadata_bytes()
        };
        if live * 3 > len * 2 {
            return Ok(());
        }
        // Compaction rewrites the file under every reader: only when no other process has the store open.
        if self._lock.try_lock_exclusive().is_err() {
            // A failed upgrade may have dropped the shared lock (flock converts by unlocking first).
            return self._lock.lock_shared().context(|| format!("locking {}", self.dir.join("lock").display()));
        }
        let Index::ReadWrite(db) = &mut self.db else { return Ok(()) };
        let compacted = Self::compact_db(db);
        self._lock.lock_shared().context(|| format!("locking {}", self.dir.join("lock").display()))?;
        compacted
    }

    fn compact_db(db: &mut Database) -> Result<(), StoreError> {
        while db.compact().map_err(StoreError::txn("compact"))? {}
        Ok(())
    }

    /// The stored NAR with this NarHash.
    pub fn nar(&self, hash: &NarHash) -> Result<Option<NarEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::txn("begin read"))?;
        let t = txn.open_table(NARS).map_err(StoreError::table_op("open", NARS.name()))?;
        let v = t.get(hash.0.as_slice()).map_err(StoreError::row("read", NARS.name(), hash))?;
        v.map(|v| NarEntry::decode(v.value())).transpose()
    }

    /// The recorded metadata of the store path whose hash part (32 nix32 chars) is `hash_part`.
    pub fn path_info(&self, hash_part: &str) -> Result<Option<NarInfo>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::txn("begin read"))?;
        let t = txn.open_table(PATHS).map_err(StoreError::table_op("open", PATHS.name()))?;
        let v = t.get(hash_part).map_err(StoreError::row("read", PATHS.name(), hash_part))?;
        v.map(|v| {
            NarInfo::parse(v.value()).map_err(|e| StoreError::CorruptIndex { table: "paths-0", reason: e.to_string() })
        })
        .transpose()
    }

    /// The stored file with this hash (SHA-256, or an alias: SHA-512, SHA-1, MD5). Returns its SHA-256 too.
    pub fn file(&self, hash: &NixHash) -> Result<Option<([u8; 32], FileEntry)>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::txn("begin read"))?;
        let sha256: [u8; 32] = if hash.algo == HashAlgo::Sha256 {
            hash.digest.as_slice().try_into().map_err(|_| StoreError::CorruptIndex {
                table: "files-0",
                reason: "sha256 digest is not 32 bytes".into(),
            })?
        } else {
            let t = txn.open_table(FILE_ALIASES).map_err(StoreError::table_op("open", FILE_ALIASES.name()))?;
            let Some(v) = t.get(alias_key(hash).as_slice()).map_err(StoreError::row("read", FILE_ALIASES.name(), hash))?
            else {
                return Ok(None);
            };
            v.value().try_into().map_err(|_| StoreError::CorruptIndex {
                table: "file-aliases-0",
                reason: "target is not 32 bytes".into(),
            })?
        };
        let t = txn.open_table(FILES).map_err(StoreError::table_op("open", FILES.name()))?;
        let v = t.get(sha256.as_slice()).map_err(StoreError::row("read", FILES.name(), Sha256Key(&sha256)))?;
        Ok(v.map(|v| FileEntry::decode(v.value())).transpose()?.map(|e| (sha256, e)))
    }

    /// Drop the NAR with this hash and every store path recorded with it. Its blocks go at the next GC
    /// unless something else uses them. Returns whether anything was removed.
    pub fn forget_nar(&self, hash: &NarHash) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::txn("begin write"))?;
        let removed;
        {
            let mut nars = txn.open_table(NARS).map_err(StoreError::table_op("open", NARS.name()))?;
            removed = nars.remove(hash.0.as_slice()).map_err(StoreError::row("remove", NARS.name(), hash))?.is_some();
            let mut paths = txn.open_table(PATHS).map_err(StoreError::table_op("open", PATHS.name()))?;
            let mut doomed = Vec::new();
            for row in paths.iter().map_err(StoreError::table_op("scan", PATHS.name()))? {
                let (k, v) = row.map_err(StoreError::table_op("scan", PATHS.name()))?;
                if NarInfo::parse(v.value()).map(|i| i.nar_hash == *hash).unwrap_or(false) {
                    doomed.push(k.value().to_string());
                }
            }
            for k in doomed {
                paths.remove(k.as_str()).map_err(StoreError::row("remove", PATHS.name(), &k))?;
            }
        }
        txn.commit().map_err(StoreError::txn("commit"))?;
        Ok(removed)
    }

    /// Drop the file with this hash (any of its hashes) and its aliases.
    pub fn forget_file(&self, hash: &NixHash) -> Result<bool, StoreError> {
        let Some((sha256, _)) = self.file(hash)? else { return Ok(false) };
        let txn = self.db.begin_write().map_err(StoreError::txn("begin write"))?;
        {
            let mut files = txn.open_table(FILES).map_err(StoreError::table_op("open", FILES.name()))?;
            files.remove(sha256.as_slice()).map_err(StoreError::row("remove", FILES.name(), Sha256Key(&sha256)))?;
            let mut aliases = txn.open_table(FILE_ALIASES).map_err(StoreError::table_op("open", FILE_ALIASES.name()))?;
            aliases.retain(|_, v| v != sha256.as_slice()).map_err(StoreError::table_op("remove from", FILE_ALIASES.name()))?;
        }
        txn.commit().map_err(StoreError::txn("commit"))?;
        Ok(true)
    }

    /// Every root in the store: `(label, root CID, expected size)`, NARs first, then files.
    pub fn roots(&self) -> Result<Vec<(String, crate::dag::Cid, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::txn("begin read"))?;
        roots_in(&txn)
    }

    pub(crate) fn db(&self) -> &Index {
        &self.db
    }

    pub(crate) fn proven(&self) -> &proven::Proven {
        &self.proven
    }

    pub(crate) fn packs(&self) -> &Packs {
        &self.packs
    }

    /// Enter (`true`) or leave the set of open ingests that keep other processes' sweeps out.
    pub(crate) fn ingest_gate(&self, enter: bool) -> Result<(), StoreError> {
        if enter {
            self.gc_gate.enter(&self.dir)
        } else {
            self.gc_gate.leave();
            Ok(())
        }
    }

    /// Run `f` with every other process's ingests kept out (see [`GcGate`]).
    pub(crate) fn without_other_ingests<T>(&self, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.gc_gate.exclusive(&self.dir, f)
    }

    pub(crate) fn protected(&self) -> &Protected {
        &self.protected
    }

    pub(crate) fn frame_cache(&self) -> &read::FrameCache {
        &self.frames
    }

    pub(crate) fn outputs(&self) -> &rebuilt::OutputCache {
        &self.outputs
    }

    /// How blocks added from now on are stored (see [`StorageConfig`]); what is stored stays as it is.
    pub fn set_storage(&self, cfg: StorageConfig) {
        *self.storage.lock().unwrap_or_else(|p| p.into_inner()) = cfg;
    }

    /// How new blocks are stored.
    pub fn storage(&self) -> StorageConfig {
        *self.storage.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Open (creating) an empty file that exists only to be `flock`ed.
fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .context(|| format!("opening {}", path.display()))
}

/// Take `STORE/lock` shared: wait for a process that holds it exclusively (compacting the index), or
/// fail at once with [`StoreError::Busy`].
fn lock_shared(lock: &File, dir: &Path, wait: bool) -> Result<(), StoreError> {
    if lock.try_lock_shared().is_ok() {
        return Ok(());
    }
    if !wait {
        return Err(StoreError::Busy {
            path: dir.to_path_buf(),
            what: "another nixdag process holds it alone (compacting its index)".into(),
        });
    }
    eprintln!("nixdag: waiting for another nixdag process to release {}", dir.display());
    lock.lock_shared().context(|| format!("locking {}", dir.join("lock").display()))
}

/// Roots as seen by one transaction (read or write).
pub(crate) fn roots_in(txn: &impl TableSource) -> Result<Vec<(String, crate::dag::Cid, u64)>, StoreError> {
    let mut out = Vec::new();
    txn.each(&NARS, &mut |k, v| {
        let e = NarEntry::decode(v)?;
        let h = NarHash(
            k.try_into()
                .map_err(|_| StoreError::CorruptIndex { table: "nars-0", reason: "key is not 32 bytes".into() })?,
        );
        out.push((format!("nar {h}"), e.root, e.nar_size));
        Ok(())
    })?;
    txn.each(&FILES, &mut |k, v| {
        let e = FileEntry::decode(v)?;
        out.push((format!("file sha256:{}", crate::nix::hash::nix32::encode(k)), e.root_cid()?, e.size));
        Ok(())
    })?;
    Ok(out)
}

/// Called with each row's key and value.
pub(crate) type RowFn<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// Iterate a byte-keyed table in either kind of transaction.
pub(crate) trait TableSource {
    fn each(&self, def: &'static ByteTable, f: &mut RowFn<'_>) -> Result<(), StoreError>;
}

impl TableSource for redb::ReadTransaction {
    fn each(&self, def: &'static ByteTable, f: &mut RowFn<'_>) -> Result<(), StoreError> {
        each_row(def.name(), &self.open_table(*def).map_err(StoreError::table_op("open", def.name()))?, f)
    }
}

impl TableSource for redb::WriteTransaction {
    fn each(&self, def: &'static ByteTable, f: &mut RowFn<'_>) -> Result<(), StoreError> {
        each_row(def.name(), &self.open_table(*def).map_err(StoreError::table_op("open", def.name()))?, f)
    }
}

/// A table keyed and valued by bytes.
pub(crate) type ByteTable = redb::TableDefinition<'static, &'static [u8], &'static [u8]>;

fn each_row(
    name: &'static str,
    t: &impl ReadableTable<&'static [u8], &'static [u8]>,
    f: &mut RowFn<'_>,
) -> Result<(), StoreError> {
    for row in t.iter().map_err(StoreError::table_op("scan", name))? {
        let (k, v) = row.map_err(StoreError::table_op("scan", name))?;
        f(k.value(), v.value())?;
    }
    Ok(())
}

pub(crate) fn alias_key(hash: &NixHash) -> Vec<u8> {
    let mut k = format!("{}:", hash.algo.name()).into_bytes();
    k.extend_from_slice(&hash.digest);
    k
}

impl BlockSource for Store {
    fn get_block(&self, hash: &BlockHash) -> io::Result<Option<Vec<u8>>> {
        self.read_block(hash).map_err(io::Error::other)
    }
    fn get_block_bytes(&self, hash: &BlockHash) -> io::Result<Option<bytes::Bytes>> {
        self.read_block_bytes(hash).map_err(io::Error::other)
    }
    fn block_len(&self, hash: &BlockHash) -> io::Result<Option<u64>> {
        Ok(self.block_loc(hash).map_err(io::Error::other)?.map(|l| u64::from(l.raw_len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::cid::RAW_CODEC;

    fn block(n: u8) -> (BlockHash, Vec<u8>) {
        let bytes = vec![n; 1000 + n as usize];
        (BlockHash::of(&bytes), bytes)
    }

    /// Regression: a rolled-back ingest used to cut the pack back to its *first* record, taking with
    /// it the records another ingest had appended in between and then committed.
    #[test]
    fn rollback_keeps_records_of_an_interleaved_ingest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a1, b1, a2) = (block(1), block(2), block(3));
        let mut a = store.begin_ingest();
        let mut b = store.begin_ingest();
        a.put(a1.0, &a1.1).unwrap();
        b.put(b1.0, &b1.1).unwrap();
        a.put(a2.0, &a2.1).unwrap();
        drop(a);
        let entry = NarEntry { root: b1.0.cid(RAW_CODEC), nar_size: b1.1.len() as u64 };
        b.commit(&[Manifest::Nar { nar_hash: NarHash([7; 32]), entry }]).unwrap();
        assert_eq!(store.read_block(&b1.0).unwrap().as_deref(), Some(&b1.1[..]));
        assert!(store.verify().unwrap().ok());
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.read_block(&b1.0).unwrap().as_deref(), Some(&b1.1[..]));
        assert!(store.verify().unwrap().ok());
    }

    #[test]
    fn rollback_of_a_lone_ingest_restores_the_pack_length() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (x, y) = (block(4), block(5));
        let mut first = store.begin_ingest();
        first.put(x.0, &x.1).unwrap();
        let entry = NarEntry { root: x.0.cid(RAW_CODEC), nar_size: x.1.len() as u64 };
        first.commit(&[Manifest::Nar { nar_hash: NarHash([1; 32]), entry }]).unwrap();
        let len = store.packs().lock_writer().pack.as_ref().unwrap().len;
        let mut doomed = store.begin_ingest();
        doomed.put(y.0, &y.1).unwrap();
        drop(doomed);
        assert_eq!(store.packs().lock_writer().pack.as_ref().unwrap().len, len);
        assert!(store.read_block(&y.0).unwrap().is_none());
    }

    /// One flipped byte in a pack's header used to make every block in the pack unreadable; the records
    /// are checked one by one, so they stay readable and `verify` names the header.
    #[test]
    fn a_damaged_pack_header_loses_no_block() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let x = block(9);
        let mut i = store.begin_ingest();
        i.put(x.0, &x.1).unwrap();
        let entry = NarEntry { root: x.0.cid(RAW_CODEC), nar_size: x.1.len() as u64 };
        i.commit(&[Manifest::Nar { nar_hash: NarHash([2; 32]), entry }]).unwrap();
        drop(store);
        let pack = std::fs::read_dir(dir.path().join("packs")).unwrap().next().unwrap().unwrap().path();
        let mut bytes = std::fs::read(&pack).unwrap();
        bytes[0] ^= 0x20;
        std::fs::write(&pack, bytes).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.read_block(&x.0).unwrap().as_deref(), Some(&x.1[..]));
        let r = store.verify().unwrap();
        assert!(r.problems.iter().any(|p| p.contains("header is Damaged")), "{:?}", r.problems);
    }
}
