//! Nix's on-disk and on-wire formats, implemented here rather than borrowed.
//!
//! `nix-compat` on crates.io is only a placeholder, so nixdag carries its own small, pure
//! implementation of the formats it must speak to Nix byte for byte:
//!
//! - [`hash`]: Nix hashes in every textual form a user types (nix32, hex, base64, SRI) and
//!   [`hash::NarHash`], the identity of a NAR.
//! - [`store_path`]: `/nix/store/<hash>-<name>` paths, validated as Nix validates them.
//! - [`nar`]: the Nix ARchive format: a streaming writer (`nix-store --dump`), a validating
//!   streaming parser, restore (`nix-store --restore`) and the `.ls` listing.
//! - [`narinfo`]: the `.narinfo` text files of binary caches and their signing fingerprint.
//! - [`compression`]: the compressions of a binary cache's NAR files, and a streaming decoder.
//! - [`signing`]: ed25519 keys and signatures in `nix-store --generate-binary-cache-key` format.
//!
//! Everything here is checked against real Nix output (fixtures produced by Nix 2.8 live in
//! `src/nix/testdata/`, and tests drive a locally installed `nix-store` when there is one).
//! The module does no async I/O and imports no storage or HTTP crates, so it could become a
//! crate of its own without a rewrite.

pub mod ca;
pub mod compression;
pub mod hash;
pub mod nar;
pub mod narinfo;
pub mod path_info;
pub mod signing;
pub mod store_path;
