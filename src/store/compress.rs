//! Block compression on worker threads, so zstd (the costliest step of an ingest) runs beside hashing,
//! chunking and NAR parsing instead of after them. Workers own nothing of the store: they take raw bytes
//! and give back what to write; the ingest thread alone appends to packs, so ordering and rollback stay
//! where they were.

use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::error::StoreError;
use super::tables::Compression;
use crate::dag::BlockHash;

/// zstd level for blocks (DESIGN §5).
pub const ZSTD_LEVEL: i32 = 3;

/// A block ready to be written.
pub struct Compressed {
    /// Its name.
    pub hash: BlockHash,
    /// Its length before compression.
    pub raw_len: u32,
    /// What goes into the pack: zstd output, or the raw bytes when zstd did not shrink them.
    pub payload: Vec<u8>,
    /// Which of the two `payload` is.
    pub compression: Compression,
}

/// Compress one block.
pub fn compress(c: &mut zstd::bulk::Compressor<'_>, hash: BlockHash, raw: Vec<u8>) -> std::io::Result<Compressed> {
    let raw_len = raw.len() as u32;
    let z = c.compress(&raw)?;
    Ok(if z.len() < raw.len() {
        Compressed { hash, raw_len, payload: z, compression: Compression::Zstd }
    } else {
        Compressed { hash, raw_len, payload: raw, compression: Compression::None }
    })
}

type Job = (BlockHash, Vec<u8>);

/// A few threads compressing blocks; results come back in any order.
pub struct CompressPool {
    jobs: Option<SyncSender<Job>>,
    results: Receiver<std::io::Result<Compressed>>,
    in_flight: usize,
    workers: Vec<JoinHandle<()>>,
}

impl CompressPool {
    /// One worker per available core.
    pub fn new() -> Result<Self, StoreError> {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(2 * n);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (result_tx, results) = mpsc::channel();
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let job_rx = job_rx.clone();
            let result_tx = result_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("nixdag-zstd-{i}"))
                .spawn(move || {
                    let mut c = match zstd::bulk::Compressor::new(ZSTD_LEVEL) {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = result_tx.send(Err(e));
                            return;
                        }
                    };
                    loop {
                        let job = job_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok((hash, raw)) = job else { return };
                        if result_tx.send(compress(&mut c, hash, raw)).is_err() {
                            return;
                        }
                    }
                })
                .map_err(StoreError::io("starting a compression thread"))?;
            workers.push(handle);
        }
        Ok(CompressPool { jobs: Some(jobs), results, in_flight: 0, workers })
    }

    /// Queue a block; waits while the queue is full, which bounds memory.
    pub fn submit(&mut self, hash: BlockHash, raw: Vec<u8>) -> Result<(), StoreError> {
        let jobs = self.jobs.as_ref().expect("pool is open until dropped");
        jobs.send((hash, raw)).map_err(|_| StoreError::Io {
            context: "compression threads".into(),
            source: std::io::Error::other("all compression threads stopped"),
        })?;
        self.in_flight += 1;
        Ok(())
    }

    /// The next finished block: without waiting (`wait = false`) or, while blocks are in flight, waiting.
    pub fn next(&mut self, wait: bool) -> Result<Option<Compressed>, StoreError> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        let r =
            if wait { self.results.recv().map_err(|_| TryRecvError::Disconnected) } else { self.results.try_recv() };
        match r {
            Ok(c) => {
                self.in_flight -= 1;
                c.map(Some).map_err(StoreError::io("zstd compression"))
            }
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(StoreError::Io {
                context: "compression threads".into(),
                source: std::io::Error::other("compression threads stopped with blocks in flight"),
            }),
        }
    }
}

impl Drop for CompressPool {
    fn drop(&mut self) {
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
