//! `nixdag serve`: the HTTP binary cache.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use crate::gateway::{key, Gateway, GatewayConfig, ServedCompression, UploadPolicy};
use crate::nix::signing::PublicKey;
use crate::store::Store;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Compression {
    None,
    Zstd,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on; serving the LAN is an explicit `--listen 0.0.0.0:PORT`
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: String,
    /// Signing key (`name:base64`, as nix-store --generate-binary-cache-key writes it)
    /// [default: one created in the store on first start]
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Priority announced in nix-cache-info (lower is preferred; cache.nixos.org is 40)
    #[arg(long, default_value_t = 30, value_name = "N")]
    priority: u32,
    /// How narinfos point at NARs: plain `.nar` (rangeable) or `.nar.zst`
    #[arg(long, value_enum, default_value = "none")]
    nar_compression: Compression,
    /// Accept uploads (`nix copy --to`) from anyone who can reach the gateway
    #[arg(long, conflicts_with = "upload_token_file")]
    allow_upload: bool,
    /// Accept uploads presenting this token (Bearer, or the password in Nix's netrc)
    #[arg(long, value_name = "FILE")]
    upload_token_file: Option<PathBuf>,
    /// Also check uploaded signatures by this key (`name:base64`); repeatable
    #[arg(long = "trusted-key", value_name = "KEY")]
    trusted_keys: Vec<String>,
    /// Print one line per request to stderr
    #[arg(long)]
    access_log: bool,
    /// Repack queued tarballs (`nixdag repack`) in the background once no new one has been queued for
    /// this many seconds; 0 never does
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    repack_idle: u64,
}

/// Convert queued tarballs one at a time whenever the queue has not grown for `idle`, until `stop`.
/// Uploads go on meanwhile: a repack commits like any ingest, and a crash mid-way loses only its work.
fn repack_in_background(
    store: Arc<Store>,
    idle: std::time::Duration,
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (lock, cvar) = &*stop;
        let mut last = usize::MAX;
        loop {
            let stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
            let (stopped, _) = cvar.wait_timeout_while(stopped, idle, |s| !*s).unwrap_or_else(|p| p.into_inner());
            if *stopped {
                return;
            }
            drop(stopped);
            let queued = match store.repack_queue() {
                Ok(q) => q.len(),
                Err(e) => {
                    eprintln!("nixdag: background repack: {e}");
                    continue;
                }
            };
            // Still growing (an upload or warm-up is under way): wait for it to settle.
            if queued == 0 || queued > last {
                last = queued;
                continue;
            }
            for _ in 0..queued {
                if *lock.lock().unwrap_or_else(|p| p.into_inner()) {
                    return;
                }
                let mut log = |root: &crate::dag::Cid, bytes: u64, outcome| {
                    eprintln!("nixdag: background repack: {root} ({bytes} bytes): {outcome:?}");
                };
                match store.repack(Some(1), &mut log) {
                    Ok(r) if r.left == 0 => break,
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("nixdag: background repack: {e}");
                        break;
                    }
                }
            }
            last = store.repack_queue().map(|q| q.len()).unwrap_or(usize::MAX);
        }
    })
}

/// Keep block-sized buffers on the heap. A served leaf (up to 256 KiB) is read into a fresh buffer that
/// lives until the socket has sent it; above glibc's default 128 KiB mmap threshold each one is a new
/// mapping — page faults, zeroing and munmap were a sixth of the serving CPU in profiles.
fn tune_allocator() {
    // SAFETY: mallopt only adjusts allocator parameters; it is called before any server thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

pub fn run(store: Store, args: ServeArgs) -> Result<()> {
    tune_allocator();
    let key = key::load_or_create(store.dir(), args.key.as_deref())?;
    let uploads = if args.allow_upload {
        UploadPolicy::Open
    } else if let Some(f) = &args.upload_token_file {
        let t = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let t = t.trim().to_string();
        if t.is_empty() {
            bail!("upload token file {} is empty", f.display());
        }
        UploadPolicy::Token(t)
    } else {
        UploadPolicy::Denied
    };
    let trusted_keys = args
        .trusted_keys
        .iter()
        .map(|k| PublicKey::parse(k).with_context(|| format!("invalid --trusted-key {k:?}")))
        .collect::<Result<Vec<_>>>()?;
    let public = key.public();
    let cfg = GatewayConfig {
        priority: args.priority,
        compression: match args.nar_compression {
            Compression::None => ServedCompression::None,
            Compression::Zstd => ServedCompression::Zstd,
        },
        uploads,
        key,
        trusted_keys,
        access_log: args.access_log,
    };
    let store = Arc::new(store);
    let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let repacker = (args.repack_idle > 0)
        .then(|| repack_in_background(store.clone(), std::time::Duration::from_secs(args.repack_idle), stop.clone()));
    let gateway = Gateway::new(store, cfg);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    let served = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        println!("nixdag gateway on http://{addr}");
        println!("trusted-public-keys = {public}");
        std::io::stdout().flush()?;
        axum::serve(listener, gateway.router()).with_graceful_shutdown(shutdown_signal()).await.context("serving")
    });
    *stop.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
    stop.1.notify_all();
    if let Some(t) = repacker {
        let _ = t.join();
    }
    served
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
