//! Where a recorded store path came from, when that changes how it is served: from a peer (served with
//! the signatures it carries, never signed by this node) or from this machine's Nix store (offered only
//! while that store still has the path). Paths added, uploaded or warmed need no mark.

use redb::{TableDefinition, TableHandle};

use super::tables::{FOREIGN, LOCAL};
use super::{Store, StoreError};

impl Store {
    /// Whether the recorded narinfo of this store path came from a source the node does not vouch for
    /// (a peer: [`super::Manifest::ForeignPath`]), so that it is served unsigned by the gateway.
    pub fn is_foreign_path(&self, hash_part: &str) -> Result<bool, StoreError> {
        self.is_marked(&FOREIGN, hash_part)
    }

    /// Whether this store path's NAR came from this machine's Nix store ([`Store::mark_local_path`]).
    pub fn is_local_path(&self, hash_part: &str) -> Result<bool, StoreError> {
        self.is_marked(&LOCAL, hash_part)
    }

    /// Mark a store path as coming from this machine's Nix store. Written before the path itself is
    /// committed: a crash in between leaves a mark on a path the store lacks, which costs nothing,
    /// never a local path without its mark.
    pub fn mark_local_path(&self, hash_part: &str) -> Result<(), StoreError> {
        let txn = self.db().begin_write().map_err(StoreError::txn("begin write"))?;
        {
            let mut t = txn.open_table(LOCAL).map_err(StoreError::table_op("open", LOCAL.name()))?;
            t.insert(hash_part, 0).map_err(StoreError::row("write", LOCAL.name(), hash_part))?;
        }
        txn.commit().map_err(StoreError::txn("commit"))
    }

    fn is_marked(&self, table: &'static TableDefinition<'static, &'static str, u8>, hash_part: &str) -> Result<bool, StoreError> {
        let txn = self.db().begin_read().map_err(StoreError::txn("begin read"))?;
        let t = match txn.open_table(*table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(StoreError::table_op("open", table.name())(e)),
        };
        Ok(t.get(hash_part).map_err(StoreError::row("read", table.name(), hash_part))?.is_some())
    }
}
