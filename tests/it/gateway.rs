//! The gateway judged by real clients: stock Nix 2.8 substitutes from it and copies to it with
//! signatures required, and curl checks HTTP range semantics.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use sha2::Digest;

use crate::common::*;

/// A running `nixdag serve` on an ephemeral loopback port, with its access log collected.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub public_key: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(store: &TestStore, extra: &[&str]) -> Server {
        let mut child = store
            .cmd()
            .args(["serve", "--listen", "127.0.0.1:0", "--access-log"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let url = line.trim().rsplit(' ').next().unwrap().to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "unexpected first line {line:?}");
        line.clear();
        out.read_line(&mut line).unwrap();
        let public_key = line.trim().rsplit(' ').next().unwrap().to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Server { child, url, public_key, log }
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, and wait for the graceful shutdown to release the store.
    pub fn stop(mut self) {
        unsafe_kill_term(self.child.id());
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn unsafe_kill_term(pid: u32) {
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
}

/// Nix with a fresh narinfo cache (Nix caches narinfo answers per cache URL).
pub(crate) fn nix(work: &Path, tag: &str) -> Command {
    let mut c = Command::new("nix");
    c.env("XDG_CACHE_HOME", work.join(format!("xdg-{tag}"))).args(["--extra-experimental-features", "nix-command"]);
    c
}

pub(crate) fn run(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{c:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// An input-addressed closure (top → dep) built by real Nix; `payload` bytes of random data in top.
pub(crate) fn build_closure(work: &Path, payload: u64) -> PathBuf {
    require_nix();
    let expr = work.join("closure.nix");
    fs::write(
        &expr,
        format!(
            r#"{{ salt }}:
let dep = derivation {{ name = "nixdag-test-dep"; system = builtins.currentSystem; builder = "/bin/sh";
      args = [ "-c" "echo dep ${{salt}} > $out" ]; }};
in derivation {{ name = "nixdag-test-top"; system = builtins.currentSystem; builder = "/bin/sh";
     args = [ "-c" "/bin/mkdir $out; echo ${{dep}} > $out/ref; /usr/bin/head -c {payload} /dev/urandom > $out/payload" ]; }}
"#
        ),
    )
    .unwrap();
    let salt = format!("{:?}-{}", std::time::SystemTime::now(), std::process::id());
    let out = run(Command::new("nix-build").arg(&expr).args(["--argstr", "salt", &salt, "--no-out-link"]));
    PathBuf::from(out.trim())
}

/// `nix copy --from` the gateway into the Nix store at `other`, trusting only the gateway's key.
pub(crate) fn copy_from_gateway(w: &Path, server: &Server, other: &Path, path: &Path) {
    run(nix(w, "from")
        .args(["copy", "--store"])
        .arg(other)
        .args(["--option", "trusted-public-keys", &server.public_key, "--option", "require-sigs", "true"])
        .args(["--from", &server.url])
        .arg(path));
}

/// An uploader's signing key, made by real Nix: `w/sk` (secret) and `w/pk` (public), named `uploader-1`.
pub(crate) fn uploader_key(w: &Path) {
    run(Command::new("nix-store")
        .args(["--generate-binary-cache-key", "uploader-1"])
        .arg(w.join("sk"))
        .arg(w.join("pk")));
}

pub(crate) fn closure_of(path: &Path) -> Vec<String> {
    run(Command::new("nix-store").arg("-qR").arg(path)).lines().map(String::from).collect()
}

#[test]
fn nix_copy_to_and_from_with_only_the_gateway_key_trusted() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let top = build_closure(w, 300_000);
    let store = TestStore::new();
    let server = Server::start(&store, &["--allow-upload"]);
    uploader_key(w);
    for compression in ["xz", "zstd", "bzip2", "none"] {
        // Each round uploads into an empty cache from Nix's point of view (fresh narinfo cache, new store).
        let dest = format!("{}?secret-key={}&compression={compression}", server.url, w.join("sk").display());
        run(nix(w, &format!("to-{compression}")).args(["copy", "--to", &dest]).arg(&top));
    }
    // A second, independent Nix store fetches the closure, trusting only the gateway's key.
    let other = w.join("other-store");
    copy_from_gateway(w, &server, &other, &top);
    for p in closure_of(&top) {
        run(Command::new("nix-store").arg("--store").arg(&other).args(["--verify-path", &p]));
        let sigs = run(nix(w, "sigs").args(["path-info", "--sigs", "--store"]).arg(&other).arg(&p));
        let gw_key_name = server.public_key.split(':').next().unwrap();
        assert!(sigs.contains(&format!("{gw_key_name}:")), "no gateway signature on {p}: {sigs}");
        let (ours, _) = nix_path_info(Path::new(&p));
        let theirs = run(nix(w, "hash").args(["path-info", "--json", "--store"]).arg(&other).arg(&p));
        assert!(theirs.contains(&ours), "NarHash of {p} differs after the round trip");
    }
    // Uploaded paths kept the uploader's signature too.
    let hash_part = &top.file_name().unwrap().to_str().unwrap()[..32];
    let narinfo = curl_ok(&format!("{}/{hash_part}.narinfo", server.url));
    assert!(narinfo.contains("Sig: uploader-1:"), "{narinfo}");
    // The listing's narOffset points at the file's bytes inside the NAR, as a range request shows.
    let ls: serde_json::Value = serde_json::from_str(&curl_ok(&format!("{}/{hash_part}.ls", server.url))).unwrap();
    let payload = &ls["root"]["entries"]["payload"];
    assert_eq!(payload["type"], "regular");
    assert_eq!(payload["size"], 300_000);
    let off = payload["narOffset"].as_u64().unwrap();
    let url = narinfo.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap();
    let (st, _, bytes) = curl_full(&["-r", &format!("{off}-{}", off + 999), &format!("{}/{url}", server.url)]);
    assert_eq!(st, 206);
    assert!(bytes == fs::read(top.join("payload")).unwrap()[..1000], "narOffset does not point at the contents");
}

#[test]
fn nix_refuses_an_untrusted_key_and_never_asks_for_the_nar() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let top = build_closure(w, 1000);
    let store = TestStore::new();
    for p in closure_of(&top) {
        store.add(&[&p]);
    }
    let server = Server::start(&store, &[]);
    run(Command::new("nix-store")
        .args(["--generate-binary-cache-key", "stranger-1"])
        .arg(w.join("sk"))
        .arg(w.join("pk")));
    let stranger = fs::read_to_string(w.join("pk")).unwrap();
    let o = nix(w, "untrusted")
        .args(["copy", "--store"])
        .arg(w.join("s"))
        .args(["--option", "trusted-public-keys", stranger.trim(), "--from", &server.url])
        .arg(&top)
        .output()
        .unwrap();
    assert!(!o.status.success(), "Nix accepted a path signed by a key it does not trust");
    assert!(String::from_utf8_lossy(&o.stderr).contains("signature"), "{}", String::from_utf8_lossy(&o.stderr));
    let log = server.requests();
    assert!(log.iter().any(|l| l.contains(".narinfo 200")), "{log:?}");
    assert!(!log.iter().any(|l| l.contains("/nar/")), "a NAR was requested: {log:?}");
}

/// `nixdag add --closure` of a 100 MiB closure, then `nix-store -r` substitutes it from the gateway.
#[test]
fn nix_store_realise_substitutes_a_100_mib_closure() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let top = build_closure(w, 100 << 20);
    let store = TestStore::new();
    let added = store.ok(&["add", "--closure", top.to_str().unwrap()]);
    assert_eq!(added.lines().count(), 2, "{added}");
    let server = Server::start(&store, &[]);
    let fresh = w.join("fresh-store");
    let mut c = Command::new("nix-store");
    c.env("XDG_CACHE_HOME", w.join("xdg-r")).arg("--store").arg(&fresh).arg("-r").arg(&top).args([
        "--option",
        "substituters",
        &server.url,
        "--option",
        "trusted-public-keys",
        &server.public_key,
    ]);
    run(&mut c);
    let payload = |root: &Path| {
        let mut f = fs::File::open(root.join("payload")).unwrap();
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut f, &mut h).unwrap();
        h.finalize()
    };
    let local = fresh.join(top.strip_prefix("/").unwrap());
    assert_eq!(payload(&top), payload(&local), "substituted bytes differ");
    run(Command::new("nix-store").arg("--store").arg(&fresh).arg("--verify-path").arg(&top));
    assert!(server.requests().iter().any(|l| l.contains("GET /nar/") && l.contains(" 200")));
}

pub(crate) fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl").args(["-sS"]).args(args).output().unwrap()
}

pub(crate) fn curl_ok(url: &str) -> String {
    let o = curl(&["--fail", url]);
    assert!(o.status.success(), "curl {url}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// `curl -D - URL` headers and body.
pub(crate) fn curl_full(args: &[&str]) -> (u16, String, Vec<u8>) {
    let mut a = vec!["-D", "-", "-o", "-"];
    a.extend_from_slice(args);
    let o = curl(&a);
    let mut raw = &o.stdout[..];
    loop {
        let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            panic!("curl {args:?}: no HTTP reply ({}): {}", o.status, String::from_utf8_lossy(&o.stderr));
        };
        let split = split + 4;
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        if status >= 200 {
            return (status, head.to_lowercase(), raw[split..].to_vec());
        }
        raw = &raw[split..]; // 100 Continue
    }
}

#[test]
fn range_requests_follow_http_as_curl_sees_it() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("t");
    fs::create_dir_all(&dir).unwrap();
    write_random(&dir.join("data"), 3_000_000, 77);
    let nar = nix_dump(&dir);
    let store = TestStore::new();
    let (hash, _, size) = store.add(&[dir.to_str().unwrap()]);
    let url = |s: &Server| format!("{}/nar/{}.nar", s.url, &hash[7..]);
    let server = Server::start(&store, &[]);
    let u = url(&server);
    let n = size as usize;
    let (st, head, body) = curl_full(&[&u]);
    assert_eq!(st, 200);
    assert!(body == nar);
    assert!(head.contains("accept-ranges: bytes"), "{head}");
    assert!(head.contains(&format!("content-length: {n}")), "{head}");
    let etag = head.lines().find(|l| l.starts_with("etag:")).unwrap().split_once(':').unwrap().1.trim().to_string();
    for (range, start, end) in [
        ("0-0".to_string(), 0, 1),
        (format!("{}-{}", n - 1, n - 1), n - 1, n),
        ("1000000-1999999".to_string(), 1_000_000, 2_000_000),
        ("-500".to_string(), n - 500, n),
        (format!("{}-", n - 10), n - 10, n),
        (format!("5-{}", n + 1000), 5, n),
    ] {
        let (st, head, body) = curl_full(&["-r", &range, &u]);
        assert_eq!(st, 206, "{range}");
        assert!(body == nar[start..end], "{range}: wrong bytes");
        assert!(head.contains(&format!("content-range: bytes {start}-{}/{n}", end - 1)), "{range}: {head}");
        assert!(!head.contains("content-encoding"), "{range}: ranged reply must not be encoded");
    }
    let (st, head, _) = curl_full(&["-r", &format!("{n}-{}", n + 10), &u]);
    assert_eq!(st, 416);
    assert!(head.contains(&format!("content-range: bytes */{n}")), "{head}");
    // HEAD answers the same headers without a body.
    let o = curl(&["-I", &u]);
    let head = String::from_utf8_lossy(&o.stdout).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {n}")) && head.contains("accept-ranges: bytes"), "{head}");
    // ETag / If-None-Match.
    let (st, _, _) = curl_full(&["-H", &format!("If-None-Match: {etag}"), &u]);
    assert_eq!(st, 304);
    // A download cut short, then resumed with `curl -C -`, reassembles the exact NAR.
    let part = work.path().join("partial.nar");
    fs::write(&part, &nar[..1_234_567]).unwrap();
    let o = curl(&["--fail", "-C", "-", "-o", part.to_str().unwrap(), &u]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(fs::read(&part).unwrap() == nar, "resumed download differs");
    // The zstd form decompresses to the same bytes and refuses ranges.
    let zst = work.path().join("n.nar.zst");
    let o = curl(&["--fail", "-o", zst.to_str().unwrap(), &u.replace(".nar", ".nar.zst")]);
    assert!(o.status.success());
    let mut dec = Vec::new();
    zstd::stream::read::Decoder::new(fs::File::open(&zst).unwrap()).unwrap().read_to_end(&mut dec).unwrap();
    assert!(dec == nar);
}

#[test]
fn malformed_and_unknown_paths() {
    let store = TestStore::new();
    let server = Server::start(&store, &[]);
    let cases = [
        ("/nix-cache-info", 200),
        ("/xkqag603938xw013sv3hgqh30laryip9.narinfo", 404),
        ("/xkqag603938xw013sv3hgqh30laryip9.ls", 404),
        ("/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.narinfo", 400),
        ("/short.narinfo", 400),
        ("/nar/0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73.nar", 404),
        ("/nar/not-a-hash.nar", 400),
        ("/nar/0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73.nar.xz", 404),
        ("/log/xkqag603938xw013sv3hgqh30laryip9-foo.drv", 404),
        ("/favicon.ico", 404),
    ];
    for (path, want) in cases {
        let (st, head, _) = curl_full(&[&format!("{}{path}", server.url)]);
        assert_eq!(st, want, "{path}");
        if want >= 400 {
            assert!(head.contains("cache-control: no-store"), "{path}: misses must not be cached");
        }
    }
    let info = curl_ok(&format!("{}/nix-cache-info", server.url));
    assert!(info.contains("StoreDir: /nix/store") && info.contains("Priority: 30"), "{info}");
    // Uploads are refused unless allowed.
    let (st, _, body) = curl_full(&["-X", "PUT", "--data-binary", "x", &format!("{}/nix-cache-info", server.url)]);
    assert_eq!(st, 403, "{}", String::from_utf8_lossy(&body));
}

/// Bad uploads get a 4xx with a one-line reason; afterwards the store is unchanged and verifies.
#[test]
fn bad_uploads_are_refused_and_leave_the_store_unchanged() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    run(Command::new("nix-store")
        .args(["--generate-binary-cache-key", "trusted-up-1"])
        .arg(w.join("sk"))
        .arg(w.join("pk")));
    let trusted = fs::read_to_string(w.join("pk")).unwrap().trim().to_string();
    let secret = nixdag::SecretKey::parse(fs::read_to_string(w.join("sk")).unwrap().trim()).unwrap();
    let store = TestStore::new();
    let dir = w.join("present");
    fs::create_dir_all(&dir).unwrap();
    write_random(&dir.join("f"), 200_000, 1);
    let (present_hash, _, present_size) = store.add(&[dir.to_str().unwrap()]);
    let before = store.snapshot();
    let server = Server::start(&store, &["--allow-upload", "--trusted-key", &trusted]);
    let put = |path: &str, body: &[u8]| {
        let f = w.join("body");
        fs::write(&f, body).unwrap();
        curl_full(&["-X", "PUT", "--data-binary", &format!("@{}", f.display()), &format!("{}{path}", server.url)])
    };
    let sha = |b: &[u8]| nixdag::NarHash(sha2::Sha256::digest(b).into()).to_nix32();
    let big = w.join("big");
    fs::create_dir_all(&big).unwrap();
    write_random(&big.join("f"), 3_000_000, 2);
    let nar = nix_dump(&big);
    let truncated = &nar[..nar.len() / 2];
    let not_xz: Vec<u8> = nar.iter().copied().cycle().take(24 << 20).collect();
    let sp = "/nix/store/xkqag603938xw013sv3hgqh30laryip9-upload-test";
    let narinfo = |nar_hash: &str, size: u64, sig: Option<&str>| {
        let mut t = format!(
            "StorePath: {sp}\nURL: nar/x.nar\nCompression: none\nNarHash: {nar_hash}\nNarSize: {size}\nReferences: \n"
        );
        if let Some(s) = sig {
            t.push_str(&format!("Sig: {s}\n"));
        }
        t
    };
    let good_sig_wrong_size = secret.sign(&format!("1;{sp};{present_hash};{};", present_size + 1));
    let cases: Vec<(&str, String, Vec<u8>, &str)> = vec![
        ("truncated NAR", format!("/nar/{}.nar", sha(truncated)), truncated.to_vec(), "byte"),
        ("NAR under another hash", format!("/nar/{}.nar", sha(b"other")), nar.clone(), "mismatch"),
        // Refused at its first bytes while the client still sends 24 MiB: the refusal must still reach it.
        ("xz that is not xz", format!("/nar/{}.nar.xz", sha(&not_xz)), not_xz.clone(), "byte"),
        (
            "narinfo for a missing NAR",
            "/xkqag603938xw013sv3hgqh30laryip9.narinfo".into(),
            narinfo(&format!("sha256:{}", sha(&nar)), nar.len() as u64, None).into_bytes(),
            "not in the cache",
        ),
        (
            "narinfo with a bad signature",
            "/xkqag603938xw013sv3hgqh30laryip9.narinfo".into(),
            narinfo(&present_hash, present_size, Some(&good_sig_wrong_size)).into_bytes(),
            "bad signature",
        ),
        (
            "narinfo with the wrong NarSize",
            "/xkqag603938xw013sv3hgqh30laryip9.narinfo".into(),
            narinfo(&present_hash, present_size + 1, None).into_bytes(),
            "NarSize",
        ),
        (
            "narinfo that is not one",
            "/xkqag603938xw013sv3hgqh30laryip9.narinfo".into(),
            b"garbage\n".to_vec(),
            "narinfo",
        ),
    ];
    for (name, path, body, want) in &cases {
        let (st, _, reply) = put(path, body);
        let reply = String::from_utf8_lossy(&reply).to_string();
        assert!((400..500).contains(&st), "{name}: status {st}: {reply}");
        assert_eq!(reply.trim_end().lines().count(), 1, "{name}: reason should be one line: {reply}");
        assert!(reply.contains(want), "{name}: {reply}");
    }
    // A 100 MiB upload cut off halfway: the client stops sending and half-closes.
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    let total = 100u64 << 20;
    write!(s, "PUT /nar/{}.nar HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {total}\r\n\r\n", sha(b"never")).unwrap();
    let mut rng = Xorshift::new(5);
    let mut head = toks(&[b"nix-archive-1", b"(", b"type", b"regular", b"contents"]);
    head.extend((total - 200).to_le_bytes());
    s.write_all(&head).unwrap();
    let mut sent = head.len() as u64;
    let mut buf = vec![0u8; 1 << 20];
    while sent < total / 2 {
        rng.fill(&mut buf);
        s.write_all(&buf).unwrap();
        sent += buf.len() as u64;
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 4"), "cut-off upload: {reply:?}");
    // Refused at its first bytes while the client writes 24 MiB without waiting (no `Expect`): the gateway
    // reads on and drops the rest, so every write succeeds and the 400 arrives instead of a reset.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    let len = not_xz.len();
    write!(
        s,
        "PUT /nar/{}.nar.xz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n",
        sha(&not_xz)
    )
    .unwrap();
    s.write_all(&not_xz).expect("the gateway stopped reading a refused upload");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 400"), "refused upload: {reply:?}");
    server.stop();
    assert_eq!(store.snapshot(), before, "bad uploads changed the store");
    store.verify();
}

/// 32 clients at once, each fetching a different NAR, all byte-exact.
#[test]
fn thirty_two_parallel_downloads_are_byte_exact() {
    let work = tempfile::tempdir().unwrap();
    let store = TestStore::new();
    let mut expected = Vec::new();
    let shared = Xorshift::new(1).bytes(1 << 20);
    for i in 0..32u64 {
        let d = work.path().join(format!("d{i}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("shared"), &shared).unwrap();
        write_random(&d.join("own"), 1_000_000 + i * 10_000, 100 + i);
        let (hash, _, _) = store.add(&[d.to_str().unwrap()]);
        expected.push(hash);
    }
    let server = Server::start(&store, &[]);
    let children: Vec<_> = expected
        .iter()
        .map(|h| {
            Command::new("curl")
                .args(["-sS", "--fail", &format!("{}/nar/{}.nar", server.url, &h[7..])])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (child, want) in children.into_iter().zip(&expected) {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success());
        let got = format!("sha256:{}", nixdag::NarHash(sha2::Sha256::digest(&o.stdout).into()).to_nix32());
        assert_eq!(&got, want);
    }
}

/// Uploads with a token: refused without it, accepted from `nix copy` presenting it through netrc.
#[test]
fn upload_token_via_netrc() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let top = build_closure(w, 1000);
    fs::write(w.join("token"), "s3cret-token\n").unwrap();
    let store = TestStore::new();
    let server = Server::start(&store, &["--upload-token-file", w.join("token").to_str().unwrap()]);
    let (st, _, _) = curl_full(&["-X", "PUT", "--data-binary", "x", &format!("{}/nix-cache-info", server.url)]);
    assert_eq!(st, 401);
    let o = nix(w, "noauth").args(["copy", "--to", &server.url]).arg(&top).output().unwrap();
    assert!(!o.status.success(), "upload without the token was accepted");
    fs::write(w.join("netrc"), "machine 127.0.0.1\nlogin nix\npassword s3cret-token\n").unwrap();
    run(nix(w, "auth")
        .args(["copy", "--option", "netrc-file", w.join("netrc").to_str().unwrap(), "--to", &server.url])
        .arg(&top));
    let narinfo = curl_ok(&format!("{}/{}.narinfo", server.url, &top.file_name().unwrap().to_str().unwrap()[..32]));
    assert!(narinfo.contains(top.to_str().unwrap()));
}

/// A source tarball uploaded by `nix copy --to` is stored as it is (the upload runs at full speed) and
/// queued; the gateway repacks it once uploads pause, and real Nix then fetches it byte for byte.
#[test]
fn an_uploaded_tarball_is_repacked_in_the_background() {
    require_nix();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let t = crate::storage::versions();
    let f = w.join("pkg-1.0.tar.xz");
    crate::storage::tarball(&t.v1, "xz", &f);
    let p = nix_add(&f);
    let store = TestStore::new();
    let server = Server::start(&store, &["--allow-upload", "--repack-idle", "1"]);
    uploader_key(w);
    let dest = format!("{}?secret-key={}&compression=none", server.url, w.join("sk").display());
    run(nix(w, "to").args(["copy", "--to", &dest]).arg(&p));
    let started = std::time::Instant::now();
    while !server.requests().iter().any(|l| l.contains("background repack") && l.contains("Converted")) {
        assert!(started.elapsed().as_secs() < 120, "no background repack: {:#?}", server.requests());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let other = w.join("other-store");
    copy_from_gateway(w, &server, &other, &p);
    run(Command::new("nix-store").arg("--store").arg(&other).args(["--verify-path"]).arg(&p));
    server.stop();
    assert_eq!(store.stat("repack_queued"), 0);
    assert!(store.stats()["forms"]["rebuilt_blocks"].as_u64().unwrap() > 0, "{:#}", store.stats());
    let (h, _) = nix_path_info(&p);
    assert!(store.bytes(&["cat", "--nar-hash", &h]) == nix_dump(&p));
    store.verify();
}
