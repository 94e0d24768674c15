//! The IPFS trustless gateway (`/ipfs/<cid>`, docs/IPFS.md): every header and status rule as curl sees
//! it, and CARs judged by the independent verifier in tests/ipfs (it reads a blockstore holding only
//! the CAR's blocks, hashing each one itself).

use std::fs;
use std::path::Path;

use crate::common::*;
use crate::gateway::{curl_full, Server};

fn verify_range(car: &Path, root: &str, offset: u64, len: u64, expected: &Path) -> (bool, String, String) {
    node("verify-range.mjs", &[&car, &root, &offset.to_string(), &len.to_string(), &expected])
}

/// `(status, lowercased headers, body)` of a GET (or HEAD with `-I`).
fn get(url: &str, extra: &[&str]) -> (u16, String, Vec<u8>) {
    let mut a: Vec<&str> = extra.to_vec();
    a.push(url);
    curl_full(&a)
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).map(str::trim)
}

#[test]
fn trustless_gateway_headers_statuses_and_verified_cars() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tree = w.join("tree");
    fs::create_dir_all(&tree).unwrap();
    write_random(&tree.join("data"), 6 << 20, 21);
    fs::write(tree.join("readme"), b"hello\n").unwrap();
    let nar = w.join("tree.nar");
    fs::write(&nar, nix_dump(&tree)).unwrap();
    let nar_bytes = fs::read(&nar).unwrap();
    let store = TestStore::new();
    let (_, root, size) = store.add(&[tree.to_str().unwrap()]);
    assert_eq!(size, nar_bytes.len() as u64);
    let server = Server::start(&store, &[]);
    let base = format!("{}/ipfs/{root}", server.url);

    // No format asked (curl's default Accept: */*): 400. A malformed CID: 400. A missing root: 404, or
    // 412 when only cached answers are wanted.
    assert_eq!(get(&base, &[]).0, 400);
    assert_eq!(get(&base, &["-H", "Accept: */*"]).0, 400);
    assert_eq!(get(&format!("{}/ipfs/not-a-cid?format=raw", server.url), &[]).0, 400);
    let absent = "bafkr4ihkr4ld3m4gqkjf4reryxsy2s5tkbxprqkow6fin2iiyvreuzzab4";
    assert_eq!(get(&format!("{}/ipfs/{absent}?format=raw", server.url), &[]).0, 404);
    assert_eq!(
        get(&format!("{}/ipfs/{absent}?format=car", server.url), &["-H", "Cache-Control: only-if-cached"]).0,
        412
    );
    assert_eq!(get(&format!("{base}?format=car&entity-bytes=99999999:*"), &[]).0, 400, "a range wholly past the end");
    assert_eq!(get(&format!("{base}?format=car&dag-scope=nope"), &[]).0, 400);
    // The probe: the empty identity CID answers.
    let (st, h, body) = get(&format!("{}/ipfs/bafkqaaa?format=raw", server.url), &[]);
    assert_eq!((st, body.len()), (200, 0), "{h}");

    // A raw block (the root), by format= and by Accept; HEAD has the same headers.
    let (st, h, block) = get(&format!("{base}?format=raw"), &[]);
    assert_eq!(st, 200);
    assert_eq!(header(&h, "content-type"), Some("application/vnd.ipld.raw"));
    assert_eq!(header(&h, "cache-control"), Some("public, max-age=29030400, immutable"));
    assert_eq!(header(&h, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&h, "content-disposition"), Some(format!("attachment; filename=\"{root}.bin\"").as_str()));
    let raw_etag = header(&h, "etag").unwrap().to_string();
    let (st2, h2, block2) = get(&base, &["-H", "Accept: application/vnd.ipld.raw"]);
    assert_eq!((st2, &block2), (200, &block));
    assert_eq!(header(&h2, "etag"), Some(raw_etag.as_str()));
    let (st3, h3, _) = get(&format!("{base}?format=raw"), &["-I"]);
    assert_eq!(st3, 200);
    assert_eq!(header(&h3, "content-length"), Some(block.len().to_string().as_str()));
    assert_eq!(
        blake3::hash(&block).as_bytes().as_slice(),
        nixdag::Cid::try_from(root.as_str()).unwrap().hash().digest()
    );

    // The whole DAG as a CAR: the verifier reads the NAR back from it alone.
    let (st, h, car) = get(&format!("{base}?format=car"), &[]);
    assert_eq!(st, 200);
    assert_eq!(header(&h, "content-type"), Some("application/vnd.ipld.car; version=1; order=dfs; dups=n"));
    assert_eq!(header(&h, "content-disposition"), Some(format!("attachment; filename=\"{root}.car\"").as_str()));
    let all_etag = header(&h, "etag").unwrap().to_string();
    assert_ne!(all_etag, raw_etag);
    let car_file = w.join("all.car");
    fs::write(&car_file, &car).unwrap();
    let (ok, out, err) = node("verify-car.mjs", &[&car_file, &nar]);
    assert!(ok, "verifier rejected the gateway's CAR: {err}");
    assert!(out.starts_with(&format!("ok: {root} ")), "{out}");
    // ... the same by Accept, and car-dups in the query overrides Accept's dups.
    let (_, h, car2) = get(&base, &["-H", "Accept: application/vnd.ipld.car; version=1; dups=y"]);
    assert_eq!(header(&h, "content-type"), Some("application/vnd.ipld.car; version=1; order=dfs; dups=y"));
    assert_eq!(car2, car, "a file DAG without repeated blocks is the same with dups=y");
    let (_, h, _) = get(&format!("{base}?car-dups=n"), &["-H", "Accept: application/vnd.ipld.car; dups=y", "-I"]);
    assert_eq!(header(&h, "content-type"), Some("application/vnd.ipld.car; version=1; order=dfs; dups=n"));

    // dag-scope=block: the root alone.
    let (_, h, car_block) = get(&format!("{base}?format=car&dag-scope=block"), &[]);
    assert!(car_block.len() < block.len() + 200 && car_block.ends_with(&block), "block scope holds more than the root");
    assert_ne!(header(&h, "etag"), Some(all_etag.as_str()));

    // entity-bytes: only the blocks proving the range; the verifier reads exactly those bytes from them.
    let n = nar_bytes.len() as i64;
    let cases: &[(&str, i64, i64)] = &[
        ("0:1023", 0, 1024),
        ("-1000:*", n - 1000, n),
        ("3000000:3999999", 3_000_000, 4_000_000),
        ("100:-100", 100, n - 99),
        ("6000000:99999999999", 6_000_000, n),
    ];
    let mut etags = std::collections::HashSet::new();
    for (spec, from, to) in cases {
        let (st, h, car) = get(&format!("{base}?format=car&entity-bytes={spec}"), &[]);
        assert_eq!(st, 200, "{spec}");
        assert!(etags.insert(header(&h, "etag").unwrap().to_string()), "{spec}: etag repeats");
        let f = w.join("range.car");
        fs::write(&f, &car).unwrap();
        let expected = w.join("range.bin");
        fs::write(&expected, &nar_bytes[*from as usize..*to as usize]).unwrap();
        let (ok, out, err) = verify_range(&f, &root, *from as u64, (to - from) as u64, &expected);
        assert!(ok, "{spec}: {err}");
        // Only what the range needs: a small range is a small CAR.
        if to - from < 2 << 20 {
            assert!(
                car.len() < (to - from) as usize + (1 << 20),
                "{spec}: {} bytes of CAR for {} bytes ({out})",
                car.len(),
                to - from
            );
        }
    }
    // The verifier refuses a CAR that lacks a block the range needs: the small range cannot serve a
    // read of the whole file.
    let (_, _, small) = get(&format!("{base}?format=car&entity-bytes=0:1023"), &[]);
    let f = w.join("small.car");
    fs::write(&f, &small).unwrap();
    let (ok, _, err) = verify_range(&f, &root, 0, n as u64, &nar);
    assert!(!ok && err.contains("missing block"), "{err}");
}

/// The NAR and its root CID: `X-Nixdag-Root` names the DAG so a client can switch to verified ranges.
#[test]
fn nar_responses_name_their_root_cid() {
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("blob");
    write_random(&f, 300_000, 3);
    let store = TestStore::new();
    let (hash, root, _) = store.add(&[f.to_str().unwrap()]);
    let server = Server::start(&store, &[]);
    let nix32 = hash.strip_prefix("sha256:").unwrap();
    let (st, h, _) = get(&format!("{}/nar/{nix32}.nar", server.url), &["-I"]);
    assert_eq!(st, 200);
    assert_eq!(header(&h, "x-nixdag-root"), Some(root.as_str()));
}
