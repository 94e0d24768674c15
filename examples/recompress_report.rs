//! Which compressed tarballs `nixdag::recompress` can rebuild byte for byte, and how fast.
//!
//! ```text
//! cargo run --release --example recompress_report -- /tmp/corpus-work/full/tarballs.tsv ~/.cargo/registry/cache
//! ```
//! An argument ending in `.tsv` is a corpus list (columns `file`, `kind`, …; files are looked up by name
//! anywhere under the list's directory); any other argument is a directory searched for files whose first
//! bytes name a supported codec. Per file it prints the codec, whether it qualifies and with which
//! parameters, and the analyze and rebuild throughput in MiB/s of compressed bytes; then totals per kind.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nixdag::recompress;

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// (kind, path) pairs for one argument.
fn inputs(arg: &str) -> Vec<(String, PathBuf)> {
    let path = PathBuf::from(arg);
    if arg.ends_with(".tsv") {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{arg}: {e}"));
        let mut files = Vec::new();
        walk(path.parent().unwrap_or(Path::new(".")), &mut files);
        // A name may appear more than once (e.g. a small pointer file beside the download): take the largest.
        let mut by_name: HashMap<String, (u64, PathBuf)> = HashMap::new();
        for p in files {
            let (Some(name), Ok(meta)) = (p.file_name(), std::fs::metadata(&p)) else { continue };
            let e = by_name.entry(name.to_string_lossy().into_owned()).or_insert((0, PathBuf::new()));
            if meta.len() >= e.0 {
                *e = (meta.len(), p);
            }
        }
        let by_name: HashMap<String, PathBuf> = by_name.into_iter().map(|(k, (_, p))| (k, p)).collect();
        let mut lines = text.lines();
        let head: Vec<&str> = lines.next().unwrap_or("").split('\t').collect();
        let col =
            |name: &str| head.iter().position(|h| *h == name).unwrap_or_else(|| panic!("{arg}: no {name} column"));
        let (file_col, kind_col) = (col("file"), col("kind"));
        lines
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                let name = f.get(file_col)?;
                match by_name.get(*name) {
                    Some(p) => Some((f.get(kind_col).unwrap_or(&"?").to_string(), p.clone())),
                    None => {
                        eprintln!("{name}: not found under {}", path.display());
                        None
                    }
                }
            })
            .collect()
    } else {
        let mut files = Vec::new();
        walk(&path, &mut files);
        files.sort();
        files
            .into_iter()
            .filter(|p| {
                let mut head = [0u8; 6];
                std::fs::File::open(p)
                    .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
                    .is_ok_and(|n| recompress::detect(&head[..n]).is_some())
            })
            .map(|p| {
                let ext = p.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
                (ext, p)
            })
            .collect()
    }
}

#[derive(Default)]
struct Totals {
    files: usize,
    bytes: u64,
    ok_files: usize,
    ok_bytes: u64,
    content_bytes: u64,
    analyze: Duration,
    rebuild: Duration,
    rebuilt_bytes: u64,
}

fn mibs(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / t.as_secs_f64().max(1e-9)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: recompress_report (LIST.tsv | DIR)...");
        std::process::exit(2);
    }
    let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
    let mut params: BTreeMap<String, usize> = BTreeMap::new();
    println!("kind\tfile\tbytes\tcodec\tqualifies\tanalyze_MiB/s\trebuild_MiB/s\trecipe");
    for arg in &args {
        for (kind, path) in inputs(arg) {
            let file = match std::fs::read(&path) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    continue;
                }
            };
            let codec = recompress::detect(&file).map_or("-", |c| c.name());
            let mut content = Vec::new();
            let t0 = Instant::now();
            let result = recompress::analyze(&file[..], |b| {
                content.extend_from_slice(b);
                Ok(())
            });
            let analyze = t0.elapsed();
            let t = totals.entry(kind.clone()).or_default();
            t.files += 1;
            t.bytes += file.len() as u64;
            t.analyze += analyze;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            match result {
                Ok(Some(recipe)) => {
                    let mut out = Vec::with_capacity(file.len());
                    let t1 = Instant::now();
                    let rebuilt = recompress::rebuild(&recipe, &content[..], &mut out);
                    let rebuild = t1.elapsed();
                    let exact = rebuilt.is_ok() && out == file;
                    assert!(exact, "{}: recipe {} does not rebuild the file", path.display(), recipe.describe());
                    t.ok_files += 1;
                    t.ok_bytes += file.len() as u64;
                    t.content_bytes += content.len() as u64;
                    t.rebuild += rebuild;
                    t.rebuilt_bytes += file.len() as u64;
                    let d = recipe.describe();
                    *params.entry(d.split(',').next().unwrap_or(&d).to_string()).or_default() += 1;
                    println!(
                        "{kind}\t{name}\t{}\t{codec}\tyes\t{:.1}\t{:.1}\t{d} ({} bytes encoded)",
                        file.len(),
                        mibs(file.len() as u64, analyze),
                        mibs(file.len() as u64, rebuild),
                        recipe.encode().len()
                    );
                }
                Ok(None) => println!(
                    "{kind}\t{name}\t{}\t{codec}\tno\t{:.1}\t-\t-",
                    file.len(),
                    mibs(file.len() as u64, analyze)
                ),
                Err(e) => println!("{kind}\t{name}\t{}\t{codec}\terror\t-\t-\t{e}", file.len()),
            }
        }
    }
    println!();
    println!("kind\tfiles\tqualify\tbytes\tqualifying_bytes\tdecompressed_bytes\tanalyze_MiB/s\trebuild_MiB/s");
    for (kind, t) in &totals {
        println!(
            "{kind}\t{}\t{}\t{}\t{}\t{}\t{:.1}\t{:.1}",
            t.files,
            t.ok_files,
            t.bytes,
            t.ok_bytes,
            t.content_bytes,
            mibs(t.bytes, t.analyze),
            mibs(t.rebuilt_bytes, t.rebuild)
        );
    }
    println!();
    for (p, n) in params {
        println!("{n}\t{p}");
    }
}
