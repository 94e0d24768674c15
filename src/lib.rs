//! nixdag: a content-addressed chunk store for Nix.
//!
//! Data flows one way: [`nix`] turns store paths into NAR streams (and parses them back), [`chunk`] cuts
//! streams into content-defined chunks, [`dag`] names chunks by BLAKE3 and links them into UnixFS DAGs,
//! [`store`] keeps blocks in compressed packs with a redb index and maps Nix hashes to DAG roots. The
//! [`cli`] is a thin layer over those. See `docs/ARCHITECTURE.md`.
#![warn(missing_docs)]
pub mod chunk;
pub mod cli;
pub mod dag;
pub mod gateway;
pub mod nix;
pub mod store;
