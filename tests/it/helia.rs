//! A stock IPFS client, not ours: `@helia/verified-fetch` (tests/ipfs/helia-fetch.mjs) with the gateway
//! as its only trustless gateway and a BLAKE3 hasher, loopback only. It fetches a NAR and a tarball by
//! their root CIDs byte-exact and a byte range; through a proxy that flips a byte of one block it fails
//! and has accepted no wrong byte.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::common::*;
use crate::gateway::Server;

fn helia(gateway: &str, cid: &str, out: &Path, range: Option<&str>) -> (bool, String, String) {
    match range {
        Some(r) => node("helia-fetch.mjs", &[&gateway, &cid, &out, &r]),
        None => node("helia-fetch.mjs", &[&gateway, &cid, &out]),
    }
}

/// A loopback HTTP proxy in front of `upstream` (`host:port`) that flips a byte in the middle of every
/// raw-block answer for one BLAKE3 raw leaf: the first one asked for. Returns its URL and that CID.
fn flipping_proxy(upstream: String) -> (String, Arc<Mutex<Option<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let target = Arc::new(Mutex::new(None::<String>));
    let t = target.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let (upstream, t) = (upstream.clone(), t.clone());
            std::thread::spawn(move || {
                let _ = serve_one(client, &upstream, &t);
            });
        }
    });
    (url, target)
}

/// One request per connection (`Connection: close` both ways); GETs and HEADs carry no body.
fn serve_one(client: TcpStream, upstream: &str, target: &Mutex<Option<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        if !line.to_ascii_lowercase().starts_with("connection:") {
            head.push(line);
        }
    }
    let path = head[0].split_whitespace().nth(1).unwrap_or("").to_string();
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(format!("{}Connection: close\r\n\r\n", head.concat()).as_bytes())?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let leaf = path.strip_prefix("/ipfs/").and_then(|p| p.split('?').next()).filter(|c| c.starts_with("bafkr4"));
    if let Some(leaf) = leaf {
        let mut t = target.lock().unwrap();
        let chosen = t.get_or_insert_with(|| leaf.to_string());
        if chosen == leaf {
            if let Some(split) = resp.windows(4).position(|x| x == b"\r\n\r\n") {
                let body = split + 4;
                if resp.len() > body {
                    let mid = body + (resp.len() - body) / 2;
                    resp[mid] ^= 0x01;
                }
            }
        }
    }
    let mut client = client;
    client.write_all(&resp)?;
    client.flush()
}

#[test]
fn verified_fetch_reads_nars_tarballs_and_ranges_and_rejects_a_flipped_byte() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tree = w.join("tree");
    fs::create_dir_all(&tree).unwrap();
    write_random(&tree.join("data"), 3 << 20, 41);
    fs::write(tree.join("readme"), b"hello\n").unwrap();
    let nar = nix_dump(&tree);
    let tarball = w.join("src-2.0.tar.gz");
    write_random(&tarball, 1_500_000, 42);
    let store = TestStore::new();
    let (_, nar_root, _) = store.add(&[tree.to_str().unwrap()]);
    let (_, file_root, _) = store.add(&["--file", tarball.to_str().unwrap()]);
    let server = Server::start(&store, &[]);

    // A real NAR and a tarball by their root CIDs, byte-exact.
    let out = w.join("out");
    let (ok, _, err) = helia(&server.url, &nar_root, &out, None);
    assert!(ok, "verified-fetch of the NAR: {err}");
    assert!(fs::read(&out).unwrap() == nar, "the NAR verified-fetch returned differs");
    let (ok, _, err) = helia(&server.url, &file_root, &out, None);
    assert!(ok, "verified-fetch of the tarball: {err}");
    assert!(fs::read(&out).unwrap() == fs::read(&tarball).unwrap(), "the tarball differs");
    // A byte range (verified-fetch answers 206 for UnixFS files).
    let (ok, stdout, err) = helia(&server.url, &nar_root, &out, Some("1000000-1299999"));
    assert!(ok, "verified-fetch of a range: {err}");
    assert!(stdout.starts_with("ok: 206 300000"), "{stdout}");
    assert!(fs::read(&out).unwrap() == nar[1_000_000..1_300_000], "the range differs");

    // Through a proxy flipping a byte of one leaf: the client fails, and what it passed on before
    // failing is a prefix of the true NAR (no wrong byte).
    let upstream = server.url.strip_prefix("http://").unwrap().to_string();
    let (proxy, target) = flipping_proxy(upstream);
    let _ = fs::remove_file(&out);
    let (ok, stdout, err) = helia(&proxy, &nar_root, &out, None);
    assert!(target.lock().unwrap().is_some(), "the client asked the proxy for no leaf: {stdout} {err}");
    assert!(!ok, "verified-fetch accepted a flipped byte: {stdout}");
    assert!(err.contains("error: "), "{err}");
    eprintln!("verified-fetch through the flipping proxy: {}", err.lines().last().unwrap_or(""));
    let got = fs::read(&out).unwrap_or_default();
    assert!(got.len() < nar.len() && nar.starts_with(&got), "{} bytes passed on, not a prefix of the NAR", got.len());
}
