//! Packs in memory: the second backend behind [`PackBackend`], so the store's behaviour is tested on a
//! backend that is not a directory (`store/backend_tests.rs`), as the engine must later run on object
//! storage. It keeps the file backend's rules: one locker per pack, reads past the end fail, a removed
//! pack is gone. Clones share the packs, so a test can "reopen" a store on the same bytes.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    check_header, header, HeaderState, PackBackend, PackWrite, RecordBytes, RecordReadError, HEADER_LEN,
    RECORD_HEADER_LEN,
};
use crate::store::error::StoreError;

type Bytes = Arc<Mutex<Vec<u8>>>;

#[derive(Default)]
struct State {
    packs: BTreeMap<u32, Bytes>,
    locked: HashSet<u32>,
}

/// Packs held in memory.
#[derive(Clone, Default)]
pub struct MemPacks(Arc<Mutex<State>>);

impl MemPacks {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pack(&self, id: u32) -> Option<Bytes> {
        self.state().packs.get(&id).cloned()
    }

    /// Change one byte of pack `id` (a test's stand-in for a flipped bit on disk); false when there is
    /// no such byte.
    pub fn flip_byte(&self, id: u32, offset: u64) -> bool {
        let Some(p) = self.pack(id) else { return false };
        let mut b = p.lock().unwrap_or_else(|p| p.into_inner());
        match usize::try_from(offset).ok().and_then(|o| b.get_mut(o)) {
            Some(x) => {
                *x ^= 0xff;
                true
            }
            None => false,
        }
    }
}

impl PackBackend for MemPacks {
    fn name(&self, id: u32) -> String {
        format!("memory pack {id}")
    }

    fn list(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        let packs: Vec<(u32, Bytes)> = self.state().packs.iter().map(|(i, b)| (*i, b.clone())).collect();
        Ok(packs.into_iter().map(|(i, b)| (i, b.lock().unwrap_or_else(|p| p.into_inner()).len() as u64)).collect())
    }

    fn exists(&self, id: u32) -> bool {
        self.state().packs.contains_key(&id)
    }

    fn read_record(&self, id: u32, offset: u64, stored_len: u32) -> Result<RecordBytes, RecordReadError> {
        let p = self.pack(id).ok_or_else(|| RecordReadError::Read {
            stored_len,
            source: io::Error::new(io::ErrorKind::NotFound, format!("{} does not exist", self.name(id))),
        })?;
        let b = p.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = b.get(..HEADER_LEN as usize) {
            if let HeaderState::OtherVersion(v) = check_header(h.try_into().expect("16 bytes")) {
                return Err(RecordReadError::OtherVersion { pack: self.name(id), found: v });
            }
        }
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let mid = start.saturating_add(RECORD_HEADER_LEN as usize);
        let end = mid.saturating_add(stored_len as usize);
        match (b.get(start..mid), b.get(mid..end)) {
            (Some(h), Some(p)) => Ok(RecordBytes { header: h.try_into().expect("41 bytes"), payload: p.to_vec() }),
            _ => Err(RecordReadError::Read {
                stored_len,
                source: io::Error::new(io::ErrorKind::UnexpectedEof, format!("{} ends at {}", self.name(id), b.len())),
            }),
        }
    }

    fn header_state(&self, id: u32) -> io::Result<HeaderState> {
        let p = self.pack(id).ok_or(io::ErrorKind::NotFound)?;
        let b = p.lock().unwrap_or_else(|p| p.into_inner());
        let h: &[u8; HEADER_LEN as usize] =
            b.get(..HEADER_LEN as usize).and_then(|h| h.try_into().ok()).ok_or(io::ErrorKind::UnexpectedEof)?;
        Ok(check_header(h))
    }

    fn create(&self, from: u32) -> Result<(u32, Box<dyn PackWrite>), StoreError> {
        let mut st = self.state();
        let mut id = from;
        while st.packs.contains_key(&id) {
            id += 1;
        }
        let bytes: Bytes = Arc::new(Mutex::new(header().to_vec()));
        st.packs.insert(id, bytes.clone());
        st.locked.insert(id);
        Ok((id, Box::new(MemLock { packs: self.clone(), id, bytes })))
    }

    fn try_lock(&self, id: u32) -> Result<Option<Box<dyn PackWrite>>, StoreError> {
        let mut st = self.state();
        let Some(bytes) = st.packs.get(&id).cloned() else { return Ok(None) };
        if !st.locked.insert(id) {
            return Ok(None);
        }
        Ok(Some(Box::new(MemLock { packs: self.clone(), id, bytes })))
    }

    fn remove(&self, id: u32) -> Result<(), StoreError> {
        self.state().packs.remove(&id);
        Ok(())
    }

    fn remove_abandoned(&self) -> Result<bool, StoreError> {
        Ok(false) // a pack is whole from the moment `create` inserts it
    }
}

/// Pack `id` locked for appends; dropping it unlocks.
struct MemLock {
    packs: MemPacks,
    id: u32,
    bytes: Bytes,
}

impl PackWrite for MemLock {
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let mut b = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        let at = usize::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
        if b.len() < at + bytes.len() {
            b.resize(at + bytes.len(), 0);
        }
        b[at..at + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("length too large"))?;
        self.bytes.lock().unwrap_or_else(|p| p.into_inner()).resize(len, 0);
        Ok(())
    }
}

impl Drop for MemLock {
    fn drop(&mut self) {
        self.packs.state().locked.remove(&self.id);
    }
}
