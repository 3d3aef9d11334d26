//! The tree driver: the level-by-level recursion of [`hierarchical_kmeans`] (and of
//! [`split_subtrees`], which grows given sub-trees apart) and the split of one node into its
//! children.

use std::ops::Range;

use rayon::prelude::*;

use super::duplicates::{duplicate_groups, local_duplicates};
use super::lloyd::kmeans_node;
use super::params::{
    fanout_schedule, KMeansParams, ZView, AUTO_N_INIT, AUTO_N_INIT_MAX_FANOUT,
    AUTO_N_INIT_MAX_LABELS,
};
use super::rows::{DenseRows, SparseRows};
use crate::cluster::rng::SplitMix64;
use crate::cluster::tree::ClusterTree;
use crate::sparse::{check_finite, Csr, CsrView};
use crate::{Error, Result};

/// `z` after the checks every entry point makes: finite values, a dense shape that matches
/// its data; a sparse `z` canonical (a canonical copy goes to `owned` when needed).
fn checked_z<'a>(z: ZView<'a>, owned: &'a mut Option<Csr>) -> Result<ZView<'a>> {
    match z {
        ZView::Sparse(v) => {
            check_finite(v.data(), "Z")?;
            if v.is_canonical() {
                Ok(ZView::Sparse(v))
            } else {
                Ok(ZView::Sparse(owned.insert(v.canonicalize()).view()))
            }
        }
        ZView::Dense { data, n_rows, dim } => {
            if n_rows.checked_mul(dim) != Some(data.len()) {
                return Err(Error::shape(format!(
                    "dense Z has {} values, expected {n_rows} x {dim}",
                    data.len()
                )));
            }
            check_finite(data, "Z")?;
            Ok(z)
        }
    }
}

/// Builds a label tree by recursive B-ary k-means on `z` (one row per label).
///
/// **Shape.** Let `K = ceil(L / max_leaf_size)`. If `K <= 1` the tree is one leaf. Otherwise
/// the depth is `D = ceil(log_B K)` (the least `D` with `B^D >= K`) and every node of level `t`
/// splits into `c_t` children ([`fanout_schedule`]: fan-outs as even as possible, product
/// `P >= K` as small as possible), or into `n` children when it holds `n < c_t` labels. All
/// leaves sit at level `D`. With explicit `fanouts` the tree has one level per entry and
/// those fan-outs (PECOS's shapes, for instance `[2, 16, 16]`), whatever `max_leaf_size`.
///
/// **Balanced** (`balanced = true`): a node of `n` labels gives its children `ceil(n / c)`
/// (the first `n mod c` children) or `floor(n / c)` labels, so siblings differ by at most one,
/// and since `floor(floor(n/a)/b) = floor(n/(ab))` (likewise for ceil) every leaf holds
/// `floor(L/P)` or `ceil(L/P)` labels, at most `max_leaf_size`. The assignment step is
/// *greedy by margin*: members are visited in decreasing order of (best score - second-best
/// score) (ties by position) and each joins its best-scoring child that still has room.
/// For two children this is exactly a median cut of the score difference.
///
/// **Unbalanced** (`balanced = false`): each member joins its best-scoring child, under a
/// hard cap of `max_leaf_size * c_{t+1} * ... * c_{D-1}` labels per child (the most its
/// subtree can hold, so leaves still hold at most `max_leaf_size`; members over a full child
/// go, by margin, to their best child with room); an empty child then takes the member
/// with the largest gain (score there minus score in its own child, ties to the lowest
/// position) from children with more than one member.
///
/// **k-means.** Seeds: k-means++ (D^2 sampling, from the node's own seeded stream) over
/// distinct members; a node of more than `max(64 c, 2048)` members seeds from a uniform
/// sample (without replacement, from the same stream) of that many members. Scores:
/// spherical: cosine `(x.s / |s|) / |x|` with `s` the sum of the members (a zero sum scores
/// 0); Euclidean: `x.s / m - |s|^2 / (2 m^2)` for a cluster of `m` members, i.e.
/// `x.mu - |mu|^2 / 2` with `mu` the mean (the argmax of which is the nearest centroid). At
/// most `max_iter` Lloyd rounds, stopping early once a round moves at most `tol` of the
/// members (rounded down) to another cluster (identical rows trading places do not count),
/// or, from the fifth round on, improves the objective (the sum, in f64 and member order, of
/// each member's score in its cluster) by at most `1e-4` of its magnitude; the last round's
/// assignment is kept either way. A node runs k-means `n_init` times (by default 3 times
/// at nodes of at most 8 children in trees of at most 10,000 labels, once elsewhere), each
/// run seeded anew from the same stream, and keeps the run of the highest objective (scored
/// against its own centroids; the first among equals). Children are ordered by cluster
/// index and the labels within a child by id. A node whose labels all have identical rows
/// (nothing to cluster) is split evenly in id order, as balanced.
///
/// **Work.** Labels with identical rows (same columns and value bits; common in practice:
/// tail labels with the same positives, or the filled rows of labels without any) are
/// found once by hashing, and a node scores each distinct row once. The cluster sums are
/// kept column-interleaved and updated in place by the members that moved, and the
/// per-cluster scale is applied to the scores, so a round costs about one pass over the
/// node's stored values. A node with fewer members than half its columns is scored column
/// by column when its sums would not stay in cache (over 2 MiB): a one-off column-major
/// copy of its rows, in blocks of members whose scores stay in cache, streaming the sums
/// once per block. Other nodes gather a centroid column per stored value, from sums padded
/// to 16 lanes (one cache line per column), prefetched when over 2 MiB.
///
/// **Determinism.** Every node draws from its own stream derived from `(seed, level, node
/// index)`, and every sum runs in a fixed order: a score sums its member's values in column
/// order whichever way the node is scored; a cluster sum adds or subtracts members in member
/// order (recomputed sums: in id order); squared norms sum in a fixed order. Parallelism
/// splits members, clusters or columns, never a sum, so the tree is identical for any
/// thread count. Nodes of a level run in parallel; inside a large node, the scoring is
/// parallel over members and the sum updates over clusters.
///
/// **Memory.** A node holds `c' x d'` floats of sums (and, while recomputing them densely,
/// `c x d'` more), where `c'` is `c` (scored by columns) or `c` rounded up to 16 lanes, and
/// `d'` is `d` for dense input and, for sparse input, the number of distinct columns among
/// the node's members whenever that is small (the members are copied with re-numbered
/// columns), so deep small nodes stay cheap even for `d ~ 1e6`; a node scored by columns
/// also holds a copy of its distinct rows (8 bytes per stored value, at most 2^24 values).
///
/// Errors: invalid parameters, no labels, or a non-finite value in `z`.
pub fn hierarchical_kmeans(z: ZView<'_>, params: &KMeansParams) -> Result<ClusterTree> {
    params.validate()?;
    let mut owned = None;
    let z = checked_z(z, &mut owned)?;
    let n_labels = z.n_rows();
    if n_labels == 0 {
        return Err(Error::invalid("Z has no rows (no labels to cluster)"));
    }
    if n_labels > u32::MAX as usize {
        return Err(Error::invalid("too many labels for u32 ids"));
    }
    let fanouts = match &params.fanouts {
        Some(f) => f.clone(),
        None => fanout_schedule(n_labels, params.branching, params.max_leaf_size),
    };
    // the whole tree is the root's sub-tree: every level, first descendants at index 0
    let first = vec![vec![0u32]; fanouts.len()];
    let labels: Vec<u32> = (0..n_labels as u32).collect();
    let grown = grow(
        &z,
        params,
        &fanouts,
        n_labels,
        0,
        &[0, n_labels as u32],
        labels,
        &first,
    )?;
    ClusterTree::from_parts(grown.child_ptrs, grown.ends, grown.labels)
}

/// Nodes of a tree grown some levels down by [`split_subtrees`], in local label ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subtrees {
    /// One pointer array per level split, as [`ClusterTree::child_ptr`]: entry `j` maps the
    /// nodes of level `level + j` under the given nodes (in tree order) to their children.
    pub child_ptrs: Vec<Vec<u32>>,
    /// The ends of the nodes of the deepest level reached in `labels` (as
    /// [`ClusterTree::leaf_ptr`], starting with 0).
    pub ends: Vec<u32>,
    /// The labels (rows of `z`) in node order, each node's labels sorted by id.
    pub labels: Vec<u32>,
}

/// Grows the sub-trees under some nodes of level `level` of the tree that
/// [`hierarchical_kmeans`] builds over `n_labels` labels, for `first.len()` levels, with
/// exactly the splits [`hierarchical_kmeans`] makes there (distributed clustering: the
/// sub-trees of a tree can be clustered apart from each other).
///
/// `z` holds the rows of the labels under the nodes only, in the same relative order as in
/// the whole tree's representation (the local id of a label is its row in `z`; the whole
/// tree orders the labels of a node by id, so increasing local ids must mean increasing
/// global ids). Node `k` holds the labels `labels[node_ptr[k]..node_ptr[k + 1]]` (local ids,
/// any order; every row of `z` exactly once). A node's stream is derived from `(seed, level,
/// index of the node in its level)`, so the caller gives the indices: `first[j][k]` is the
/// index, within level `level + j`, of the first descendant of node `k` at that level
/// (`first[0]`: the nodes' own indices, increasing). The descendants of one node at one
/// level are consecutive, and how many there are is known once the sizes of the level
/// above are (a node of `n` labels has `min(c_t, n)` children), so a caller that clusters
/// the sub-trees apart knows `first[0]` and `first[1]` from the sizes of the nodes of
/// `level` (all of them), and, for balanced trees, where sizes follow from sizes, every
/// deeper level.
///
/// `params` and `n_labels` are those of the whole tree: they set the fan-outs (the schedule
/// of `n_labels` unless `params.fanouts`), the cap of the unbalanced variant and the
/// default `n_init`. The rows are checked for finite values and canonicalised as by
/// [`hierarchical_kmeans`]; labels with identical rows are found among the rows given,
/// which leads to the same splits (only copies within a node matter).
///
/// Errors: invalid parameters, `level + first.len()` beyond the depth, `z` with more rows
/// than `n_labels`, `labels` not a permutation of the rows, node or descendant indices that
/// are not increasing or overlap, a non-finite value.
pub fn split_subtrees(
    z: ZView<'_>,
    params: &KMeansParams,
    n_labels: usize,
    level: usize,
    node_ptr: &[u32],
    labels: &[u32],
    first: &[Vec<u32>],
) -> Result<Subtrees> {
    params.validate()?;
    let mut owned = None;
    let z = checked_z(z, &mut owned)?;
    let n = z.n_rows();
    if n > n_labels || n_labels > u32::MAX as usize {
        return Err(Error::invalid(format!(
            "Z has {n} rows but the tree {n_labels} labels (at most 2^32 - 1)"
        )));
    }
    let mut seen = vec![false; n];
    for &l in labels {
        match seen.get_mut(l as usize) {
            Some(s) if !*s => *s = true,
            _ => {
                return Err(Error::invalid(
                    "labels must list every row of Z exactly once",
                ))
            }
        }
    }
    if labels.len() != n {
        return Err(Error::invalid(
            "labels must list every row of Z exactly once",
        ));
    }
    if node_ptr.first() != Some(&0)
        || node_ptr.last().map(|&e| e as usize) != Some(n)
        || node_ptr.windows(2).any(|w| w[1] <= w[0])
    {
        return Err(Error::invalid(
            "node_ptr must start at 0, increase and end at the number of labels",
        ));
    }
    let fanouts = match &params.fanouts {
        Some(f) => f.clone(),
        None => fanout_schedule(n_labels, params.branching, params.max_leaf_size),
    };
    if level + first.len() > fanouts.len() {
        return Err(Error::invalid(format!(
            "cannot split {} levels from level {level}: the tree has depth {}",
            first.len(),
            fanouts.len()
        )));
    }
    let n_nodes = node_ptr.len() - 1;
    if first.iter().any(|f| f.len() != n_nodes) {
        return Err(Error::invalid(
            "first must give one index per node at every level",
        ));
    }
    if let Some(f0) = first.first() {
        if f0.windows(2).any(|w| w[1] <= w[0]) {
            return Err(Error::invalid("the nodes' indices must be increasing"));
        }
    }
    // each node's labels by increasing id, as the whole tree holds them
    let mut labels = labels.to_vec();
    for w in node_ptr.windows(2) {
        labels[w[0] as usize..w[1] as usize].sort_unstable();
    }
    grow(
        &z, params, &fanouts, n_labels, level, node_ptr, labels, first,
    )
}

/// The level-by-level recursion shared by [`hierarchical_kmeans`] and [`split_subtrees`]
/// (inputs checked there): splits the nodes `node_ptr` of `level` (indices `first[0]`) and
/// their descendants for `first.len()` levels.
#[allow(clippy::too_many_arguments)]
fn grow(
    z: &ZView<'_>,
    params: &KMeansParams,
    fanouts: &[usize],
    n_labels: usize,
    level: usize,
    node_ptr: &[u32],
    mut perm: Vec<u32>,
    first: &[Vec<u32>],
) -> Result<Subtrees> {
    let (groups, label_norms) = if first.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let norms: Vec<f32> = (0..z.n_rows())
            .into_par_iter()
            .with_min_len(1024)
            .map(|l| {
                let row = match z {
                    ZView::Sparse(v) => v.row(l).1,
                    ZView::Dense { data, dim, .. } => &data[l * dim..(l + 1) * dim],
                };
                (row.iter()
                    .map(|&v| f64::from(v) * f64::from(v))
                    .sum::<f64>() as f32)
                    .sqrt()
            })
            .collect();
        (duplicate_groups(z), norms)
    };
    let mut ranges: Vec<Range<usize>> = node_ptr
        .windows(2)
        .map(|w| w[0] as usize..w[1] as usize)
        .collect();
    // the given node each node descends from, and each node's index in its level
    let mut owner: Vec<usize> = (0..ranges.len()).collect();
    let mut index: Vec<u64> = first
        .first()
        .map_or(Vec::new(), |f| f.iter().map(|&i| u64::from(i)).collect());
    let mut child_ptrs: Vec<Vec<u32>> = Vec::with_capacity(first.len());
    for j in 0..first.len() {
        let t = level + j;
        let c_t = fanouts[t];
        // the most labels a child's subtree may hold (cap of the unbalanced variant)
        let cap = fanouts[t + 1..]
            .iter()
            .fold(params.max_leaf_size, |a, &c| a.saturating_mul(c));
        let mut segs: Vec<(u64, &mut [u32])> = Vec::with_capacity(ranges.len());
        let mut rest: &mut [u32] = &mut perm;
        for (i, r) in ranges.iter().enumerate() {
            let (head, tail) = rest.split_at_mut(r.len());
            segs.push((index[i], head));
            rest = tail;
        }
        let sizes: Vec<Vec<usize>> = segs
            .into_par_iter()
            .map(|(node, seg)| {
                let mut rng = SplitMix64::derived(params.seed, t as u64, node);
                let labels = Labels {
                    groups: &groups,
                    norms: &label_norms,
                    n_labels,
                };
                split_node(z, labels, seg, c_t.min(seg.len()), cap, params, &mut rng)
            })
            .collect();
        let mut ptr = Vec::with_capacity(ranges.len() + 1);
        ptr.push(0u32);
        let mut next_ranges = Vec::new();
        let mut next_owner = Vec::new();
        let mut start = 0usize;
        for (i, s) in sizes.iter().enumerate() {
            for &n in s {
                next_ranges.push(start..start + n);
                next_owner.push(owner[i]);
                start += n;
            }
            ptr.push(next_ranges.len() as u32);
        }
        if let Some(f) = first.get(j + 1) {
            // children of node k's sub-tree are numbered from f[k] on, without overlap
            let mut next_index = Vec::with_capacity(next_owner.len());
            let mut k_prev = usize::MAX;
            let mut at = 0u64;
            for &k in &next_owner {
                if k != k_prev {
                    if k_prev != usize::MAX && u64::from(f[k]) < at {
                        return Err(Error::invalid(format!(
                            "first[{}]: the descendants of node {k} overlap those of node \
                             {k_prev}",
                            j + 1
                        )));
                    }
                    at = u64::from(f[k]);
                    k_prev = k;
                }
                next_index.push(at);
                at += 1;
            }
            index = next_index;
        }
        child_ptrs.push(ptr);
        ranges = next_ranges;
        owner = next_owner;
    }
    let mut ends = Vec::with_capacity(ranges.len() + 1);
    ends.push(0u32);
    ends.extend(ranges.iter().map(|r| r.end as u32));
    Ok(Subtrees {
        child_ptrs,
        ends,
        labels: perm,
    })
}

/// Per-label facts computed once per tree (or per call of [`split_subtrees`]).
#[derive(Clone, Copy)]
struct Labels<'a> {
    /// From [`duplicate_groups`].
    groups: &'a [u32],
    /// `|z_l|` (f64 sum of squares in column order, then f32).
    norms: &'a [f32],
    /// Labels of the whole tree (the default `n_init` depends on it).
    n_labels: usize,
}

/// Splits the labels of one node (`seg`, sorted by id) into `c` children; reorders `seg` so
/// children are contiguous (each sorted by id) and returns the child sizes. A node whose
/// labels all have identical rows (nothing to cluster) is split evenly in id order.
fn split_node(
    z: &ZView<'_>,
    labels: Labels<'_>,
    seg: &mut [u32],
    c: usize,
    cap: usize,
    params: &KMeansParams,
    rng: &mut SplitMix64,
) -> Vec<usize> {
    let n = seg.len();
    if c <= 1 {
        return vec![n];
    }
    if n <= c {
        return vec![1; n];
    }
    let hi: Vec<usize> = if params.balanced {
        (0..c).map(|j| n / c + usize::from(j < n % c)).collect()
    } else {
        vec![cap.max(n.div_ceil(c)); c]
    };
    let dup = local_duplicates(labels.groups, seg);
    if dup.as_ref().is_some_and(|d| d.iter().all(|&f| f == 0)) {
        return (0..c).map(|j| n / c + usize::from(j < n % c)).collect();
    }
    let dup = dup.as_deref();
    let norms: Vec<f32> = seg.iter().map(|&l| labels.norms[l as usize]).collect();
    let small = c <= AUTO_N_INIT_MAX_FANOUT && labels.n_labels <= AUTO_N_INIT_MAX_LABELS;
    let runs = params.n_init.unwrap_or(if small { AUTO_N_INIT } else { 1 });
    let assign = match z {
        ZView::Dense { data, dim, .. } => {
            let rows = DenseRows {
                data,
                dim: *dim,
                members: seg,
            };
            kmeans_node(&rows, &norms, dup, c, &hi, params, runs, rng)
        }
        ZView::Sparse(v) => {
            let nnz: usize = seg.iter().map(|&l| v.row_range(l as usize).len()).sum();
            if nnz < v.n_cols().saturating_mul(COMPACT_RATIO) {
                let local = compact_rows(v, seg, nnz);
                let rows = SparseRows {
                    z: local.view(),
                    members: None,
                };
                kmeans_node(&rows, &norms, dup, c, &hi, params, runs, rng)
            } else {
                let rows = SparseRows {
                    z: *v,
                    members: Some(seg),
                };
                kmeans_node(&rows, &norms, dup, c, &hi, params, runs, rng)
            }
        }
    };
    let mut sizes = vec![0usize; c];
    for &a in &assign {
        sizes[a as usize] += 1;
    }
    let mut next = Vec::with_capacity(c);
    let mut acc = 0usize;
    for &s in &sizes {
        next.push(acc);
        acc += s;
    }
    let mut out = vec![0u32; n];
    for (k, &a) in assign.iter().enumerate() {
        out[next[a as usize]] = seg[k];
        next[a as usize] += 1;
    }
    seg.copy_from_slice(&out);
    sizes
}

/// The node's member rows with their columns renumbered to `0..u` (u distinct columns, in
/// increasing order, so rows stay canonical).
fn compact_rows(v: &CsrView<'_>, members: &[u32], nnz: usize) -> Csr {
    // `id[j]`: 0 for an unseen column, else 1 + its rank among the distinct columns (a zeroed
    // allocation, so only the pages the node touches are ever written)
    let mut id = vec![0u32; v.n_cols()];
    let mut cols: Vec<u32> = Vec::new();
    for &l in members {
        for &j in v.row(l as usize).0 {
            if id[j as usize] == 0 {
                id[j as usize] = 1;
                cols.push(j);
            }
        }
    }
    cols.sort_unstable();
    for (r, &j) in cols.iter().enumerate() {
        id[j as usize] = r as u32 + 1;
    }
    let mut indptr = Vec::with_capacity(members.len() + 1);
    indptr.push(0u64);
    let mut indices = Vec::with_capacity(nnz);
    let mut data = Vec::with_capacity(nnz);
    for &l in members {
        let (ri, rv) = v.row(l as usize);
        for &j in ri {
            indices.push(id[j as usize] - 1);
        }
        data.extend_from_slice(rv);
        indptr.push(indices.len() as u64);
    }
    Csr {
        n_rows: members.len(),
        n_cols: cols.len(),
        indptr,
        indices,
        data,
    }
}

/// A sparse node whose members hold fewer than `COMPACT_RATIO * d` stored values is copied
/// with its columns renumbered (centroids of `c x d'` rather than `c x d`).
const COMPACT_RATIO: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::kmeans::testutil::{planted, random_sparse};
    use crate::parallel::install;

    fn check_tree(t: &ClusterTree, l: usize, p: &KMeansParams) {
        assert_eq!(t.n_labels(), l);
        for leaf in 0..t.n_leaves() {
            let s = t.labels_of_leaf(leaf).unwrap().len();
            assert!(s >= 1 && s <= p.max_leaf_size, "leaf {leaf} has {s}");
        }
        for lvl in 0..t.depth() {
            let ptr = t.child_ptr(lvl).unwrap();
            for w in ptr.windows(2) {
                assert!((w[1] - w[0]) as usize <= p.branching);
            }
        }
        if p.balanced {
            // sibling leaf sizes differ by at most one
            if let Some(ptr) = t.child_ptr(t.depth().wrapping_sub(1)) {
                let lp = t.leaf_ptr();
                for w in ptr.windows(2) {
                    let sizes: Vec<u32> = (w[0]..w[1])
                        .map(|i| lp[i as usize + 1] - lp[i as usize])
                        .collect();
                    let (mn, mx) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                    assert!(mx - mn <= 1, "{sizes:?}");
                }
            }
        }
    }

    #[test]
    fn explicit_fanouts() {
        let mut rng = SplitMix64::derived(7, 0, 0);
        let (n, d) = (101usize, 5usize);
        let data: Vec<f32> = (0..n * d).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let z = ZView::Dense {
            data: &data,
            n_rows: n,
            dim: d,
        };
        for balanced in [true, false] {
            let p = KMeansParams {
                fanouts: Some(vec![2, 4, 3]),
                max_leaf_size: 1000,
                balanced,
                ..Default::default()
            };
            let t = hierarchical_kmeans(z, &p).unwrap();
            assert_eq!(t.depth(), 3);
            let per_level = t.n_nodes_per_level();
            if balanced {
                assert_eq!(per_level, vec![1, 2, 8, 24]);
                let sizes: Vec<u32> = t.leaf_ptr().windows(2).map(|w| w[1] - w[0]).collect();
                assert!(sizes.iter().all(|&s| s == 4 || s == 5), "{sizes:?}");
            } else {
                assert!(per_level[1] == 2 && per_level[2] <= 8 && per_level[3] <= 24);
            }
        }
        let p = KMeansParams {
            fanouts: Some(vec![]),
            ..Default::default()
        };
        assert_eq!(hierarchical_kmeans(z, &p).unwrap().n_leaves(), 1);
    }

    #[test]
    fn trees_are_valid_and_deterministic() {
        let (data, _) = planted(300, 8, 10, 3);
        for balanced in [true, false] {
            for spherical in [true, false] {
                for (b, m) in [(2, 1), (3, 7), (16, 10), (4, 300)] {
                    let p = KMeansParams {
                        branching: b,
                        max_leaf_size: m,
                        balanced,
                        spherical,
                        seed: 5,
                        ..Default::default()
                    };
                    let z = ZView::Dense {
                        data: &data,
                        n_rows: 300,
                        dim: 10,
                    };
                    let t1 = install(Some(1), || hierarchical_kmeans(z, &p))
                        .unwrap()
                        .unwrap();
                    let t3 = install(Some(3), || hierarchical_kmeans(z, &p))
                        .unwrap()
                        .unwrap();
                    assert_eq!(t1, t3);
                    check_tree(&t1, 300, &p);
                }
            }
        }
    }

    #[test]
    fn sparse_matches_dense_and_recovers_planted_clusters() {
        let (data, truth) = planted(4000, 8, 12, 11);
        let dense = ZView::Dense {
            data: &data,
            n_rows: 4000,
            dim: 12,
        };
        let mut trip = vec![];
        for i in 0..4000 {
            for j in 0..12 {
                trip.push((i as u32, j as u32, data[i * 12 + j]));
            }
        }
        let sp = Csr::from_triplets(4000, 12, &trip).unwrap();
        let p = KMeansParams {
            branching: 8,
            max_leaf_size: 500,
            ..Default::default()
        };
        let a = install(Some(2), || hierarchical_kmeans(dense, &p))
            .unwrap()
            .unwrap();
        let b = install(Some(1), || {
            hierarchical_kmeans(ZView::Sparse(sp.view()), &p)
        })
        .unwrap()
        .unwrap();
        check_tree(&a, 4000, &p);
        assert_eq!(a.n_leaves(), 8);
        assert_eq!(a.leaf_of_label(), b.leaf_of_label());
        // purity of the first split
        let leaf = a.leaf_of_label();
        let mut hits = 0;
        for c in 0..8 {
            let mut counts = [0usize; 8];
            for i in 0..4000 {
                if leaf[i] as usize == c {
                    counts[truth[i]] += 1;
                }
            }
            hits += counts.iter().max().unwrap();
        }
        assert!(
            hits as f64 / 4000.0 > 0.95,
            "purity {}",
            hits as f64 / 4000.0
        );
    }

    #[test]
    fn sparse_trees_with_duplicates_are_deterministic() {
        // duplicates, nodes scored by columns (few members, many columns) and compacted
        // nodes; spherical and Euclidean, balanced and not
        let z = random_sparse(3000, 20000, 25, 3, 5);
        for (balanced, spherical) in [(true, true), (false, true), (true, false)] {
            let p = KMeansParams {
                branching: 7,
                max_leaf_size: 20,
                balanced,
                spherical,
                seed: 2,
                ..Default::default()
            };
            let t1 = install(Some(1), || hierarchical_kmeans(ZView::Sparse(z.view()), &p))
                .unwrap()
                .unwrap();
            let t3 = install(Some(3), || hierarchical_kmeans(ZView::Sparse(z.view()), &p))
                .unwrap()
                .unwrap();
            assert_eq!(t1, t3);
            check_tree(&t1, 3000, &p);
            // identical rows end up together wherever capacity allows: most pairs share a leaf
            let leaf = t1.leaf_of_label();
            let same = (0..3000)
                .filter(|i| i % 3 == 1)
                .filter(|&i| leaf[i] == leaf[i - 1])
                .count();
            assert!(
                same * 10 >= 1000 * 8,
                "{same} of 1000 copies with their original"
            );
        }
    }

    #[test]
    fn identical_rows_split_evenly_in_id_order() {
        // 40 copies of one row, then 20 distinct rows
        let mut trip = Vec::new();
        for i in 0..40u32 {
            trip.push((i, 3, 0.5f32));
            trip.push((i, 7, 0.25));
        }
        for i in 40..60u32 {
            trip.push((i, i % 10, 1.0));
            trip.push((i, 10 + i % 7, 0.5));
        }
        let z = Csr::from_triplets(60, 20, &trip).unwrap();
        for balanced in [true, false] {
            let p = KMeansParams {
                branching: 4,
                max_leaf_size: 5,
                balanced,
                ..Default::default()
            };
            let t = hierarchical_kmeans(ZView::Sparse(z.view()), &p).unwrap();
            check_tree(&t, 60, &p);
            // the copies fill whole leaves, each a run of consecutive ids
            let leaf = t.leaf_of_label();
            let mut whole = 0;
            for f in 0..t.n_leaves() {
                let ls = t.labels_of_leaf(f).unwrap();
                if ls.iter().all(|&l| l < 40) {
                    assert!(ls.windows(2).all(|w| w[1] == w[0] + 1), "{ls:?}");
                    whole += ls.len();
                }
            }
            assert!(whole >= 30, "{whole} copies in leaves of copies only");
            assert!(leaf[..40].iter().any(|&f| f != leaf[0]));
        }
    }

    /// The descendants of nodes `lo..hi` of level `t` at level `to`, and their labels' range.
    fn under(t: &ClusterTree, level: usize, lo: usize, hi: usize, to: usize) -> (usize, usize) {
        let (mut a, mut b) = (lo, hi);
        for m in level..to {
            let ptr = t.child_ptr(m).unwrap();
            (a, b) = (ptr[a] as usize, ptr[b] as usize);
        }
        (a, b)
    }

    fn labels_under(t: &ClusterTree, level: usize, v: usize) -> Vec<u32> {
        let (a, b) = under(t, level, v, v + 1, t.depth());
        let lp = t.leaf_ptr();
        t.labels()[lp[a] as usize..lp[b] as usize].to_vec()
    }

    #[test]
    fn subtrees_split_apart_match_the_whole_tree() {
        // duplicates, sparse rows, both variants, the schedule and explicit fan-outs; the
        // nodes of each level in two groups (even and odd), each from its own rows of z
        let z = random_sparse(700, 3000, 12, 4, 9);
        for (balanced, fanouts) in [(true, None), (false, None), (false, Some(vec![3, 2, 4]))] {
            let p = KMeansParams {
                branching: 5,
                max_leaf_size: 9,
                balanced,
                seed: 4,
                fanouts,
                ..Default::default()
            };
            let full = hierarchical_kmeans(ZView::Sparse(z.view()), &p).unwrap();
            let depth = full.depth();
            assert!(depth >= 3);
            for level in 0..depth {
                for levels in 1..=depth - level {
                    let n_level = full.n_nodes(level);
                    for group in 0..2 {
                        let mine: Vec<usize> = (0..n_level).filter(|v| v % 2 == group).collect();
                        if mine.is_empty() {
                            continue;
                        }
                        let mut ids: Vec<u32> = mine
                            .iter()
                            .flat_map(|&v| labels_under(&full, level, v))
                            .collect();
                        ids.sort_unstable();
                        let rows: Vec<usize> = ids.iter().map(|&l| l as usize).collect();
                        let sub = crate::sparse::row_gather(&z.view(), &rows).unwrap();
                        let local = |l: u32| ids.binary_search(&l).unwrap() as u32;
                        let mut node_ptr = vec![0u32];
                        let mut labels = Vec::new();
                        for &v in &mine {
                            // any order within a node
                            labels.extend(
                                labels_under(&full, level, v)
                                    .iter()
                                    .rev()
                                    .map(|&l| local(l)),
                            );
                            node_ptr.push(labels.len() as u32);
                        }
                        let first: Vec<Vec<u32>> = (0..levels)
                            .map(|j| {
                                mine.iter()
                                    .map(|&v| under(&full, level, v, v + 1, level + j).0 as u32)
                                    .collect()
                            })
                            .collect();
                        let out = split_subtrees(
                            ZView::Sparse(sub.view()),
                            &p,
                            700,
                            level,
                            &node_ptr,
                            &labels,
                            &first,
                        )
                        .unwrap();
                        assert_eq!(out.child_ptrs.len(), levels);
                        // the nodes reached at each level are those of the whole tree
                        let mut nodes: Vec<usize> = mine.clone();
                        for (j, cp) in out.child_ptrs.iter().enumerate() {
                            let ptr = full.child_ptr(level + j).unwrap();
                            let counts: Vec<u32> =
                                nodes.iter().map(|&v| ptr[v + 1] - ptr[v]).collect();
                            let got: Vec<u32> = cp.windows(2).map(|w| w[1] - w[0]).collect();
                            assert_eq!(got, counts, "level {}", level + j);
                            nodes = nodes
                                .iter()
                                .flat_map(|&v| ptr[v] as usize..ptr[v + 1] as usize)
                                .collect();
                        }
                        assert_eq!(out.ends.len(), nodes.len() + 1);
                        for (k, &v) in nodes.iter().enumerate() {
                            let got: Vec<u32> = out.labels
                                [out.ends[k] as usize..out.ends[k + 1] as usize]
                                .iter()
                                .map(|&l| ids[l as usize])
                                .collect();
                            let mut want = labels_under(&full, level + levels, v);
                            if level + levels < depth {
                                want.sort_unstable();
                            }
                            assert_eq!(got, want, "node {v} of level {}", level + levels);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn subtrees_of_a_large_tree_keep_its_n_init() {
        // over AUTO_N_INIT_MAX_LABELS labels the whole tree runs k-means once per node; a
        // part of fewer labels must do the same (n_labels is the whole tree's)
        let n = AUTO_N_INIT_MAX_LABELS + 500;
        let z = random_sparse(n, 400, 3, 0, 6);
        let p = KMeansParams {
            fanouts: Some(vec![8, 4]),
            seed: 3,
            ..Default::default()
        };
        let full = hierarchical_kmeans(ZView::Sparse(z.view()), &p).unwrap();
        let v = 5usize;
        let mut ids = labels_under(&full, 1, v);
        ids.sort_unstable();
        let rows: Vec<usize> = ids.iter().map(|&l| l as usize).collect();
        let sub = crate::sparse::row_gather(&z.view(), &rows).unwrap();
        let local: Vec<u32> = (0..ids.len() as u32).collect();
        let out = split_subtrees(
            ZView::Sparse(sub.view()),
            &p,
            n,
            1,
            &[0, ids.len() as u32],
            &local,
            &[vec![v as u32]],
        )
        .unwrap();
        let got: Vec<u32> = out.labels.iter().map(|&l| ids[l as usize]).collect();
        assert_eq!(got, labels_under(&full, 1, v));
        let ptr = full.child_ptr(1).unwrap();
        let (a, b) = (ptr[v] as usize, ptr[v + 1] as usize);
        let lp = full.leaf_ptr();
        let want: Vec<u32> = (a..=b).map(|i| lp[i] - lp[a]).collect();
        assert_eq!(out.ends, want);
    }

    #[test]
    fn subtree_inputs_are_checked() {
        let z = random_sparse(40, 50, 5, 0, 1);
        let p = KMeansParams {
            branching: 2,
            max_leaf_size: 5,
            ..Default::default()
        };
        let v = ZView::Sparse(z.view());
        let all: Vec<u32> = (0..40).collect();
        let ok = split_subtrees(v, &p, 40, 0, &[0, 40], &all, &[vec![0], vec![0]]).unwrap();
        assert_eq!(ok.child_ptrs, vec![vec![0, 2], vec![0, 2, 4]]);
        assert_eq!(ok.ends, vec![0, 10, 20, 30, 40]);
        type Case<'a> = (&'a [u32], &'a [u32], Vec<Vec<u32>>);
        let bad: [Case<'_>; 6] = [
            (&[0, 40], &all[1..], vec![vec![0]]),   // a row missing
            (&[0, 39], &all, vec![vec![0]]),        // node_ptr short
            (&[0, 0, 40], &all, vec![vec![0, 1]]),  // an empty node
            (&[0, 20, 40], &all, vec![vec![1, 1]]), // indices not increasing
            (&[0, 20, 40], &all, vec![vec![0, 1], vec![0, 1]]), // descendants overlap
            (&[0, 40], &all, vec![vec![0]; 4]),     // deeper than the tree
        ];
        for (case, (ptr, labels, first)) in bad.into_iter().enumerate() {
            let r = split_subtrees(v, &p, 40, 0, ptr, labels, &first);
            assert!(r.is_err(), "case {case}");
        }
        assert!(split_subtrees(v, &p, 39, 0, &[0, 40], &all, &[vec![0]]).is_err());
        let mut twice = all.clone();
        twice[1] = 0;
        assert!(split_subtrees(v, &p, 40, 0, &[0, 40], &twice, &[vec![0]]).is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let data = [1.0f32, f32::NAN];
        let z = ZView::Dense {
            data: &data,
            n_rows: 2,
            dim: 1,
        };
        assert!(hierarchical_kmeans(z, &KMeansParams::default()).is_err());
        let z = ZView::Dense {
            data: &data[..0],
            n_rows: 0,
            dim: 1,
        };
        assert!(hierarchical_kmeans(z, &KMeansParams::default()).is_err());
        let ok = [1.0f32, 2.0];
        let z = ZView::Dense {
            data: &ok,
            n_rows: 3,
            dim: 1,
        };
        assert!(hierarchical_kmeans(z, &KMeansParams::default()).is_err());
        let z = ZView::Dense {
            data: &ok,
            n_rows: 2,
            dim: 1,
        };
        for p in [
            KMeansParams {
                branching: 1,
                ..Default::default()
            },
            KMeansParams {
                max_leaf_size: 0,
                ..Default::default()
            },
            KMeansParams {
                fanouts: Some(vec![2, 1]),
                ..Default::default()
            },
            KMeansParams {
                n_init: Some(0),
                ..Default::default()
            },
        ] {
            assert!(hierarchical_kmeans(z, &p).is_err());
        }
        // zero rows and zero columns are fine
        let zeros = Csr::zeros(5, 0);
        let p = KMeansParams {
            branching: 2,
            max_leaf_size: 1,
            ..Default::default()
        };
        let t = hierarchical_kmeans(ZView::Sparse(zeros.view()), &p).unwrap();
        assert_eq!(t.n_leaves(), 5);
    }
}
