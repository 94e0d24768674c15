//! A static HTTP server for binary caches written by real Nix (`nix copy --to file://…`), on loopback:
//! what an upstream looks like to nixdag, with a request log and faults to inject (404, a connection
//! reset mid-body, wrong bytes, a slow or dead server).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server does instead of serving a file.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer 404.
    NotFound,
    /// Send the headers and half the body, then reset the connection.
    ResetMidBody,
    /// Send these bytes instead.
    Body(Vec<u8>),
}

#[derive(Default)]
struct State {
    log: Vec<String>,
    faults: HashMap<String, Fault>,
    delay: Duration,
    /// Bytes per second NAR bodies are sent at (0: as fast as possible).
    rate: usize,
    down: bool,
}

/// A running server; stops when dropped.
pub struct CacheServer {
    pub url: String,
    pub dir: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl CacheServer {
    pub fn start(dir: PathBuf) -> CacheServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, d) = (state.clone(), stop.clone(), dir.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, d) = (st.clone(), d.clone());
                std::thread::spawn(move || serve(conn, &st, &d));
            }
        });
        CacheServer { url, dir, state, stop }
    }

    /// Every request so far, as `METHOD PATH STATUS`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// The NAR files asked for so far.
    pub fn nar_requests(&self) -> Vec<String> {
        self.requests().into_iter().filter(|l| l.contains(" /nar/")).collect()
    }

    /// The narinfos asked for so far.
    pub fn narinfo_requests(&self) -> Vec<String> {
        self.requests().into_iter().filter(|l| l.contains(".narinfo")).collect()
    }

    pub fn fault(&self, path: &str, f: Fault) {
        self.state.lock().unwrap().faults.insert(path.to_string(), f);
    }

    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    /// Wait this long before answering each NAR request.
    pub fn nar_delay(&self, d: Duration) {
        self.state.lock().unwrap().delay = d;
    }

    /// Send NAR bodies at this many bytes per second.
    pub fn throttle(&self, bytes_per_sec: usize) {
        self.state.lock().unwrap().rate = bytes_per_sec;
    }

    /// Accept connections but never answer (a hung upstream).
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// Set the `Priority` of its nix-cache-info.
    pub fn set_priority(&self, p: u32) {
        let f = self.dir.join("nix-cache-info");
        let text = std::fs::read_to_string(&f).unwrap_or_else(|_| "StoreDir: /nix/store\n".into());
        let mut lines: Vec<String> = text.lines().filter(|l| !l.starts_with("Priority:")).map(String::from).collect();
        lines.push(format!("Priority: {p}"));
        std::fs::write(f, lines.join("\n") + "\n").unwrap();
    }
}

impl Drop for CacheServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>, dir: &std::path::Path) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut content_length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; content_length];
        let _ = reader.read_exact(&mut body);
        let (fault, delay, down, rate) = {
            let s = state.lock().unwrap();
            (s.faults.get(&path).cloned(), s.delay, s.down, s.rate)
        };
        if down {
            state.lock().unwrap().log.push(format!("{method} {path} hung"));
            std::thread::sleep(Duration::from_secs(120));
            return;
        }
        if path.starts_with("/nar/") && !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let file = dir.join(path.trim_start_matches('/'));
        let safe = !path.contains("..");
        let found = if safe { std::fs::read(&file).ok() } else { None };
        let (status, bytes, reset) = match (fault, found) {
            (Some(Fault::NotFound), _) | (None, None) => (404, b"not found\n".to_vec(), false),
            (Some(Fault::Body(b)), _) => (200, b, false),
            (Some(Fault::ResetMidBody), Some(b)) => (200, b, true),
            (Some(Fault::ResetMidBody), None) => (404, b"not found\n".to_vec(), false),
            (None, Some(b)) => (200, b, false),
        };
        state.lock().unwrap().log.push(format!("{method} {path} {status}"));
        let reason = if status == 200 { "OK" } else { "Not Found" };
        let head =
            format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n", bytes.len());
        if conn.write_all(head.as_bytes()).is_err() {
            return;
        }
        if method == "HEAD" {
            continue;
        }
        if reset {
            let _ = conn.write_all(&bytes[..bytes.len() / 2]);
            let _ = conn.flush();
            std::thread::sleep(Duration::from_millis(50));
            // SO_LINGER 0: close sends a reset, not a clean end.
            let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
            return;
        }
        if rate > 0 && path.starts_with("/nar/") {
            // A tenth of a second's worth at a time.
            for piece in bytes.chunks((rate / 10).max(1)) {
                if conn.write_all(piece).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            continue;
        }
        if conn.write_all(&bytes).is_err() {
            return;
        }
    }
}
