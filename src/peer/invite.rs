//! Invites: a secret a node hands out so that a new node can join without the operator copying its
//! endpoint id into an allow list.
//!
//! `nixdag peer invite [--expires 2h] [--uses N]` makes one: an 8-byte id and a 32-byte random token,
//! printed once inside an invite ticket (the inviting endpoint's address, the id, the token). The store
//! keeps only the token's BLAKE3 hash (`STORE/peer/invites.json`, mode 0600), so a copy of the store
//! directory does not leak usable invites. A node started with `serve --invite TICKET` (or `--peer
//! TICKET`) dials the inviting node on `/nixdag/invite/1` and presents the token; the inviting node
//! compares hashes (BLAKE3's `Hash` equality is constant-time), checks that the invite is neither
//! revoked, expired nor used up, and records the presenter's TLS-proven endpoint id in the invite. From
//! then on that id is allowed like an `--allow-peer` id, across restarts, without the token, until the
//! invite is revoked (revoking withdraws what the invite granted).
//!
//! The file is shared by `serve` and the `peer invite`/`peer revoke` commands, which run beside it: every
//! change is a read-modify-write under an exclusive lock (`STORE/peer/invites.lock`), written whole under
//! a temporary name and renamed, so a reader never sees half a file; the running `serve` re-reads it when
//! its (mtime, length, inode) changed, as it does the allow file.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{Endpoint, EndpointAddr, EndpointId};

use super::PeerError;

/// The ALPN of the invite protocol.
pub const ALPN: &[u8] = b"/nixdag/invite/1";
/// What an invite ticket starts with (then `.`-separated: id, token, endpoint ticket).
pub const TICKET_PREFIX: &str = "nixdaginvite1";
/// Request kind: present a token.
const REDEEM: u8 = 1;
/// A request is exactly this long: kind, id, token.
pub const REQUEST_LEN: usize = 1 + 8 + 32;
/// Time a peer has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An invite's id: random, public (it names the invite in `peer invite --list` and `peer revoke`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InviteId(pub [u8; 8]);

impl std::fmt::Display for InviteId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl std::str::FromStr for InviteId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let b = data_encoding::HEXLOWER_PERMISSIVE.decode(s.trim().as_bytes()).map_err(|_| "not hex".to_string())?;
        Ok(InviteId(b.try_into().map_err(|_| "not 16 hex digits".to_string())?))
    }
}

/// What a new node is given: where to go and what to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteTicket {
    /// The inviting endpoint.
    pub addr: EndpointAddr,
    /// Which invite.
    pub id: InviteId,
    /// The secret (never stored by the inviting node, only its hash).
    pub token: [u8; 32],
}

impl InviteTicket {
    /// `nixdaginvite1.<id hex>.<token hex>.<endpoint ticket>`.
    pub fn encode(&self) -> String {
        format!(
            "{TICKET_PREFIX}.{}.{}.{}",
            self.id,
            data_encoding::HEXLOWER.encode(&self.token),
            super::endpoint::endpoint_ticket(&self.addr)
        )
    }

    /// Whether `s` looks like an invite ticket (so `--peer` can take one).
    pub fn is_invite(s: &str) -> bool {
        s.trim().starts_with(TICKET_PREFIX)
    }

    /// Parse what [`InviteTicket::encode`] wrote.
    pub fn parse(s: &str) -> Result<InviteTicket, PeerError> {
        let bad =
            |reason: &str| PeerError::BadPeer { input: s.to_string(), reason: format!("not an invite: {reason}") };
        let mut parts = s.trim().splitn(4, '.');
        if parts.next() != Some(TICKET_PREFIX) {
            return Err(bad("it does not start with nixdaginvite1."));
        }
        let id: InviteId = parts.next().ok_or_else(|| bad("no id"))?.parse().map_err(|e: String| bad(&e))?;
        let token = parts.next().ok_or_else(|| bad("no token"))?;
        let token = data_encoding::HEXLOWER_PERMISSIVE.decode(token.as_bytes()).map_err(|_| bad("token not hex"))?;
        let token: [u8; 32] = token.try_into().map_err(|_| bad("token not 32 bytes"))?;
        let addr = super::endpoint::parse_peer(parts.next().ok_or_else(|| bad("no endpoint"))?)?;
        Ok(InviteTicket { addr, id, token })
    }
}

/// The inviting node's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The presenter is allowed from now on (also when it was admitted by this invite before: redeeming
    /// again is harmless and uses nothing, so an invitee may keep `--invite` in its command line).
    Admitted,
    /// No such invite, or the wrong token: the two are not told apart.
    Refused,
    /// The invite's time is up.
    Expired,
    /// The invite was used as often as it may be.
    UsedUp,
    /// The operator revoked it.
    Revoked,
}

impl Verdict {
    /// Its byte on the wire (0 is reserved).
    pub fn code(self) -> u8 {
        match self {
            Verdict::Admitted => 1,
            Verdict::Refused => 2,
            Verdict::Expired => 3,
            Verdict::UsedUp => 4,
            Verdict::Revoked => 5,
        }
    }

    /// The verdict a byte names.
    pub fn from_code(b: u8) -> Option<Verdict> {
        Some(match b {
            1 => Verdict::Admitted,
            2 => Verdict::Refused,
            3 => Verdict::Expired,
            4 => Verdict::UsedUp,
            5 => Verdict::Revoked,
            _ => return None,
        })
    }

    /// For logs.
    pub fn describe(self) -> &'static str {
        match self {
            Verdict::Admitted => "admitted",
            Verdict::Refused => "refused (no such invite, or a wrong token)",
            Verdict::Expired => "refused: the invite expired",
            Verdict::UsedUp => "refused: the invite is used up",
            Verdict::Revoked => "refused: the invite was revoked",
        }
    }
}

/// The request bytes: `01 [8] id [32] token`.
pub fn encode_request(id: &InviteId, token: &[u8; 32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(REQUEST_LEN);
    v.push(REDEEM);
    v.extend_from_slice(&id.0);
    v.extend_from_slice(token);
    v
}

/// Parse a request; `None` for anything but exactly one well-formed REDEEM.
pub fn decode_request(b: &[u8]) -> Option<(InviteId, [u8; 32])> {
    if b.len() != REQUEST_LEN || b[0] != REDEEM {
        return None;
    }
    let id = InviteId(b[1..9].try_into().ok()?);
    let token: [u8; 32] = b[9..41].try_into().ok()?;
    Some((id, token))
}

/// One invite as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Invite {
    /// Its id (16 hex digits).
    pub id: String,
    /// BLAKE3 of the token (64 hex digits): the token itself is never stored.
    pub token_blake3: String,
    /// Unix seconds it was made.
    pub created: u64,
    /// Unix seconds from which it is refused; `None`: never expires.
    pub expires: Option<u64>,
    /// How many nodes it may admit.
    pub uses: u32,
    /// How many it admitted.
    pub used: u32,
    /// Revoked by the operator: refused, and the nodes it admitted are no longer allowed.
    pub revoked: bool,
    /// The endpoint ids it admitted (hex).
    pub admitted: Vec<String>,
}

impl Invite {
    /// `active`, `expired`, `used up` or `revoked`, at `now`.
    pub fn state(&self, now: u64) -> &'static str {
        if self.revoked {
            "revoked"
        } else if self.expires.is_some_and(|e| now >= e) {
            "expired"
        } else if self.used >= self.uses {
            "used up"
        } else {
            "active"
        }
    }
}

/// `STORE/peer/invites.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InviteFile {
    /// Every invite made and not yet pruned, revoked ones included (so their ids stay recognisable).
    pub invites: Vec<Invite>,
}

impl InviteFile {
    /// The endpoint ids that invites not revoked admitted.
    pub fn admitted(&self) -> HashSet<EndpointId> {
        self.invites
            .iter()
            .filter(|i| !i.revoked)
            .flat_map(|i| i.admitted.iter())
            .filter_map(|id| id.parse::<EndpointId>().ok())
            .collect()
    }
}

/// Where the store keeps its invites.
pub fn invites_path(store_dir: &Path) -> PathBuf {
    store_dir.join("peer").join("invites.json")
}

fn lock_path(store_dir: &Path) -> PathBuf {
    store_dir.join("peer").join("invites.lock")
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn file_err(path: &Path) -> impl Fn(std::io::Error) -> PeerError + '_ {
    move |source| PeerError::File { what: "invites", path: path.to_path_buf(), source }
}

/// Read the invites (none when the file does not exist).
pub fn read(store_dir: &Path) -> Result<InviteFile, PeerError> {
    read_at(&invites_path(store_dir))
}

fn read_at(path: &Path) -> Result<InviteFile, PeerError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(InviteFile::default()),
        Err(e) => return Err(file_err(path)(e)),
    };
    serde_json::from_slice(&bytes).map_err(|e| PeerError::BadFile {
        what: "invites",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Change the invites under the lock: `f` gets the file as it is now and says whether it changed it;
/// a changed file is written whole (mode 0600) and renamed into place.
pub fn update<R>(store_dir: &Path, f: impl FnOnce(&mut InviteFile) -> (bool, R)) -> Result<R, PeerError> {
    let path = invites_path(store_dir);
    let dir = path.parent().unwrap_or(store_dir).to_path_buf();
    fs::create_dir_all(&dir).map_err(file_err(&dir))?;
    let lock_at = lock_path(store_dir);
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_at)
        .map_err(file_err(&lock_at))?;
    fs2::FileExt::lock_exclusive(&lock).map_err(file_err(&lock_at))?;
    let mut file = read_at(&path)?;
    let (changed, r) = f(&mut file);
    if changed {
        let tmp = dir.join(format!(".invites.json.{}", std::process::id()));
        let json = serde_json::to_vec_pretty(&file).map_err(|e| file_err(&path)(std::io::Error::other(e)))?;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(file_err(&tmp))?;
        out.write_all(&json).and_then(|_| out.sync_all()).map_err(file_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(file_err(&path))?;
    }
    // The lock is released when `lock` is closed.
    drop(lock);
    Ok(r)
}

/// Make an invite for `addr`: `uses` nodes may redeem it until `expires` from now (`None`: never).
/// Returns the ticket (the only place the token ever appears) and the stored record.
pub fn create(
    store_dir: &Path,
    addr: EndpointAddr,
    expires: Option<Duration>,
    uses: u32,
) -> Result<(InviteTicket, Invite), PeerError> {
    let mut random = [0u8; 40];
    getrandom::getrandom(&mut random).map_err(|e| PeerError::Random(e.to_string()))?;
    let mut id = [0u8; 8];
    let mut token = [0u8; 32];
    id.copy_from_slice(&random[..8]);
    token.copy_from_slice(&random[8..]);
    let now = now();
    let invite = Invite {
        id: InviteId(id).to_string(),
        token_blake3: blake3::hash(&token).to_hex().to_string(),
        created: now,
        expires: expires.map(|d| now.saturating_add(d.as_secs().max(1))),
        uses,
        used: 0,
        revoked: false,
        admitted: Vec::new(),
    };
    let rec = invite.clone();
    update(store_dir, move |f| {
        f.invites.push(invite);
        (true, ())
    })?;
    Ok((InviteTicket { addr, id: InviteId(id), token }, rec))
}

/// Revoke invite `id`; `Ok(false)` when there is no such invite.
pub fn revoke(store_dir: &Path, id: &InviteId) -> Result<bool, PeerError> {
    let id = id.to_string();
    update(store_dir, |f| match f.invites.iter_mut().find(|i| i.id == id) {
        Some(i) => {
            let changed = !i.revoked;
            i.revoked = true;
            (changed, true)
        }
        None => (false, false),
    })
}

/// Judge `remote`'s presentation of `token` for invite `id` at `now`, and record an admission.
pub fn redeem(
    store_dir: &Path,
    id: &InviteId,
    token: &[u8; 32],
    remote: &EndpointId,
    now: u64,
) -> Result<Verdict, PeerError> {
    let (id, remote) = (id.to_string(), remote.to_string());
    let presented = blake3::hash(token);
    update(store_dir, |f| {
        let Some(inv) = f.invites.iter_mut().find(|i| i.id == id) else { return (false, Verdict::Refused) };
        // `blake3::Hash`'s `==` is constant-time: how much of a guess matched does not show in the time.
        let matches = blake3::Hash::from_hex(&inv.token_blake3).is_ok_and(|stored| stored == presented);
        if !matches {
            return (false, Verdict::Refused);
        }
        if inv.revoked {
            return (false, Verdict::Revoked);
        }
        if inv.admitted.contains(&remote) {
            return (false, Verdict::Admitted);
        }
        if inv.expires.is_some_and(|e| now >= e) {
            return (false, Verdict::Expired);
        }
        if inv.used >= inv.uses {
            return (false, Verdict::UsedUp);
        }
        inv.used += 1;
        inv.admitted.push(remote);
        (true, Verdict::Admitted)
    })
}

/// The admitted ids as the running `serve` sees them: re-read when the file changed (one `stat` per
/// check). A file that no longer parses keeps what was read before (with a warning), as the allow file
/// does; a file that is gone admits nobody.
#[derive(Debug)]
pub struct Admitted {
    path: PathBuf,
    state: Mutex<(Option<Stamp>, HashSet<EndpointId>)>,
}

type Stamp = (SystemTime, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

impl Admitted {
    /// The invites of the store at `store_dir`.
    pub fn new(store_dir: &Path) -> Result<Admitted, PeerError> {
        let path = invites_path(store_dir);
        let s = stamp(&path);
        let ids = read_at(&path)?.admitted();
        Ok(Admitted { path, state: Mutex::new((s, ids)) })
    }

    /// Whether an invite admitted `id` (and was not revoked since).
    pub fn allows(&self, id: &EndpointId) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.path);
        if now != state.0 {
            match now {
                None => *state = (None, HashSet::new()),
                Some(s) => match read_at(&self.path) {
                    Ok(f) => *state = (Some(s), f.admitted()),
                    Err(e) => {
                        tracing::warn!("{e}; keeping the {} invited ids read before", state.1.len());
                        state.0 = Some(s);
                    }
                },
            }
        }
        state.1.contains(id)
    }
}

/// The inviting side of `/nixdag/invite/1`. Not behind the access rule (the presenter is not allowed
/// yet): it answers one request per connection, of a fixed size, within [`REQUEST_TIMEOUT`].
#[derive(Debug, Clone)]
pub struct InviteProtocol {
    store_dir: PathBuf,
}

impl InviteProtocol {
    /// Redeem against the invites of the store at `store_dir`.
    pub fn new(store_dir: PathBuf) -> Self {
        InviteProtocol { store_dir }
    }
}

impl ProtocolHandler for InviteProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let remote = conn.remote_id();
        let Ok(Ok((mut send, mut recv))) = tokio::time::timeout(REQUEST_TIMEOUT, conn.accept_bi()).await else {
            return Ok(());
        };
        let req = match tokio::time::timeout(REQUEST_TIMEOUT, recv.read_to_end(REQUEST_LEN)).await {
            Ok(Ok(b)) => b,
            _ => {
                conn.close(0u32.into(), b"bad request");
                return Ok(());
            }
        };
        let verdict = match decode_request(&req) {
            Some((id, token)) => {
                let dir = self.store_dir.clone();
                let judged = tokio::task::spawn_blocking(move || redeem(&dir, &id, &token, &remote, now())).await;
                match judged {
                    Ok(Ok(v)) => {
                        tracing::info!(peer = %remote, invite = %id, "invite presented: {}", v.describe());
                        v
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(peer = %remote, "invite: {e}");
                        Verdict::Refused
                    }
                    Err(e) => {
                        tracing::warn!(peer = %remote, "invite: {e}");
                        Verdict::Refused
                    }
                }
            }
            None => Verdict::Refused,
        };
        let _ = send.write_all(&[verdict.code()]).await;
        let _ = send.finish();
        // Let the presenter read the answer and close; do not wait for ever.
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, conn.closed()).await;
        Ok(())
    }
}

/// Present `ticket`'s token to the inviting node from `ep`: its verdict, or why there was none.
pub async fn present(ep: &Endpoint, ticket: &InviteTicket, timeout: Duration) -> Result<Verdict, String> {
    let run = async {
        let conn = ep.connect(ticket.addr.clone(), ALPN).await.map_err(|e| format!("connecting: {e}"))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("opening a stream: {e}"))?;
        send.write_all(&encode_request(&ticket.id, &ticket.token)).await.map_err(|e| format!("sending: {e}"))?;
        send.finish().map_err(|e| format!("sending: {e}"))?;
        let answer = recv.read_to_end(16).await.map_err(|e| format!("reading the answer: {e}"))?;
        conn.close(0u32.into(), b"done");
        match answer.as_slice() {
            [b] => Verdict::from_code(*b).ok_or_else(|| format!("unknown answer {b}")),
            other => Err(format!("an answer of {} bytes", other.len())),
        }
    };
    tokio::time::timeout(timeout, run).await.map_err(|_| format!("no answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> EndpointId {
        iroh::SecretKey::from_bytes(&[n; 32]).public()
    }

    #[test]
    fn request_and_answer_wire_format() {
        // Golden bytes of /nixdag/invite/1 (docs/PEERS.md).
        let id = InviteId([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
        let token = [0xab; 32];
        let req = encode_request(&id, &token);
        let mut want = vec![0x01, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
        want.extend_from_slice(&[0xab; 32]);
        assert_eq!(req, want);
        assert_eq!(req.len(), REQUEST_LEN);
        assert_eq!(decode_request(&req), Some((id, token)));
        assert_eq!(decode_request(&req[..40]), None, "short");
        assert_eq!(decode_request(&[req.clone(), vec![0]].concat()), None, "long");
        let mut other = req.clone();
        other[0] = 2;
        assert_eq!(decode_request(&other), None, "unknown kind");
        let codes: Vec<u8> = [Verdict::Admitted, Verdict::Refused, Verdict::Expired, Verdict::UsedUp, Verdict::Revoked]
            .iter()
            .map(|v| v.code())
            .collect();
        assert_eq!(codes, [1, 2, 3, 4, 5]);
        for c in 1..=5 {
            assert_eq!(Verdict::from_code(c).map(Verdict::code), Some(c));
        }
        assert_eq!(Verdict::from_code(0), None);
        assert_eq!(Verdict::from_code(6), None);
    }

    #[test]
    fn tickets_round_trip_and_bad_ones_are_refused() {
        let addr = EndpointAddr::new(id(1)).with_ip_addr("10.77.0.1:4000".parse().unwrap());
        let t = InviteTicket { addr, id: InviteId([7; 8]), token: [9; 32] };
        let s = t.encode();
        assert!(s.starts_with("nixdaginvite1.0707070707070707.0909"), "{s}");
        assert!(InviteTicket::is_invite(&s));
        assert_eq!(InviteTicket::parse(&s).unwrap(), t);
        for bad in ["", "nixdaginvite1", "nixdaginvite1.zz.00.x", &s.replace(".0909", ".09")] {
            assert!(matches!(InviteTicket::parse(bad), Err(PeerError::BadPeer { .. })), "{bad:?}");
        }
    }

    #[test]
    fn an_invite_admits_its_uses_then_stops_and_expired_or_revoked_ones_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let addr = EndpointAddr::new(id(1));
        let (t, rec) = create(d, addr.clone(), Some(Duration::from_secs(3600)), 2).unwrap();
        // Stored hashed, 0600.
        let text = fs::read_to_string(invites_path(d)).unwrap();
        assert!(!text.contains(&data_encoding::HEXLOWER.encode(&t.token)), "the token is not stored");
        assert!(text.contains(&rec.token_blake3));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(invites_path(d)).unwrap().permissions().mode() & 0o777, 0o600);
        let now = now();
        let admitted = Admitted::new(d).unwrap();
        assert!(!admitted.allows(&id(2)));
        // A wrong token, an unknown id: refused alike, nothing used.
        assert_eq!(redeem(d, &t.id, &[0; 32], &id(2), now).unwrap(), Verdict::Refused);
        assert_eq!(redeem(d, &InviteId([0; 8]), &t.token, &id(2), now).unwrap(), Verdict::Refused);
        assert_eq!(redeem(d, &t.id, &t.token, &id(2), now).unwrap(), Verdict::Admitted);
        assert_eq!(redeem(d, &t.id, &t.token, &id(2), now).unwrap(), Verdict::Admitted, "again: harmless");
        assert_eq!(redeem(d, &t.id, &t.token, &id(3), now).unwrap(), Verdict::Admitted);
        assert_eq!(redeem(d, &t.id, &t.token, &id(4), now).unwrap(), Verdict::UsedUp);
        assert!(admitted.allows(&id(2)) && admitted.allows(&id(3)) && !admitted.allows(&id(4)));
        let f = read(d).unwrap();
        assert_eq!((f.invites[0].used, f.invites[0].state(now)), (2, "used up"));
        // Expired.
        let (t2, _) = create(d, addr.clone(), Some(Duration::from_secs(1)), 5).unwrap();
        assert_eq!(redeem(d, &t2.id, &t2.token, &id(5), now + 2).unwrap(), Verdict::Expired);
        // Revoked: refused, and what it granted is withdrawn.
        let (t3, _) = create(d, addr, None, 5).unwrap();
        assert_eq!(redeem(d, &t3.id, &t3.token, &id(6), now).unwrap(), Verdict::Admitted);
        assert!(admitted.allows(&id(6)));
        assert!(revoke(d, &t3.id).unwrap());
        assert!(!revoke(d, &InviteId([0; 8])).unwrap());
        assert_eq!(redeem(d, &t3.id, &t3.token, &id(7), now).unwrap(), Verdict::Revoked);
        assert_eq!(redeem(d, &t3.id, &t3.token, &id(6), now).unwrap(), Verdict::Revoked);
        assert!(!admitted.allows(&id(6)), "revoking withdraws what the invite granted");
        assert!(admitted.allows(&id(2)), "other invites' admissions stay");
        // A broken file keeps what was read before; a file that is gone admits nobody.
        fs::write(invites_path(d), "{ not json, and longer than before ............................").unwrap();
        assert!(admitted.allows(&id(2)));
        fs::remove_file(invites_path(d)).unwrap();
        assert!(!admitted.allows(&id(2)));
    }
}
