//! A cache of rendered answers bounded in bytes, not entries: one large entry must not be able to
//! multiply into gigabytes (150 narinfos of 1 MiB each once held 157 MB under an entry-count bound).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Answers by key, oldest evicted first once their bytes exceed the budget, each kept at most `ttl`
/// (another process may change the store: a path forgotten there is not advertised here for longer).
pub struct ByteCache<K> {
    inner: RwLock<Inner<K>>,
    ttl: Duration,
}

struct Inner<K> {
    map: HashMap<K, (u64, Bytes, Instant)>,
    order: VecDeque<(K, u64)>,
    bytes: usize,
    budget: usize,
    /// Bumped by every invalidation, so an answer read before one is not cached after it.
    generation: u64,
    seq: u64,
}

/// Per entry, beside its bytes: the key, the map slot and the queue slot.
const OVERHEAD: usize = 96;

impl<K: Hash + Eq + Clone> ByteCache<K> {
    /// A cache holding at most `budget` bytes of answers, each for at most `ttl`.
    pub fn new(budget: usize, ttl: Duration) -> Self {
        ByteCache {
            ttl,
            inner: RwLock::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                budget,
                generation: 0,
                seq: 0,
            }),
        }
    }

    /// The cached answer, or the generation to pass to [`ByteCache::put`] after computing it.
    pub fn get(&self, k: &K) -> Result<Bytes, u64> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.map.get(k).filter(|(_, _, at)| at.elapsed() < self.ttl).map(|(_, b, _)| b.clone()).ok_or(g.generation)
    }

    /// Cache an answer computed at `generation`, unless an invalidation came since. Answers larger than
    /// an eighth of the budget are not kept (they would evict many small ones).
    pub fn put(&self, k: K, v: Bytes, generation: u64) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let cost = v.len() + OVERHEAD;
        if g.generation != generation || cost > g.budget / 8 {
            return;
        }
        g.seq += 1;
        let seq = g.seq;
        if let Some((_, old, _)) = g.map.insert(k.clone(), (seq, v, Instant::now())) {
            g.bytes -= old.len() + OVERHEAD;
        }
        g.order.push_back((k, seq));
        g.bytes += cost;
        while g.bytes > g.budget {
            let Some((old, s)) = g.order.pop_front() else { break };
            if g.map.get(&old).is_some_and(|(cur, _, _)| *cur == s) {
                if let Some((_, b, _)) = g.map.remove(&old) {
                    g.bytes -= b.len() + OVERHEAD;
                }
            }
        }
        // Stale queue slots (of replaced or invalidated entries) must not outgrow the live ones.
        if g.order.len() > 2 * g.map.len() + 64 {
            let Inner { map, order, .. } = &mut *g;
            order.retain(|(k, s)| map.get(k).is_some_and(|(cur, _, _)| cur == s));
        }
    }

    /// Forget `k` (its answer changed).
    pub fn invalidate(&self, k: &K) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some((_, b, _)) = g.map.remove(k) {
            g.bytes -= b.len() + OVERHEAD;
        }
        g.generation += 1;
    }

    /// Forget everything (a NAR was found damaged: the paths using it must stop being advertised).
    pub fn invalidate_all(&self) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        g.map.clear();
        g.order.clear();
        g.bytes = 0;
        g.generation += 1;
    }

    /// Bytes held now (answers plus bookkeeping).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narinfo_cache_is_bounded_in_bytes() {
        let c = ByteCache::new(1 << 20, Duration::from_secs(60));
        for i in 0..1000u32 {
            let g = c.get(&i).unwrap_err();
            c.put(i, Bytes::from(vec![0u8; 100 * 1024]), g);
            assert!(c.bytes() <= 1 << 20, "{} bytes after {i}", c.bytes());
        }
        // The newest entries stay; the oldest went.
        assert!(c.get(&999).is_ok());
        assert!(c.get(&0).is_err());
        // Too large for the cache: not kept at all.
        let g = c.get(&5000).unwrap_err();
        c.put(5000, Bytes::from(vec![0u8; 200 * 1024]), g);
        assert!(c.get(&5000).is_err());
    }

    #[test]
    fn an_answer_computed_before_an_invalidation_is_not_cached() {
        let c = ByteCache::new(1 << 20, Duration::from_secs(60));
        let g = c.get(&1u8).unwrap_err();
        c.invalidate(&1);
        c.put(1, Bytes::from_static(b"old"), g);
        assert!(c.get(&1).is_err());
        let g = c.get(&1).unwrap_err();
        c.put(1, Bytes::from_static(b"new"), g);
        assert_eq!(c.get(&1).unwrap(), Bytes::from_static(b"new"));
        // Replacing and invalidating keeps the byte count exact.
        c.invalidate(&1);
        assert_eq!(c.bytes(), 0);
    }
}
