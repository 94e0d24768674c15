//! nixdag: a content-addressed chunk store for Nix.
//!
//! Data flows one way: [`nix`] turns store paths into NAR streams (and parses them back), [`chunk`] cuts
//! streams into content-defined chunks, [`dag`] names chunks by BLAKE3 and links them into UnixFS DAGs,
//! [`store`] keeps blocks in compressed packs with a redb index and maps Nix hashes to DAG roots. The
//! [`cli`] is a thin layer over those. See `docs/ARCHITECTURE.md`.
#![warn(missing_docs)]
// Errors carry the CIDs, roots and offsets a reader needs to act on them; they are cold, so their size
// (over clippy's 128-byte line) costs nothing measurable and boxing them would cost clarity.
#![allow(clippy::result_large_err)]
pub mod chunk;
pub mod cli;
pub mod dag;
pub mod gateway;
pub mod nix;
pub mod recompress;
pub mod service;
pub mod store;
