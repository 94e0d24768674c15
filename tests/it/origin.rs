//! A static HTTP server on loopback standing in for the places files come from (an upstream URL, a
//! hashed mirror), with a request log and the faults the tests need: a missing file, wrong bytes, a
//! connection dropped halfway. It speaks just enough HTTP/1.1: GET and HEAD, one request per
//! connection, `Range: bytes=N-`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What a path answers.
#[derive(Clone)]
pub enum Route {
    /// 200 with these bytes (206 from a `Range`).
    Bytes(Vec<u8>),
    /// Like `Bytes`, but the first `cuts` responses announce the whole length, send only `cut_at` bytes
    /// and drop the connection.
    Cut { body: Vec<u8>, cut_at: usize, cuts: usize },
}

#[derive(Clone, Default)]
struct Shared {
    routes: Arc<Mutex<HashMap<String, Route>>>,
    log: Arc<Mutex<Vec<String>>>,
}

pub struct Origin {
    pub url: String,
    shared: Shared,
}

impl Origin {
    pub fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Shared::default();
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = answer(conn, &s);
                });
            }
        });
        Origin { url, shared }
    }

    pub fn route(&self, path: &str, r: Route) {
        self.shared.routes.lock().unwrap().insert(path.to_string(), r);
    }

    /// `METHOD PATH [range]` per request, in order.
    pub fn log(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn requests_for(&self, path: &str) -> usize {
        self.log().iter().filter(|l| l.split_whitespace().nth(1) == Some(path)).count()
    }
}

fn answer(conn: TcpStream, s: &Shared) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut from = 0usize;
    let mut ranged = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
            if let Some(n) = v.trim().strip_suffix('-').and_then(|n| n.parse().ok()) {
                from = n;
                ranged = true;
            }
        }
    }
    s.log.lock().unwrap().push(if ranged {
        format!("{method} {path} from={from}")
    } else {
        format!("{method} {path}")
    });
    let mut w = conn;
    let route = {
        let mut routes = s.routes.lock().unwrap();
        let route = routes.get(&path).cloned();
        if let Some(Route::Cut { body, cut_at, cuts }) = &route {
            if *cuts > 0 {
                routes.insert(path.clone(), Route::Cut { body: body.clone(), cut_at: *cut_at, cuts: cuts - 1 });
            }
        }
        route
    };
    let (body, cut) = match route {
        None => {
            w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n")?;
            return Ok(());
        }
        Some(Route::Bytes(b)) => (b, None),
        Some(Route::Cut { body, cut_at, cuts }) => (body, (cuts > 0).then_some(cut_at)),
    };
    let from = from.min(body.len());
    let status = if ranged {
        format!("206 Partial Content\r\nContent-Range: bytes {from}-{}/{}", body.len().max(1) - 1, body.len())
    } else {
        "200 OK".into()
    };
    let rest = &body[if ranged { from } else { 0 }..];
    write!(w, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", rest.len())?;
    if method == "HEAD" {
        return Ok(());
    }
    match cut {
        Some(n) => {
            w.write_all(&rest[..n.min(rest.len())])?;
            w.flush()?;
            // A reset, not a clean close: the client sees the connection die mid-body.
            let _ = socket2::SockRef::from(&w).set_linger(Some(std::time::Duration::ZERO));
        }
        None => w.write_all(rest)?,
    }
    Ok(())
}
