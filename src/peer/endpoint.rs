//! The node's iroh endpoint, offline by construction, and the record of it that `serve` leaves in the
//! store for `nixdag peer show` and `nixdag peer ticket`.
//!
//! Offline means: no relay, no address lookup service (no n0 DNS, no pkarr), no port mapping, no
//! captive-portal or HTTPS probes. A LAN needs none of them, they would send traffic to the internet,
//! and none is reachable from the machines this runs on. Peers are dialled by direct address only.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use iroh::address_lookup::MemoryLookup;
use iroh::endpoint::{presets, PortmapperConfig};
use iroh::{Endpoint, EndpointAddr, EndpointId, NetReportConfig, RelayMode, SecretKey, Watcher};
use iroh_tickets::endpoint::EndpointTicket;
use iroh_tickets::Ticket;

use super::PeerError;

/// Bind an offline endpoint on `listen` (loopback by default, like the HTTP listener). The only address
/// lookup is an in-memory table of the `known` peers (`--peer`, `--peers-file`), so a peer named there
/// is dialled by its id alone.
pub async fn bind(secret: SecretKey, listen: SocketAddr, known: &[EndpointAddr]) -> Result<Endpoint, PeerError> {
    let bind_err = |e: &dyn std::fmt::Display| PeerError::Bind { listen, reason: e.to_string() };
    let lookup = MemoryLookup::with_provenance("nixdag --peer");
    for peer in known.iter().filter(|p| !p.is_empty()) {
        lookup.add_endpoint_info(peer.clone());
    }
    let builder = Endpoint::builder(presets::Minimal)
        .secret_key(secret)
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .address_lookup(lookup)
        .clear_ip_transports()
        .portmapper_config(PortmapperConfig::Disabled)
        .net_report_config(NetReportConfig::minimal())
        .bind_addr(listen)
        .map_err(|e| bind_err(&e))?;
    builder.bind().await.map_err(|e| bind_err(&e))
}

/// The endpoint's dialable address: its id and direct addresses. iroh fills the direct addresses in
/// shortly after the bind (from the bound sockets and the interfaces), so this waits a moment for them;
/// the bound sockets stand in if none came (a socket bound to a specific address is dialable as it is).
pub async fn dialable_addr(ep: &Endpoint) -> EndpointAddr {
    let mut watch = ep.watch_addr();
    let wait = async {
        loop {
            if watch.get().ip_addrs().next().is_some() {
                return;
            }
            if watch.updated().await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
    let addr = ep.addr();
    if addr.ip_addrs().next().is_some() {
        return addr;
    }
    ep.bound_sockets().into_iter().filter(|s| !s.ip().is_unspecified()).fold(addr, |a, s| a.with_ip_addr(s))
}

/// A ticket naming an endpoint and how to reach it (`endpoint…`), as iroh tools print them.
pub fn endpoint_ticket(addr: &EndpointAddr) -> String {
    EndpointTicket::new(addr.clone()).encode_string()
}

/// The peers a `--peers-file` names: one per line, as `--peer` takes them, `#` comments. Each comes with
/// its line number.
pub fn read_peers_file(path: &Path) -> Result<Vec<(usize, String)>, PeerError> {
    let text = std::fs::read_to_string(path).map_err(|e| PeerError::File { what: "peers file", path: path.to_path_buf(), source: e })?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(n, line)| (n + 1, line.split('#').next().unwrap_or("").trim().to_string()))
        .filter(|(_, l)| !l.is_empty())
        .collect())
}

/// Parse a peer as the user names it: an endpoint ticket (`endpoint…`), `ID@HOST:PORT`, or a bare
/// endpoint id (hex or base32).
pub fn parse_peer(s: &str) -> Result<EndpointAddr, PeerError> {
    let bad = |reason: String| PeerError::BadPeer { input: s.to_string(), reason };
    let s = s.trim();
    if s.starts_with(<EndpointTicket as Ticket>::KIND) {
        let t = EndpointTicket::decode_string(s).map_err(|e| bad(format!("not an endpoint ticket: {e}")))?;
        return Ok(t.endpoint_addr().clone());
    }
    let (id, at) = match s.split_once('@') {
        Some((id, at)) => (id, Some(at)),
        None => (s, None),
    };
    let id = id.parse::<EndpointId>().map_err(|e| bad(format!("not an endpoint id: {e}")))?;
    let mut addr = EndpointAddr::new(id);
    if let Some(at) = at {
        for a in at.split(',') {
            let sock: SocketAddr = a.parse().map_err(|_| bad(format!("{a:?} is not an IP address and port")))?;
            addr = addr.with_ip_addr(sock);
        }
    }
    Ok(addr)
}

/// Parse an endpoint id (64 hex digits, or iroh's base32 form).
pub fn parse_id(s: &str) -> Result<EndpointId, PeerError> {
    s.trim().parse::<EndpointId>().map_err(|e| PeerError::BadPeer {
        input: s.to_string(),
        reason: format!("not an endpoint id: {e}"),
    })
}

/// What a running `serve` tells other commands about its endpoint: `STORE/peer/endpoint.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EndpointRecord {
    /// The endpoint id (hex).
    pub endpoint_id: String,
    /// The direct addresses it answers on.
    pub addrs: Vec<SocketAddr>,
    /// The `serve` process, so a record a crash left behind is recognised as stale.
    pub pid: u32,
    /// Its HTTP gateway (`http://HOST:PORT`), which other commands on the store ask instead of the peers
    /// themselves (`fetch-src`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// Where `serve` records its live endpoint.
pub fn record_path(store_dir: &Path) -> PathBuf {
    store_dir.join("peer").join("endpoint.json")
}

impl EndpointRecord {
    /// The record of `addr`, for this process, whose gateway listens on `gateway` (a wildcard address is
    /// recorded as loopback: the readers run on this machine).
    pub fn of(addr: &EndpointAddr, gateway: Option<SocketAddr>) -> Self {
        let gateway = gateway.map(|mut g| {
            if g.ip().is_unspecified() {
                g.set_ip(if g.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
            }
            format!("http://{g}")
        });
        EndpointRecord {
            endpoint_id: addr.id.to_string(),
            addrs: addr.ip_addrs().copied().collect(),
            pid: std::process::id(),
            gateway,
        }
    }

    /// The address it records.
    pub fn addr(&self, path: &Path) -> Result<EndpointAddr, PeerError> {
        let id = parse_id(&self.endpoint_id).map_err(|e| PeerError::BadFile {
            what: "endpoint record",
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(self.addrs.iter().fold(EndpointAddr::new(id), |a, s| a.with_ip_addr(*s)))
    }

    /// Write it (whole, under a temporary name, then renamed: a reader never sees half a record).
    pub fn write(&self, store_dir: &Path) -> Result<(), PeerError> {
        let path = record_path(store_dir);
        let err = |source| PeerError::File { what: "endpoint record", path: path.clone(), source };
        let dir = path.parent().unwrap_or(store_dir);
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = dir.join(format!(".endpoint.json.{}", std::process::id()));
        let json = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        std::fs::write(&tmp, json).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }

    /// The record of a `serve` that is running now, if any. A record whose process is gone (a crash, a
    /// kill -9) is ignored.
    pub fn read_live(store_dir: &Path) -> Result<Option<(EndpointRecord, EndpointAddr)>, PeerError> {
        let path = record_path(store_dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(PeerError::File { what: "endpoint record", path, source }),
        };
        let rec: EndpointRecord = serde_json::from_slice(&bytes).map_err(|e| PeerError::BadFile {
            what: "endpoint record",
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if !process_alive(rec.pid) {
            return Ok(None);
        }
        let addr = rec.addr(&path)?;
        Ok(Some((rec, addr)))
    }

    /// Remove this process's record (on a clean exit); a newer `serve`'s record is left alone.
    pub fn remove_own(store_dir: &Path) {
        let path = record_path(store_dir);
        let own = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<EndpointRecord>(&b).ok())
            .is_some_and(|r| r.pid == std::process::id());
        if own {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Whether a process with this id exists (signal 0 checks without sending anything).
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> EndpointId {
        SecretKey::from_bytes(&[3; 32]).public()
    }

    #[test]
    fn peers_parse_as_tickets_id_at_addr_and_bare_ids() {
        let addr = EndpointAddr::new(id()).with_ip_addr("127.0.0.1:4000".parse().unwrap());
        assert_eq!(parse_peer(&endpoint_ticket(&addr)).unwrap(), addr);
        assert_eq!(parse_peer(&format!("{}@127.0.0.1:4000", id())).unwrap(), addr);
        let two = parse_peer(&format!("{}@127.0.0.1:4000,[::1]:5", id())).unwrap();
        assert_eq!(two.ip_addrs().count(), 2);
        assert_eq!(parse_peer(&id().to_string()).unwrap(), EndpointAddr::new(id()));
        for bad in ["", "nonsense", "endpointzzz", &format!("{}@localhost", id())] {
            assert!(matches!(parse_peer(bad), Err(PeerError::BadPeer { .. })), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_record_of_a_dead_process_is_not_live() {
        let dir = tempfile::tempdir().unwrap();
        let addr = EndpointAddr::new(id()).with_ip_addr("127.0.0.1:4000".parse().unwrap());
        let rec = EndpointRecord::of(&addr, Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(rec.gateway.as_deref(), Some("http://127.0.0.1:8080"));
        rec.write(dir.path()).unwrap();
        let (_, live) = EndpointRecord::read_live(dir.path()).unwrap().expect("this process is alive");
        assert_eq!(live, addr);
        // pid_max is at most 2^22: this one cannot exist.
        EndpointRecord { pid: 1 << 23, ..rec }.write(dir.path()).unwrap();
        assert!(EndpointRecord::read_live(dir.path()).unwrap().is_none());
        // Not ours to remove.
        EndpointRecord::remove_own(dir.path());
        assert!(record_path(dir.path()).exists());
    }
}
