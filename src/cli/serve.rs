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
    let gateway = Gateway::new(Arc::new(store), cfg);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        println!("nixdag gateway on http://{addr}");
        println!("trusted-public-keys = {public}");
        std::io::stdout().flush()?;
        axum::serve(listener, gateway.router()).with_graceful_shutdown(shutdown_signal()).await.context("serving")
    })
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
