//! Shared helpers: a temporary store, the binary, and the outside judges; generated data comes from the
//! test kit (testkit/), re-exported here.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use nixdag_testkit::{nix_words, tok, toks, write_random, Xorshift};
use tempfile::TempDir;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_nixdag")
}

/// A store in a temporary directory.
pub struct TestStore {
    pub dir: TempDir,
}

impl TestStore {
    pub fn new() -> Self {
        TestStore { dir: tempfile::Builder::new().prefix("nixdag-store-").tempdir().unwrap() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("--store").arg(self.path());
        c
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Run, assert success, return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.output(args);
        assert!(
            o.status.success(),
            "nixdag {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Run, assert success, return raw stdout.
    pub fn bytes(&self, args: &[&str]) -> Vec<u8> {
        let o = self.output(args);
        assert!(o.status.success(), "nixdag {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    }

    /// Run, assert failure with a one-line error, return that line.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.output(args);
        assert!(!o.status.success(), "nixdag {args:?} should have failed");
        let err = String::from_utf8(o.stderr).unwrap();
        let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("nixdag: waiting")).collect();
        assert_eq!(lines.len(), 1, "error should be one line, got: {err}");
        assert!(lines[0].starts_with("error: "), "{err}");
        lines[0].to_string()
    }

    /// `add` and parse its line: (nar hash, root CID, size).
    pub fn add(&self, args: &[&str]) -> (String, String, u64) {
        let mut a = vec!["add"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        let line = out.lines().last().expect("add prints a line");
        let f: Vec<&str> = line.split_whitespace().collect();
        let n = f.len();
        (f[n - 3].to_string(), f[n - 2].to_string(), f[n - 1].parse().unwrap())
    }

    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["dedup-stats", "--json", "--no-xz"])).unwrap()
    }

    pub fn stat(&self, key: &str) -> u64 {
        self.stats()[key].as_u64().unwrap()
    }

    /// `verify` must pass.
    pub fn verify(&self) {
        let out = self.ok(&["verify"]);
        assert!(out.trim_end().ends_with(": ok"), "{out}");
    }

    /// Everything a reader could observe: manifests and block counts, plus every pack file's size.
    /// (Not `index_bytes`, nor `stored_bytes` which includes it: redb's file size moves when it saves its
    /// free-space state on close, even after a read-only session.)
    pub fn snapshot(&self) -> String {
        let mut stats = self.stats();
        stats.as_object_mut().unwrap().remove("index_bytes");
        stats.as_object_mut().unwrap().remove("stored_bytes");
        // Ratios over stored_bytes move with it.
        stats.as_object_mut().unwrap().remove("totals");
        let mut s = format!("{stats}\n");
        let mut packs: Vec<_> = fs::read_dir(self.path().join("packs"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                format!("{} {}", e.file_name().to_string_lossy(), e.metadata().unwrap().len())
            })
            .collect();
        packs.sort();
        s.push_str(&packs.join("\n"));
        s
    }
}

/// Real Nix must be installed (scripts/test installs Debian's nix-bin).
pub fn require_nix() {
    let ok = Command::new("nix-store").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "real Nix is required: run scripts/test, which installs Debian's nix-bin");
}

/// `nix-store --dump PATH`.
pub fn nix_dump(path: &Path) -> Vec<u8> {
    require_nix();
    let o = Command::new("nix-store").arg("--dump").arg(path).output().unwrap();
    assert!(o.status.success(), "nix-store --dump {}: {}", path.display(), String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// `nix-hash --type sha256 --base32 PATH`: Nix's own NarHash of a path, as `sha256:<nix32>`.
pub fn nix_hash(path: &Path) -> String {
    require_nix();
    let o = Command::new("nix-hash").args(["--type", "sha256", "--base32"]).arg(path).output().unwrap();
    assert!(o.status.success());
    format!("sha256:{}", String::from_utf8(o.stdout).unwrap().trim())
}

/// `nix-store --add PATH` → the store path.
pub fn nix_add(path: &Path) -> PathBuf {
    require_nix();
    let o = Command::new("nix-store").arg("--add").arg(path).output().unwrap();
    assert!(o.status.success(), "nix-store --add: {}", String::from_utf8_lossy(&o.stderr));
    PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
}

/// `nix path-info --json PATH` → (narHash as typed by Nix, narSize).
pub fn nix_path_info(path: &Path) -> (String, u64) {
    let o = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command", "path-info", "--json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (v[0]["narHash"].as_str().unwrap().to_string(), v[0]["narSize"].as_u64().unwrap())
}

/// Convert any hash form to `sha256:<nix32>` with Nix's own tool.
pub fn to_nix32(hash: &str) -> String {
    let o = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command", "hash", "to-base32", "--type", "sha256"])
        .arg(hash)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    format!("sha256:{}", String::from_utf8(o.stdout).unwrap().trim())
}

/// The npm tools in tests/ipfs, installed by `npm ci` (scripts/test runs it).
pub fn ipfs_tools() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ipfs");
    assert!(
        dir.join("node_modules/@ipld/car").exists(),
        "tests/ipfs/node_modules missing: run scripts/test (or `npm ci` in tests/ipfs)"
    );
    dir
}

/// Run a node script from tests/ipfs; returns (success, stdout, stderr).
pub fn node(script: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> (bool, String, String) {
    let dir = ipfs_tools();
    let mut c = Command::new("node");
    c.arg(dir.join(script)).current_dir(&dir).stdin(Stdio::null());
    for a in args {
        c.arg(a);
    }
    let o = c.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Download a package from PyPI and unpack it: a real package tree (one of the registries the suite
/// may use). Returns the unpacked directory inside `work`.
pub fn pypi_wheel_tree(work: &Path, name: &str, version: &str) -> PathBuf {
    let dl = work.join(format!("dl-{name}-{version}"));
    let o = Command::new("python3")
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d"])
        .arg(&dl)
        .arg(format!("{name}=={version}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "pip download {name}=={version}: {}", String::from_utf8_lossy(&o.stderr));
    let wheel = fs::read_dir(&dl).unwrap().next().unwrap().unwrap().path();
    let tree = work.join(format!("{name}-{version}"));
    let script = "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])";
    let o = Command::new("python3").args(["-c", script]).arg(&wheel).arg(&tree).output().unwrap();
    assert!(o.status.success(), "unpacking {}: {}", wheel.display(), String::from_utf8_lossy(&o.stderr));
    tree
}

/// Flip one byte of `needle`'s copy in the store's packs; returns whether it was found.
pub fn corrupt_in_packs(store: &TestStore, needle: &[u8]) -> bool {
    for e in std::fs::read_dir(store.path().join("packs")).unwrap() {
        let p = e.unwrap().path();
        let mut bytes = std::fs::read(&p).unwrap();
        if let Some(i) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[i + needle.len() / 2] ^= 0x01;
            std::fs::write(&p, bytes).unwrap();
            return true;
        }
    }
    false
}

/// Download a crate's source archive (a real `.tar.gz`) from crates.io; returns the file.
pub fn crate_tarball(work: &Path, name: &str, version: &str) -> PathBuf {
    let file = work.join(format!("{name}-{version}.tar.gz"));
    let url = format!("https://static.crates.io/crates/{name}/{name}-{version}.crate");
    let o = Command::new("curl").args(["-sSfL", "--retry", "3", "-o"]).arg(&file).arg(&url).output().unwrap();
    assert!(o.status.success(), "downloading {url}: {}", String::from_utf8_lossy(&o.stderr));
    file
}

/// A started `nixdag serve`: the first lines it printed on stdout (the gateway's URL, its trusted key,
/// then `peer endpoint …` when peering is on), and its stderr, gathered by a thread as it comes.
pub struct Served {
    pub child: std::process::Child,
    pub lines: Vec<String>,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Spawn `cmd` (a `nixdag … serve …` command) and read its first `lines` stdout lines.
pub fn spawn_serve(cmd: &mut Command, lines: usize) -> Served {
    use std::io::{BufRead, BufReader};
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (err, sink) = (child.stderr.take().unwrap(), log.clone());
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut read = Vec::new();
    for _ in 0..lines {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        read.push(line.trim().to_string());
    }
    Served { child, lines: read, log }
}
