//! Racing candidate compressors against the original compressed bytes.
//!
//! Every candidate is fed the same decompressed stream; its output is compared with the original bytes as
//! both arrive, and a candidate is dropped at its first differing byte. Memory is bounded: the original
//! bytes are kept only from the slowest live candidate's position on, and a candidate that falls more than
//! [`MAX_LAG`] behind the original (or runs [`MAX_AHEAD`] ahead of it) is dropped too.

/// Most original bytes kept for a lagging candidate.
const MAX_LAG: usize = 4 << 20;
/// Most unverified output a candidate may hold while the original has not caught up.
const MAX_AHEAD: usize = 1 << 20;

/// A compressor under test, and the same compressor when rebuilding.
pub(crate) trait Encoder {
    /// Compresses all of `input` without flushing, appending output to `out`.
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String>;
    /// Ends the stream, appending the rest of the output to `out`.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String>;
}

/// Feeds an encoder in pieces of exactly [`Steady::PIECE`] bytes, whatever sizes arrive.
///
/// zlib's output does not depend on how its input is split, but miniz_oxide's does (seen at level 1), and
/// the pieces [`analyze`](super::analyze) gets from inflate differ from those [`rebuild`](super::rebuild)
/// reads; re-cutting both the same way makes a recipe found by one reproduce in the other.
pub(crate) struct Steady<E> {
    inner: E,
    buf: Vec<u8>,
}

impl<E: Encoder> Steady<E> {
    const PIECE: usize = 64 * 1024;

    pub(crate) fn new(inner: E) -> Steady<E> {
        Steady { inner, buf: Vec::with_capacity(Self::PIECE) }
    }
}

impl<E: Encoder> Encoder for Steady<E> {
    fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while !input.is_empty() {
            let take = (Self::PIECE - self.buf.len()).min(input.len());
            self.buf.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.buf.len() == Self::PIECE {
                self.inner.push(&self.buf, out)?;
                self.buf.clear();
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        if !self.buf.is_empty() {
            self.inner.push(&self.buf, out)?;
            self.buf.clear();
        }
        self.inner.finish(out)
    }
}

struct Runner<P> {
    params: P,
    enc: Box<dyn Encoder>,
    /// Original bytes this candidate has reproduced so far.
    pos: u64,
    /// Output not yet compared (the original has not reached it).
    pending: Vec<u8>,
}

pub(crate) struct Race<P> {
    /// Original bytes `base..base + window.len()`.
    window: Vec<u8>,
    base: u64,
    runners: Vec<Runner<P>>,
}

impl<P> Race<P> {
    pub(crate) fn new(candidates: Vec<(P, Box<dyn Encoder>)>) -> Race<P> {
        let runners =
            candidates.into_iter().map(|(params, enc)| Runner { params, enc, pos: 0, pending: Vec::new() }).collect();
        Race { window: Vec::new(), base: 0, runners }
    }

    /// Whether some candidate still matches.
    pub(crate) fn alive(&self) -> bool {
        !self.runners.is_empty()
    }

    fn end(&self) -> u64 {
        self.base + self.window.len() as u64
    }

    /// More of the original compressed bytes.
    pub(crate) fn original(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || !self.alive() {
            return;
        }
        self.window.extend_from_slice(bytes);
        self.settle();
    }

    /// More of the decompressed stream, for every candidate.
    pub(crate) fn content(&mut self, data: &[u8]) {
        for r in &mut self.runners {
            if r.enc.push(data, &mut r.pending).is_err() {
                r.pos = u64::MAX; // marks it dead for settle
            }
        }
        self.settle();
    }

    /// Ends every candidate's stream and returns the first (in candidate order) whose whole output equals
    /// the whole original.
    pub(crate) fn finish(mut self) -> Option<P> {
        for r in &mut self.runners {
            if r.enc.finish(&mut r.pending).is_err() {
                r.pos = u64::MAX;
            }
        }
        self.settle();
        let end = self.end();
        self.runners.into_iter().find(|r| r.pos == end && r.pending.is_empty()).map(|r| r.params)
    }

    /// Compares pending output with the original, drops mismatching or runaway candidates, trims the window.
    fn settle(&mut self) {
        let (base, end) = (self.base, self.end());
        let window = &self.window;
        self.runners.retain_mut(|r| {
            if r.pos == u64::MAX {
                return false;
            }
            let n = (r.pending.len() as u64).min(end - r.pos) as usize;
            if n > 0 {
                let at = (r.pos - base) as usize;
                if r.pending[..n] != window[at..at + n] {
                    return false;
                }
                r.pending.drain(..n);
                r.pos += n as u64;
            }
            r.pending.len() <= MAX_AHEAD && end - r.pos <= MAX_LAG as u64
        });
        let keep_from = self.runners.iter().map(|r| r.pos).min().unwrap_or(end);
        let drop = (keep_from - self.base) as usize;
        // Trim lazily: shifting the window costs its length, so do it once the dead prefix is large.
        if drop > 0 && (drop >= self.window.len() / 2 || drop >= 1 << 20) {
            self.window.drain(..drop);
            self.base = keep_from;
        }
    }
}
