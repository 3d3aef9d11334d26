//! The tree driver: the level-by-level recursion of [`hierarchical_kmeans`] and the split of
//! one node into its children.

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
    let owned;
    let z = match z {
        ZView::Sparse(v) => {
            check_finite(v.data(), "Z")?;
            if v.is_canonical() {
                ZView::Sparse(v)
            } else {
                owned = v.canonicalize();
                ZView::Sparse(owned.view())
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
            z
        }
    };
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
    let (groups, label_norms) = if fanouts.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let norms: Vec<f32> = (0..n_labels)
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
        (duplicate_groups(&z), norms)
    };
    let mut perm: Vec<u32> = (0..n_labels as u32).collect();
    let mut ranges: Vec<Range<usize>> = std::iter::once(0..n_labels).collect();
    let mut child_ptrs: Vec<Vec<u32>> = Vec::with_capacity(fanouts.len());
    for (t, &c_t) in fanouts.iter().enumerate() {
        // the most labels a child's subtree may hold (cap of the unbalanced variant)
        let cap = fanouts[t + 1..]
            .iter()
            .fold(params.max_leaf_size, |a, &c| a.saturating_mul(c));
        let mut segs: Vec<(usize, &mut [u32])> = Vec::with_capacity(ranges.len());
        let mut rest: &mut [u32] = &mut perm;
        for (i, r) in ranges.iter().enumerate() {
            let (head, tail) = rest.split_at_mut(r.len());
            segs.push((i, head));
            rest = tail;
        }
        let sizes: Vec<Vec<usize>> = segs
            .into_par_iter()
            .map(|(node, seg)| {
                let mut rng = SplitMix64::derived(params.seed, t as u64, node as u64);
                let labels = Labels {
                    groups: &groups,
                    norms: &label_norms,
                };
                split_node(&z, labels, seg, c_t.min(seg.len()), cap, params, &mut rng)
            })
            .collect();
        let mut ptr = Vec::with_capacity(ranges.len() + 1);
        ptr.push(0u32);
        let mut next_ranges = Vec::new();
        let mut start = 0usize;
        for s in &sizes {
            for &n in s {
                next_ranges.push(start..start + n);
                start += n;
            }
            ptr.push(next_ranges.len() as u32);
        }
        child_ptrs.push(ptr);
        ranges = next_ranges;
    }
    let mut leaf_ptr = Vec::with_capacity(ranges.len() + 1);
    leaf_ptr.push(0u32);
    leaf_ptr.extend(ranges.iter().map(|r| r.end as u32));
    ClusterTree::from_parts(child_ptrs, leaf_ptr, perm)
}

/// Per-label facts computed once for the whole tree.
#[derive(Clone, Copy)]
struct Labels<'a> {
    /// From [`duplicate_groups`].
    groups: &'a [u32],
    /// `|z_l|` (f64 sum of squares in column order, then f32).
    norms: &'a [f32],
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
    let small = c <= AUTO_N_INIT_MAX_FANOUT && labels.norms.len() <= AUTO_N_INIT_MAX_LABELS;
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
