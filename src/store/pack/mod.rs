//! Pack files: append-only sequences of block records.
//!
//! ```text
//! pack   := header record*
//! header := "NIXDAGPK" (8) | version u32 (4) | reserved u32 (4)            = 16 bytes
//! record := blake3 [32] | raw_len u32 | stored_len u32 | compression u8    = 41 bytes
//!           payload [stored_len]
//! ```
//! The index says where each record starts; the record repeats the block's hash and lengths so a pack
//! can be checked (and, in a disaster, re-indexed) on its own. Bytes are appended through one writer
//! with its own buffer, written with positioned writes, so an uncommitted tail can be cut off again
//! (`rollback`) without a seek dance.
//!
//! Where the bytes live is a [`PackBackend`]: files under `STORE/packs/` ([`FilePacks`]) or memory
//! ([`MemPacks`], for tests and embedders). Everything above this module (the transaction, reads, gc,
//! verify, recovery) reaches packs only through it, so a backend that keeps sealed packs in object
//! storage and reads them with ranged requests fits the same seam.

mod file;
mod mem;

use std::collections::HashMap;
use std::sync::Mutex;

use super::error::{IoContext, StoreError};
use super::tables::RecordKind;
use crate::dag::BlockHash;

#[cfg_attr(not(test), allow(unused_imports))]
pub use self::file::{pack_path, FilePacks};
#[cfg_attr(not(test), allow(unused_imports))]
pub use self::mem::MemPacks;

/// Pack magic.
pub const MAGIC: &[u8; 8] = b"NIXDAGPK";
/// Pack format version.
pub const PACK_VERSION: u32 = 1;
/// Pack header length.
pub const HEADER_LEN: u64 = 16;
/// Record header length.
pub const RECORD_HEADER_LEN: u64 = 32 + 4 + 4 + 1;
/// A pack is closed for appends once it passes this size; compaction works pack by pack.
pub const PACK_TARGET: u64 = 1 << 30;
const WRITE_BUFFER: usize = 4 << 20;

/// The pack header bytes.
pub fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&PACK_VERSION.to_le_bytes());
    h
}

/// What a pack's 16-byte header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderState {
    /// Magic and version as this build writes them.
    Ok,
    /// The magic is right, the version another: a pack of another format.
    OtherVersion(u32),
    /// The magic is wrong: the header is damaged (the records may still be intact).
    Damaged,
}

/// Judge a pack's header bytes.
pub fn check_header(h: &[u8; HEADER_LEN as usize]) -> HeaderState {
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if h[..8] != MAGIC[..] {
        HeaderState::Damaged
    } else if version != PACK_VERSION {
        HeaderState::OtherVersion(version)
    } else {
        HeaderState::Ok
    }
}

/// Where pack bytes live, and who may append to which pack. Implementations: [`FilePacks`] (the store's
/// `packs/` directory, shared by many processes through per-pack locks) and [`MemPacks`].
pub trait PackBackend: Send + Sync {
    /// What a message should call pack `id` (a path, or "memory pack N").
    fn name(&self, id: u32) -> String;
    /// Ids and lengths of every pack.
    fn list(&self) -> Result<Vec<(u32, u64)>, StoreError>;
    /// Whether pack `id` exists.
    fn exists(&self, id: u32) -> bool;
    /// The record header and `stored_len` payload bytes at `offset` of pack `id`. A pack of another
    /// format version is refused; a damaged header is not (see [`check_header`]).
    fn read_record(&self, id: u32, offset: u64, stored_len: u32) -> Result<RecordBytes, RecordReadError>;
    /// What pack `id`'s header says.
    fn header_state(&self, id: u32) -> std::io::Result<HeaderState>;
    /// Create a new pack numbered at least `from`, holding its header durably and locked for this
    /// process's appends.
    fn create(&self, from: u32) -> Result<(u32, Box<dyn PackWrite>), StoreError>;
    /// Pack `id` locked for this process, unless another holds it (`None`): for appends, for cutting
    /// an uncommitted tail in recovery, or to keep it while compaction copies it.
    fn try_lock(&self, id: u32) -> Result<Option<Box<dyn PackWrite>>, StoreError>;
    /// Delete pack `id` (compacted, or never committed), durably; cached read handles are dropped.
    fn remove(&self, id: u32) -> Result<(), StoreError>;
    /// Delete packs left half-made by writers that are gone; whether anything was deleted.
    fn remove_abandoned(&self) -> Result<bool, StoreError>;
}

/// A pack locked by this process: written at positions, synced, cut back. Dropping it releases the lock.
pub trait PackWrite: Send {
    /// Write `bytes` at `offset`.
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> std::io::Result<()>;
    /// Make everything written durable.
    fn sync(&mut self) -> std::io::Result<()>;
    /// Cut the pack to `len` bytes.
    fn set_len(&mut self, len: u64) -> std::io::Result<()>;
}

/// A record's header bytes.
pub fn record_header(hash: &BlockHash, raw_len: u32, stored_len: u32, c: RecordKind) -> [u8; 41] {
    let mut h = [0u8; RECORD_HEADER_LEN as usize];
    h[..32].copy_from_slice(&hash.0);
    h[32..36].copy_from_slice(&raw_len.to_le_bytes());
    h[36..40].copy_from_slice(&stored_len.to_le_bytes());
    h[40] = c as u8;
    h
}

/// A record as read: header and payload.
pub struct RecordBytes {
    /// The 41 header bytes.
    pub header: [u8; RECORD_HEADER_LEN as usize],
    /// The payload.
    pub payload: Vec<u8>,
}

/// A record that could not be read; the caller says which block or frame it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordReadError {
    /// The pack could not be opened (gone, or the OS refused).
    #[error(transparent)]
    Pack(Box<StoreError>),
    /// The pack is of a format this nixdag does not read.
    #[error("{pack} is a nixdag pack of version {found}, this nixdag reads version {PACK_VERSION}")]
    OtherVersion {
        /// The pack.
        pack: String,
        /// The version its header names.
        found: u32,
    },
    /// The record's bytes could not be read: the pack ends before them, or the read failed.
    #[error("cannot read the record ({stored_len} payload bytes): {source}")]
    Read {
        /// Payload bytes the index says the record has.
        stored_len: u32,
        /// Why.
        source: std::io::Error,
    },
}

/// The pack currently open for appends.
pub struct ActivePack {
    /// Pack id.
    pub id: u32,
    file: Box<dyn PackWrite>,
    /// Logical length: bytes on disk plus bytes buffered.
    pub len: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_start: u64,
}

impl ActivePack {
    /// Appends to `file` (pack `id`, locked by this process) from `len` on.
    pub fn new(id: u32, file: Box<dyn PackWrite>, len: u64) -> Self {
        ActivePack { id, file, len, buf: Vec::new(), buf_start: len }
    }

    /// Append bytes (a record, or part of one); returns their offset.
    pub fn append(&mut self, bytes: &[u8]) -> Result<u64, StoreError> {
        let offset = self.len;
        self.buf.extend_from_slice(bytes);
        self.len += bytes.len() as u64;
        if self.buf.len() >= WRITE_BUFFER {
            self.flush()?;
        }
        Ok(offset)
    }

    /// Write buffered bytes to the file (not yet durable).
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if !self.buf.is_empty() {
            let id = self.id;
            self.file.write_at(&self.buf, self.buf_start).context(|| format!("writing pack {id}"))?;
            self.buf_start += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Flush and fsync: after this, every record appended so far survives a crash.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        let id = self.id;
        self.file.sync().context(|| format!("fsync of pack {id}"))
    }

    /// Cut the pack back to `len` (a record boundary this writer handed out).
    pub fn truncate(&mut self, len: u64) -> Result<(), StoreError> {
        if len >= self.buf_start {
            self.buf.truncate((len - self.buf_start) as usize);
        } else {
            self.buf.clear();
            let id = self.id;
            self.file.set_len(len).context(|| format!("truncating pack {id}"))?;
            self.buf_start = len;
        }
        self.len = len;
        Ok(())
    }
}

/// The append side of a store, behind one lock: the active pack and which packs hold records of
/// ingests that have not committed yet (those must not be compacted away under them).
#[derive(Default)]
pub struct Writer {
    /// The pack appends go to; `None` until the first append of this process.
    pub pack: Option<ActivePack>,
    /// Pack id → number of uncommitted ingests with records in it.
    pub in_flight: HashMap<u32, u32>,
    /// Packs this process appended to before its active one, still locked: another process must not
    /// cut their tails (uncommitted records of ours may be there) or compact them under us.
    pub held: HashMap<u32, Box<dyn PackWrite>>,
}

impl Writer {
    /// Close the active pack for appends (synced first), keeping its lock.
    pub fn retire(&mut self) -> Result<(), StoreError> {
        if let Some(mut old) = self.pack.take() {
            old.sync()?;
            self.held.insert(old.id, old.file);
        }
        Ok(())
    }

    /// Whether this process holds pack `id` (active or retired).
    pub fn holds(&self, id: u32) -> bool {
        self.pack.as_ref().is_some_and(|p| p.id == id) || self.held.contains_key(&id)
    }
}

/// All packs of a store: the backend and the writer.
pub struct Packs {
    backend: Box<dyn PackBackend>,
    /// The writer.
    pub writer: Mutex<Writer>,
}

impl Packs {
    /// Packs kept by `backend`.
    pub fn new(backend: Box<dyn PackBackend>) -> Self {
        Packs { backend, writer: Mutex::new(Writer::default()) }
    }

    /// Lock the writer.
    pub fn lock_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the bytes live.
    pub fn backend(&self) -> &dyn PackBackend {
        &*self.backend
    }

    /// A new pack numbered at least `from`, ready for this process's appends.
    pub fn create(&self, from: u32) -> Result<ActivePack, StoreError> {
        let (id, file) = self.backend.create(from)?;
        Ok(ActivePack::new(id, file, HEADER_LEN))
    }

    /// Reopen pack `id` for appends at `len` (its committed length), if no other process appends to it
    /// (`None` then: the caller picks another).
    pub fn reopen(&self, id: u32, len: u64) -> Result<Option<ActivePack>, StoreError> {
        Ok(self.backend.try_lock(id)?.map(|f| ActivePack::new(id, f, len)))
    }

    /// Lock pack `id` against other processes' appends, recovery and compaction, if nobody holds it;
    /// the lock lasts as long as the returned handle.
    pub fn try_lock(&self, id: u32) -> Result<Option<Box<dyn PackWrite>>, StoreError> {
        self.backend.try_lock(id)
    }

    /// Read a record as stored: its header, then its `stored_len` payload bytes (still compressed) into
    /// a buffer of their own. The caller checks the header against what the index says.
    pub fn read_record(&self, pack: u32, offset: u64, stored_len: u32) -> Result<RecordBytes, RecordReadError> {
        self.backend.read_record(pack, offset, stored_len)
    }

    /// Ids and sizes of the packs.
    pub fn list(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        self.backend.list()
    }
}
