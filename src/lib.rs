//! nixdag: a content-addressed chunk store for Nix.
//!
//! Data flows one way: Nix store paths become NAR streams, which are cut into content-defined chunks,
//! named by BLAKE3 and linked into UnixFS DAGs, kept in compressed packs with a redb index ([`Store`]),
//! and served through the [`Service`] by its doors: the HTTP binary cache ([`Gateway`]), and peers over
//! iroh (`serve --peering`, docs/PEERS.md). See `docs/ARCHITECTURE.md`.
//!
//! The public face is the list below; the modules behind it are private. Fuzz targets, benches and
//! examples reach the internals they test through the `internals` feature, which is not part of the API.
#![warn(missing_docs)]
// Errors carry the CIDs, roots and offsets a reader needs to act on them; they are cold, so their size
// (over clippy's 128-byte line) costs nothing measurable and boxing them would cost clarity.
#![allow(clippy::result_large_err)]
// Without `internals`, items only fuzz targets and benches use are unused by the library itself.
#![cfg_attr(not(feature = "internals"), allow(dead_code))]

/// Declare the modules: private, or public (hidden from the docs) for fuzzing, benches and examples.
macro_rules! modules {
    ($($name:ident),*) => {$(
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        mod $name;
    )*};
}
modules!(chunk, dag, fetch, gateway, import, local_nix, nix, peer, recompress, service, stats, store, upstream, warm);
mod cli;

// Nix's own formats.
pub use crate::nix::hash::{HashAlgo, NarHash, NixHash};
pub use crate::nix::narinfo::NarInfo;
pub use crate::nix::signing::{PublicKey, SecretKey};
pub use crate::nix::store_path::{StorePath, StorePathHash};
// The store (blocks, manifests, gc, verify), its DAGs, and the pipelines that fill it.
pub use crate::chunk::ChunkerConfig;
pub use crate::dag::{BlockHash, BlockSource, Cid, DagReadError, DagReader};
pub use crate::import::{add_file, add_nar, add_path, FileAdded, NarAdded, RepackReport};
pub use crate::store::{GcReport, StorageConfig, Store, StoreError, StoreStats, VerifyReport};
// The service every door calls.
pub use crate::service::{Counters, NarReader, Refusal, Service, ServiceConfig, ServiceError, Verdict};
// The HTTP binary cache, for programs that embed it.
pub use crate::gateway::key::load_or_create as load_or_create_key;
pub use crate::gateway::server::serve;
pub use crate::gateway::{
    Cidr, ClientAddr, ConnLimits, Gateway, GatewayConfig, Limits, ServedCompression, UploadPolicy,
};

/// The `nixdag` command line: parse the arguments, run, print the error chain, return the exit status.
/// What `src/main.rs` calls; the commands themselves are not part of the library.
#[doc(hidden)]
pub fn cli_main() -> std::process::ExitCode {
    cli::main()
}
