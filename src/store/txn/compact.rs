//! Compaction's record moves, made through the transaction like every other index write that names
//! pack bytes: copy, fsync, then one index commit.

use std::collections::HashMap;

use redb::{ReadableTable, TableHandle};

use super::super::error::StoreError;
use super::super::pack::{record_header, RecordBytes};
use super::super::tables::*;
use super::Ingest;
use crate::dag::BlockHash;

impl Ingest<'_> {
    /// Compaction: copy the live records of pack `id` (one whose appends have moved elsewhere and that no
    /// uncommitted ingest writes to) into the active pack, fsync, and in one index transaction repoint
    /// their blocks and drop `id` from the committed packs. Returns the moved blocks and their new places;
    /// the caller deletes the file once this has committed.
    pub(crate) fn move_pack(mut self, id: u32) -> Result<Vec<(BlockHash, BlockLoc)>, StoreError> {
        let txn = self.store.db().begin_write().map_err(StoreError::txn("begin write"))?;
        let moved = {
            let blocks = txn.open_table(BLOCKS).map_err(StoreError::table_op("open", BLOCKS.name()))?;
            let mut here = Vec::new();
            for row in blocks.iter().map_err(StoreError::table_op("scan", BLOCKS.name()))? {
                let (k, v) = row.map_err(StoreError::table_op("scan", BLOCKS.name()))?;
                let loc = BlockLoc::decode(v.value())?;
                if loc.pack == id {
                    let mut h = [0u8; 32];
                    h.copy_from_slice(k.value());
                    here.push((BlockHash(h), loc));
                }
            }
            // Each record is copied once (a frame's live members all move with it), header checked first.
            let mut moved = Vec::with_capacity(here.len());
            let mut copied: HashMap<u64, (u32, u64)> = HashMap::new();
            for (hash, loc) in here {
                let (pack, offset) = match copied.get(&loc.offset) {
                    Some(&to) => to,
                    None => {
                        let corrupt = |reason: String| StoreError::CorruptBlock {
                            hash,
                            pack: loc.pack,
                            offset: loc.offset,
                            reason,
                        };
                        let RecordBytes { header, payload } =
                            self.store.packs().read_record(loc.pack, loc.offset, loc.stored_len).map_err(|e| corrupt(e.to_string()))?;
                        let want = record_header(&hash, loc.record_raw_len(), loc.stored_len, loc.form.kind());
                        let skip = if matches!(loc.form, Form::Framed { .. }) { 32 } else { 0 };
                        if header[skip..] != want[skip..] {
                            return Err(corrupt("record header does not match the index".into()));
                        }
                        let to = self.append(&[&header, &payload], Some(id))?;
                        copied.insert(loc.offset, to);
                        to
                    }
                };
                moved.push((hash, BlockLoc { pack, offset, ..loc }));
            }
            moved
        };
        self.sync_packs()?;
        {
            let mut blocks = txn.open_table(BLOCKS).map_err(StoreError::table_op("open", BLOCKS.name()))?;
            for (hash, loc) in &moved {
                blocks.insert(hash.0.as_slice(), loc.encode().as_slice()).map_err(StoreError::row("write", BLOCKS.name(), hash))?;
            }
            let mut packs = txn.open_table(PACKS).map_err(StoreError::table_op("open", PACKS.name()))?;
            self.record_pack_ends(&mut packs)?;
            packs.remove(id).map_err(StoreError::row("remove", PACKS.name(), id))?;
            let mut meta = txn.open_table(META).map_err(StoreError::table_op("open", META.name()))?;
            let hwm = meta
                .get(META_PACK_HWM)
                .map_err(StoreError::row("read", META.name(), META_PACK_HWM))?
                .and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
                .map(u32::from_le_bytes)
                .unwrap_or(0);
            meta.insert(META_PACK_HWM, hwm.max(id).to_le_bytes().as_slice()).map_err(StoreError::row("write", META.name(), META_PACK_HWM))?;
        }
        txn.commit().map_err(StoreError::txn("commit"))?;
        self.committed = true;
        Ok(moved)
    }
}
