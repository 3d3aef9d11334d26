//! The label tree in its inference layout.

use std::ops::Range;

use crate::{Error, Result};

/// A tree over `L` labels, stored level by level so that the children of every node form one
/// contiguous block of the next level.
///
/// Node levels are numbered from the root (level 0, one node) down to the leaves (level
/// `depth`). For each internal level `t < depth`, `child_ptr(t)` has `n_nodes(t) + 1`
/// entries and node `i` of level `t` owns nodes `child_ptr[i]..child_ptr[i+1]` of level
/// `t + 1`. At the bottom, `leaf_ptr` (`n_leaves + 1` entries) points into `labels`, a
/// permutation of `0..L`: leaf `i` holds `labels[leaf_ptr[i]..leaf_ptr[i+1]]`.
///
/// Invariants (checked by [`ClusterTree::from_parts`]): at least one label; pointers start at
/// 0, are strictly increasing (no node without children, no empty leaf) and end at the size
/// of the level below; `labels` is a permutation. A tree of depth 0 is a single leaf holding
/// every label (the root is the leaf).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterTree {
    child_ptr: Vec<Vec<u32>>,
    leaf_ptr: Vec<u32>,
    labels: Vec<u32>,
}

fn check_ptr(ptr: &[u32], n_nodes: usize, n_below: usize, what: &str) -> Result<()> {
    if ptr.len() != n_nodes + 1 {
        return Err(Error::shape(format!(
            "{what} has {} entries, expected {} (nodes at this level + 1)",
            ptr.len(),
            n_nodes + 1
        )));
    }
    if ptr[0] != 0 {
        return Err(Error::invalid(format!(
            "{what}[0] must be 0, got {}",
            ptr[0]
        )));
    }
    if let Some(i) = ptr.windows(2).position(|w| w[1] <= w[0]) {
        return Err(Error::invalid(format!(
            "{what} must be strictly increasing (every node needs at least one child): \
             entries {i} and {} are {} and {}",
            i + 1,
            ptr[i],
            ptr[i + 1]
        )));
    }
    if ptr[n_nodes] as usize != n_below {
        return Err(Error::invalid(format!(
            "{what} ends at {} but the level below has {n_below} entries",
            ptr[n_nodes]
        )));
    }
    Ok(())
}

impl ClusterTree {
    /// Builds a tree from its raw arrays after checking every invariant (see the type's docs).
    /// `child_ptr[t]` is the pointer of level `t` into level `t + 1`; it is empty for a tree
    /// of depth 0.
    pub fn from_parts(
        child_ptr: Vec<Vec<u32>>,
        leaf_ptr: Vec<u32>,
        labels: Vec<u32>,
    ) -> Result<Self> {
        let n_labels = labels.len();
        if n_labels == 0 {
            return Err(Error::invalid("a cluster tree needs at least one label"));
        }
        if n_labels > u32::MAX as usize {
            return Err(Error::invalid("too many labels for u32 ids"));
        }
        let mut n_nodes = 1usize;
        for (t, ptr) in child_ptr.iter().enumerate() {
            let n_below = child_ptr
                .get(t + 1)
                .map_or(leaf_ptr.len().saturating_sub(1), |p| {
                    p.len().saturating_sub(1)
                });
            check_ptr(ptr, n_nodes, n_below, &format!("child_ptr[{t}]"))?;
            n_nodes = n_below;
        }
        check_ptr(&leaf_ptr, n_nodes, n_labels, "leaf_ptr")?;
        let mut seen = vec![false; n_labels];
        for &l in &labels {
            let slot = seen.get_mut(l as usize).ok_or_else(|| {
                Error::invalid(format!(
                    "label id {l} is out of range for {n_labels} labels"
                ))
            })?;
            if *slot {
                return Err(Error::invalid(format!(
                    "label {l} appears in more than one leaf position (labels must be a permutation)"
                )));
            }
            *slot = true;
        }
        Ok(ClusterTree {
            child_ptr,
            leaf_ptr,
            labels,
        })
    }

    /// Builds the contiguous layout from per-level parent assignments, top level first.
    ///
    /// `assignments[k]` lists, for each node of one level, the id of its parent in the level
    /// above; the last array has one entry per label (the leaf of each label), and the number
    /// of nodes of each level is the length of the array for that level. The top array's
    /// values name the top nodes: if they name a single node (all zeros), that node is the
    /// root; otherwise a root is added above them. Every parent id in `0..n_parents` must be
    /// used (no childless node). Within a parent, children keep the order of their ids, and
    /// the labels of a leaf are sorted by id.
    ///
    /// `level_assignments()` is the inverse: `from_assignments(&t.level_assignments())`
    /// rebuilds `t`.
    pub fn from_assignments(assignments: &[Vec<u32>]) -> Result<Self> {
        let Some(top) = assignments.first() else {
            return Err(Error::invalid("from_assignments needs at least one level"));
        };
        for (k, a) in assignments.iter().enumerate() {
            if a.is_empty() {
                return Err(Error::invalid(format!("assignments[{k}] is empty")));
            }
            if a.len() > u32::MAX as usize {
                return Err(Error::invalid(format!("assignments[{k}] is too long")));
            }
        }
        let n_top = top.iter().copied().max().map_or(0, |m| m as usize + 1);
        let root_level;
        let mut levels: Vec<&[u32]> = Vec::with_capacity(assignments.len() + 1);
        if n_top > 1 {
            root_level = vec![0u32; n_top];
            levels.push(&root_level);
        }
        levels.extend(assignments.iter().map(|a| a.as_slice()));
        // levels[0] must reference the single root; levels[k] references levels[k-1]'s nodes.
        let mut pos_above: Vec<u32> = vec![0]; // new position of each node of the level above
        let mut ptrs: Vec<Vec<u32>> = Vec::with_capacity(levels.len());
        let mut order: Vec<u32> = Vec::new();
        for (k, parents) in levels.iter().enumerate() {
            let n_above = pos_above.len();
            let user_k = if n_top > 1 { k.checked_sub(1) } else { Some(k) };
            let name = match user_k {
                Some(u) => format!("assignments[{u}]"),
                None => "the top level".to_string(),
            };
            let mut counts = vec![0u32; n_above + 1];
            for (i, &p) in parents.iter().enumerate() {
                if p as usize >= n_above {
                    return Err(Error::invalid(format!(
                        "{name}[{i}] = {p} but the level above has only {n_above} node(s)"
                    )));
                }
                counts[pos_above[p as usize] as usize + 1] += 1;
            }
            if let Some(empty) = (0..n_above).find(|&q| counts[pos_above[q] as usize + 1] == 0) {
                return Err(Error::invalid(format!(
                    "node {empty} of the level above {name} has no child (every id in \
                     0..{n_above} must be used)"
                )));
            }
            for q in 0..n_above {
                counts[q + 1] += counts[q];
            }
            let ptr = counts.clone();
            // stable counting sort of this level's nodes by their parent's new position
            let mut next = counts;
            let mut newpos = vec![0u32; parents.len()];
            order = vec![0u32; parents.len()];
            for (i, &p) in parents.iter().enumerate() {
                let slot = &mut next[pos_above[p as usize] as usize];
                newpos[i] = *slot;
                order[*slot as usize] = i as u32;
                *slot += 1;
            }
            ptrs.push(ptr);
            pos_above = newpos;
        }
        // The last pass ordered the labels: `ptrs.last()` is the leaf pointer, `order` the
        // labels. The first pointer is the root's (over the first level).
        let leaf_ptr = ptrs.pop().unwrap_or_default();
        Self::from_parts(ptrs, leaf_ptr, order)
    }

    /// Number of labels `L`.
    pub fn n_labels(&self) -> usize {
        self.labels.len()
    }
    /// Number of levels below the root: leaves live at level `depth()` (0 for a single leaf).
    pub fn depth(&self) -> usize {
        self.child_ptr.len()
    }
    /// Number of nodes at `level` (0 for a level beyond the leaves).
    pub fn n_nodes(&self, level: usize) -> usize {
        match level.cmp(&self.depth()) {
            std::cmp::Ordering::Less => self.child_ptr[level].len() - 1,
            std::cmp::Ordering::Equal => self.leaf_ptr.len() - 1,
            std::cmp::Ordering::Greater => 0,
        }
    }
    /// Number of nodes at each level, root (1) first, leaves last.
    pub fn n_nodes_per_level(&self) -> Vec<usize> {
        (0..=self.depth()).map(|t| self.n_nodes(t)).collect()
    }
    /// Number of leaves.
    pub fn n_leaves(&self) -> usize {
        self.leaf_ptr.len() - 1
    }
    /// The pointer of level `t` into level `t + 1` (`t < depth()`).
    pub fn child_ptr(&self, t: usize) -> Option<&[u32]> {
        self.child_ptr.get(t).map(|v| v.as_slice())
    }
    /// Every level's child pointer, root first.
    pub fn child_ptrs(&self) -> &[Vec<u32>] {
        &self.child_ptr
    }
    /// The leaf pointer into [`ClusterTree::labels`].
    pub fn leaf_ptr(&self) -> &[u32] {
        &self.leaf_ptr
    }
    /// The labels of every leaf in leaf order (a permutation of `0..L`).
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }
    /// The children of node `node` of level `level` as a range of level `level + 1`.
    pub fn children(&self, level: usize, node: usize) -> Option<Range<usize>> {
        let p = self.child_ptr.get(level)?;
        (node + 1 < p.len()).then(|| p[node] as usize..p[node + 1] as usize)
    }
    /// The labels of leaf `leaf`.
    pub fn labels_of_leaf(&self, leaf: usize) -> Option<&[u32]> {
        (leaf + 1 < self.leaf_ptr.len())
            .then(|| &self.labels[self.leaf_ptr[leaf] as usize..self.leaf_ptr[leaf + 1] as usize])
    }
    /// The leaf of each label.
    pub fn leaf_of_label(&self) -> Vec<u32> {
        let mut out = vec![0u32; self.n_labels()];
        for (leaf, w) in self.leaf_ptr.windows(2).enumerate() {
            for &l in &self.labels[w[0] as usize..w[1] as usize] {
                out[l as usize] = leaf as u32;
            }
        }
        out
    }
    /// The parent (at level `level - 1`) of each node of `level` (`1 <= level <= depth()`).
    pub fn parents(&self, level: usize) -> Option<Vec<u32>> {
        let p = self.child_ptr.get(level.checked_sub(1)?)?;
        let mut out = Vec::with_capacity(*p.last().unwrap_or(&0) as usize);
        for (i, w) in p.windows(2).enumerate() {
            out.extend(std::iter::repeat_n(i as u32, (w[1] - w[0]) as usize));
        }
        Some(out)
    }
    /// Per-level parent assignments, top first: the parents of levels `1..=depth()`, then the
    /// leaf of each label (see [`ClusterTree::from_assignments`]).
    pub fn level_assignments(&self) -> Vec<Vec<u32>> {
        let mut out: Vec<Vec<u32>> = (1..=self.depth()).filter_map(|t| self.parents(t)).collect();
        out.push(self.leaf_of_label());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_validated() {
        let t = ClusterTree::from_parts(vec![vec![0, 2]], vec![0, 2, 3], vec![2, 0, 1]).unwrap();
        assert_eq!(t.depth(), 1);
        assert_eq!(t.n_nodes_per_level(), vec![1, 2]);
        assert_eq!(t.leaf_of_label(), vec![0, 1, 0]);
        assert_eq!(t.labels_of_leaf(1), Some(&[1u32][..]));
        assert_eq!(t.labels_of_leaf(2), None);
        assert_eq!(t.children(0, 0), Some(0..2));
        // single leaf
        let s = ClusterTree::from_parts(vec![], vec![0, 2], vec![1, 0]).unwrap();
        assert_eq!(s.depth(), 0);
        assert_eq!(s.level_assignments(), vec![vec![0, 0]]);
        // errors
        let bad = [
            (vec![vec![0, 2]], vec![0, 2, 2], vec![0, 1]), // empty leaf
            (vec![vec![0, 2]], vec![0, 2, 3], vec![0, 1, 1]), // not a permutation
            (vec![vec![0, 2]], vec![0, 2, 3], vec![0, 1, 3]), // out of range
            (vec![vec![0, 3]], vec![0, 2, 3], vec![0, 1, 2]), // wrong end
            (vec![vec![1, 2]], vec![0, 2, 3], vec![0, 1, 2]), // does not start at 0
            (vec![vec![0, 1, 2]], vec![0, 2, 3], vec![0, 1, 2]), // two roots
            (vec![], vec![0], vec![]),                     // no labels
        ];
        for (c, l, lab) in bad {
            assert!(ClusterTree::from_parts(c, l, lab).is_err());
        }
    }

    #[test]
    fn assignments_round_trip() {
        // labels -> 3 leaves -> 2 top nodes (root added)
        let leaf = vec![2u32, 0, 1, 2, 0];
        let top = vec![1u32, 0, 1];
        let t = ClusterTree::from_assignments(&[top.clone(), leaf.clone()]).unwrap();
        assert_eq!(t.depth(), 2);
        assert_eq!(t.n_nodes_per_level(), vec![1, 2, 3]);
        // top node 0 owns leaf 1; top node 1 owns leaves 0 and 2 (id order)
        assert_eq!(t.child_ptr(0), Some(&[0u32, 2][..]));
        assert_eq!(t.child_ptr(1), Some(&[0u32, 1, 3][..]));
        assert_eq!(t.labels(), &[2, 1, 4, 0, 3]);
        let back = ClusterTree::from_assignments(&t.level_assignments()).unwrap();
        assert_eq!(back, t);
        // flat clustering: root added above the leaves
        let f = ClusterTree::from_assignments(&[leaf]).unwrap();
        assert_eq!(f.depth(), 1);
        assert_eq!(f.n_leaves(), 3);
        assert_eq!(
            ClusterTree::from_assignments(&f.level_assignments()).unwrap(),
            f
        );
        // single leaf
        let s = ClusterTree::from_assignments(&[vec![0, 0, 0]]).unwrap();
        assert_eq!(s.depth(), 0);
        // errors: unused parent id, out of range, empty
        assert!(ClusterTree::from_assignments(&[vec![0, 2, 2]]).is_err());
        assert!(ClusterTree::from_assignments(&[vec![0, 1], vec![0, 2]]).is_err());
        assert!(ClusterTree::from_assignments(&[vec![0, 1], vec![]]).is_err());
        assert!(ClusterTree::from_assignments(&[]).is_err());
    }
}
