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

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::error::{IoContext, StoreError};
use super::tables::RecordKind;
use crate::dag::BlockHash;

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

/// Read and judge a pack's header.
pub fn check_header(f: &File) -> std::io::Result<HeaderState> {
    let mut h = [0u8; HEADER_LEN as usize];
    f.read_exact_at(&mut h, 0)?;
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    Ok(if h[..8] != MAGIC[..] {
        HeaderState::Damaged
    } else if version != PACK_VERSION {
        HeaderState::OtherVersion(version)
    } else {
        HeaderState::Ok
    })
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
#[derive(Debug)]
pub struct RecordReadError(pub String);

/// The pack file of `id`.
pub fn pack_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.pack"))
}

/// The pack currently open for appends.
pub struct ActivePack {
    /// Pack id.
    pub id: u32,
    file: File,
    /// Logical length: bytes on disk plus bytes buffered.
    pub len: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_start: u64,
}

impl ActivePack {
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
            self.file.write_all_at(&self.buf, self.buf_start).context(|| format!("writing pack {id}"))?;
            self.buf_start += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Flush and fsync: after this, every record appended so far survives a crash.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        let id = self.id;
        self.file.sync_data().context(|| format!("fsync of pack {id}"))
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
    pub held: HashMap<u32, File>,
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

/// All packs of a store: cached read handles and the writer.
pub struct Packs {
    dir: PathBuf,
    readers: Mutex<HashMap<u32, Arc<File>>>,
    /// The writer.
    pub writer: Mutex<Writer>,
}

impl Packs {
    /// Packs under `dir` (which must exist).
    pub fn new(dir: PathBuf) -> Self {
        Packs { dir, readers: Mutex::new(HashMap::new()), writer: Mutex::new(Writer::default()) }
    }

    /// Lock the writer.
    pub fn lock_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The packs directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Create a new pack numbered at least `from`, with its header, durably (file and directory entry
    /// fsynced), and locked for this process's appends.
    ///
    /// Several processes may write one store, so the pack is made whole and locked under a temporary
    /// name first and only then given its number, with a link that fails if the number is taken (the
    /// next is tried). A pack that appears under its number is therefore always locked by its writer:
    /// another process's recovery, which deletes packs no commit names, cannot take it away in between.
    pub fn create(&self, from: u32) -> Result<ActivePack, StoreError> {
        let tmp = self.dir.join(format!("new-{}-{from}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .context(|| format!("creating {}", tmp.display()))?;
        fs2::FileExt::lock_exclusive(&file).context(|| format!("locking {}", tmp.display()))?;
        file.write_all_at(&header(), 0).context(|| format!("writing {}", tmp.display()))?;
        file.sync_all().context(|| format!("fsync of {}", tmp.display()))?;
        let mut id = from;
        loop {
            let path = pack_path(&self.dir, id);
            match fs::hard_link(&tmp, &path) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => id += 1,
                Err(e) => return Err(e).context(|| format!("creating {}", path.display())),
            }
        }
        fs::remove_file(&tmp).context(|| format!("removing {}", tmp.display()))?;
        sync_dir(&self.dir)?;
        Ok(ActivePack { id, file, len: HEADER_LEN, buf: Vec::new(), buf_start: HEADER_LEN })
    }

    /// Reopen pack `id` for appends at `len` (its committed length), if no other process appends to it
    /// (`None` then: the caller picks another).
    pub fn reopen(&self, id: u32, len: u64) -> Result<Option<ActivePack>, StoreError> {
        let path = pack_path(&self.dir, id);
        let file =
            OpenOptions::new().read(true).write(true).open(&path).context(|| format!("opening {}", path.display()))?;
        if fs2::FileExt::try_lock_exclusive(&file).is_err() {
            return Ok(None);
        }
        Ok(Some(ActivePack { id, file, len, buf: Vec::new(), buf_start: len }))
    }

    /// Lock pack `id` against other processes' appends, recovery and compaction, if nobody holds it;
    /// the lock lasts as long as the returned file.
    pub fn try_lock(&self, id: u32) -> Result<Option<File>, StoreError> {
        let path = pack_path(&self.dir, id);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context(|| format!("opening {}", path.display())),
        };
        Ok(fs2::FileExt::try_lock_exclusive(&file).is_ok().then_some(file))
    }

    fn reader(&self, id: u32) -> Result<Arc<File>, StoreError> {
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = readers.get(&id) {
            return Ok(f.clone());
        }
        let path = pack_path(&self.dir, id);
        let f = File::open(&path).context(|| format!("opening {}", path.display()))?;
        // Only a pack of another format version is refused. A damaged header (a flipped magic byte) does
        // not make the records behind it unreadable: each record is checked against the index and its
        // block hash anyway; `verify` reports the header (see `check_header`).
        if let HeaderState::OtherVersion(v) =
            check_header(&f).context(|| format!("reading the header of {}", path.display()))?
        {
            return Err(StoreError::Io {
                context: format!(
                    "{} is a nixdag pack of version {v}, this nixdag reads version {PACK_VERSION}",
                    path.display()
                ),
                source: std::io::Error::from(std::io::ErrorKind::InvalidData),
            });
        }
        let f = Arc::new(f);
        readers.insert(id, f.clone());
        Ok(f)
    }

    /// Forget a cached read handle (after the pack is deleted).
    pub fn drop_reader(&self, id: u32) {
        self.readers.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// Read a record as stored: its header, then its `stored_len` payload bytes (still compressed) into
    /// a buffer of their own. The caller checks the header against what the index says.
    pub fn read_record(&self, pack: u32, offset: u64, stored_len: u32) -> Result<RecordBytes, RecordReadError> {
        let f = self.reader(pack).map_err(|e| RecordReadError(e.to_string()))?;
        let (header, payload) = pread_record(&f, stored_len as usize, offset)
            .map_err(|e| RecordReadError(format!("cannot read the record ({stored_len} payload bytes): {e}")))?;
        Ok(RecordBytes { header, payload })
    }

    /// Ids and sizes of the pack files on disk.
    pub fn list(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).context(|| format!("listing {}", self.dir.display()))?;
        for e in entries {
            let e = e.context(|| format!("listing {}", self.dir.display()))?;
            let name = e.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".pack")).and_then(|n| n.parse().ok()) else {
                continue;
            };
            let len = e.metadata().context(|| format!("stat of {}", e.path().display()))?.len();
            out.push((id, len));
        }
        out.sort();
        Ok(out)
    }
}

/// The record header and `n` payload bytes at `offset`, in one `preadv` (a NAR download reads a record
/// per 64 KiB; two calls each were measurable), into a payload buffer that is not zeroed first: zeroing a
/// 1 MiB frame record before reading over it was a tenth of a NAR read's CPU.
fn pread_record(f: &File, n: usize, offset: u64) -> std::io::Result<([u8; RECORD_HEADER_LEN as usize], Vec<u8>)> {
    use std::os::fd::AsRawFd;
    const H: usize = RECORD_HEADER_LEN as usize;
    let mut header = [0u8; H];
    let mut buf: Vec<u8> = Vec::with_capacity(n);
    let total = H + n;
    let mut done = 0usize;
    while done < total {
        let at = offset + done as u64;
        let at = libc::off_t::try_from(at).map_err(|_| std::io::Error::other("offset too large"))?;
        let (h_done, p_done) = (done.min(H), done.saturating_sub(H));
        // SAFETY: the first iovec is the unread rest of `header`; the second the vector's spare capacity
        // past the `p_done` payload bytes already read (`n - p_done` bytes, allocated above). preadv writes
        // at most their lengths and reads nothing from them.
        let iov = [
            libc::iovec { iov_base: unsafe { header.as_mut_ptr().add(h_done) }.cast(), iov_len: H - h_done },
            libc::iovec { iov_base: unsafe { buf.as_mut_ptr().add(p_done) }.cast(), iov_len: n - p_done },
        ];
        let r = unsafe { libc::preadv(f.as_raw_fd(), iov.as_ptr(), 2, at) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        done += r as usize;
    }
    // SAFETY: preadv initialised all `n` payload bytes (the loop ends only when `done == H + n`).
    unsafe { buf.set_len(n) };
    Ok((header, buf))
}

/// fsync a directory so entries created or removed in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).context(|| format!("fsync of directory {}", dir.display()))
}
