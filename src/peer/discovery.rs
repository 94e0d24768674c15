//! LAN discovery: other nixdag nodes found by mDNS (`iroh-mdns-address-lookup`, on swarm-discovery)
//! become peers the node asks for what it lacks.
//!
//! Finding a node grants it nothing. Whether it may fetch from this node is decided by the access rule
//! alone (allow list, invites, `--open`), at each connection, after TLS proved its id; and what this node
//! takes from it is checked as from any peer (narinfos against the trusted keys, every block against its
//! hash). Discovery only adds addresses to ask.
//!
//! The service name is nixdag's own (`_nixdag1._udp.local`), so plain iroh applications on the LAN are
//! neither found nor told about this node. The announcement carries the endpoint id and its direct
//! addresses, nothing else.

use std::sync::Arc;

use futures_util::StreamExt;
use iroh::Endpoint;
use iroh_mdns_address_lookup::{DiscoveryEvent, MdnsAddressLookup};

use super::{Fetcher, PeerError};

/// The mDNS service nixdag nodes announce themselves under.
pub const SERVICE: &str = "nixdag1";

/// Announce `ep` on the LAN and feed the nodes found to `fetcher`, until the runtime stops. Must run
/// inside the peer runtime (the lookup spawns its tasks there).
pub async fn start(ep: &Endpoint, fetcher: Arc<Fetcher>) -> Result<MdnsAddressLookup, PeerError> {
    let err = |reason: String| PeerError::Discovery(reason);
    let mdns = MdnsAddressLookup::builder().service_name(SERVICE).build(ep.id()).map_err(|e| err(e.to_string()))?;
    // Added to the endpoint's lookups, it is handed the endpoint's addresses to announce (now and when they
    // change), and resolves ids it has seen for dials.
    ep.address_lookup().map_err(|e| err(e.to_string()))?.add(mdns.clone());
    let mut events = mdns.subscribe().await;
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                DiscoveryEvent::Discovered { endpoint_info, .. } => {
                    let addr = endpoint_info.into_endpoint_addr();
                    let addrs: Vec<String> = addr.ip_addrs().map(|a| a.to_string()).collect();
                    tracing::info!(peer = %addr.id, "discovered peer on the LAN at {}", addrs.join(", "));
                    fetcher.discovered(addr);
                }
                DiscoveryEvent::Expired { endpoint_id } => {
                    tracing::info!(peer = %endpoint_id, "a discovered peer stopped announcing itself");
                    fetcher.expired(&endpoint_id);
                }
                _ => {}
            }
        }
    });
    Ok(mdns)
}
