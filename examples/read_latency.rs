//! In-process read figures for a stored NAR, without process start-up: 1 MiB range latency (random
//! offsets) and whole-NAR `cat` throughput (warm; run under `taskset -c 0` for one core).
//!
//! usage: cargo run --release --example read_latency -- STORE NARHASH [RANGES]
//!        cargo run --release --example read_latency -- STORE --each NARHASH…
//! (used by scripts/storage-levers; NARHASH as `sha256:…` in any Nix form). `--each` reads every NAR once,
//! in order, twice over: each with a store opened afresh (what one `nixdag cat` process per NAR does, minus
//! starting the process) and all through one open store (what the gateway does), and prints both
//! throughputs.

use std::io::Read;
use std::time::Instant;

use nixdag::dag::DagReader;
use nixdag::store::Store;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() >= 3, "usage: read_latency STORE NARHASH [RANGES] | STORE --each NARHASH…");
    if args[2] == "--each" {
        return each(std::path::Path::new(&args[1]), &args[3..]);
    }
    let store = Store::open(std::path::Path::new(&args[1]))?;
    let hash: nixdag::nix::hash::NarHash = args[2].parse()?;
    let n: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(50);
    let entry = store.nar(&hash)?.ok_or_else(|| anyhow::anyhow!("no NAR {hash} in the store"))?;
    let size = entry.nar_size;
    // Whole NAR, twice: the second is the warm figure.
    let mut mibs = 0.0;
    for _ in 0..2 {
        let t = Instant::now();
        let mut r = DagReader::new(&store, entry.root)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let k = r.read(&mut buf)?;
            if k == 0 {
                break;
            }
            total += k as u64;
        }
        anyhow::ensure!(total == size, "read {total} of {size} bytes");
        mibs = size as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64();
    }
    // 1 MiB ranges at pseudo-random offsets; each starts with a cold frame cache for its frames only
    // if no earlier range touched them, as a server would see.
    let len = (1u64 << 20).min(size);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = x % (size - len + 1);
        let t = Instant::now();
        let mut r = DagReader::range(&store, entry.root, off, Some(off + len))?;
        let mut out = Vec::with_capacity(len as usize);
        r.read_to_end(&mut out)?;
        anyhow::ensure!(out.len() as u64 == len, "range read {} bytes", out.len());
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "nar_bytes={size} cat_mib_s={mibs:.1} range_1mib_ms_median={:.2} range_1mib_ms_p90={:.2} range_1mib_ms_max={:.2}",
        ms[ms.len() / 2],
        ms[ms.len() * 9 / 10],
        ms[ms.len() - 1]
    );
    Ok(())
}

/// Read every NAR in `hashes` whole, once with a fresh store each, once through one store.
fn each(dir: &std::path::Path, hashes: &[String]) -> anyhow::Result<()> {
    let hashes = hashes.iter().map(|h| h.parse()).collect::<Result<Vec<nixdag::nix::hash::NarHash>, _>>()?;
    let read_all = |store: &Store, hash: &nixdag::nix::hash::NarHash| -> anyhow::Result<u64> {
        let entry = store.nar(hash)?.ok_or_else(|| anyhow::anyhow!("no NAR {hash} in the store"))?;
        let mut r = DagReader::new(store, entry.root)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let k = r.read(&mut buf)?;
            if k == 0 {
                return Ok(total);
            }
            total += k as u64;
        }
    };
    let mib_s = |bytes: u64, t: Instant| bytes as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut fresh = 0;
    for h in &hashes {
        fresh += read_all(&Store::open_read_only(dir)?, h)?;
    }
    let fresh_mib_s = mib_s(fresh, t);
    let store = Store::open_read_only(dir)?;
    let t = Instant::now();
    let mut shared = 0;
    for h in &hashes {
        shared += read_all(&store, h)?;
    }
    println!(
        "nars={} bytes={fresh} each_fresh_store_mib_s={fresh_mib_s:.1} each_one_store_mib_s={:.1}",
        hashes.len(),
        mib_s(shared, t)
    );
    Ok(())
}
