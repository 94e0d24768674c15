//! Following a block's delta and patch bases: what the ingest (may this block be a base?) and the
//! repack (does this chain reach a rebuilt block?) both walk.

use super::error::StoreError;
use super::tables::Form;
use super::Store;
use crate::dag::BlockHash;

/// Where [`Store::walk_bases`] stopped.
pub(crate) enum ChainEnd {
    /// At a block the caller named.
    Stopped,
    /// At a block that is neither a delta nor patched: its form, or `None` when it is missing.
    Ends(Option<Form>),
    /// After 64 blocks (only a damaged index links so many).
    TooLong,
}

impl Store {
    /// Follow a stored block's delta and patch bases, the block itself first, for at most 64 blocks:
    /// [`ChainEnd::Stopped`] at the first that `stop` names, else the form of the block the chain ends in.
    pub(crate) fn walk_bases(
        &self,
        from: BlockHash,
        stop: impl Fn(&BlockHash) -> bool,
    ) -> Result<ChainEnd, StoreError> {
        let mut h = from;
        for _ in 0..64 {
            if stop(&h) {
                return Ok(ChainEnd::Stopped);
            }
            match self.block_loc(&h)?.map(|l| l.form) {
                Some(Form::Delta { base, .. } | Form::Patched { base }) => h = base,
                end => return Ok(ChainEnd::Ends(end)),
            }
        }
        Ok(ChainEnd::TooLong)
    }
}
