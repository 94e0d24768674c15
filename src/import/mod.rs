//! The pipelines that feed the store: NARs (streams and paths), flat files, compressed tarballs as
//! content plus recipe, and the repack that converts queued tarballs later. Each runs its bytes through
//! the chunker and the DAG builder into one [`Ingest`](crate::store::Ingest) and commits it; the store
//! below never calls back up here.

mod ahead;
mod channel;
mod file;
mod flat;
mod nar;
mod normalize;
mod repack;
mod tarball;

pub use self::ahead::{prove_ahead, with_helpers};
pub use self::channel::{channel, ChannelReader, ChannelSender};
pub use self::file::{add_file, FileAdded};
pub use self::nar::{add_foreign_nar, add_nar, add_path, add_uploaded_nar, NarAdded};
pub use self::repack::{repack, RepackOutcome, RepackReport};
