//! Packs as files under `STORE/packs/`, shared by every process that has the store open: each pack a
//! process appends to is `flock`ed by it, so appends never interleave and recovery never cuts a live tail.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fs2::FileExt as _;

use super::{
    check_header, header, HeaderState, PackBackend, PackWrite, RecordBytes, RecordReadError, HEADER_LEN,
    PACK_VERSION, RECORD_HEADER_LEN,
};
use crate::store::error::{IoContext, StoreError};

/// The pack file of `id`.
pub fn pack_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.pack"))
}

/// Packs as files in one directory, with cached read handles.
pub struct FilePacks {
    dir: PathBuf,
    readers: Mutex<HashMap<u32, Arc<File>>>,
}

impl FilePacks {
    /// Packs under `dir` (which must exist).
    pub fn new(dir: PathBuf) -> Self {
        FilePacks { dir, readers: Mutex::new(HashMap::new()) }
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
            read_header(&f).context(|| format!("reading the header of {}", path.display()))?
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
}

fn read_header(f: &File) -> std::io::Result<HeaderState> {
    let mut h = [0u8; HEADER_LEN as usize];
    f.read_exact_at(&mut h, 0)?;
    Ok(check_header(&h))
}

impl PackBackend for FilePacks {
    fn name(&self, id: u32) -> String {
        pack_path(&self.dir, id).display().to_string()
    }

    fn list(&self) -> Result<Vec<(u32, u64)>, StoreError> {
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

    fn exists(&self, id: u32) -> bool {
        pack_path(&self.dir, id).exists()
    }

    fn read_record(&self, id: u32, offset: u64, stored_len: u32) -> Result<RecordBytes, RecordReadError> {
        let f = self.reader(id).map_err(|e| RecordReadError::Pack(Box::new(e)))?;
        let (header, payload) =
            pread_record(&f, stored_len as usize, offset).map_err(|source| RecordReadError::Read { stored_len, source })?;
        Ok(RecordBytes { header, payload })
    }

    fn header_state(&self, id: u32) -> std::io::Result<HeaderState> {
        read_header(&File::open(pack_path(&self.dir, id))?)
    }

    /// Several processes may write one store, so the pack is made whole and locked under a temporary
    /// name first and only then given its number, with a link that fails if the number is taken (the
    /// next is tried). A pack that appears under its number is therefore always locked by its writer:
    /// another process's recovery, which deletes packs no commit names, cannot take it away in between.
    fn create(&self, from: u32) -> Result<(u32, Box<dyn PackWrite>), StoreError> {
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
        Ok((id, Box::new(file) as Box<dyn PackWrite>))
    }

    fn try_lock(&self, id: u32) -> Result<Option<Box<dyn PackWrite>>, StoreError> {
        let path = pack_path(&self.dir, id);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context(|| format!("opening {}", path.display())),
        };
        Ok(fs2::FileExt::try_lock_exclusive(&file).is_ok().then(|| Box::new(file) as Box<dyn PackWrite>))
    }

    fn remove(&self, id: u32) -> Result<(), StoreError> {
        let path = pack_path(&self.dir, id);
        fs::remove_file(&path).context(|| format!("removing {}", path.display()))?;
        sync_dir(&self.dir)?;
        self.readers.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        Ok(())
    }

    /// Half-made packs (`*.tmp`) are locked while they are made; one nobody holds is abandoned.
    fn remove_abandoned(&self) -> Result<bool, StoreError> {
        let mut removed = false;
        for e in fs::read_dir(&self.dir).context(|| format!("listing {}", self.dir.display()))? {
            let Ok(e) = e else { continue };
            if !e.file_name().to_string_lossy().ends_with(".tmp") {
                continue;
            }
            let Ok(f) = OpenOptions::new().read(true).open(e.path()) else { continue };
            if f.try_lock_exclusive().is_ok() {
                fs::remove_file(e.path()).context(|| format!("removing {}", e.path().display()))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }
}

/// A pack file this process has locked.
impl PackWrite for File {
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        self.write_all_at(bytes, offset)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }

    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        File::set_len(self, len)?;
        self.sync_all()
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
