//! `nixdag warm`: store paths and their closures ahead of time, from upstream caches or this machine's
//! Nix store (src/warm). Progress on a terminal, a line per path otherwise; a summary at the end.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressStyle};

use super::TrustArgs;
use crate::gateway::key;
use crate::nix::store_path::StorePath;
use crate::service::{Service, ServiceConfig};
use crate::store::Store;
use crate::upstream::{Timeouts, Upstreams};
use crate::warm::{self, LocalStore, Observer, Outcome, Source, Summary, UpstreamSource};

#[derive(Args, Debug)]
pub struct WarmArgs {
    /// An upstream binary cache (`https://…` or `http://…`); repeatable, preferred by the `Priority`
    /// of its nix-cache-info
    #[arg(long = "upstream", value_name = "URL", required_unless_present = "from_local_store")]
    upstreams: Vec<String>,
    #[command(flatten)]
    trust: TrustArgs,
    /// Take the paths (and their closures) from this machine's Nix store instead of upstreams
    #[arg(long, conflicts_with = "upstreams")]
    from_local_store: bool,
    /// Read store paths from this file, one per line (`#` comments), besides those given as arguments
    #[arg(long, value_name = "FILE")]
    paths_from: Option<PathBuf>,
    /// Paths stored at once (and narinfos looked up at once)
    #[arg(long, default_value_t = 4, value_name = "N")]
    jobs: usize,
    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
    /// Store paths (`/nix/store/<hash>-<name>`) to warm with their closures
    #[arg(value_name = "PATH", required_unless_present = "paths_from")]
    paths: Vec<PathBuf>,
}

pub fn run(store: Store, args: WarmArgs) -> Result<()> {
    let mut given = args.paths.clone();
    if let Some(f) = &args.paths_from {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        given.extend(
            text.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()).map(PathBuf::from),
        );
    }
    let trusted = args.trust.keys()?;
    let key = key::load_or_create(store.dir(), None)?;
    let service = Service::start(
        Arc::new(store),
        ServiceConfig {
            key,
            trusted_keys: trusted.clone(),
            repack_idle: None,
            trust_foreign_narinfos: false,
            budget: None,
        },
    );
    let jobs = args.jobs.clamp(1, 64);
    let summary = if args.from_local_store {
        let (local, closure) = LocalStore::query(&given).context("reading this machine's Nix store")?;
        run_with(&service, &local, &closure, jobs, args.json)
    } else {
        let roots = given
            .iter()
            .map(|p| {
                let s = p.to_string_lossy();
                StorePath::parse(&s).or_else(|_| StorePath::from_base_name(&s)).with_context(|| format!("{s:?}"))
            })
            .collect::<Result<Vec<_>>>()?;
        if trusted.is_empty() {
            bail!(
                "no trusted keys: give --trusted-key or --trusted-keys-file (nothing unsigned is taken from upstreams)"
            );
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the HTTP runtime")?;
        let upstreams = Upstreams::new(&args.upstreams, trusted, Timeouts::default())?;
        let problems = rt.block_on(upstreams.probe());
        for p in &problems {
            eprintln!("nixdag: upstream {p}");
        }
        if problems.len() == upstreams.list().len() {
            bail!("no upstream answered");
        }
        let source = UpstreamSource::new(Arc::new(upstreams), rt.handle().clone());
        let summary = run_with(&service, &source, &roots, jobs, args.json);
        drop(source);
        rt.shutdown_timeout(Duration::from_secs(1));
        summary
    };
    service.stop();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    if !summary.failed.is_empty() {
        bail!("{} of {} paths could not be warmed", summary.failed.len(), summary.paths);
    }
    Ok(())
}

fn run_with(service: &Arc<Service>, source: &dyn Source, roots: &[StorePath], jobs: usize, json: bool) -> Summary {
    let progress = Progress::new(source, !json && std::io::stderr().is_terminal());
    let summary = warm::warm(service, source, roots, jobs, &progress);
    progress.bar.finish_and_clear();
    summary
}

fn print_summary(s: &Summary) {
    println!(
        "warmed {} paths, skipped {} (stored already), failed {}, of {} in {:.1} s",
        s.warmed,
        s.skipped,
        s.failed.len(),
        s.paths,
        s.seconds
    );
    for (from, n) in &s.from {
        println!("  {n} from {from}");
    }
    println!(
        "downloaded {}; NARs {}, new data {} (dedup saved {})",
        HumanBytes(s.bytes_downloaded),
        HumanBytes(s.nar_bytes),
        HumanBytes(s.bytes_added),
        HumanBytes(s.dedup_saving)
    );
    for f in &s.failed {
        println!("failed {}: {}", f.path, f.reason);
    }
}

/// A progress bar on a terminal (paths done of total, bytes downloaded and newly stored, rate, ETA by
/// NAR bytes), one line per settled path otherwise.
struct Progress<'a> {
    bar: ProgressBar,
    terminal: bool,
    source: &'a dyn Source,
    started: Instant,
    nar_total: AtomicU64,
    nar_done: AtomicU64,
    added: AtomicU64,
}

impl<'a> Progress<'a> {
    fn new(source: &'a dyn Source, terminal: bool) -> Self {
        let bar = if terminal { ProgressBar::new(0) } else { ProgressBar::hidden() };
        if let Ok(style) = ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} paths {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message("looking up the closures");
        if terminal {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Progress {
            bar,
            terminal,
            source,
            started: Instant::now(),
            nar_total: AtomicU64::new(0),
            nar_done: AtomicU64::new(0),
            added: AtomicU64::new(0),
        }
    }

    fn message(&self) -> String {
        let down = self.source.meter().downloaded();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let (done, total) = (self.nar_done.load(Ordering::Relaxed), self.nar_total.load(Ordering::Relaxed));
        let eta = if done > 0 && total > done {
            HumanDuration(Duration::from_secs_f64(secs * (total - done) as f64 / done as f64)).to_string()
        } else {
            "-".into()
        };
        format!(
            "{} downloaded, {} new, {}/s, ETA {eta}",
            HumanBytes(down),
            HumanBytes(self.added.load(Ordering::Relaxed)),
            HumanBytes((down as f64 / secs) as u64)
        )
    }
}

impl Observer for Progress<'_> {
    fn planned(&self, total: usize, present: usize, to_fetch: usize, nar_bytes: u64) {
        self.nar_total.store(nar_bytes, Ordering::Relaxed);
        self.bar.set_length(to_fetch as u64);
        let paths = if total == 1 { "path" } else { "paths" };
        let line =
            format!("{total} {paths}: {present} stored already, {to_fetch} to fetch ({})", HumanBytes(nar_bytes));
        if self.terminal {
            self.bar.println(line);
        } else {
            eprintln!("nixdag: {line}");
        }
    }

    fn done(&self, path: &StorePath, outcome: &Outcome) {
        if let Outcome::Warmed { nar_size, added, .. } = outcome {
            self.nar_done.fetch_add(*nar_size, Ordering::Relaxed);
            self.added.fetch_add(*added, Ordering::Relaxed);
        }
        let line = match outcome {
            Outcome::Warmed { from, nar_size, added } => {
                format!("warmed {path} from {from} ({} NAR, {} new)", HumanBytes(*nar_size), HumanBytes(*added))
            }
            Outcome::Present => return,
            Outcome::Failed(why) => format!("failed {path}: {why}"),
        };
        if self.terminal {
            self.bar.inc(1);
            self.bar.set_message(self.message());
            if matches!(outcome, Outcome::Failed(_)) {
                self.bar.println(line);
            }
        } else {
            eprintln!("nixdag: {line}");
        }
    }
}
