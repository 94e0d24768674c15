//! Who may upload (docs/SECURITY.md, "Where uploads are accepted"): by client address or token. Which
//! uploaded narinfos the cache takes is the service's rule (`service::accept`).

use std::net::IpAddr;

use axum::http::{header, HeaderMap};
use data_encoding::BASE64;

use super::error::AppError;

/// An address block, `ADDR/BITS` or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    /// The loopback blocks, 127.0.0.0/8 and ::1: what `--allow-upload` alone admits.
    pub fn loopback() -> Vec<Cidr> {
        vec![
            Cidr { addr: IpAddr::from([127, 0, 0, 0]), bits: 8 },
            Cidr { addr: IpAddr::from(std::net::Ipv6Addr::LOCALHOST), bits: 128 },
        ]
    }

    /// Whether `ip` lies in the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.bits)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("{s:?} is not an address or ADDR/BITS block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0-{max}"))?,
            None => max,
        };
        Ok(Cidr { addr, bits })
    }
}

/// Who may upload (`PUT`), and what an upload may cost.
#[derive(Debug, Clone)]
pub struct UploadPolicy {
    /// A token that admits an uploader from any address (`Authorization: Bearer`, or Basic with the token
    /// as password, which is what Nix sends from a netrc file).
    pub token: Option<String>,
    /// Client addresses admitted without a token (`--allow-upload`: loopback; `--allow-upload-from`).
    pub allow_from: Vec<Cidr>,
    /// Largest NAR accepted, decompressed.
    pub max_nar_size: u64,
    /// Largest ratio of decompressed to uploaded bytes (a 145 KB zstd bomb once expanded to 4 GiB).
    pub max_expansion: u64,
}

impl Default for UploadPolicy {
    /// Nobody may upload.
    fn default() -> Self {
        UploadPolicy { token: None, allow_from: Vec::new(), max_nar_size: 64 << 30, max_expansion: 1000 }
    }
}

impl UploadPolicy {
    /// Whether anyone may upload at all.
    pub fn enabled(&self) -> bool {
        self.token.is_some() || !self.allow_from.is_empty()
    }

    /// Admit an upload from `client` with these headers, or say why not. Either way of admission is
    /// the operator's choice of trust, so an admitted uploader's paths are signed by the gateway.
    pub fn authorize(&self, headers: &HeaderMap, client: IpAddr) -> Result<(), AppError> {
        if !self.enabled() {
            return Err(AppError::UploadsDisabled);
        }
        if let Some(token) = &self.token {
            if presented_token(headers).is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
                return Ok(());
            }
        }
        if self.allow_from.iter().any(|c| c.contains(client)) {
            return Ok(());
        }
        if self.token.is_some() {
            Err(AppError::Unauthorized)
        } else {
            Err(AppError::Forbidden(format!("uploads from {client} are not allowed (see --allow-upload-from)")))
        }
    }
}

fn presented_token(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())?;
    if let Some(b) = auth.strip_prefix("Bearer ") {
        return Some(b.trim().to_string());
    }
    let b = auth.strip_prefix("Basic ")?;
    let d = BASE64.decode(b.trim().as_bytes()).ok()?;
    let s = String::from_utf8(d).ok()?;
    s.split_once(':').map(|(_, pass)| pass.to_string())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one: Cidr = "192.168.1.5".parse().unwrap();
        assert!(one.contains("192.168.1.5".parse().unwrap()));
        assert!(!one.contains("192.168.1.6".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::loopback().iter().any(|c| c.contains("127.0.0.2".parse().unwrap())));
        assert!(Cidr::loopback().iter().any(|c| c.contains("::1".parse().unwrap())));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_upload_alone_admits_only_loopback() {
        let p = UploadPolicy { allow_from: Cidr::loopback(), ..UploadPolicy::default() };
        let h = HeaderMap::new();
        assert!(p.authorize(&h, "127.0.0.1".parse().unwrap()).is_ok());
        assert!(matches!(p.authorize(&h, "192.168.1.9".parse().unwrap()), Err(AppError::Forbidden(_))));
        let off = UploadPolicy::default();
        assert!(matches!(off.authorize(&h, "127.0.0.1".parse().unwrap()), Err(AppError::UploadsDisabled)));
        let token = UploadPolicy { token: Some("s3cret".into()), ..UploadPolicy::default() };
        let mut auth = HeaderMap::new();
        auth.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(token.authorize(&auth, "192.168.1.9".parse().unwrap()).is_ok());
        assert!(matches!(token.authorize(&h, "127.0.0.1".parse().unwrap()), Err(AppError::Unauthorized)));
    }
}
