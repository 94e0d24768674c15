//! What can go wrong in peering, typed so a caller can tell a bad ticket from a failed bind.

use std::path::PathBuf;

/// An error of the peer door.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// A file in the store (key, endpoint record, ticket registry) could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    File {
        /// What the file is.
        what: &'static str,
        /// Where it is.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file in the store has contents we do not understand.
    #[error("{what} {}: {reason}", path.display())]
    BadFile {
        /// What the file is.
        what: &'static str,
        /// Where it is.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The random number generator failed while making a key.
    #[error("generating the peer key: {0}")]
    Random(String),
    /// `--peer`, `--allow-peer` or a peers file named something that is no endpoint id or ticket.
    #[error("invalid peer {input:?}: {reason}")]
    BadPeer {
        /// What was given.
        input: String,
        /// Why it is refused.
        reason: String,
    },
    /// The endpoint could not be started.
    #[error("starting the iroh endpoint on {listen}: {reason}")]
    Bind {
        /// The address asked for.
        listen: std::net::SocketAddr,
        /// iroh's error.
        reason: String,
    },
    /// LAN discovery (mDNS) could not be started (no IPv4 nor IPv6 multicast, a socket refused).
    #[error("starting LAN discovery: {0}")]
    Discovery(String),
    /// The peer runtime (threads) could not be started.
    #[error("starting the peer runtime: {0}")]
    Runtime(std::io::Error),
    /// A stream's leaves could not be listed (a block missing or damaged).
    #[error(transparent)]
    Dag(#[from] crate::dag::DagReadError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
