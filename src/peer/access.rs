//! Who may fetch: a node serves only the endpoint ids it trusts (`--allow-peer`), or anyone (`--open`).
//!
//! The check sits in front of each protocol handler, after the TLS handshake has proven the remote's
//! endpoint id, so a refused peer gets a closed connection and not one byte of a block. It is per
//! protocol (not an endpoint hook) because an endpoint hook also sees the connections this node makes
//! itself, to peers that need not be on its own allow list.

use std::collections::HashSet;
use std::sync::Arc;

use iroh::endpoint::{Connection, VarInt};
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::EndpointId;

/// The QUIC close code a refused peer sees (HTTP's 403, for the reader of a packet capture).
pub const REFUSED: u32 = 403;

/// Which remote endpoints may use the node's protocols.
#[derive(Debug, Clone)]
pub enum Access {
    /// Anyone who can reach the endpoint (`--open`).
    Open,
    /// Only these ids (`--allow-peer`); empty serves nobody.
    Allow(Arc<HashSet<EndpointId>>),
}

impl Access {
    /// Whether `id` may be served.
    pub fn allows(&self, id: &EndpointId) -> bool {
        match self {
            Access::Open => true,
            Access::Allow(ids) => ids.contains(id),
        }
    }
}

/// A protocol handler that admits only the peers [`Access`] allows.
#[derive(Debug)]
pub struct Gate<P> {
    access: Access,
    inner: P,
}

impl<P> Gate<P> {
    /// Put `inner` behind `access`.
    pub fn new(access: Access, inner: P) -> Self {
        Gate { access, inner }
    }
}

impl<P: ProtocolHandler> ProtocolHandler for Gate<P> {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let id = conn.remote_id();
        if !self.access.allows(&id) {
            tracing::warn!(peer = %id, "refused a peer that is not allowed (see --allow-peer, --open)");
            conn.close(VarInt::from_u32(REFUSED), b"not allowed");
            return Ok(());
        }
        tracing::debug!(peer = %id, "peer admitted");
        self.inner.accept(conn).await
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_ids_pass_unless_open() {
        let a = iroh::SecretKey::from_bytes(&[1; 32]).public();
        let b = iroh::SecretKey::from_bytes(&[2; 32]).public();
        let allow = Access::Allow(Arc::new([a].into_iter().collect()));
        assert!(allow.allows(&a));
        assert!(!allow.allows(&b));
        assert!(!Access::Allow(Arc::default()).allows(&a));
        assert!(Access::Open.allows(&b));
    }
}
