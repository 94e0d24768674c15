//! Hash to CID and the catalogue snapshot (docs/IPFS.md): the narinfo names its NAR's root CID in a
//! field stock Nix ignores (signatures still check), and `nixdag snapshot`, taken while `serve` runs,
//! lets the independent verifier in tests/ipfs resolve a store path from the snapshot CID alone.

use std::fs;
use std::path::Path;

use crate::common::*;
use crate::gateway::{build_closure, copy_from_gateway, curl_full, curl_ok, Server};

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).map(str::trim)
}

#[test]
fn narinfo_names_the_root_and_a_snapshot_resolves_a_store_path() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let top = build_closure(w, 2_000_000);
    let store = TestStore::new();
    let out = store.ok(&["add", "--closure", top.to_str().unwrap()]);
    let top_line = out.lines().find(|l| l.starts_with(top.to_str().unwrap())).expect("add names the top path");
    let root = top_line.split_whitespace().nth(2).unwrap().to_string();
    let tarball = w.join("src-1.0.tar.gz");
    write_random(&tarball, 700_000, 5);
    let (file_hash, file_root, _) = store.add(&["--file", tarball.to_str().unwrap()]);
    let server = Server::start(&store, &[]);

    // The narinfo names the root CID in an extension field…
    let hash_part = &top.file_name().unwrap().to_str().unwrap()[..32];
    let narinfo = curl_ok(&format!("{}/{hash_part}.narinfo", server.url));
    assert!(narinfo.ends_with(&format!("X-Nixdag-Root: {root}\n")), "{narinfo}");
    // … which stock Nix ignores: it copies the closure, signatures required, trusting only the gateway.
    let other = w.join("other-store");
    copy_from_gateway(w, &server, &other, &top);

    // A snapshot while serve runs: its CID and counts.
    let v: serde_json::Value = serde_json::from_str(&store.ok(&["snapshot", "--json"])).unwrap();
    let cid = v["cid"].as_str().unwrap().to_string();
    assert!(cid.starts_with("bafyr4"), "a dag-cbor BLAKE3 CID: {cid}");
    assert_eq!((v["paths"].as_u64(), v["nars"].as_u64(), v["files"].as_u64()), (Some(2), Some(2), Some(1)), "{v}");
    // The same manifests make the same catalogue.
    assert_eq!(store.ok(&["snapshot"]).trim(), cid);

    // The gateway serves it at once: the root node raw, and the whole cache as one CAR.
    let base = format!("{}/ipfs/{cid}", server.url);
    let (st, h, node) = curl_full(&[&format!("{base}?format=raw")]);
    assert_eq!(st, 200);
    assert_eq!(header(&h, "content-type"), Some("application/vnd.ipld.raw"));
    assert_eq!(blake3::hash(&node).as_bytes().as_slice(), nixdag::Cid::try_from(cid.as_str()).unwrap().hash().digest());
    let (st, _, car) = curl_full(&[&format!("{base}?format=car")]);
    assert_eq!(st, 200);
    let car_file = w.join("snapshot.car");
    fs::write(&car_file, &car).unwrap();
    // entity-bytes names a file's bytes: a catalogue node has none. dag-scope=entity is the node alone.
    assert_eq!(curl_full(&[&format!("{base}?format=car&entity-bytes=0:9")]).0, 400);
    let (_, _, entity) = curl_full(&[&format!("{base}?format=car&dag-scope=entity")]);
    assert!(entity.len() < node.len() + 200 && entity.ends_with(&node));

    // The independent verifier, from the CAR's blocks alone: snapshot → entry → NAR root → bytes.
    let nar_out = w.join("resolved.nar");
    let (ok, out, err) = node_script("resolve-snapshot.mjs", &car_file, &cid, hash_part, &nar_out);
    assert!(ok, "resolve-snapshot.mjs: {err}");
    assert!(out.contains(&format!(" {root} ")), "{out}");
    assert!(fs::read(&nar_out).unwrap() == nix_dump(&top), "resolved NAR differs from nix-store --dump");
    // The CAR carries the tarball's DAG too (the whole cache from one CID).
    let file_root_bytes = nixdag::Cid::try_from(file_root.as_str()).unwrap().to_bytes();
    assert!(car.windows(file_root_bytes.len()).any(|x| x == file_root_bytes), "tarball {file_hash} not in the CAR");

    // gc keeps the snapshot's nodes (while the snapshot is the store's latest).
    store.ok(&["gc"]);
    assert_eq!(curl_full(&[&format!("{base}?format=raw")]).0, 200);
    assert_eq!(curl_full(&[&format!("{base}?format=car")]).2, car);
    store.verify();
}

fn node_script(script: &str, car: &Path, cid: &str, hash_part: &str, out: &Path) -> (bool, String, String) {
    node(script, &[&car, &cid, &hash_part, &out])
}
