//! The order in which `--max-size` gives roots up: least recently served first, but never a root that a
//! kept root still references. Pure, so that the policy is tested apart from the store.
//!
//! Nodes are roots (a NAR with the store paths recorded with it, or a flat file); an edge `a → b` says a
//! store path of `a` lists a store path of `b` in its References. A closure stays whole if every node a
//! kept node references is kept: so a node becomes a candidate only once every node referencing it is
//! gone, and among the candidates the least recently served goes first. A dependency that something
//! fresh still needs therefore outlives its old age, and a pinned (or uploaded) node keeps its whole
//! closure without the closure having to be pinned path by path.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// One root as the policy sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// When it was last served, or stored if never (milliseconds since the epoch).
    pub last: u64,
    /// Never evicted (pinned, uploaded, being read): nor is anything it references.
    pub keep: bool,
    /// The nodes its store paths reference (indices; self-references and repeats allowed).
    pub refs: Vec<usize>,
}

/// Every node that may be evicted, in the order to evict them: each one only after all nodes that
/// reference it. Ties go to the lower index, so the order is deterministic. Nodes that a kept node
/// reaches (and nodes on a reference cycle, which Nix does not make) never appear.
pub fn eviction_order(nodes: &[Node]) -> Vec<usize> {
    let n = nodes.len();
    let mut referrers = vec![0usize; n];
    let mut refs: Vec<Vec<usize>> = Vec::with_capacity(n);
    for (i, node) in nodes.iter().enumerate() {
        let mut r: Vec<usize> = node.refs.iter().copied().filter(|&r| r != i && r < n).collect();
        r.sort_unstable();
        r.dedup();
        for &t in &r {
            referrers[t] += 1;
        }
        refs.push(r);
    }
    let mut ready: BinaryHeap<Reverse<(u64, usize)>> =
        (0..n).filter(|&i| referrers[i] == 0 && !nodes[i].keep).map(|i| Reverse((nodes[i].last, i))).collect();
    let mut order = Vec::new();
    while let Some(Reverse((_, i))) = ready.pop() {
        order.push(i);
        for &t in &refs[i] {
            referrers[t] -= 1;
            if referrers[t] == 0 && !nodes[t].keep {
                ready.push(Reverse((nodes[t].last, t)));
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(last: u64, refs: &[usize]) -> Node {
        Node { last, keep: false, refs: refs.to_vec() }
    }

    #[test]
    fn least_recently_served_goes_first() {
        let nodes = [node(30, &[]), node(10, &[]), node(20, &[])];
        assert_eq!(eviction_order(&nodes), vec![1, 2, 0]);
    }

    #[test]
    fn ties_go_by_index() {
        let nodes = [node(5, &[]), node(5, &[]), node(5, &[])];
        assert_eq!(eviction_order(&nodes), vec![0, 1, 2]);
    }

    /// An old dependency of a fresh path waits for the path; then it goes by its own age.
    #[test]
    fn a_referenced_node_goes_only_after_its_referrers() {
        // 0 (fresh) → 1 (oldest); 2 in between.
        let nodes = [node(100, &[1]), node(1, &[]), node(50, &[])];
        assert_eq!(eviction_order(&nodes), vec![2, 0, 1]);
    }

    #[test]
    fn a_node_with_two_referrers_waits_for_both() {
        // 0 → 2, 1 → 2, 2 → 3
        let nodes = [node(10, &[2]), node(40, &[2]), node(1, &[3]), node(2, &[])];
        let order = eviction_order(&nodes);
        assert_eq!(order, vec![0, 1, 2, 3]);
        let pos = |i| order.iter().position(|&x| x == i).unwrap();
        assert!(pos(1) < pos(2) && pos(0) < pos(2) && pos(2) < pos(3));
    }

    /// A kept node keeps its whole closure, however old; nodes outside it still go.
    #[test]
    fn a_kept_node_keeps_its_closure() {
        let mut nodes = vec![node(90, &[1]), node(1, &[2]), node(2, &[]), node(3, &[2]), node(4, &[])];
        nodes[0].keep = true;
        // 3 references 2, but 2 stays (1 → 2 through the kept 0); 3 itself may go.
        assert_eq!(eviction_order(&nodes), vec![3, 4]);
    }

    #[test]
    fn self_references_and_repeats_do_not_block() {
        let nodes = [node(1, &[0, 1, 1]), node(2, &[1])];
        assert_eq!(eviction_order(&nodes), vec![0, 1]);
    }

    /// Nix makes no reference cycles between paths; if the index had one, its nodes would be kept rather
    /// than break a closure.
    #[test]
    fn a_cycle_is_kept() {
        let nodes = [node(1, &[1, 2]), node(2, &[0]), node(3, &[0]), node(0, &[])];
        assert_eq!(eviction_order(&nodes), vec![3]);
    }

    /// Every node appears at most once, and a node never before one that references it.
    #[test]
    fn random_graphs_keep_closures_whole() {
        let mut x = 0x9e3779b97f4a7c15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200 {
            let n = (rnd() % 30 + 1) as usize;
            // Edges only to higher indices: a DAG, as Nix makes.
            let nodes: Vec<Node> = (0..n)
                .map(|i| Node {
                    last: rnd() % 50,
                    keep: rnd() % 7 == 0,
                    refs: (0..(rnd() % 4)).filter(|_| i + 1 < n).map(|_| i + 1 + (rnd() as usize) % (n - i - 1)).collect(),
                })
                .collect();
            let order = eviction_order(&nodes);
            let mut pos = vec![usize::MAX; n];
            for (p, &i) in order.iter().enumerate() {
                assert_eq!(pos[i], usize::MAX, "node {i} twice");
                pos[i] = p;
                assert!(!nodes[i].keep);
            }
            for (i, node) in nodes.iter().enumerate() {
                for &r in &node.refs {
                    if pos[r] != usize::MAX {
                        assert!(pos[i] != usize::MAX && pos[i] < pos[r], "{r} evicted while {i} references it");
                    }
                }
            }
            // Everything not reachable from a kept node is evicted.
            let mut reach = vec![false; n];
            let mut todo: Vec<usize> = (0..n).filter(|&i| nodes[i].keep).collect();
            while let Some(i) = todo.pop() {
                if !reach[i] {
                    reach[i] = true;
                    todo.extend(&nodes[i].refs);
                }
            }
            for i in 0..n {
                assert_eq!(pos[i] != usize::MAX, !reach[i], "node {i}");
            }
        }
    }
}
