//! Integration tests: the `nixdag` binary driven as a user would, judged by real Nix (`nix-store --dump`,
//! `nix path-info`) and by an independent IPFS implementation (tests/ipfs). One binary, many modules,
//! as ripgrep does it. `scripts/test` installs what they need (Nix, the npm packages).

mod bad_input;
mod catalogue;
mod common;
mod crash;
mod dedup;
mod evict;
mod fetch_src;
mod gateway;
mod gc;
mod helia;
mod ipfs;
mod local_nix;
mod metrics;
mod ops;
mod origin;
mod peer_access;
mod peer_fetch;
mod peers;
mod rebuilds;
mod roundtrip;
mod security;
mod shared;
mod stats_html;
mod storage;
mod trustless;
mod warm;
mod warm_pull;
mod warm_server;
