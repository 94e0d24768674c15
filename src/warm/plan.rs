//! The warmer's two passes: discovery (which paths the closures hold, which are stored, where the rest
//! come from) and the fetch (dependencies first, `jobs` at a time). Both run on plain threads that
//! block on the store and, through the source, on the network.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::BufReader;
use std::sync::{Arc, Condvar, Mutex};

use super::source::{Found, Source};
use super::{Observer, Outcome};
use crate::nix::store_path::{StorePath, StorePathHash};
use crate::service::Service;
use crate::upstream::as_stored;

/// What discovery learnt about one path.
pub(super) enum Known {
    /// Stored and whole already.
    Present,
    /// To fetch.
    Found(Box<Found>),
    /// Not to be had, and why.
    Failed(String),
}

/// The closures, in the order they were discovered.
pub(super) struct Plan {
    order: Vec<StorePathHash>,
    nodes: HashMap<StorePathHash, (StorePath, Known)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Walk the closures of `roots`: stored paths by their own narinfo (nothing asked of the source), the
/// others through `source`, `jobs` lookups at a time.
pub(super) fn discover(service: &Arc<Service>, source: &dyn Source, roots: &[StorePath], jobs: usize) -> Plan {
    struct Walk {
        queue: VecDeque<StorePath>,
        seen: HashSet<StorePathHash>,
        busy: usize,
        plan: Plan,
    }
    let mut walk = Walk { queue: VecDeque::new(), seen: HashSet::new(), busy: 0, plan: Plan { order: vec![], nodes: HashMap::new() } };
    for r in roots {
        if walk.seen.insert(*r.hash()) {
            walk.queue.push_back(r.clone());
        }
    }
    let state = (Mutex::new(walk), Condvar::new());
    let worker = || loop {
        let path = {
            let mut w = lock(&state.0);
            loop {
                if let Some(p) = w.queue.pop_front() {
                    w.busy += 1;
                    break p;
                }
                if w.busy == 0 {
                    state.1.notify_all();
                    return;
                }
                w = state.1.wait(w).unwrap_or_else(|p| p.into_inner());
            }
        };
        let (known, refs) = look(service, source, &path);
        let mut w = lock(&state.0);
        w.busy -= 1;
        for r in refs {
            if w.seen.insert(*r.hash()) {
                w.queue.push_back(r);
            }
        }
        w.plan.order.push(*path.hash());
        w.plan.nodes.insert(*path.hash(), (path, known));
        state.1.notify_all();
    };
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(worker);
        }
    });
    state.0.into_inner().unwrap_or_else(|p| p.into_inner()).plan
}

/// What one path is, and what it references.
fn look(service: &Service, source: &dyn Source, path: &StorePath) -> (Known, Vec<StorePath>) {
    match service.narinfo(path.hash()) {
        Ok(Some(info)) if info.store_path == *path => return (Known::Present, info.references),
        Ok(Some(info)) => return (Known::Failed(format!("the store holds {} under the same hash", info.store_path)), vec![]),
        Ok(None) => {}
        Err(e) => return (Known::Failed(format!("reading the store: {e}")), vec![]),
    }
    match source.lookup(path) {
        Ok(found) => {
            let refs = found.info.references.iter().filter(|r| *r != path).cloned().collect();
            (Known::Found(Box::new(found)), refs)
        }
        Err(why) => (Known::Failed(why), vec![]),
    }
}

/// Store every found path, dependencies first, `jobs` at a time; returns each path's outcome, in
/// discovery order.
pub(super) fn fetch(
    service: &Arc<Service>,
    source: &dyn Source,
    plan: Plan,
    jobs: usize,
    observer: &dyn Observer,
) -> Vec<(StorePath, Outcome)> {
    struct Sched {
        /// Found paths' references not stored yet.
        waiting: HashMap<StorePathHash, usize>,
        referrers: HashMap<StorePathHash, Vec<StorePathHash>>,
        ready: VecDeque<StorePathHash>,
        busy: usize,
        outcomes: HashMap<StorePathHash, Outcome>,
    }
    let Plan { order, nodes } = plan;
    let mut s = Sched {
        waiting: HashMap::new(),
        referrers: HashMap::new(),
        ready: VecDeque::new(),
        busy: 0,
        outcomes: HashMap::new(),
    };
    let (mut present, mut to_fetch, mut bytes) = (0, 0, 0);
    let mut failed = Vec::new();
    for h in &order {
        let (path, known) = &nodes[h];
        match known {
            Known::Present => {
                present += 1;
                s.outcomes.insert(*h, Outcome::Present);
            }
            Known::Failed(why) => failed.push((*h, why.clone())),
            Known::Found(f) => {
                to_fetch += 1;
                bytes += f.info.nar_size;
                let mut n = 0;
                for r in f.info.references.iter().filter(|r| *r != path) {
                    if matches!(nodes.get(r.hash()), Some((_, Known::Found(_) | Known::Failed(_)))) {
                        n += 1;
                        s.referrers.entry(*r.hash()).or_default().push(*h);
                    }
                }
                s.waiting.insert(*h, n);
            }
        }
    }
    observer.planned(order.len(), present, to_fetch, bytes);
    let name = |h: &StorePathHash| nodes[h].0.clone();
    // A failure fails everything that references it, transitively.
    let fail = |s: &mut Sched, h: StorePathHash, why: String| {
        let mut stack = vec![(h, why)];
        while let Some((h, why)) = stack.pop() {
            if s.outcomes.contains_key(&h) {
                continue;
            }
            let outcome = Outcome::Failed(why);
            observer.done(&name(&h), &outcome);
            s.outcomes.insert(h, outcome);
            for r in s.referrers.get(&h).cloned().unwrap_or_default() {
                stack.push((r, format!("it references {}, which failed", name(&h).to_absolute())));
            }
        }
    };
    for (h, why) in failed {
        fail(&mut s, h, why);
    }
    for h in &order {
        if s.waiting.get(h) == Some(&0) && !s.outcomes.contains_key(h) {
            s.ready.push_back(*h);
        }
    }
    let state = (Mutex::new(s), Condvar::new());
    let worker = || loop {
        let h = {
            let mut s = lock(&state.0);
            loop {
                if let Some(h) = s.ready.pop_front() {
                    s.busy += 1;
                    break h;
                }
                if s.busy == 0 {
                    state.1.notify_all();
                    return;
                }
                s = state.1.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Some((path, Known::Found(found))) = nodes.get(&h) else { continue };
        let outcome = store_one(service, source, found);
        let mut s = lock(&state.0);
        s.busy -= 1;
        match outcome {
            Outcome::Failed(why) => fail(&mut s, h, why),
            ok => {
                observer.done(path, &ok);
                s.outcomes.insert(h, ok);
                for r in s.referrers.get(&h).cloned().unwrap_or_default() {
                    let left = s.waiting.get_mut(&r).map(|n| {
                        *n = n.saturating_sub(1);
                        *n
                    });
                    if left == Some(0) && !s.outcomes.contains_key(&r) {
                        s.ready.push_back(r);
                    }
                }
            }
        }
        state.1.notify_all();
    };
    std::thread::scope(|sc| {
        for _ in 0..jobs {
            sc.spawn(worker);
        }
    });
    let mut s = state.0.into_inner().unwrap_or_else(|p| p.into_inner());
    order
        .iter()
        .map(|h| {
            // Only a reference cycle (which Nix cannot make) leaves a path unsettled.
            let outcome = s.outcomes.remove(h).unwrap_or_else(|| Outcome::Failed("its references form a cycle".into()));
            (nodes[h].0.clone(), outcome)
        })
        .collect()
}

/// Store one path: record it when its NAR is stored already (under another path), else fetch the NAR
/// and commit it with the narinfo; nothing is kept unless the NAR matches.
fn store_one(service: &Service, source: &dyn Source, found: &Found) -> Outcome {
    let info = as_stored(found.info.clone());
    let nar_size = info.nar_size;
    let from = source.name(found);
    match service.nar(&info.nar_hash) {
        Ok(Some(_)) => {
            return match service.record_path(info) {
                Ok(()) => Outcome::Warmed { from, nar_size, added: 0 },
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
        Ok(None) | Err(crate::service::ServiceError::Damaged(_)) => {}
        Err(e) => return Outcome::Failed(format!("reading the store: {e}")),
    }
    let r = match source.open(found) {
        Ok(r) => r,
        Err(why) => return Outcome::Failed(why),
    };
    match service.put_path(info, BufReader::with_capacity(1 << 20, r)) {
        Ok(added) => Outcome::Warmed { from, nar_size, added: added.new_bytes },
        Err(e) => Outcome::Failed(e.to_string()),
    }
}
