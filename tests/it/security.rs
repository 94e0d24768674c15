//! The defences of docs/SECURITY.md, each tested as the attack that found it was run: real Nix for
//! uploads, curl and raw sockets for the listener, a tmpfs the test mounts for a full disk.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::Digest;

use crate::common::*;
use crate::gateway::{build_closure, copy_from_gateway, curl, curl_full, nix, run, uploader_key, Server};

fn hash_part(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap()[..32].to_string()
}

/// `curl -X PUT --data-binary @file URL` (optionally from a given loopback address): the status code.
fn put(url: &str, body: &Path, from: Option<&str>, extra: &[&str]) -> (u16, String) {
    let mut a = vec!["-o", "-", "-w", "\n%{http_code}", "-X", "PUT", "--data-binary"];
    let at = format!("@{}", body.display());
    a.push(&at);
    if let Some(f) = from {
        a.extend(["--interface", f]);
    }
    a.extend_from_slice(extra);
    a.push(url);
    let o = curl(&a);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn sha256_nix32(bytes: &[u8]) -> String {
    let hex = data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(bytes));
    to_nix32(&format!("sha256:{hex}")).trim_start_matches("sha256:").to_string()
}

/// The attack run's repro: `nix copy --to` a real path, PUT a NAR of other bytes, then PUT a narinfo
/// for the same store path naming it. Now 409; Nix still gets the original bytes and signatures.
#[test]
fn cache_poisoning_is_refused_with_409() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let top = build_closure(w, 5000);
    let store = TestStore::new();
    let server = Server::start(&store, &["--allow-upload"]);
    uploader_key(w);
    let dest = format!("{}?secret-key={}&compression=none", server.url, w.join("sk").display());
    run(nix(w, "to").args(["copy", "--to", &dest]).arg(&top));
    let url = format!("{}/{}.narinfo", server.url, hash_part(&top));
    let original = String::from_utf8(curl(&["--fail", &url]).stdout).unwrap();
    assert!(original.contains("Sig: uploader-1:"), "{original}");

    // Other bytes under the same store path.
    let evil_dir = w.join("evil");
    fs::create_dir_all(&evil_dir).unwrap();
    fs::write(evil_dir.join("ref"), b"not what you built\n").unwrap();
    let evil = nix_dump(&evil_dir);
    let evil_hash = sha256_nix32(&evil);
    fs::write(w.join("evil.nar"), &evil).unwrap();
    let (st, _) = put(&format!("{}/nar/{evil_hash}.nar", server.url), &w.join("evil.nar"), None, &[]);
    assert_eq!(st, 200);
    let forged: String = original
        .lines()
        .filter(|l| !l.starts_with("Sig:"))
        .map(|l| match l.split_once(": ") {
            Some(("NarHash" | "FileHash", _)) => format!("{}: sha256:{evil_hash}", l.split(':').next().unwrap()),
            Some(("NarSize" | "FileSize", _)) => format!("{}: {}", l.split(':').next().unwrap(), evil.len()),
            Some(("URL", _)) => format!("URL: nar/{evil_hash}.nar"),
            _ => l.to_string(),
        })
        .map(|l| l + "\n")
        .collect();
    fs::write(w.join("forged.narinfo"), &forged).unwrap();
    let (st, why) = put(&url, &w.join("forged.narinfo"), None, &[]);
    assert_eq!(st, 409, "{why}");
    assert!(why.contains("written once"), "{why}");

    // Nix gets the original bytes, and the original signatures remain.
    let other = w.join("other-store");
    copy_from_gateway(w, &server, &other, &top);
    let theirs = run(nix(w, "hash").args(["path-info", "--json", "--store"]).arg(&other).arg(&top));
    let (ours, _) = nix_path_info(&top);
    assert!(theirs.contains(&ours), "poisoned: {theirs}");
    let after = String::from_utf8(curl(&["--fail", &url]).stdout).unwrap();
    assert!(after.contains("Sig: uploader-1:"), "{after}");

    // The same narinfo again is fine (nothing new); one naming a path the cache lacks is refused.
    fs::write(w.join("same.narinfo"), &original).unwrap();
    assert_eq!(put(&url, &w.join("same.narinfo"), None, &[]).0, 200);
}

/// A narinfo must name references the cache has, and a CA path's name must follow from its hash.
#[test]
fn uploads_need_their_references_and_true_ca_claims() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let file = w.join("hello-ca");
    fs::write(&file, b"content-addressed\n").unwrap();
    let ca_path = nix_add(&file);
    let store = TestStore::new();
    let server = Server::start(&store, &["--allow-upload"]);
    // Real Nix uploads a CA path; its claim checks out.
    run(nix(w, "to").args(["copy", "--to", &format!("{}?compression=none", server.url)]).arg(&ca_path));
    let url = format!("{}/{}.narinfo", server.url, hash_part(&ca_path));
    let info = String::from_utf8(curl(&["--fail", &url]).stdout).unwrap();
    assert!(info.contains("CA: fixed:r:sha256:"), "{info}");

    // The same content and claim under another store path hash: the name does not follow.
    let wrong_hash = "0000000000000000000000000000000a";
    let moved: String = info
        .replace(&hash_part(&ca_path), wrong_hash)
        .lines()
        .filter(|l| !l.starts_with("Sig:"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(w.join("moved.narinfo"), &moved).unwrap();
    let (st, why) = put(&format!("{}/{wrong_hash}.narinfo", server.url), &w.join("moved.narinfo"), None, &[]);
    assert_eq!(st, 400, "{why}");
    assert!(why.contains("CA claim makes store path"), "{why}");

    // A reference to a path the cache lacks.
    let dangling = info
        .replace(&hash_part(&ca_path), wrong_hash)
        .lines()
        .filter(|l| !l.starts_with("CA:") && !l.starts_with("References:") && !l.starts_with("Sig:"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + "References: 11111111111111111111111111111111-missing\n";
    fs::write(w.join("dangling.narinfo"), &dangling).unwrap();
    let (st, why) = put(&format!("{}/{wrong_hash}.narinfo", server.url), &w.join("dangling.narinfo"), None, &[]);
    assert_eq!(st, 400, "{why}");
    assert!(why.contains("not in the cache"), "{why}");
}

/// `--allow-upload` alone admits loopback; `--allow-upload-from` names exactly the blocks it names.
#[test]
fn uploads_are_admitted_by_address_or_token_only() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    fs::write(w.join("info"), b"StoreDir: /nix/store\n").unwrap();
    let store = TestStore::new();
    let server = Server::start(&store, &["--allow-upload-from", "127.0.0.5/32"]);
    let url = format!("{}/nix-cache-info", server.url);
    assert_eq!(put(&url, &w.join("info"), Some("127.0.0.2"), &[]).0, 403);
    assert_eq!(put(&url, &w.join("info"), Some("127.0.0.5"), &[]).0, 204);
    server.stop();
    fs::write(w.join("token"), b"s3cret\n").unwrap();
    let server = Server::start(&store, &["--upload-token-file", w.join("token").to_str().unwrap()]);
    let url = format!("{}/nix-cache-info", server.url);
    assert_eq!(put(&url, &w.join("info"), None, &[]).0, 401, "loopback needs the token when only a token is set");
    assert_eq!(put(&url, &w.join("info"), None, &["-H", "Authorization: Bearer s3cret"]).0, 204);
}

fn vm(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn raise_nofile() {
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// A connection from a given loopback address with a small receive buffer (so a reader that never reads
/// stalls the server's writes early).
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.set_recv_buffer_size(4096)?;
    s.bind(format!("{from}:0").parse().unwrap())?;
    s.connect(to).await
}

/// The attack: ~600 clients request a ≥ 10 MB NAR and never read, 1,100 more open sockets and say
/// nothing. A normal client still gets a narinfo in under a second and a NAR byte-exact, and the
/// gateway stays under 300 MiB.
#[test]
fn slow_readers_and_idle_sockets_do_not_lock_out_a_normal_client() {
    raise_nofile();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let dir = w.join("big");
    fs::create_dir_all(&dir).unwrap();
    write_random(&dir.join("data"), 12 << 20, 5);
    let store = TestStore::new();
    let (nar_hash, _, _) = store.add(&[dir.to_str().unwrap()]);
    let small = w.join("small");
    fs::write(&small, b"small\n").unwrap();
    let small_path = nix_add(&small);
    store.add(&[small_path.to_str().unwrap()]);
    let nar_name = nar_hash.trim_start_matches("sha256:").to_string();
    let server = Server::start(&store, &[]);
    let addr: SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let pid = server.child.id();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut held = Vec::new();
    rt.block_on(async {
        // 600 slow readers from ten addresses (60 each, under the per-address limit of 64).
        for i in 0..600 {
            let from = format!("127.0.0.{}", 10 + i % 10);
            let mut s = connect_from(&from, addr).await.unwrap();
            let req = format!("GET /nar/{nar_name}.nar HTTP/1.1\r\nHost: x\r\n\r\n");
            tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes()).await.unwrap();
            held.push(s);
        }
        // 1,100 idle sockets from twenty more (55 each); half of them send half a header.
        for i in 0..1100 {
            let from = format!("127.0.1.{}", 10 + i % 20);
            let mut s = connect_from(&from, addr).await.unwrap();
            if i % 2 == 0 {
                tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /nix-cache-info HTTP/1.1\r\nHo").await.unwrap();
            }
            held.push(s);
        }
    });
    std::thread::sleep(Duration::from_secs(2));

    let t = Instant::now();
    let o = curl(&["--fail", "--max-time", "5", &format!("{}/{}.narinfo", server.url, hash_part(&small_path))]);
    let took = t.elapsed();
    assert!(o.status.success(), "narinfo: {}", String::from_utf8_lossy(&o.stderr));
    // Before the fix this hung until the attackers' sockets closed; 3 s leaves room for a loaded 2-core
    // machine (curl's own start included), not for a hang.
    assert!(took < Duration::from_secs(3), "narinfo took {took:?} under attack");
    let (st, _, body) = curl_full(&["--max-time", "60", &format!("{}/nar/{nar_name}.nar", server.url)]);
    assert_eq!(st, 200);
    assert_eq!(body, nix_dump(&dir), "NAR not byte-exact under attack");
    let rss = vm(pid, "VmHWM:");
    assert!(rss < 300 << 20, "gateway peaked at {} MiB", rss >> 20);
    drop(held);
}

/// A client that sends half a header is dropped once the header timeout passes.
#[test]
fn half_sent_headers_are_dropped_within_the_timeout() {
    let store = TestStore::new();
    let server = Server::start(&store, &["--header-timeout", "2"]);
    let addr: SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /nix-cache-info HTTP/1.1\r\nHost: x").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let r = s.read_to_end(&mut buf);
    let took = t.elapsed();
    assert!(r.is_ok(), "connection not closed: {r:?}");
    assert!(took < Duration::from_secs(5), "dropped after {took:?}");
    assert!(took >= Duration::from_millis(1500), "dropped too early ({took:?})");
    // An idle keep-alive connection is closed too.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /nix-cache-info HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf));
    assert!(t.elapsed() < Duration::from_secs(5), "idle keep-alive held {:?}", t.elapsed());
}

/// A NAR of a million empty files (184 MB) gets no listing (404: Nix treats `.ls` as optional), and
/// sixteen concurrent requests for it stay within the gateway's memory budget.
#[test]
fn sixteen_listings_of_a_million_file_nar_stay_within_budget() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    // The NAR, written by hand: a directory of 1,000,000 empty regular files.
    let nar_file = w.join("million.nar");
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&nar_file).unwrap());
        f.write_all(&toks(&[b"nix-archive-1", b"(", b"type", b"directory"])).unwrap();
        for i in 0..1_000_000u32 {
            let name = format!("f{i:07}");
            f.write_all(&toks(&[b"entry", b"(", b"name", name.as_bytes(), b"node", b"(", b"type", b"regular"]))
                .unwrap();
            f.write_all(&toks(&[b"contents", b"", b")", b")"])).unwrap();
        }
        f.write_all(&toks(&[b")"])).unwrap();
    }
    let nar = fs::read(&nar_file).unwrap();
    let nar_hash = sha256_nix32(&nar);
    let size = nar.len();
    drop(nar);
    let store = TestStore::new();
    let server = Server::start(&store, &["--allow-upload"]);
    let (st, why) = put(&format!("{}/nar/{nar_hash}.nar", server.url), &nar_file, None, &[]);
    assert_eq!(st, 200, "{why}");
    let path_hash = "1111111111111111111111111111111a";
    let info = format!(
        "StorePath: /nix/store/{path_hash}-million\nURL: nar/{nar_hash}.nar\nCompression: none\n\
         NarHash: sha256:{nar_hash}\nNarSize: {size}\nReferences: \n"
    );
    fs::write(w.join("m.narinfo"), info).unwrap();
    let (st, why) = put(&format!("{}/{path_hash}.narinfo", server.url), &w.join("m.narinfo"), None, &[]);
    assert_eq!(st, 200, "{why}");
    let pid = server.child.id();
    let before = vm(pid, "VmRSS:");
    let url = format!("{}/{path_hash}.ls", server.url);
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || curl_full(&["--max-time", "120", &url]).0)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 404);
    }
    let peak = vm(pid, "VmHWM:");
    let after = vm(pid, "VmRSS:");
    assert!(peak < 300 << 20, "sixteen listings peaked at {} MiB", peak >> 20);
    assert!(after < before + (64 << 20), "{} MiB stayed resident (before: {})", after >> 20, before >> 20);
}

/// A full disk answers 507; the store verifies, and uploads work again once space is freed.
#[test]
fn a_full_disk_answers_507_and_loses_nothing() {
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path();
    let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"]).arg(m).status().unwrap();
    assert!(ok.success(), "mounting a tmpfs (the suite runs as root)");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _u = Unmount(m);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let store = TestStore { dir: tempfile::Builder::new().prefix("s").tempdir_in(m).unwrap() };
    let server = Server::start(&store, &["--allow-upload"]);
    // Fill most of the disk, then upload a NAR larger than what is left.
    let filler = m.join("filler");
    write_random(&filler, 14 << 20, 1);
    let dir = w.join("big");
    fs::create_dir_all(&dir).unwrap();
    write_random(&dir.join("data"), 12 << 20, 2);
    let nar = nix_dump(&dir);
    let h = sha256_nix32(&nar);
    fs::write(w.join("big.nar"), &nar).unwrap();
    let (st, why) = put(&format!("{}/nar/{h}.nar", server.url), &w.join("big.nar"), None, &[]);
    assert_eq!(st, 507, "{why}");
    server.stop();
    store.verify();
    fs::remove_file(&filler).unwrap();
    let server = Server::start(&store, &["--allow-upload"]);
    let (st, why) = put(&format!("{}/nar/{h}.nar", server.url), &w.join("big.nar"), None, &[]);
    assert_eq!(st, 200, "{why}");
    let (st, _, body) = curl_full(&[&format!("{}/nar/{h}.nar", server.url)]);
    assert_eq!(st, 200);
    assert!(body == nar);
    server.stop();
    store.verify();
}

/// `cat --range 0-<u64::MAX>` prints to the end (it printed nothing: `last + 1` wrapped).
#[test]
fn cat_range_to_u64_max_prints_to_the_end() {
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("f");
    write_random(&f, 100_000, 3);
    let store = TestStore::new();
    let (hash, _, _) = store.add(&["--file", f.to_str().unwrap()]);
    let out = store.bytes(&["cat", "--file-hash", &hash, "--range", "0-18446744073709551615"]);
    assert!(out == fs::read(&f).unwrap());
    let out = store.bytes(&["cat", "--file-hash", &hash, "--range", "99990-99999999999999999999999"]);
    assert_eq!(out.len(), 10);
}

/// `verify` (and every reading command) on a mistyped store fails and creates nothing.
#[test]
fn verify_on_a_missing_store_fails_and_creates_nothing() {
    let work = tempfile::tempdir().unwrap();
    let missing = work.path().join("no-such-store");
    let o = Command::new(bin()).arg("--store").arg(&missing).arg("verify").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is not a nixdag store"), "{err}");
    assert!(!missing.exists(), "verify created {}", missing.display());
}

/// Reading commands work on a store on a read-only file system.
#[test]
fn reading_commands_work_on_a_read_only_store() {
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path();
    assert!(Command::new("mount").args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"]).arg(m).status().unwrap().success());
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("f");
    write_random(&f, 300_000, 4);
    let dir = m.join("store");
    let o = Command::new(bin()).arg("--store").arg(&dir).args(["add", "--file"]).arg(&f).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let hash = String::from_utf8(o.stdout).unwrap().split_whitespace().nth(1).unwrap().to_string();
    assert!(Command::new("mount").args(["-o", "remount,ro"]).arg(m).status().unwrap().success());
    let read = |args: &[&str]| Command::new(bin()).arg("--store").arg(&dir).args(args).output().unwrap();
    for args in [vec!["verify"], vec!["dedup-stats", "--json"], vec!["cat", "--file-hash", &hash]] {
        let o = read(&args);
        assert!(o.status.success(), "{args:?} on a read-only store: {}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(read(&["cat", "--file-hash", &hash]).stdout == fs::read(&f).unwrap());
    let _ = Command::new("umount").arg("-l").arg(m).status();
}

/// One flipped byte anywhere in `index.redb` (the attack run flipped 4096 and 8192, where redb's
/// headers and root pages lay) never crashes a command: it either reads right (the byte was unused:
/// `verify` passes and `cat` is byte-exact) or fails with one line naming `index.redb` and suggesting
/// `verify`, exit 1 (not redb's panic and exit 101).
#[test]
fn a_damaged_index_gives_a_clear_error() {
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("f");
    write_random(&f, 3_000_000, 6);
    let content = fs::read(&f).unwrap();
    let store = TestStore::new();
    let (hash, _, _) = store.add(&["--file", f.to_str().unwrap()]);
    let pristine = fs::read(store.path().join("index.redb")).unwrap();
    let mut errors = 0;
    for off in (0..pristine.len()).step_by(4096).chain([8192 + 17, 4096 + 100]) {
        let mut bytes = pristine.clone();
        bytes[off] ^= 0xff;
        fs::write(store.path().join("index.redb"), &bytes).unwrap();
        for args in [vec!["verify"], vec!["cat", "--file-hash", &hash], vec!["dedup-stats"]] {
            let o = store.output(&args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!err.contains("panicked"), "{args:?} at {off}: {err}");
            match o.status.code() {
                Some(0) if args[0] == "cat" => assert!(o.stdout == content, "cat at {off} read wrong bytes"),
                Some(0) => {}
                Some(1) => {
                    errors += 1;
                    assert!(err.contains("index.redb") && err.contains("verify"), "{args:?} at {off}: {err}");
                    assert_eq!(err.lines().count(), 1, "{args:?} at {off}: {err}");
                }
                code => panic!("{args:?} at {off}: exit {code:?}: {err}"),
            }
        }
    }
    assert!(errors >= 3, "no flipped byte was noticed ({errors} errors)");
}

/// A 145 KB zstd upload that expanded to 4 GiB was accepted; now the expansion ratio and the NAR size
/// are bounded (413), and the store is left as it was.
#[test]
fn upload_bombs_and_oversized_nars_get_413() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    // A NAR of one regular file of 256 MiB of zeros, compressed by zstd to a few KiB.
    let mut nar = toks(&[b"nix-archive-1", b"(", b"type", b"regular", b"contents"]);
    let len: u64 = 256 << 20;
    nar.extend_from_slice(&len.to_le_bytes());
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.write_all(&nar).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        enc.write_all(&zeros).unwrap();
    }
    enc.write_all(&toks(&[b")"])).unwrap();
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    fs::write(w.join("bomb.nar.zst"), &bomb).unwrap();
    let store = TestStore::new();
    Server::start(&store, &[]).stop();
    let before = store.snapshot();
    let server = Server::start(&store, &["--allow-upload"]);
    let url = format!("{}/nar/{}.nar.zst", server.url, sha256_nix32(&bomb));
    let (st, why) = put(&url, &w.join("bomb.nar.zst"), None, &[]);
    assert_eq!(st, 413, "{why}");
    assert!(why.contains("expands"), "{why}");
    server.stop();
    let server = Server::start(&store, &["--allow-upload", "--max-upload-size", "1M"]);
    let dir = w.join("two-mib");
    fs::create_dir_all(&dir).unwrap();
    write_random(&dir.join("data"), 2 << 20, 8);
    let nar = nix_dump(&dir);
    fs::write(w.join("big.nar"), &nar).unwrap();
    let (st, why) = put(&format!("{}/nar/{}.nar", server.url, sha256_nix32(&nar)), &w.join("big.nar"), None, &[]);
    assert_eq!(st, 413, "{why}");
    server.stop();
    assert_eq!(store.snapshot(), before, "a refused upload changed the store");
}

/// A block damaged on disk: the gateway cuts the stream (its headers were sent) and stops advertising the
/// path; `verify --repair` drops the block, the gateway then refuses the NAR before any 200 (503), and
/// uploading the NAR again heals it.
#[test]
fn damaged_blocks_are_never_served_and_heal_on_reupload() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let file = w.join("payload");
    write_random(&file, 3 << 20, 21);
    let path = nix_add(&file);
    let nar = nix_dump(&path);
    let store = TestStore::new();
    store.add(&[path.to_str().unwrap()]);
    let content = fs::read(&file).unwrap();
    assert!(corrupt_in_packs(&store, &content[2 << 20..(2 << 20) + 64]), "payload bytes not found in the packs");
    let server = Server::start(&store, &["--allow-upload"]);
    let narinfo_url = format!("{}/{}.narinfo", server.url, hash_part(&path));
    let info = String::from_utf8(curl(&["--fail", &narinfo_url]).stdout).unwrap();
    let nar_url = format!("{}/{}", server.url, info.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap());
    let o = curl(&["-o", "/dev/null", "-w", "%{http_code} %{size_download}", &nar_url]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(!o.status.success(), "a damaged NAR was served whole: {out}");
    assert!(out.starts_with("200 "), "{out}");
    // No longer advertised, and the NAR itself is refused before a status line promises it.
    assert_eq!(curl_full(&[&narinfo_url]).0, 404);
    assert_eq!(curl_full(&[&nar_url]).0, 503);
    server.stop();

    let o = store.output(&["verify", "--repair"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("dropped"), "{}", String::from_utf8_lossy(&o.stderr));
    let server = Server::start(&store, &["--allow-upload"]);
    let nar_url = format!("{}/{}", server.url, info.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap());
    let narinfo_url = format!("{}/{}.narinfo", server.url, hash_part(&path));
    let (st, _, _) = curl_full(&[&nar_url]);
    assert_eq!(st, 503, "a NAR missing a block must be refused before the 200");
    // Uploading the NAR again stores the dropped block anew.
    fs::write(w.join("again.nar"), &nar).unwrap();
    let (st, why) = put(&format!("{}/nar/{}.nar", server.url, sha256_nix32(&nar)), &w.join("again.nar"), None, &[]);
    assert_eq!(st, 200, "{why}");
    let (st, _, body) = curl_full(&[&nar_url]);
    assert_eq!(st, 200);
    assert!(body == nar, "healed NAR differs");
    assert_eq!(curl_full(&[&narinfo_url]).0, 200);
    server.stop();
    store.verify();
}
