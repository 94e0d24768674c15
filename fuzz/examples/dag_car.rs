//! Seed helper (not a fuzz target): builds the DAG of a file with nixdag's own `DagBuilder`, with a small
//! chunk size and link width so the DAG is deep but tiny, and writes it as a CAR with nixdag's `write_car`.
//! `fuzz/seeds/make-seeds.sh` turns such CARs into `dag_read` and `dagpb_decode` seeds.
//!
//! Usage: cargo run --manifest-path fuzz/Cargo.toml --example dag_car -- FILE CHUNK WIDTH OUT.car

use nixdag::dag::car::write_car;
use nixdag::dag::{DagBuilder, MemBlocks};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, chunk, width, out] = &args[..] else {
        eprintln!("usage: dag_car FILE CHUNK WIDTH OUT.car");
        std::process::exit(2);
    };
    let bytes = std::fs::read(file).expect("reading input");
    let chunk: usize = chunk.parse().expect("CHUNK");
    let width: usize = width.parse().expect("WIDTH");
    let mut b = DagBuilder::with_width(MemBlocks::default(), width);
    for c in bytes.chunks(chunk.max(1)) {
        b.push_leaf(c).expect("push_leaf");
    }
    let (dag, blocks) = b.finish().expect("finish");
    let mut car = Vec::new();
    write_car(&blocks, &dag.root, &mut car).expect("write_car");
    std::fs::write(out, car).expect("writing CAR");
    println!("{} {} {}", dag.root, dag.size, dag.leaves);
}
