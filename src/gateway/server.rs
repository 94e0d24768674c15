//! The listener: accepts connections and bounds what each client can cost before a request is parsed.
//!
//! `axum::serve` has no per-client limits and no timeouts, so a LAN host could hold sockets and threads
//! forever (docs/SECURITY.md). Here each connection is admitted against a per-address and a global limit
//! (over either it is answered `503 Retry-After` and closed, never left hanging), runs under hyper's
//! header-read timeout (which also bounds idle keep-alive waits) and under an inactivity timeout on the
//! socket itself: a client that neither sends nor reads for that long, such as a reader that stopped
//! reading mid-NAR, loses its connection.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// Connection limits and timeouts of the listener.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Open connections one client address may hold (a CI runner or a benchmark on one host opens many).
    pub per_address: usize,
    /// Open connections in all; by default a share of the open-file limit.
    pub total: usize,
    /// Time a client has to send a request's headers, counted from when the connection is ready for it
    /// (so it also closes idle keep-alive connections).
    pub header_timeout: Duration,
    /// Time a connection may make no progress at all (nothing read, nothing written) while a request
    /// or response is under way.
    pub idle_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            per_address: 64,
            total: 4096,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Raise the open-file soft limit to the hard limit (systemd's default soft limit, 1024, would otherwise
/// let about a thousand idle sockets lock everyone out) and return the soft limit now in force.
pub fn raise_open_file_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Connections open now, per address and in all.
#[derive(Default)]
struct Admission {
    open: Mutex<(HashMap<IpAddr, usize>, usize)>,
}

/// One admitted connection; leaving frees its place.
struct Ticket {
    admission: Arc<Admission>,
    addr: IpAddr,
}

impl Admission {
    fn admit(self: &Arc<Self>, addr: IpAddr, limits: &ConnLimits) -> Option<Ticket> {
        let mut g = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (per, total) = &mut *g;
        let mine = per.get(&addr).copied().unwrap_or(0);
        if mine >= limits.per_address || *total >= limits.total {
            return None;
        }
        per.insert(addr, mine + 1);
        *total += 1;
        Some(Ticket { admission: self.clone(), addr })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut g = self.admission.open.lock().unwrap_or_else(|p| p.into_inner());
        let (per, total) = &mut *g;
        *total -= 1;
        if let Some(n) = per.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.addr);
            }
        }
    }
}

/// Serve `router` on `listener` until `shutdown` completes, then let open requests finish (for at most
/// a few seconds). Runs on the caller's runtime; [`serve_per_core`] is what `nixdag serve` uses.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    accept_loop(listener, router, limits, Arc::new(Admission::default()), shutdown).await
}

/// Listening sockets for [`serve_per_core`]: `threads` sockets on `addr`, joined with `SO_REUSEPORT` so
/// the kernel spreads new connections evenly over them (port 0 picks one port for all). One shared
/// socket left each connection to whichever thread woke first, and one thread took most of them.
pub fn bind_per_core(addr: SocketAddr, threads: usize) -> io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Socket, Type};
    let mut out: Vec<std::net::TcpListener> = Vec::new();
    for _ in 0..threads.max(1) {
        let at = out.first().map(|l| l.local_addr()).transpose()?.unwrap_or(addr);
        let socket = Socket::new(Domain::for_address(at), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&at.into())?;
        socket.listen(1024)?;
        out.push(socket.into());
    }
    Ok(out)
}

/// Serve `router` on `listeners` (from [`bind_per_core`]), one thread each, each with a single-threaded
/// runtime of its own that accepts and answers its own connections (as nginx's workers do), until
/// `shutdown` completes on the calling thread. A shared multi-threaded runtime moved each small request
/// between its workers: the wake-ups and cross-core interrupts cost a sixth of a narinfo's server CPU
/// (docs/BENCHMARKS-gateway.md). The connection limits hold across all threads; blocking work (NAR
/// reads, lookups) still leaves the thread.
pub fn serve_per_core(
    listeners: Vec<std::net::TcpListener>,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let admission = Arc::new(Admission::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runtime = || tokio::runtime::Builder::new_current_thread().enable_all().build();
    let mut listeners = listeners.into_iter();
    let first = listeners.next().ok_or_else(|| io::Error::other("no listening socket"))?;
    let mut workers = Vec::new();
    for (i, listener) in listeners.enumerate() {
        let (router, limits, admission) = (router.clone(), limits.clone(), admission.clone());
        let mut stop = stop_rx.clone();
        let rt = runtime()?;
        workers.push(std::thread::Builder::new().name(format!("nixdag-http-{}", i + 1)).spawn(move || {
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener)?;
                accept_loop(listener, router, limits, admission, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
            })
        })?);
    }
    let served = runtime()?.block_on(async move {
        let listener = TcpListener::from_std(first)?;
        let r = accept_loop(listener, router, limits, admission, shutdown).await;
        let _ = stop_tx.send(true);
        r
    });
    for w in workers {
        if let Ok(Err(e)) = w.join() {
            tracing::warn!("a serving thread failed: {e}");
        }
    }
    served
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    admission: Arc<Admission>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .max_buf_size(64 * 1024);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors (or a client that left before accept): wait a little instead
                    // of spinning; connections that close free descriptors.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Some(ticket) = admission.admit(canonical(peer), &limits) else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
        let client = super::ClientAddr(canonical(peer));
        let router = router.clone();
        // Every request learns its client's address (upload admission and byte budgets are per address).
        let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(client);
            let mut router = router.clone();
            async move { tower_service::Service::call(&mut router, req).await }
        });
        let conn = builder.serve_connection(io, service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ticket = ticket;
            let _ = conn.await;
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    Ok(())
}

/// IPv4 clients reached through an IPv6 socket count as their IPv4 address.
fn canonical(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Answer a connection over the limits with 503 and close it. The request is read first (briefly, and
/// at most a few KiB) so the client sees the answer rather than a reset.
async fn refuse(mut stream: TcpStream) {
    const ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nCache-Control: no-store\r\n\
Content-Type: text/plain\r\nContent-Length: 37\r\nConnection: close\r\n\r\ntoo many connections from this host\r\n\r\n";
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut buf = [0u8; 4096];
        let mut seen = 0usize;
        while seen < buf.len() {
            match stream.read(&mut buf[seen..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
            if buf[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let _ = stream.write_all(ANSWER).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// A socket that fails with `TimedOut` once it has made no progress, in either direction, for `limit`
/// while someone waits on it. hyper waits on reads between requests too; its header-read timeout is
/// the shorter one there.
///
/// Progress only notes the time (a clock read): moving a timer on every read and write took the timer
/// driver's lock per I/O call. The timer is moved only when it fires early, to the last progress plus
/// the limit.
struct IdleTimeout<S> {
    inner: S,
    limit: Duration,
    last: Instant,
    deadline: Pin<Box<Sleep>>,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, limit: Duration) -> Self {
        IdleTimeout { inner, limit, last: Instant::now(), deadline: Box::pin(tokio::time::sleep(limit)) }
    }

    fn progressed(&mut self) {
        self.last = Instant::now();
    }

    /// After a write: bytes taken are progress; not ready means the deadline counts (see `check`).
    fn wrote(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }

    /// Called when the inner socket is not ready: fail if the deadline has passed, else wait for it too.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            match self.deadline.as_mut().poll(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(()) => {
                    let due = self.last + self.limit;
                    if Instant::now() >= due {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "client made no progress"));
                    }
                    // Progress since the timer was set: wait from the last progress (and poll again, so
                    // the timer holds this task's waker).
                    self.deadline.as_mut().reset(due);
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match this.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        this.wrote(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => match this.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            r => r,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
