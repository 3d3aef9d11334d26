//! Hierarchical B-ary k-means over label representations.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

use rayon::prelude::*;

use super::rng::SplitMix64;
use super::tree::ClusterTree;
use crate::simd::{self, CACHE_BYTES};
use crate::sparse::{check_finite, Csr, CsrView};
use crate::{Error, Result};

/// Label representations to cluster: one row per label.
#[derive(Clone, Copy, Debug)]
pub enum ZView<'a> {
    /// Sparse rows (any order; non-canonical rows are canonicalised into a copy first).
    Sparse(CsrView<'a>),
    /// Dense row-major rows: `data.len() == n_rows * dim`.
    Dense {
        /// Row-major values.
        data: &'a [f32],
        /// Number of rows (labels).
        n_rows: usize,
        /// Number of columns.
        dim: usize,
    },
}

impl ZView<'_> {
    /// Number of rows (labels).
    pub fn n_rows(&self) -> usize {
        match self {
            ZView::Sparse(v) => v.n_rows(),
            ZView::Dense { n_rows, .. } => *n_rows,
        }
    }
}

/// Parameters of [`hierarchical_kmeans`].
#[derive(Clone, Debug, PartialEq)]
pub struct KMeansParams {
    /// Largest number of children of a node (`B >= 2`).
    pub branching: usize,
    /// Largest number of labels in a leaf (`>= 1`).
    pub max_leaf_size: usize,
    /// Spherical k-means (cosine similarity, L2-normalised centroids) rather than Euclidean.
    pub spherical: bool,
    /// Sibling sizes differ by at most one; otherwise sizes follow the data under a cap.
    pub balanced: bool,
    /// Largest number of Lloyd iterations per node (0: assign to the initial seeds only).
    pub max_iter: usize,
    /// A node's Lloyd loop stops once a round moves at most this fraction of its members
    /// (`0 <= tol < 1`; 0 runs until nothing moves or `max_iter`). Members with identical
    /// rows trading places do not count as moves.
    pub tol: f32,
    /// Seed of every random choice.
    pub seed: u64,
    /// k-means runs per node, each from its own k-means++ seeding (drawn one after another
    /// from the node's stream); the run with the best objective is kept. `None`:
    /// [`AUTO_N_INIT`] runs at nodes of at most [`AUTO_N_INIT_MAX_FANOUT`] children in trees
    /// of at most [`AUTO_N_INIT_MAX_LABELS`] labels, one elsewhere. `Some(0)` is invalid.
    pub n_init: Option<usize>,
    /// Explicit fan-out of every level (each `>= 2`), overriding the schedule derived from
    /// `branching` and `max_leaf_size` (both then unused for the shape; `max_leaf_size` still
    /// caps the unbalanced variant's children where the shape allows). Empty: one leaf.
    pub fanouts: Option<Vec<usize>>,
}

impl Default for KMeansParams {
    fn default() -> Self {
        KMeansParams {
            branching: 16,
            max_leaf_size: 100,
            spherical: true,
            balanced: true,
            max_iter: 20,
            tol: CONVERGE_TOL,
            seed: 0,
            n_init: None,
            fanouts: None,
        }
    }
}

impl KMeansParams {
    fn validate(&self) -> Result<()> {
        if self.branching < 2 {
            return Err(Error::invalid(format!(
                "branching must be >= 2, got {}",
                self.branching
            )));
        }
        if self.branching > u16::MAX as usize {
            return Err(Error::invalid(format!(
                "branching must be <= {}, got {}",
                u16::MAX,
                self.branching
            )));
        }
        if self.max_leaf_size < 1 {
            return Err(Error::invalid(format!(
                "max_leaf_size must be >= 1, got {}",
                self.max_leaf_size
            )));
        }
        if self.n_init == Some(0) {
            return Err(Error::invalid("n_init must be >= 1"));
        }
        if let Some(f) = &self.fanouts {
            if let Some(&c) = f.iter().find(|&&c| c < 2 || c > u16::MAX as usize) {
                return Err(Error::invalid(format!(
                    "every fan-out must be in [2, {}], got {c}",
                    u16::MAX
                )));
            }
            if f.iter()
                .try_fold(1usize, |a, &c| a.checked_mul(c))
                .is_none()
            {
                return Err(Error::invalid("the fan-outs' product overflows"));
            }
        }
        Ok(())
    }
}

/// The fan-out of each level of the tree for `n_labels` labels (see [`hierarchical_kmeans`]):
/// empty when every label fits in one leaf.
///
/// With `K = ceil(L / max_leaf_size)` leaves needed, the depth is the least `D` with
/// `B^D >= K`, and level `t`'s fan-out is the least `c` with `c^(D-t) >= R_t`, where
/// `R_0 = K` and `R_{t+1} = ceil(R_t / c_t)`: fan-outs are as even as possible, each `<= B`,
/// and their product is the smallest such that balanced leaves hold `<= max_leaf_size`.
pub fn fanout_schedule(n_labels: usize, branching: usize, max_leaf_size: usize) -> Vec<usize> {
    let (b, m) = (branching.max(2) as u128, max_leaf_size.max(1));
    let need = n_labels.div_ceil(m) as u128;
    if need <= 1 {
        return vec![];
    }
    let mut depth = 0u32;
    let mut cap = 1u128;
    while cap < need {
        cap = cap.saturating_mul(b);
        depth += 1;
    }
    let mut out = Vec::with_capacity(depth as usize);
    let mut rem = need;
    for left in (1..=depth).rev() {
        // least c with c^left >= rem
        let mut c = ((rem as f64).powf(1.0 / f64::from(left)).floor() as u128).max(1);
        while c.saturating_pow(left) < rem {
            c += 1;
        }
        while c > 1 && (c - 1).saturating_pow(left) >= rem {
            c -= 1;
        }
        let c = c.min(b);
        out.push(c as usize);
        rem = rem.div_ceil(c);
    }
    out
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

/// The rows of a node's members, whatever the storage.
trait Rows: Sync {
    fn len(&self) -> usize;
    fn dim(&self) -> usize;
    /// Work estimate (stored values) of the whole node.
    fn work(&self) -> usize;
    /// `out[0..c] = x_k . W[:, 0..c]` (`c = out.len()`) for `W` stored column-interleaved
    /// with `stride >= c` lanes per column (`wt[col * stride + j]`).
    fn scores_t(&self, k: usize, wt: &[f32], stride: usize, out: &mut [f32]);
    /// [`Rows::scores_t`] for the stride `N` (`out.len() <= N`); `PF`: prefetch the gathered
    /// columns (sparse rows).
    fn scores_n<const N: usize, const PF: bool>(&self, k: usize, wt: &[f32], out: &mut [f32]);
    /// `out += sign * x_k[cols]` (`sign` is 1 or -1, so every product is exact).
    fn add_to(&self, k: usize, cols: Range<usize>, sign: f32, out: &mut [f32]);
    /// `t[col * cp + j] += sign * x_k[col]` for every column (`lane = (j, cp)`, `sign` 1 or
    /// -1; `t` holds f32 bits); returns the change of the lane's sum of squares,
    /// `sum(new^2 - old^2)` in f64 over the entries in column order.
    fn scatter_lane(&self, k: usize, sign: f32, lane: (usize, usize), t: &[AtomicU32]) -> f64;
    /// The column indices (increasing) and values of `x_k` if the rows are sparse.
    fn sparse_row(&self, _k: usize) -> Option<(&[u32], &[f32])> {
        None
    }
}

/// The lanes per column of an interleaved centroid matrix of `c` centroids: `c` rounded up to
/// a power of two up to 16 (so a column never straddles a 64-byte line of an aligned buffer
/// and scoring uses whole SIMD registers), else `c`.
fn lane_stride(c: usize) -> usize {
    if c <= 16 {
        c.next_power_of_two()
    } else {
        c
    }
}

/// `out[l] = sum over (j, v) of v * wt[j * stride + l]` for `l < out.len()`, entries summed in
/// iteration order. Specialised for the strides of [`lane_stride`] up to 16 (accumulators in
/// registers; extra lanes are computed and dropped); every variant performs, for each kept
/// lane, the same operations in the same order, so results do not depend on which one runs.
#[inline(always)]
fn scores_dispatch<I: Iterator<Item = (usize, f32)>>(
    entries: I,
    wt: &[f32],
    stride: usize,
    out: &mut [f32],
) {
    let c = out.len();
    macro_rules! fixed {
        ($($n:literal),*) => {
            match stride {
                $($n if c <= $n => {
                    let mut acc = [0f32; $n];
                    for (j, v) in entries {
                        let w: &[f32; $n] = match wt[j * $n..j * $n + $n].try_into() {
                            Ok(w) => w,
                            Err(_) => continue,
                        };
                        for l in 0..$n {
                            acc[l] += v * w[l];
                        }
                    }
                    store_lanes(&acc, out);
                })*
                s => {
                    out.fill(0.0);
                    for (j, v) in entries {
                        for (o, &wj) in out.iter_mut().zip(&wt[j * s..j * s + c]) {
                            *o += v * wj;
                        }
                    }
                }
            }
        };
    }
    fixed!(1, 2, 4, 8, 16)
}

/// Entries ahead whose centroid column [`SparseRows`] prefetches while scoring, when the
/// table exceeds [`CACHE_BYTES`] (below, the prefetches only cost instructions).
const PREFETCH: usize = 16;

/// Hints the CPU to fetch `wt[at..at + len]` into cache (no effect on results; the address
/// may lie out of bounds, nothing is read). A power-of-two `len <= 16` is taken to be one
/// aligned line (see [`lane_stride`]).
#[inline(always)]
fn prefetch_cols(wt: &[f32], at: usize, len: usize) {
    let p = wt.as_ptr().wrapping_add(at);
    prefetch_ptr(p.cast());
    if len > 16 || !len.is_power_of_two() {
        prefetch_ptr(p.wrapping_add(len.saturating_sub(1)).cast());
    }
}

/// Hints the CPU to fetch the line of `p` into cache (never faults, reads nothing).
#[inline(always)]
fn prefetch_ptr(p: *const i8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: prefetching is a hint that never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = p;
    }
}

/// `out = acc[..out.len()]` (`out.len() <= N`), written so that `acc` can stay in registers
/// (a copy of a run-time length would send it through memory and a `memcpy` call).
#[inline(always)]
fn store_lanes<const N: usize>(acc: &[f32; N], out: &mut [f32]) {
    if let Ok(o) = <&mut [f32; N]>::try_from(&mut *out) {
        *o = *acc;
    } else {
        for (o, &a) in out.iter_mut().zip(acc) {
            *o = a;
        }
    }
}

/// [`scores_dispatch`] for a sparse row and `N` lanes per column (`out.len() <= N`), with
/// the centroid columns prefetched [`PREFETCH`] entries ahead when `PF` (they are gathered
/// at random). Same operations in the same order as [`scores_dispatch`].
#[inline(always)]
fn sparse_scores<const N: usize, const PF: bool>(
    ri: &[u32],
    rv: &[f32],
    wt: &[f32],
    out: &mut [f32],
) {
    let mut acc = [0f32; N];
    let m = ri.len().min(rv.len());
    let (ri, rv) = (&ri[..m], &rv[..m]);
    let step = |acc: &mut [f32; N], j: u32, v: f32| {
        let j = j as usize * N;
        if let Some(w) = wt.get(j..j + N) {
            for l in 0..N {
                acc[l] += v * w[l];
            }
        }
    };
    let head = if PF {
        for &j in ri.iter().take(PREFETCH) {
            prefetch_cols(wt, j as usize * N, N);
        }
        m.saturating_sub(PREFETCH)
    } else {
        0
    };
    for p in 0..head {
        prefetch_cols(wt, ri[p + PREFETCH] as usize * N, N);
        step(&mut acc, ri[p], rv[p]);
    }
    for p in head..m {
        step(&mut acc, ri[p], rv[p]);
    }
    store_lanes(&acc, out);
}

struct SparseRows<'a> {
    z: CsrView<'a>,
    members: Option<&'a [u32]>,
}

impl SparseRows<'_> {
    #[inline(always)]
    fn row(&self, k: usize) -> (&[u32], &[f32]) {
        self.z.row(self.members.map_or(k, |m| m[k] as usize))
    }
}

impl Rows for SparseRows<'_> {
    fn len(&self) -> usize {
        self.members.map_or(self.z.n_rows(), |m| m.len())
    }
    fn dim(&self) -> usize {
        self.z.n_cols()
    }
    fn work(&self) -> usize {
        match self.members {
            None => self.z.nnz(),
            Some(m) => m.iter().map(|&l| self.z.row_range(l as usize).len()).sum(),
        }
    }
    #[inline(always)]
    fn scores_t(&self, k: usize, wt: &[f32], stride: usize, out: &mut [f32]) {
        let (ri, rv) = self.row(k);
        let c = out.len();
        let pf = wt.len().saturating_mul(4) > CACHE_BYTES;
        macro_rules! fixed {
            ($($n:literal),*) => {
                match stride {
                    $($n if c <= $n && pf => sparse_scores::<$n, true>(ri, rv, wt, out),)*
                    $($n if c <= $n => sparse_scores::<$n, false>(ri, rv, wt, out),)*
                    _ => {
                        for &j in ri.iter().take(PREFETCH) {
                            prefetch_cols(wt, j as usize * stride, stride);
                        }
                        scores_dispatch(
                            ri.iter().zip(rv).enumerate().map(|(p, (&j, &v))| {
                                if let Some(&jn) = ri.get(p + PREFETCH) {
                                    prefetch_cols(wt, jn as usize * stride, stride);
                                }
                                (j as usize, v)
                            }),
                            wt,
                            stride,
                            out,
                        )
                    }
                }
            };
        }
        fixed!(1, 2, 4, 8, 16)
    }
    #[inline(always)]
    fn scores_n<const N: usize, const PF: bool>(&self, k: usize, wt: &[f32], out: &mut [f32]) {
        let (ri, rv) = self.row(k);
        sparse_scores::<N, PF>(ri, rv, wt, out);
    }
    fn add_to(&self, k: usize, cols: Range<usize>, sign: f32, out: &mut [f32]) {
        let (ri, rv) = self.row(k);
        let (lo, hi) = if cols.start == 0 && cols.end >= self.dim() {
            (0, ri.len())
        } else {
            (
                ri.partition_point(|&j| (j as usize) < cols.start),
                ri.partition_point(|&j| (j as usize) < cols.end),
            )
        };
        for (&j, &v) in ri[lo..hi].iter().zip(&rv[lo..hi]) {
            out[j as usize - cols.start] += sign * v;
        }
    }
    fn scatter_lane(&self, k: usize, sign: f32, (j, cp): (usize, usize), t: &[AtomicU32]) -> f64 {
        let (ri, rv) = self.row(k);
        let mut delta = 0f64;
        for (&col, &v) in ri.iter().zip(rv) {
            delta += add_lane(&t[col as usize * cp + j], sign * v);
        }
        delta
    }
    fn sparse_row(&self, k: usize) -> Option<(&[u32], &[f32])> {
        Some(self.row(k))
    }
}

struct DenseRows<'a> {
    data: &'a [f32],
    dim: usize,
    members: &'a [u32],
}

impl DenseRows<'_> {
    #[inline(always)]
    fn row(&self, k: usize) -> &[f32] {
        let l = self.members[k] as usize;
        &self.data[l * self.dim..(l + 1) * self.dim]
    }
}

impl Rows for DenseRows<'_> {
    fn len(&self) -> usize {
        self.members.len()
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn work(&self) -> usize {
        self.members.len() * self.dim
    }
    #[inline(always)]
    fn scores_t(&self, k: usize, wt: &[f32], stride: usize, out: &mut [f32]) {
        scores_dispatch(self.row(k).iter().copied().enumerate(), wt, stride, out);
    }
    #[inline(always)]
    fn scores_n<const N: usize, const PF: bool>(&self, k: usize, wt: &[f32], out: &mut [f32]) {
        scores_dispatch(self.row(k).iter().copied().enumerate(), wt, N, out);
    }
    fn add_to(&self, k: usize, cols: Range<usize>, sign: f32, out: &mut [f32]) {
        simd::axpy(sign, &self.row(k)[cols], out);
    }
    fn scatter_lane(&self, k: usize, sign: f32, (j, cp): (usize, usize), t: &[AtomicU32]) -> f64 {
        let mut delta = 0f64;
        for (i, &v) in self.row(k).iter().enumerate() {
            delta += add_lane(&t[i * cp + j], sign * v);
        }
        delta
    }
}

/// A zeroed `f32` buffer whose start is 64-byte aligned (one cache line).
struct AlignedBuf {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    fn zeros(len: usize) -> Self {
        let buf = vec![0f32; len + 16];
        let off = buf.as_ptr().align_offset(64);
        // `align_offset` may decline (usize::MAX): then any start will do
        let off = if off <= 16 { off } else { 0 };
        AlignedBuf { buf, off, len }
    }
    fn as_slice(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }
    fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

/// A sparse node whose members hold fewer than `COMPACT_RATIO * d` stored values is copied
/// with its columns renumbered (centroids of `c x d'` rather than `c x d`).
const COMPACT_RATIO: usize = 8;
/// Members per parallel task when scoring.
const MIN_ROWS_PER_TASK: usize = 256;
/// Below this much work (stored values), a node runs on one thread.
const PAR_WORK: usize = 1 << 16;
/// Default of [`KMeansParams::tol`]: a node's Lloyd loop stops once a round moves at most
/// this fraction of its members to another cluster (the balanced greedy assignment keeps flipping a few members near the
/// cut long after the centroids have settled).
const CONVERGE_TOL: f32 = 0.01;
/// ... or, from round `OBJ_MIN_ROUNDS` on, once a round improves the objective (sum of member
/// scores in their clusters) by at most this fraction of its magnitude (the objective is noisy
/// in the first rounds, hence the floor).
const OBJ_REL_TOL: f32 = 1e-4;
const OBJ_MIN_ROUNDS: usize = 5;
/// Centroid sums are updated incrementally (moved members only) when at most
/// `1 / INCREMENTAL_FRAC` of the members moved, and recomputed otherwise.
const INCREMENTAL_FRAC: usize = 4;
/// k-means++ seeding runs on at most `max(SEED_SAMPLE_PER_CLUSTER * c, SEED_SAMPLE_MIN)`
/// members, drawn without replacement from the node's stream.
const SEED_SAMPLE_PER_CLUSTER: usize = 64;
const SEED_SAMPLE_MIN: usize = 2048;

/// Runs of k-means at a node of at most [`AUTO_N_INIT_MAX_FANOUT`] children in a tree of at
/// most [`AUTO_N_INIT_MAX_LABELS`] labels when [`KMeansParams::n_init`] is `None`. In a
/// small tree a few seeds decide the split of a large share of the labels, and a bad draw
/// leaves Lloyd's balanced iterations in a poor local optimum (on rcv1-subset1's one 2-way
/// split, 2 of 12 seeds fell to a mean cosine of 0.597-0.601 against 0.605-0.609, costing
/// 0.01-0.02 of P@1), while a run costs milliseconds. In large trees, three runs at the top
/// nodes of PECOS's shapes raised the objective but not P@1 consistently (mean over 8 seeds:
/// -0.0034 on debian/deps, +0.0027 on the 200k synthetic set) and cost up to a third more
/// indexing time; at their many small deep nodes they would triple a level's cost.
pub const AUTO_N_INIT: usize = 3;
/// See [`AUTO_N_INIT`].
pub const AUTO_N_INIT_MAX_FANOUT: usize = 8;
/// See [`AUTO_N_INIT`].
pub const AUTO_N_INIT_MAX_LABELS: usize = 10_000;

/// Runs k-means on one node `runs` times, keeping the run of the best objective (the first
/// among equals); returns the child (cluster index) of each member. `norms`: of the member
/// rows; `dup`: from [`local_duplicates`].
#[allow(clippy::too_many_arguments)]
fn kmeans_node<R: Rows>(
    rows: &R,
    norms: &[f32],
    dup: Option<&[u32]>,
    c: usize,
    hi: &[usize],
    params: &KMeansParams,
    runs: usize,
    rng: &mut SplitMix64,
) -> Vec<u16> {
    let d = rows.dim();
    let par = rows.work() >= PAR_WORK;
    let min_len = if par { MIN_ROWS_PER_TASK } else { usize::MAX };
    // scored by columns when the padded table would not stay in cache (streamed in order,
    // with no lanes of padding then)
    let colmajor = if lane_stride(c).saturating_mul(d).saturating_mul(4) > CACHE_BYTES {
        ColMajor::build(rows, dup, lane_stride(c), par)
    } else {
        None
    };
    let scoring = Scoring {
        rows,
        norms,
        spherical: params.spherical,
        c,
        min_len,
        dup,
        colmajor: colmajor.as_ref(),
    };
    let exact = runs > 1;
    let (mut best, mut best_obj) = kmeans_run(&scoring, hi, params, par, rng, exact);
    for _ in 1..runs {
        let (assign, obj) = kmeans_run(&scoring, hi, params, par, rng, exact);
        if obj > best_obj {
            (best, best_obj) = (assign, obj);
        }
    }
    best
}

/// One k-means run of [`kmeans_node`]: seeding, then Lloyd rounds. Returns the assignment
/// and its [`objective`]: against the centroids of the assignment itself when `exact` (one
/// more update and scoring of the members), else against those of the round before (a
/// lower bound for the spherical and Euclidean scores).
fn kmeans_run<R: Rows>(
    scoring: &Scoring<'_, R>,
    hi: &[usize],
    params: &KMeansParams,
    par: bool,
    rng: &mut SplitMix64,
    exact: bool,
) -> (Vec<u16>, f64) {
    let (rows, norms, c, min_len, dup) = (
        scoring.rows,
        scoring.norms,
        scoring.c,
        scoring.min_len,
        scoring.dup,
    );
    let n = rows.len();
    let mut cent = Centroids::new(c, rows.dim(), scoring.colmajor.is_none());
    let sample_cap = (SEED_SAMPLE_PER_CLUSTER * c).max(SEED_SAMPLE_MIN);
    let seeds = if n <= sample_cap {
        kmeanspp(rows, dup, c, norms, params.spherical, min_len, rng)
    } else {
        let idx = sample_positions(n, sample_cap, rng);
        let sub = SubRows { rows, idx: &idx };
        let sub_norms: Vec<f32> = idx.iter().map(|&k| norms[k]).collect();
        let sub_min = if sub.work() >= PAR_WORK {
            MIN_ROWS_PER_TASK
        } else {
            usize::MAX
        };
        kmeanspp(&sub, None, c, &sub_norms, params.spherical, sub_min, rng)
            .into_iter()
            .map(|k| idx[k])
            .collect()
    };
    // the table starts at zero: add each seed to its cluster
    let seed_ops: Vec<Vec<(u32, bool)>> = seeds.iter().map(|&k| vec![(k as u32, true)]).collect();
    cent.apply(rows, &seed_ops, par);
    let mut scores = vec![0f32; n * c];
    scoring.run(&cent, None, &mut scores);
    let mut assign = assign_capacity(&scores, n, c, hi, !params.balanced, min_len);
    let mut obj = objective(&scores, &assign, c);
    // how to bring the sums (now the seeds) to `assign`
    let mut plan = plan_update(None, &assign, dup, c);
    // members whose cluster may change in a round without another round being run
    let max_moved = (f64::from(params.tol) * n as f64).floor() as usize;
    let mut counts = vec![0usize; c];
    // brings the sums to `assign` (by `plan`) and scores every member against them
    let mut refresh = |plan: &SumPlan, assign: &[u16], cent: &mut Centroids, scores: &mut [f32]| {
        if plan.fresh {
            cent.recompute(rows, &plan.ops, par);
        } else {
            cent.apply(rows, &plan.ops, par);
        }
        counts.fill(0);
        for &a in assign {
            counts[a as usize] += 1;
        }
        scoring.run(cent, Some(&counts), scores);
    };
    for it in 0..params.max_iter {
        refresh(&plan, &assign, &mut cent, &mut scores);
        let next = assign_capacity(&scores, n, c, hi, !params.balanced, min_len);
        plan = plan_update(Some(&assign), &next, dup, c);
        let next_obj = objective(&scores, &next, c);
        let gain = next_obj - obj;
        assign = next;
        obj = next_obj;
        if plan.moved <= max_moved
            || (it + 1 >= OBJ_MIN_ROUNDS && gain <= f64::from(OBJ_REL_TOL) * obj.abs())
        {
            break;
        }
    }
    if exact {
        refresh(&plan, &assign, &mut cent, &mut scores);
        obj = objective(&scores, &assign, c);
    }
    (assign, obj)
}

/// Sum, in member order (f64), of each member's score in its assigned cluster.
fn objective(scores: &[f32], assign: &[u16], c: usize) -> f64 {
    assign
        .iter()
        .enumerate()
        .map(|(k, &a)| f64::from(scores[k * c + a as usize]))
        .sum()
}

/// How to bring the centroid sums to a new assignment.
struct SumPlan {
    /// Per cluster, the members to add (true) or subtract (false), in member order.
    ops: Vec<Vec<(u32, bool)>>,
    /// Whether the sums are recomputed from zero (else `ops` are applied to them).
    fresh: bool,
    /// Members that changed cluster, less exchanges between identical rows.
    moved: usize,
}

/// The [`SumPlan`] from assignment `held` (none: the sums hold something else) to `assign`.
/// A member moving from `a` to `b` is subtracted from `a` and added to `b`, except that moves
/// of identical rows (`first`, from [`local_duplicates`]) cancel: for each cluster and set of
/// identical members, only the net number of additions or subtractions is kept (the first ones
/// in member order). When more than `1 / INCREMENTAL_FRAC` of the members still move, the
/// sums are recomputed instead.
fn plan_update(held: Option<&[u16]>, assign: &[u16], first: Option<&[u32]>, c: usize) -> SumPlan {
    let n = assign.len();
    let fresh_plan = |moved: usize| {
        let mut ops: Vec<Vec<(u32, bool)>> = vec![Vec::new(); c];
        for (k, &a) in assign.iter().enumerate() {
            ops[a as usize].push((k as u32, true));
        }
        SumPlan {
            ops,
            fresh: true,
            moved,
        }
    };
    let Some(held) = held else {
        return fresh_plan(n);
    };
    let group = |k: usize| first.map_or(NO_DUP, |f| f[k]);
    // net additions per (set of identical rows, cluster)
    let mut net: std::collections::HashMap<
        (u32, u16),
        i64,
        std::hash::BuildHasherDefault<IdHasher>,
    > = Default::default();
    for (k, (&was, &now)) in held.iter().zip(assign).enumerate() {
        let g = group(k);
        if was != now && g != NO_DUP {
            *net.entry((g, was)).or_default() -= 1;
            *net.entry((g, now)).or_default() += 1;
        }
    }
    let mut ops: Vec<Vec<(u32, bool)>> = vec![Vec::new(); c];
    let mut moved = 0usize;
    for (k, (&was, &now)) in held.iter().zip(assign).enumerate() {
        if was == now {
            continue;
        }
        let g = group(k);
        if g == NO_DUP {
            ops[was as usize].push((k as u32, false));
            ops[now as usize].push((k as u32, true));
            moved += 1;
            continue;
        }
        if let Some(e) = net.get_mut(&(g, was)) {
            if *e < 0 {
                ops[was as usize].push((k as u32, false));
                *e += 1;
            }
        }
        if let Some(e) = net.get_mut(&(g, now)) {
            if *e > 0 {
                ops[now as usize].push((k as u32, true));
                *e -= 1;
                moved += 1;
            }
        }
    }
    if moved.saturating_mul(INCREMENTAL_FRAC) > n {
        return fresh_plan(moved);
    }
    SumPlan {
        ops,
        fresh: false,
        moved,
    }
}

/// The centroid sums of a node, column-interleaved: lane `j < c` of column `col` is
/// `t[col * cp + j]`, the sum of cluster `j`'s member rows at `col` (`cp` is `c` or
/// [`lane_stride`]`(c)`; lanes `>= c` stay zero), with each sum's squared norm.
struct Centroids {
    c: usize,
    cp: usize,
    d: usize,
    t: AlignedBuf,
    ss: Vec<f64>,
    /// `c x d` scratch for [`Centroids::recompute`] (allocated on first use).
    rowwise: Vec<f32>,
}

/// The floats of `t` as atomics holding their bits, so that the per-cluster tasks of
/// [`Centroids::apply`] can share the table (each loads and stores only its own lane, so
/// relaxed order suffices and no update is lost).
fn as_atomic(t: &mut [f32]) -> &[AtomicU32] {
    // SAFETY: `AtomicU32` has the size and alignment of `u32`, hence of `f32`, and the
    // exclusive borrow of `t` is held for the lifetime of the returned view.
    unsafe { &*(t as *mut [f32] as *const [AtomicU32]) }
}

/// `*o += x` on a float stored as bits (see [`as_atomic`]); returns `new^2 - old^2` in f64.
#[inline(always)]
fn add_lane(o: &AtomicU32, x: f32) -> f64 {
    let old = f32::from_bits(o.load(Ordering::Relaxed));
    let new = old + x;
    o.store(new.to_bits(), Ordering::Relaxed);
    f64::from(new) * f64::from(new) - f64::from(old) * f64::from(old)
}

/// Columns per task when transposing the row-wise sums.
const TRANSPOSE_COLS: usize = 1024;

impl Centroids {
    /// `padded`: [`lane_stride`] lanes per column (for scoring row by row), else `c`.
    fn new(c: usize, d: usize, padded: bool) -> Self {
        let cp = if padded { lane_stride(c) } else { c };
        Centroids {
            c,
            cp,
            d,
            t: AlignedBuf::zeros(cp * d),
            ss: vec![0.0; c],
            rowwise: Vec::new(),
        }
    }

    /// Sets cluster `j`'s sum to the sum of the members added by `ops[j]` (all additions), in
    /// member order: scattered into the cleared table when the members hold fewer than `c x d`
    /// values, else row by row into a `c x d` scratch (each task one cluster and column block,
    /// never splitting a sum), then transposed, with the squared norms recomputed.
    fn recompute<R: Rows>(&mut self, rows: &R, ops: &[Vec<(u32, bool)>], par: bool) {
        let (c, cp, d) = (self.c, self.cp, self.d);
        if d == 0 {
            return;
        }
        let stored: usize = ops
            .iter()
            .flatten()
            .map(|&(k, _)| rows.sparse_row(k as usize).map_or(d, |r| r.0.len()))
            .sum();
        if stored < c * d {
            // sparse: clear the table and scatter the members (fewer operations than c x d)
            let t = self.t.as_mut_slice();
            if par {
                t.par_chunks_mut(1 << 16).for_each(|ch| ch.fill(0.0));
            } else {
                t.fill(0.0);
            }
            self.ss.fill(0.0);
            self.apply(rows, ops, par);
            return;
        }
        self.rowwise.resize(c * d, 0.0);
        let blocks = if par {
            (2 * rayon::current_num_threads()).div_ceil(c).max(1)
        } else {
            1
        };
        let bs = d.div_ceil(blocks).max(1);
        let run = |j: usize, b: usize, blk: &mut [f32]| {
            let cols = b * bs..(b * bs + blk.len());
            blk.fill(0.0);
            for &(k, add) in &ops[j] {
                rows.add_to(k as usize, cols.clone(), if add { 1.0 } else { -1.0 }, blk);
            }
        };
        let sums = &mut self.rowwise;
        if par {
            sums.par_chunks_mut(d).enumerate().for_each(|(j, sj)| {
                sj.par_chunks_mut(bs)
                    .enumerate()
                    .for_each(|(b, blk)| run(j, b, blk));
            });
        } else {
            for (j, sj) in sums.chunks_mut(d).enumerate() {
                run(j, 0, sj);
            }
        }
        let sums = &self.rowwise;
        let fill = |b: usize, blk: &mut [f32]| {
            let col0 = b * TRANSPOSE_COLS;
            let m = blk.len() / cp;
            for j in 0..c {
                let src = &sums[j * d + col0..j * d + col0 + m];
                for (o, &v) in blk.chunks_exact_mut(cp).zip(src) {
                    o[j] = v;
                }
            }
        };
        let t = self.t.as_mut_slice();
        if par {
            t.par_chunks_mut(cp * TRANSPOSE_COLS)
                .enumerate()
                .for_each(|(b, blk)| fill(b, blk));
            self.ss = (0..c)
                .into_par_iter()
                .map(|j| sum_squares(&sums[j * d..(j + 1) * d]))
                .collect();
        } else {
            for (b, blk) in t.chunks_mut(cp * TRANSPOSE_COLS).enumerate() {
                fill(b, blk);
            }
            self.ss = (0..c)
                .map(|j| sum_squares(&sums[j * d..(j + 1) * d]))
                .collect();
        }
    }

    /// Adds (or subtracts) the members of `ops[j]` to cluster `j`'s sum, in place, in member
    /// order, updating each squared norm by the changes (in op order). Clusters run in
    /// parallel: each writes only its own lane.
    fn apply<R: Rows>(&mut self, rows: &R, ops: &[Vec<(u32, bool)>], par: bool) {
        let (cp, d) = (self.cp, self.d);
        if d == 0 {
            return;
        }
        let t = as_atomic(self.t.as_mut_slice());
        let lane = |j: usize| -> f64 {
            let mut delta = 0f64;
            for &(k, add) in &ops[j] {
                let sign = if add { 1.0 } else { -1.0 };
                delta += rows.scatter_lane(k as usize, sign, (j, cp), t);
            }
            delta
        };
        let deltas: Vec<f64> = if par {
            (0..self.c).into_par_iter().map(lane).collect()
        } else {
            (0..self.c).map(lane).collect()
        };
        for (s, &x) in self.ss.iter_mut().zip(&deltas) {
            // rounding may leave a tiny negative for an emptied cluster
            *s = (*s + x).max(0.0);
        }
    }

    /// Per-cluster factors turning raw dot products with the sums into scores,
    /// `score = dot * mult - offset` (spherical: `mult = 1 / |sum|`, then divided by `|x|`;
    /// Euclidean: `mult = 1 / count`, `offset = |mean|^2 / 2`; `counts` none: counts of 1).
    fn factors(&self, spherical: bool, counts: Option<&[usize]>) -> (Vec<f32>, Vec<f32>) {
        let mut mult = vec![1f32; self.c];
        let mut offset = vec![0f32; self.c];
        for j in 0..self.c {
            let ss = self.ss[j];
            if spherical {
                if ss > 0.0 {
                    mult[j] = (1.0 / ss.sqrt()) as f32;
                }
            } else {
                let n = counts.map_or(1, |cn| cn[j]).max(1) as f64;
                mult[j] = (1.0 / n) as f32;
                offset[j] = (0.5 * ss / (n * n)) as f32;
            }
        }
        (mult, offset)
    }
}

/// `sum of x^2` in f64, over four interleaved partial sums combined in a fixed order.
fn sum_squares(x: &[f32]) -> f64 {
    let mut acc = [0f64; 4];
    let mut ch = x.chunks_exact(4);
    for q in &mut ch {
        for l in 0..4 {
            acc[l] += f64::from(q[l]) * f64::from(q[l]);
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for &v in ch.remainder() {
        s += f64::from(v) * f64::from(v);
    }
    s
}

/// What scoring a node's members needs besides the centroids.
struct Scoring<'a, R: Rows> {
    rows: &'a R,
    norms: &'a [f32],
    spherical: bool,
    c: usize,
    min_len: usize,
    dup: Option<&'a [u32]>,
    colmajor: Option<&'a ColMajor>,
}

impl<R: Rows> Scoring<'_, R> {
    /// Fills `scores` (`n x c`) from the centroid sums and their [`Centroids::factors`]
    /// (`counts`: cluster sizes, none for seeds): cosine for spherical, `x.mu - |mu|^2/2`
    /// for Euclidean (`mu` the mean). By columns when the node has a [`ColMajor`] copy, else
    /// row by row; a duplicate member gets its first copy's scores.
    fn run(&self, cent: &Centroids, counts: Option<&[usize]>, scores: &mut [f32]) {
        let (c, cp, dup) = (self.c, cent.cp, self.dup);
        let (mult, offset) = cent.factors(self.spherical, counts);
        let wide = wide_simd();
        let is_copy = |k: usize| dup.is_some_and(|dp| dp[k] != NO_DUP && dp[k] != k as u32);
        let finish = |k: usize, out: &mut [f32]| {
            for (v, &f) in out.iter_mut().zip(&mult) {
                *v *= f;
            }
            if self.spherical {
                if self.norms[k] > 0.0 {
                    let inv = 1.0 / self.norms[k];
                    out.iter_mut().for_each(|v| *v *= inv);
                }
            } else {
                for (v, &o) in out.iter_mut().zip(&offset) {
                    *v -= o;
                }
            }
        };
        if let Some(cm) = self.colmajor {
            let per = cm.blocks.first().map_or(1, |b| b.len.max(1));
            scores
                .par_chunks_mut(per * c)
                .zip(&cm.blocks)
                .for_each(|(sc, blk)| {
                    let s = lane_stride(cp);
                    let mut buf = AlignedBuf::zeros(blk.len * s);
                    let buf = buf.as_mut_slice();
                    score_block_dispatch(blk, cent.t.as_slice(), cp, buf, wide);
                    for (i, (out, src)) in sc.chunks_mut(c).zip(buf.chunks(s)).enumerate() {
                        let k = blk.start + i;
                        if !is_copy(k) {
                            out.copy_from_slice(&src[..c]);
                            finish(k, out);
                        }
                    }
                });
        } else {
            let chunk = self.min_len.clamp(1, self.rows.len().max(1));
            scores
                .par_chunks_mut(chunk * c)
                .enumerate()
                .for_each(|(b, sc)| {
                    let k0 = b * chunk;
                    // every lane of a member, so the kernels store whole registers
                    let mut buf = vec![0f32; sc.len() / c * cp];
                    let t = cent.t.as_slice();
                    score_rows(self.rows, k0, t, (cp, c), &mut buf, is_copy, wide);
                    for (i, (out, src)) in sc.chunks_mut(c).zip(buf.chunks(cp)).enumerate() {
                        if !is_copy(k0 + i) {
                            out.copy_from_slice(&src[..c]);
                            finish(k0 + i, out);
                        }
                    }
                });
        }
        if let Some(dp) = dup {
            // a duplicate's first copy is an earlier member, already scored
            for (k, &f) in dp.iter().enumerate() {
                if f != NO_DUP && f != k as u32 {
                    scores.copy_within(f as usize * c..(f as usize + 1) * c, k * c);
                }
            }
        }
    }
}

/// Whether [`score_rows`] may use its AVX2 copy (checked once per call site).
#[inline]
fn wide_simd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[i * cp..(i + 1) * cp] = x_{k0 + i} . W` (all `cp` lanes, of which the first `c` are
/// scores) for the members of a chunk except those `skip` names (`W` interleaved with `cp`
/// lanes per column), through a copy compiled with AVX2 when `wide` (from [`wide_simd`]).
/// The kernel is chosen once per chunk; every variant performs the same multiplications and
/// additions in the same order (AVX2 only, no FMA contraction), so the scores are
/// bit-identical whichever runs.
#[inline]
fn score_rows<R: Rows, F: Fn(usize) -> bool>(
    rows: &R,
    k0: usize,
    wt: &[f32],
    (cp, c): (usize, usize),
    out: &mut [f32],
    skip: F,
    wide: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if wide {
            // SAFETY: `wide` comes from `wide_simd`, which checked that the CPU has AVX2.
            unsafe { score_rows_avx2(rows, k0, wt, (cp, c), out, skip) };
            return;
        }
    }
    let _ = wide;
    score_rows_plain(rows, k0, wt, (cp, c), out, skip);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn score_rows_avx2<R: Rows, F: Fn(usize) -> bool>(
    rows: &R,
    k0: usize,
    wt: &[f32],
    lanes: (usize, usize),
    out: &mut [f32],
    skip: F,
) {
    score_rows_plain(rows, k0, wt, lanes, out, skip);
}

#[inline(always)]
fn score_rows_plain<R: Rows, F: Fn(usize) -> bool>(
    rows: &R,
    k0: usize,
    wt: &[f32],
    (cp, c): (usize, usize),
    out: &mut [f32],
    skip: F,
) {
    let pf = wt.len().saturating_mul(4) > CACHE_BYTES;
    let members = out.chunks_mut(cp.max(1)).enumerate();
    macro_rules! fixed {
        ($($n:literal),*) => {
            match cp {
                $($n if c <= $n && pf => {
                    for (i, o) in members {
                        if !skip(k0 + i) {
                            rows.scores_n::<$n, true>(k0 + i, wt, o);
                        }
                    }
                })*
                $($n if c <= $n => {
                    for (i, o) in members {
                        if !skip(k0 + i) {
                            rows.scores_n::<$n, false>(k0 + i, wt, o);
                        }
                    }
                })*
                _ => {
                    for (i, o) in members {
                        if !skip(k0 + i) {
                            rows.scores_t(k0 + i, wt, cp, o);
                        }
                    }
                }
            }
        };
    }
    fixed!(1, 2, 4, 8, 16)
}

/// Greedy-by-margin assignment under per-cluster capacities `hi` (sum >= n); with
/// `fill_empty`, an empty cluster then takes the member with the largest gain from clusters
/// with more than one member.
fn assign_capacity(
    scores: &[f32],
    n: usize,
    c: usize,
    hi: &[usize],
    fill_empty: bool,
    min_len: usize,
) -> Vec<u16> {
    let margin: Vec<f32> = scores
        .par_chunks(c)
        .with_min_len(min_len)
        .map(|s| {
            let (mut b1, mut b2) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
            for &v in s {
                if v > b1 {
                    b2 = b1;
                    b1 = v;
                } else if v > b2 {
                    b2 = v;
                }
            }
            b1 - b2
        })
        .collect();
    let mut order: Vec<u32> = (0..n as u32).collect();
    let cmp = |a: &u32, b: &u32| {
        margin[*b as usize]
            .total_cmp(&margin[*a as usize])
            .then(a.cmp(b))
    };
    if n >= 1 << 15 {
        order.par_sort_unstable_by(cmp);
    } else {
        order.sort_unstable_by(cmp);
    }
    let mut count = vec![0usize; c];
    let mut assign = vec![0u16; n];
    for &k in &order {
        let s = &scores[k as usize * c..(k as usize + 1) * c];
        let mut best = usize::MAX;
        for j in 0..c {
            if count[j] < hi[j] && (best == usize::MAX || s[j] > s[best]) {
                best = j;
            }
        }
        // sum(hi) >= n guarantees room somewhere
        let best = if best == usize::MAX { 0 } else { best };
        count[best] += 1;
        assign[k as usize] = best as u16;
    }
    if fill_empty {
        for j in 0..c {
            if count[j] > 0 {
                continue;
            }
            let mut pick: Option<(f32, usize)> = None;
            for k in 0..n {
                let a = assign[k] as usize;
                if count[a] <= 1 {
                    continue;
                }
                let gain = scores[k * c + j] - scores[k * c + a];
                if pick.is_none_or(|(g, _)| gain > g) {
                    pick = Some((gain, k));
                }
            }
            if let Some((_, k)) = pick {
                count[assign[k] as usize] -= 1;
                count[j] += 1;
                assign[k] = j as u16;
            }
        }
    }
    assign
}

/// `m < n` distinct positions of `0..n`, drawn uniformly (partial Fisher-Yates on `rng`),
/// in increasing order.
fn sample_positions(n: usize, m: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut pos: Vec<usize> = (0..n).collect();
    for i in 0..m {
        let j = i + rng.below((n - i) as u64) as usize;
        pos.swap(i, j);
    }
    pos.truncate(m);
    pos.sort_unstable();
    pos
}

/// A node's rows stored column by column, in blocks of members, for scoring by columns
/// ([`score_block`]): block `b` covers members `starts[b]..starts[b + 1]` and lists, for each
/// column any of them uses (increasing), their positions and values (increasing position).
/// Duplicates (see [`local_duplicates`]) are left out: their scores are copied.
struct ColMajor {
    blocks: Vec<ColBlock>,
}

struct ColBlock {
    start: usize,
    len: usize,
    cols: Vec<u32>,
    ptr: Vec<u32>,
    member: Vec<u32>,
    value: Vec<f32>,
}

/// Bytes of per-block scores ([`ColMajor`]) meant to stay in a core's cache.
const COL_BLOCK_BYTES: usize = 256 << 10;
/// A node is scored by columns when its sums exceed [`CACHE_BYTES`], it has fewer members
/// than `1 / COL_MEMBER_RATIO` of its columns and at most `COL_MAX_NNZ` stored values (the
/// copy costs 8 bytes per value).
const COL_MEMBER_RATIO: usize = 2;
const COL_MAX_NNZ: usize = 1 << 24;

impl ColMajor {
    /// `None` when the rows are dense, or the node is too large or has too few columns.
    /// `lanes`: floats of scores per member (sizes the blocks).
    fn build<R: Rows>(rows: &R, dup: Option<&[u32]>, lanes: usize, par: bool) -> Option<Self> {
        Self::build_blocks(
            rows,
            dup,
            (COL_BLOCK_BYTES / (4 * lanes.max(1))).max(1),
            par,
        )
    }

    /// [`ColMajor::build`] with `per` members per block.
    fn build_blocks<R: Rows>(rows: &R, dup: Option<&[u32]>, per: usize, par: bool) -> Option<Self> {
        let (n, d) = (rows.len(), rows.dim());
        if n == 0 || n.saturating_mul(COL_MEMBER_RATIO) > d || d > u32::MAX as usize {
            return None;
        }
        rows.sparse_row(0)?;
        let keep = |k: usize| dup.is_none_or(|dp| dp[k] == NO_DUP || dp[k] == k as u32);
        let nnz: usize = (0..n)
            .filter(|&k| keep(k))
            .map(|k| rows.sparse_row(k).map_or(0, |r| r.0.len()))
            .sum();
        if nnz > COL_MAX_NNZ {
            return None;
        }
        let build = |b: usize| -> ColBlock {
            let (start, end) = (b * per, ((b + 1) * per).min(n));
            let mut count = vec![0u32; d];
            let mut total = 0usize;
            for k in (start..end).filter(|&k| keep(k)) {
                let (ri, _) = rows.sparse_row(k).unwrap_or((&[], &[]));
                for &j in ri {
                    count[j as usize] += 1;
                }
                total += ri.len();
            }
            let mut cols = Vec::new();
            let mut ptr = vec![0u32];
            // `count[j]` becomes the next free slot of column j
            for (j, cnt) in count.iter_mut().enumerate() {
                if *cnt > 0 {
                    let at = *ptr.last().unwrap_or(&0);
                    cols.push(j as u32);
                    ptr.push(at + *cnt);
                    *cnt = at;
                }
            }
            let mut member = vec![0u32; total];
            let mut value = vec![0f32; total];
            for k in (start..end).filter(|&k| keep(k)) {
                let (ri, rv) = rows.sparse_row(k).unwrap_or((&[], &[]));
                for (&j, &v) in ri.iter().zip(rv) {
                    let slot = &mut count[j as usize];
                    member[*slot as usize] = (k - start) as u32;
                    value[*slot as usize] = v;
                    *slot += 1;
                }
            }
            ColBlock {
                start,
                len: end - start,
                cols,
                ptr,
                member,
                value,
            }
        };
        let nb = n.div_ceil(per);
        let blocks = if par {
            (0..nb).into_par_iter().map(build).collect()
        } else {
            (0..nb).map(build).collect()
        };
        Some(ColMajor { blocks })
    }
}

/// Scores of a [`ColBlock`]'s members, `out[i * S..i * S + N] = x_{start + i} . W` (`W`
/// interleaved with `N` lanes per column; `out` has `S >= N` lanes per member, a power of two
/// so that a member's lanes fill whole registers and lines, the extra ones computed with zero
/// weights), visiting the columns in increasing order: per member the same products added in
/// the same order as [`sparse_scores`].
#[inline(always)]
fn score_block<const N: usize, const S: usize>(blk: &ColBlock, wt: &[f32], out: &mut [f32]) {
    for (ci, &j) in blk.cols.iter().enumerate() {
        let j = j as usize * N;
        let Some(w) = wt.get(j..j + N) else {
            continue;
        };
        let w: [f32; S] = std::array::from_fn(|l| if l < N { w[l] } else { 0.0 });
        let span = blk.ptr[ci] as usize..blk.ptr[ci + 1] as usize;
        for (&k, &v) in blk.member[span.clone()].iter().zip(&blk.value[span]) {
            let k = k as usize * S;
            if let Some(o) = out.get_mut(k..k + S) {
                for l in 0..S {
                    o[l] += v * w[l];
                }
            }
        }
    }
}

/// [`score_block`] for the lane stride `cp` (`out` with [`lane_stride`]`(cp)` lanes per
/// member), through a copy compiled with AVX2 when `wide` (same operations, same order).
fn score_block_dispatch(blk: &ColBlock, wt: &[f32], cp: usize, out: &mut [f32], wide: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if wide {
            // SAFETY: `wide` comes from `wide_simd`, which checked that the CPU has AVX2.
            unsafe { score_block_avx2(blk, wt, cp, out) };
            return;
        }
    }
    let _ = wide;
    score_block_plain(blk, wt, cp, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn score_block_avx2(blk: &ColBlock, wt: &[f32], cp: usize, out: &mut [f32]) {
    score_block_plain(blk, wt, cp, out);
}

#[inline(always)]
fn score_block_plain(blk: &ColBlock, wt: &[f32], cp: usize, out: &mut [f32]) {
    macro_rules! fixed {
        ($($n:literal => $s:literal),*) => {
            match cp {
                $($n => score_block::<$n, $s>(blk, wt, out),)*
                _ => score_block_any(blk, wt, cp, out),
            }
        };
    }
    fixed!(1 => 1, 2 => 2, 3 => 4, 4 => 4, 5 => 8, 6 => 8, 7 => 8, 8 => 8, 9 => 16, 10 => 16,
        11 => 16, 12 => 16, 13 => 16, 14 => 16, 15 => 16, 16 => 16)
}

/// [`score_block`] for any stride.
fn score_block_any(blk: &ColBlock, wt: &[f32], cp: usize, out: &mut [f32]) {
    for (ci, &j) in blk.cols.iter().enumerate() {
        let w = &wt[j as usize * cp..(j as usize + 1) * cp];
        for p in blk.ptr[ci] as usize..blk.ptr[ci + 1] as usize {
            let k = blk.member[p] as usize * cp;
            let v = blk.value[p];
            for (o, &wl) in out[k..k + cp].iter_mut().zip(w) {
                *o += v * wl;
            }
        }
    }
}

/// Marks a member without an earlier identical member in its node.
const NO_DUP: u32 = u32::MAX;

/// A fast hasher for `u32` keys (multiplicative; the keys are label ids).
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = (u64::from(i) ^ 0x5851_F42D_4C95_7F2D).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// For every label whose row has an identical copy (same columns and the same value bits),
/// the smallest label with that row; `NO_DUP` for the others.
fn duplicate_groups(z: &ZView<'_>) -> Vec<u32> {
    let n = z.n_rows();
    let row_bits = |l: usize| -> (&[u32], &[f32]) {
        match z {
            ZView::Sparse(v) => v.row(l),
            ZView::Dense { data, dim, .. } => (&[], &data[l * dim..(l + 1) * dim]),
        }
    };
    let hashes: Vec<u64> = (0..n)
        .into_par_iter()
        .with_min_len(1024)
        .map(|l| {
            let (ri, rv) = row_bits(l);
            // (column, value bits) words, alternately into two independent lanes
            let word = |p: usize| {
                let j = ri.get(p).map_or(p as u64, |&j| u64::from(j));
                (j << 32) | u64::from(rv[p].to_bits())
            };
            let step = |h: u64, x: u64| (h ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
            let (mut a, mut b) = (super::rng::mix64(rv.len() as u64), 0x243F_6A88_85A3_08D3);
            let pairs = rv.len() / 2;
            for p in 0..pairs {
                a = step(a, word(2 * p));
                b = step(b, word(2 * p + 1));
            }
            if rv.len() % 2 == 1 {
                a = step(a, word(rv.len() - 1));
            }
            super::rng::mix64(a ^ b.rotate_left(17))
        })
        .collect();
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.par_sort_unstable_by_key(|&l| (hashes[l as usize], l));
    let same = |a: u32, b: u32| {
        let ((ai, av), (bi, bv)) = (row_bits(a as usize), row_bits(b as usize));
        ai == bi
            && av.len() == bv.len()
            && av.iter().zip(bv).all(|(x, y)| x.to_bits() == y.to_bits())
    };
    // the start of each run of equal hashes (in `order`, whose runs list ids increasing)
    let mut run_of = vec![0u32; n];
    for i in 1..n {
        let same_hash = hashes[order[i] as usize] == hashes[order[i - 1] as usize];
        run_of[i] = if same_hash { run_of[i - 1] } else { i as u32 };
    }
    // most rows of a run equal its first row: check those in parallel
    let equal_first: Vec<bool> = (0..n)
        .into_par_iter()
        .with_min_len(1024)
        .map(|i| {
            let r = run_of[i] as usize;
            r != i && same(order[r], order[i])
        })
        .collect();
    let mut group = vec![NO_DUP; n];
    let mut i = 0;
    while i < n {
        let mut e = i + 1;
        while e < n && run_of[e] as usize == i {
            e += 1;
        }
        if e - i > 1 {
            // each label joins the first earlier label with an equal row
            let mut firsts: Vec<u32> = vec![order[i]];
            for p in i + 1..e {
                let l = order[p];
                let f = if equal_first[p] {
                    Some(order[i])
                } else {
                    firsts.iter().copied().find(|&f| same(f, l))
                };
                match f {
                    Some(f) => {
                        group[l as usize] = f;
                        group[f as usize] = f;
                    }
                    None => firsts.push(l),
                }
            }
        }
        i = e;
    }
    group
}

/// For each member of a node (`seg`, label ids) whose row has a copy among the members, the
/// position of the first such member (itself for the first); `NO_DUP` for the others.
/// `None` when no two members are identical.
fn local_duplicates(groups: &[u32], seg: &[u32]) -> Option<Vec<u32>> {
    if groups.is_empty() {
        return None;
    }
    let mut first: std::collections::HashMap<u32, u32, std::hash::BuildHasherDefault<IdHasher>> =
        Default::default();
    let mut dup = vec![NO_DUP; seg.len()];
    let mut any = false;
    for (k, &l) in seg.iter().enumerate() {
        let g = groups[l as usize];
        if g == NO_DUP {
            continue;
        }
        let f = *first.entry(g).or_insert(k as u32);
        dup[k] = f;
        any |= f != k as u32;
    }
    any.then_some(dup)
}

/// A subset of a node's members (positions `idx` of `rows`).
struct SubRows<'a, R: Rows> {
    rows: &'a R,
    idx: &'a [usize],
}

impl<R: Rows> Rows for SubRows<'_, R> {
    fn len(&self) -> usize {
        self.idx.len()
    }
    fn dim(&self) -> usize {
        self.rows.dim()
    }
    fn work(&self) -> usize {
        let n = self.rows.len().max(1);
        // estimate: the node's work scaled to the subset
        (self.rows.work() as u128 * self.idx.len() as u128 / n as u128) as usize
    }
    #[inline(always)]
    fn scores_t(&self, k: usize, wt: &[f32], stride: usize, out: &mut [f32]) {
        self.rows.scores_t(self.idx[k], wt, stride, out);
    }
    #[inline(always)]
    fn scores_n<const N: usize, const PF: bool>(&self, k: usize, wt: &[f32], out: &mut [f32]) {
        self.rows.scores_n::<N, PF>(self.idx[k], wt, out);
    }
    fn add_to(&self, k: usize, cols: Range<usize>, sign: f32, out: &mut [f32]) {
        self.rows.add_to(self.idx[k], cols, sign, out);
    }
    fn scatter_lane(&self, k: usize, sign: f32, lane: (usize, usize), t: &[AtomicU32]) -> f64 {
        self.rows.scatter_lane(self.idx[k], sign, lane, t)
    }
    fn sparse_row(&self, k: usize) -> Option<(&[u32], &[f32])> {
        self.rows.sparse_row(self.idx[k])
    }
}

/// The members of every column of sparse rows (an inverted index), each column's members in
/// increasing position.
struct Inverted {
    ptr: Vec<usize>,
    member: Vec<u32>,
    value: Vec<f32>,
}

impl Inverted {
    /// `None` for dense rows. Members that copy an earlier one (`dup`) are left out.
    fn build<R: Rows>(rows: &R, dup: Option<&[u32]>) -> Option<Self> {
        let (n, d) = (rows.len(), rows.dim());
        let skip = |k: usize| dup.is_some_and(|dp| dp[k] != NO_DUP && dp[k] != k as u32);
        let mut ptr = vec![0usize; d + 1];
        for k in (0..n).filter(|&k| !skip(k)) {
            for &j in rows.sparse_row(k)?.0 {
                ptr[j as usize + 1] += 1;
            }
        }
        for j in 0..d {
            ptr[j + 1] += ptr[j];
        }
        let mut next = ptr.clone();
        let mut member = vec![0u32; ptr[d]];
        let mut value = vec![0f32; ptr[d]];
        for k in (0..n).filter(|&k| !skip(k)) {
            let (ri, rv) = rows.sparse_row(k)?;
            for (&j, &v) in ri.iter().zip(rv) {
                let p = &mut next[j as usize];
                member[*p] = k as u32;
                value[*p] = v;
                *p += 1;
            }
        }
        Some(Inverted { ptr, member, value })
    }
}

/// k-means++ seeding: `c` distinct member positions.
fn kmeanspp<R: Rows>(
    rows: &R,
    dup: Option<&[u32]>,
    c: usize,
    norms: &[f32],
    spherical: bool,
    min_len: usize,
    rng: &mut SplitMix64,
) -> Vec<usize> {
    let n = rows.len();
    let d = rows.dim();
    let mut chosen = vec![false; n];
    let first = rng.below(n as u64) as usize;
    let mut seeds = vec![first];
    chosen[first] = true;
    let mut dist = vec![f32::INFINITY; n];
    let mut score = vec![0f32; n];
    // sparse rows: a round visits only the members sharing a column with the newest seed,
    // and of identical members only the first (the others copy its score)
    let inverted = Inverted::build(rows, dup);
    let mut center = if inverted.is_some() {
        Vec::new()
    } else {
        vec![0f32; d]
    };
    while seeds.len() < c {
        let last = *seeds.last().unwrap_or(&first);
        let cn = norms[last];
        match (&inverted, rows.sparse_row(last)) {
            (Some(ix), Some((ri, rv))) => {
                // per member, the products are added in column order, as the dense gather
                // below does (whose other terms are zeros), so the scores are the same
                score.fill(0.0);
                for (&j, &w) in ri.iter().zip(rv) {
                    let span = ix.ptr[j as usize]..ix.ptr[j as usize + 1];
                    for (&k, &v) in ix.member[span.clone()].iter().zip(&ix.value[span]) {
                        score[k as usize] += v * w;
                    }
                }
                if let Some(dp) = dup {
                    for (k, &f) in dp.iter().enumerate() {
                        if f != NO_DUP && f != k as u32 {
                            score[k] = score[f as usize];
                        }
                    }
                }
            }
            _ => {
                center.fill(0.0);
                rows.add_to(last, 0..d, 1.0, &mut center);
                // `center` as a 1-column interleaved matrix is `center` itself
                score
                    .par_iter_mut()
                    .with_min_len(min_len)
                    .enumerate()
                    .for_each(|(k, s)| {
                        let mut o = [0f32];
                        rows.scores_t(k, &center, 1, &mut o);
                        *s = o[0];
                    });
            }
        }
        dist.par_iter_mut()
            .with_min_len(min_len)
            .enumerate()
            .for_each(|(k, dk)| {
                let e = if spherical {
                    let denom = norms[k] * cn;
                    let cos = if denom > 0.0 { score[k] / denom } else { 0.0 };
                    (2.0 - 2.0 * cos).max(0.0)
                } else {
                    (norms[k] * norms[k] - 2.0 * score[k] + cn * cn).max(0.0)
                };
                if e < *dk {
                    *dk = e;
                }
            });
        let total: f64 = dist
            .iter()
            .zip(&chosen)
            .filter(|(_, &ch)| !ch)
            .map(|(&v, _)| f64::from(v))
            .sum();
        let next = if total > 0.0 && total.is_finite() {
            let target = rng.next_f64() * total;
            let mut acc = 0f64;
            let mut pick = None;
            let mut last_ok = None;
            for k in 0..n {
                if chosen[k] || dist[k] <= 0.0 {
                    continue;
                }
                last_ok = Some(k);
                acc += f64::from(dist[k]);
                if acc > target {
                    pick = Some(k);
                    break;
                }
            }
            pick.or(last_ok)
        } else {
            None
        };
        let next = match next {
            Some(k) => k,
            None => {
                // every remaining member coincides with a seed: take a random unchosen one
                let free = n - seeds.len();
                let r = rng.below(free as u64) as usize;
                (0..n).filter(|&k| !chosen[k]).nth(r).unwrap_or(0)
            }
        };
        chosen[next] = true;
        seeds.push(next);
    }
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::install;

    /// `n` points around `k` well-separated random directions in `dim` dimensions.
    fn planted(n: usize, k: usize, dim: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
        let mut r = SplitMix64::new(seed);
        let mut g = || (r.next_f64() * 2.0 - 1.0) as f32;
        let centers: Vec<Vec<f32>> = (0..k)
            .map(|_| (0..dim).map(|_| g() * 3.0).collect())
            .collect();
        let mut data = Vec::with_capacity(n * dim);
        let mut truth = Vec::with_capacity(n);
        for i in 0..n {
            let t = i % k;
            truth.push(t);
            for x in &centers[t] {
                data.push(x + 0.3 * g());
            }
        }
        (data, truth)
    }

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
    fn schedule_rules() {
        assert!(fanout_schedule(100, 16, 100).is_empty());
        assert_eq!(fanout_schedule(101, 16, 100), vec![2]);
        assert_eq!(fanout_schedule(1000, 16, 100), vec![10]);
        assert_eq!(fanout_schedule(1700, 16, 100), vec![5, 4]);
        assert_eq!(fanout_schedule(44677, 16, 100), vec![8, 8, 7]);
        assert_eq!(fanout_schedule(7, 2, 1), vec![2, 2, 2]);
        for l in 1..300 {
            for b in [2, 3, 5, 16] {
                for m in [1, 2, 7, 50] {
                    let f = fanout_schedule(l, b, m);
                    let p: usize = f.iter().product();
                    assert!(p * m >= l && f.iter().all(|&c| c >= 1 && c <= b));
                }
            }
        }
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

    /// A sparse `n x d` matrix of random rows (`per_row` values each, in `0.1..1.1`) where
    /// every row `i` with `i % dup_every == 1` copies row `i - 1`.
    fn random_sparse(n: usize, d: usize, per_row: usize, dup_every: usize, seed: u64) -> Csr {
        let mut r = SplitMix64::new(seed);
        let mut trip = Vec::new();
        let mut prev: Vec<(u32, f32)> = Vec::new();
        for i in 0..n {
            let row: Vec<(u32, f32)> = if dup_every > 1 && i % dup_every == 1 {
                prev.clone()
            } else {
                let mut cols: Vec<u32> = (0..per_row).map(|_| r.below(d as u64) as u32).collect();
                cols.sort_unstable();
                cols.dedup();
                cols.iter()
                    .map(|&j| (j, 0.1 + r.next_f64() as f32))
                    .collect()
            };
            for &(j, v) in &row {
                trip.push((i as u32, j, v));
            }
            prev = row;
        }
        Csr::from_triplets(n, d, &trip).unwrap()
    }

    #[test]
    fn duplicate_rows_are_grouped_by_first_copy() {
        // rows 0 and 2 and 4 equal, 1 and 3 equal, 5 differs from 0 only by a value bit
        let trip = [
            (0, 1, 0.5f32),
            (0, 3, 0.25),
            (1, 0, 1.0),
            (2, 1, 0.5),
            (2, 3, 0.25),
            (3, 0, 1.0),
            (4, 1, 0.5),
            (4, 3, 0.25),
            (5, 1, 0.5),
            (5, 3, f32::from_bits(0.25f32.to_bits() + 1)),
            (6, 2, 1.0),
        ];
        let z = Csr::from_triplets(7, 4, &trip).unwrap();
        let g = duplicate_groups(&ZView::Sparse(z.view()));
        assert_eq!(g, vec![0, 1, 0, 1, 0, NO_DUP, NO_DUP]);
        // a node holding labels 2, 3, 4, 5, 6 and 1: positions of the first copies
        let d = local_duplicates(&g, &[1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(d, vec![0, 1, 0, 1, NO_DUP, NO_DUP]);
        assert!(local_duplicates(&g, &[0, 1, 5]).is_none());
        let data = [1.0f32, 2.0, 1.0, 2.0, 1.0, 3.0];
        let dense = ZView::Dense {
            data: &data,
            n_rows: 3,
            dim: 2,
        };
        assert_eq!(duplicate_groups(&dense), vec![0, 0, NO_DUP]);
    }

    #[test]
    fn column_scoring_and_duplicates_give_the_row_scores() {
        let z = random_sparse(700, 3000, 30, 4, 7);
        let members: Vec<u32> = (0..700).step_by(2).chain((1..700).step_by(6)).collect();
        let mut members = members;
        members.sort_unstable();
        let g = duplicate_groups(&ZView::Sparse(z.view()));
        let dup = local_duplicates(&g, &members);
        assert!(dup.is_some());
        let rows = SparseRows {
            z: z.view(),
            members: Some(&members),
        };
        let n = rows.len();
        let norms: Vec<f32> = (0..n)
            .map(|k| {
                let (_, rv) = rows.sparse_row(k).unwrap();
                (rv.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() as f32).sqrt()
            })
            .collect();
        for (c, spherical) in [(13, true), (5, false), (2, true), (20, true)] {
            let mut cent = Centroids::new(c, 3000, true);
            let ops: Vec<Vec<(u32, bool)>> = (0..c)
                .map(|j| {
                    (0..n as u32)
                        .filter(|k| *k as usize % c == j)
                        .map(|k| (k, true))
                        .collect()
                })
                .collect();
            cent.recompute(&rows, &ops, false);
            // the column-scoring layout: c lanes, no padding (same sums)
            let mut tight = Centroids::new(c, 3000, false);
            tight.recompute(&rows, &ops, true);
            assert_eq!(tight.cp, c);
            assert_eq!(cent.ss, tight.ss);
            let counts: Vec<usize> = ops.iter().map(|o| o.len()).collect();
            assert!(ColMajor::build(&rows, dup.as_deref(), c, true).is_some());
            let cm = ColMajor::build_blocks(&rows, dup.as_deref(), 50, true).unwrap();
            assert_eq!(cm.blocks.len(), n.div_ceil(50));
            let run = |cent: &Centroids, dup: Option<&[u32]>, colmajor: Option<&ColMajor>| {
                let mut scores = vec![0f32; n * c];
                Scoring {
                    rows: &rows,
                    norms: &norms,
                    spherical,
                    c,
                    min_len: 16,
                    dup,
                    colmajor,
                }
                .run(cent, Some(&counts), &mut scores);
                scores
            };
            let by_rows = run(&cent, None, None);
            assert_eq!(by_rows, run(&cent, dup.as_deref(), None));
            assert_eq!(by_rows, run(&tight, dup.as_deref(), None));
            assert_eq!(by_rows, run(&cent, dup.as_deref(), Some(&cm)));
            assert_eq!(by_rows, run(&tight, dup.as_deref(), Some(&cm)));
            assert!(by_rows.iter().any(|&v| v != 0.0));
        }
    }

    #[test]
    fn incremental_sums_track_recomputed_sums() {
        let z = random_sparse(400, 500, 20, 0, 3);
        let rows = SparseRows {
            z: z.view(),
            members: None,
        };
        let c = 6;
        let mut r = SplitMix64::new(1);
        let mut assign: Vec<u16> = (0..400).map(|_| r.below(c as u64) as u16).collect();
        let mut inc = Centroids::new(c, 500, true);
        let plan = plan_update(None, &assign, None, c);
        assert!(plan.fresh);
        inc.recompute(&rows, &plan.ops, true);
        for _ in 0..5 {
            let next: Vec<u16> = assign
                .iter()
                .map(|&a| {
                    if r.below(10) == 0 {
                        r.below(c as u64) as u16
                    } else {
                        a
                    }
                })
                .collect();
            let plan = plan_update(Some(&assign), &next, None, c);
            assert!(!plan.fresh);
            inc.apply(&rows, &plan.ops, true);
            assign = next;
        }
        let mut fresh = Centroids::new(c, 500, true);
        fresh.recompute(&rows, &plan_update(None, &assign, None, c).ops, false);
        for (a, b) in inc.t.as_slice().iter().zip(fresh.t.as_slice()) {
            assert!((a - b).abs() <= 1e-4, "{a} vs {b}");
        }
        for (a, b) in inc.ss.iter().zip(&fresh.ss) {
            assert!((a - b).abs() <= 1e-6 * b.max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn identical_rows_trading_places_are_not_moves() {
        // members 0, 1, 2 identical (first copy 0), 3 unique
        let first = [0u32, 0, 0, NO_DUP];
        let held = [0u16, 1, 1, 0];
        let next = [1u16, 0, 1, 1];
        let plan = plan_update(Some(&held), &next, Some(&first), 2);
        // 0 -> 1 and 1 -> 0 cancel; 3 -> 1 is a move
        assert_eq!(plan.moved, 1);
        let plain = plan_update(Some(&held), &next, None, 2);
        assert_eq!(plain.moved, 3);
        assert!(!plan.fresh && plain.fresh);
        // every plan brings the sums to the same values
        let trip = [(0, 0, 1.0f32), (1, 0, 1.0), (2, 0, 1.0), (3, 1, 2.0)];
        let z = Csr::from_triplets(4, 2, &trip).unwrap();
        let rows = SparseRows {
            z: z.view(),
            members: None,
        };
        let mut a = Centroids::new(2, 2, true);
        a.recompute(&rows, &plan_update(None, &held, None, 2).ops, false);
        let mut b = Centroids::new(2, 2, false);
        b.recompute(&rows, &plan_update(None, &held, None, 2).ops, false);
        a.apply(&rows, &plan.ops, false);
        b.recompute(&rows, &plain.ops, false);
        assert_eq!(a.t.as_slice(), b.t.as_slice());
        assert_eq!(&a.t.as_slice()[..4], &[1.0, 2.0, 0.0, 2.0]);
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
    fn seed_sample_is_distinct_sorted_and_reproducible() {
        let mut r1 = SplitMix64::new(9);
        let mut r2 = SplitMix64::new(9);
        let a = sample_positions(5000, 2048, &mut r1);
        assert_eq!(a, sample_positions(5000, 2048, &mut r2));
        assert_eq!(a.len(), 2048);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && *a.last().unwrap() < 5000);
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

    /// The spherical k-means objective of a tree's leaves: the sum of each label's cosine
    /// to the sum of its leaf's rows.
    fn leaf_cosines(data: &[f32], dim: usize, t: &ClusterTree) -> f64 {
        let row = |l: u32| -> Vec<f64> {
            let r = &data[l as usize * dim..(l as usize + 1) * dim];
            r.iter().map(|&v| f64::from(v)).collect()
        };
        let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
        (0..t.n_leaves())
            .map(|leaf| {
                let labels = t.labels_of_leaf(leaf).unwrap();
                let mut s = vec![0f64; dim];
                for &l in labels {
                    s.iter_mut().zip(row(l)).for_each(|(a, v)| *a += v);
                }
                let ns = norm(&s);
                labels
                    .iter()
                    .map(|&l| {
                        let r = row(l);
                        r.iter().zip(&s).map(|(a, b)| a * b).sum::<f64>() / (norm(&r) * ns)
                    })
                    .sum::<f64>()
            })
            .sum()
    }

    #[test]
    fn n_init_keeps_the_best_run() {
        // eight planted groups in one 2-way split: some seedings end in poor local optima
        let (n, dim) = (240usize, 12usize);
        let (data, _) = planted(n, 8, dim, 3);
        let z = ZView::Dense {
            data: &data,
            n_rows: n,
            dim,
        };
        let fit = |n_init: Option<usize>, seed: u64, max_leaf_size: usize| {
            let p = KMeansParams {
                branching: 16,
                max_leaf_size,
                n_init,
                seed,
                ..Default::default()
            };
            hierarchical_kmeans(z, &p).unwrap()
        };
        let (mut one, mut three) = (Vec::new(), Vec::new());
        for seed in 0..16 {
            let t1 = fit(Some(1), seed, 200);
            let t3 = fit(Some(3), seed, 200);
            assert_eq!(t1.n_nodes_per_level(), vec![1, 2]);
            // "auto" is 3 runs at a node of at most 8 children
            assert_eq!(fit(None, seed, 200), t3);
            one.push(leaf_cosines(&data, dim, &t1));
            three.push(leaf_cosines(&data, dim, &t3));
        }
        // the first run is n_init = 1's run, so no seed ends worse; some end better
        assert!(
            one.iter().zip(&three).all(|(a, b)| *b >= a - 1e-6),
            "{one:?} {three:?}"
        );
        assert!(
            one.iter().zip(&three).any(|(a, b)| *b > a + 1.0),
            "{one:?} {three:?}"
        );
        // more than 8 children: "auto" is one run
        for seed in 0..4 {
            let t = fit(None, seed, 24);
            assert_eq!(t.n_nodes_per_level(), vec![1, 10]);
            assert_eq!(t, fit(Some(1), seed, 24));
        }
        // a tree of more than 10,000 labels: "auto" is one run
        let big = AUTO_N_INIT_MAX_LABELS + 1;
        let (data, _) = planted(big, 8, 4, 5);
        let z = ZView::Dense {
            data: &data,
            n_rows: big,
            dim: 4,
        };
        let fit = |n_init: Option<usize>| {
            let p = KMeansParams {
                fanouts: Some(vec![2]),
                n_init,
                seed: 1,
                ..Default::default()
            };
            hierarchical_kmeans(z, &p).unwrap()
        };
        assert_eq!(fit(None), fit(Some(1)));
        assert_ne!(fit(Some(3)), fit(Some(1)));
    }
}
