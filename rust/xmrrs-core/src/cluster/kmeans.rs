//! Hierarchical B-ary k-means over label representations.

use std::ops::Range;

use rayon::prelude::*;

use super::rng::SplitMix64;
use super::tree::ClusterTree;
use crate::sparse::{check_finite, Csr, CsrView};
use crate::{simd, Error, Result};

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
    /// (`0 <= tol < 1`; 0 runs until nothing moves or `max_iter`).
    pub tol: f32,
    /// Seed of every random choice.
    pub seed: u64,
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
/// leaves sit at level `D`.
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
/// spherical: cosine `x.mu / |x|` with `mu` the L2-normalised sum of the members (a zero sum
/// gives a zero centroid); Euclidean: `x.mu - |mu|^2 / 2` with `mu` the mean (the argmax of
/// which is the nearest centroid). At most `max_iter` Lloyd rounds, stopping early once a
/// round moves at most 1% of the members (rounded down) to another cluster, or, from the
/// fifth round on, improves the objective (the sum, in f64 and member order, of each
/// member's score in its cluster) by at most `1e-4` of its magnitude; the last round's
/// assignment is kept either way. Children are ordered by cluster index and the labels
/// within a child by id.
///
/// **Determinism.** Every node draws from its own stream derived from `(seed, level, node
/// index)`, and every sum runs in a fixed order (centroid entries over members in id order;
/// parallelism splits members or columns, never a sum), so the tree is identical for any
/// thread count. Nodes of a level run in parallel; inside a large node, the scoring is
/// parallel over members and the centroid sums over (centroid, column block) pairs.
///
/// **Memory.** A node uses dense centroids of `c x d'` floats, where `d'` is `d` for dense
/// input and, for sparse input, the number of distinct columns among the node's members
/// whenever that is small (the members are copied with re-numbered columns), so deep small
/// nodes stay cheap even for `d ~ 1e6`.
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
    let fanouts = fanout_schedule(n_labels, params.branching, params.max_leaf_size);
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
                split_node(&z, seg, c_t.min(seg.len()), cap, params, &mut rng)
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

/// Splits the labels of one node (`seg`, sorted by id) into `c` children; reorders `seg` so
/// children are contiguous (each sorted by id) and returns the child sizes.
fn split_node(
    z: &ZView<'_>,
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
    let assign = match z {
        ZView::Dense { data, dim, .. } => {
            let rows = DenseRows {
                data,
                dim: *dim,
                members: seg,
            };
            kmeans_node(&rows, c, &hi, params, rng)
        }
        ZView::Sparse(v) => {
            let nnz: usize = seg.iter().map(|&l| v.row_range(l as usize).len()).sum();
            if nnz < v.n_cols().saturating_mul(COMPACT_RATIO) {
                let local = compact_rows(v, seg, nnz);
                let rows = SparseRows {
                    z: local.view(),
                    members: None,
                };
                kmeans_node(&rows, c, &hi, params, rng)
            } else {
                let rows = SparseRows {
                    z: *v,
                    members: Some(seg),
                };
                kmeans_node(&rows, c, &hi, params, rng)
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
    /// `out[0..c] = x_k . W[:, 0..c]` for `W` stored column-interleaved (`wt[col * c + j]`).
    fn scores_t(&self, k: usize, wt: &[f32], out: &mut [f32]);
    /// `out += x_k[cols]`.
    fn add_to(&self, k: usize, cols: Range<usize>, out: &mut [f32]);
    /// `|x_k|^2` (accumulated in f64).
    fn norm2(&self, k: usize) -> f32;
}

/// `out[l] = sum over (j, v) of v * wt[j * c + l]`, entries summed in iteration order.
/// Specialised for `c <= 16` (accumulators in registers); every variant performs the same
/// operations in the same order, so results do not depend on which one runs.
#[inline(always)]
fn scores_dispatch<I: Iterator<Item = (usize, f32)>>(entries: I, wt: &[f32], out: &mut [f32]) {
    macro_rules! fixed {
        ($($n:literal),*) => {
            match out.len() {
                $($n => {
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
                    out.copy_from_slice(&acc);
                })*
                c => {
                    out.fill(0.0);
                    for (j, v) in entries {
                        for (o, &wj) in out.iter_mut().zip(&wt[j * c..j * c + c]) {
                            *o += v * wj;
                        }
                    }
                }
            }
        };
    }
    fixed!(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)
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
    fn scores_t(&self, k: usize, wt: &[f32], out: &mut [f32]) {
        let (ri, rv) = self.row(k);
        scores_dispatch(
            ri.iter().map(|&j| j as usize).zip(rv.iter().copied()),
            wt,
            out,
        );
    }
    fn add_to(&self, k: usize, cols: Range<usize>, out: &mut [f32]) {
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
            out[j as usize - cols.start] += v;
        }
    }
    fn norm2(&self, k: usize) -> f32 {
        let (_, rv) = self.row(k);
        rv.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() as f32
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
    fn scores_t(&self, k: usize, wt: &[f32], out: &mut [f32]) {
        scores_dispatch(self.row(k).iter().copied().enumerate(), wt, out);
    }
    fn add_to(&self, k: usize, cols: Range<usize>, out: &mut [f32]) {
        simd::axpy(1.0, &self.row(k)[cols], out);
    }
    fn norm2(&self, k: usize) -> f32 {
        self.row(k)
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>() as f32
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
/// k-means++ seeding runs on at most `max(SEED_SAMPLE_PER_CLUSTER * c, SEED_SAMPLE_MIN)`
/// members, drawn without replacement from the node's stream.
const SEED_SAMPLE_PER_CLUSTER: usize = 64;
const SEED_SAMPLE_MIN: usize = 2048;

/// Runs k-means on one node; returns the child (cluster index) of each member.
fn kmeans_node<R: Rows>(
    rows: &R,
    c: usize,
    hi: &[usize],
    params: &KMeansParams,
    rng: &mut SplitMix64,
) -> Vec<u16> {
    let n = rows.len();
    let d = rows.dim();
    let par = rows.work() >= PAR_WORK;
    let min_len = if par { MIN_ROWS_PER_TASK } else { usize::MAX };
    let norms: Vec<f32> = (0..n)
        .into_par_iter()
        .with_min_len(min_len)
        .map(|k| rows.norm2(k).sqrt())
        .collect();
    // centroids, one row of d per cluster, and their column-interleaved copy for scoring
    let mut cent = vec![0f32; c * d];
    let mut cent_t = vec![0f32; c * d];
    let mut cnorm2 = vec![0f32; c];
    let sample_cap = (SEED_SAMPLE_PER_CLUSTER * c).max(SEED_SAMPLE_MIN);
    let seeds = if n <= sample_cap {
        kmeanspp(rows, c, &norms, params.spherical, min_len, rng)
    } else {
        let idx = sample_positions(n, sample_cap, rng);
        let sub = SubRows { rows, idx: &idx };
        let sub_norms: Vec<f32> = idx.iter().map(|&k| norms[k]).collect();
        let sub_min = if sub.work() >= PAR_WORK {
            MIN_ROWS_PER_TASK
        } else {
            usize::MAX
        };
        kmeanspp(&sub, c, &sub_norms, params.spherical, sub_min, rng)
            .into_iter()
            .map(|k| idx[k])
            .collect()
    };
    for (j, &k) in seeds.iter().enumerate() {
        rows.add_to(k, 0..d, &mut cent[j * d..(j + 1) * d]);
    }
    finish_centroids(
        &mut cent,
        &mut cent_t,
        &mut cnorm2,
        c,
        d,
        params.spherical,
        None,
    );
    let mut scores = vec![0f32; n * c];
    compute_scores(
        rows,
        &cent_t,
        &cnorm2,
        &norms,
        params.spherical,
        &mut scores,
        c,
        min_len,
    );
    let mut assign = assign_capacity(&scores, n, c, hi, !params.balanced, min_len);
    let mut obj = objective(&scores, &assign, c);
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); c];
    // members whose cluster may change in a round without another round being run
    let max_moved = (f64::from(params.tol) * n as f64).floor() as usize;
    for it in 0..params.max_iter {
        for m in members.iter_mut() {
            m.clear();
        }
        for (k, &a) in assign.iter().enumerate() {
            members[a as usize].push(k as u32);
        }
        // centroid sums: tasks over (cluster, column block); each entry sums in member order
        let blocks = if par {
            (2 * rayon::current_num_threads()).div_ceil(c).max(1)
        } else {
            1
        };
        let bs = d.div_ceil(blocks).max(1);
        cent.fill(0.0);
        if d > 0 {
            let members = &members;
            cent.par_chunks_mut(d).enumerate().for_each(|(j, cj)| {
                cj.par_chunks_mut(bs).enumerate().for_each(|(b, blk)| {
                    let cols = b * bs..(b * bs + blk.len());
                    for &k in &members[j] {
                        rows.add_to(k as usize, cols.clone(), blk);
                    }
                });
            });
        }
        let counts: Vec<usize> = members.iter().map(|m| m.len()).collect();
        finish_centroids(
            &mut cent,
            &mut cent_t,
            &mut cnorm2,
            c,
            d,
            params.spherical,
            Some(&counts),
        );
        compute_scores(
            rows,
            &cent_t,
            &cnorm2,
            &norms,
            params.spherical,
            &mut scores,
            c,
            min_len,
        );
        let next = assign_capacity(&scores, n, c, hi, !params.balanced, min_len);
        let moved = next.iter().zip(&assign).filter(|(a, b)| a != b).count();
        let next_obj = objective(&scores, &next, c);
        let gain = next_obj - obj;
        assign = next;
        obj = next_obj;
        if moved <= max_moved
            || (it + 1 >= OBJ_MIN_ROUNDS && gain <= f64::from(OBJ_REL_TOL) * obj.abs())
        {
            break;
        }
    }
    assign
}

/// Sum, in member order (f64), of each member's score in its assigned cluster.
fn objective(scores: &[f32], assign: &[u16], c: usize) -> f64 {
    assign
        .iter()
        .enumerate()
        .map(|(k, &a)| f64::from(scores[k * c + a as usize]))
        .sum()
}

/// Normalises (spherical) or averages (Euclidean, with `counts`) the centroid sums, then
/// fills the interleaved copy and the squared norms.
fn finish_centroids(
    cent: &mut [f32],
    cent_t: &mut [f32],
    cnorm2: &mut [f32],
    c: usize,
    d: usize,
    spherical: bool,
    counts: Option<&[usize]>,
) {
    for j in 0..c {
        let cj = &mut cent[j * d..(j + 1) * d];
        if spherical {
            let ss: f64 = cj.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            if ss > 0.0 {
                let inv = (1.0 / ss.sqrt()) as f32;
                cj.iter_mut().for_each(|v| *v *= inv);
            }
        } else if let Some(counts) = counts {
            if counts[j] > 0 {
                let inv = 1.0 / counts[j] as f32;
                cj.iter_mut().for_each(|v| *v *= inv);
            }
        }
        // only the Euclidean scores use |mu|^2 (a serial f64 pass over c x d: skip it)
        cnorm2[j] = if spherical {
            0.0
        } else {
            cj.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() as f32
        };
    }
    if d == 0 {
        return;
    }
    cent_t
        .par_chunks_mut(c)
        .with_min_len(4096)
        .enumerate()
        .for_each(|(col, o)| {
            for (j, v) in o.iter_mut().enumerate() {
                *v = cent[j * d + col];
            }
        });
}

/// Fills `scores` (`n x c`): cosine for spherical, `x.mu - |mu|^2/2` for Euclidean.
fn compute_scores<R: Rows>(
    rows: &R,
    cent_t: &[f32],
    cnorm2: &[f32],
    norms: &[f32],
    spherical: bool,
    scores: &mut [f32],
    c: usize,
    min_len: usize,
) {
    let wide = wide_simd();
    scores
        .par_chunks_mut(c)
        .with_min_len(min_len)
        .enumerate()
        .for_each(|(k, out)| {
            score_row(rows, k, cent_t, out, wide);
            if spherical {
                if norms[k] > 0.0 {
                    let inv = 1.0 / norms[k];
                    out.iter_mut().for_each(|v| *v *= inv);
                }
            } else {
                for (v, &m2) in out.iter_mut().zip(cnorm2) {
                    *v -= 0.5 * m2;
                }
            }
        });
}

/// Whether [`score_row`] may use its AVX2 copy (checked once per call site).
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

/// `rows.scores_t`, through a copy compiled with AVX2 when `wide` (from [`wide_simd`]). Both
/// copies perform the same multiplications and additions in the same order (AVX2 only, no
/// FMA contraction), so the scores are bit-identical whichever runs.
#[inline]
fn score_row<R: Rows>(rows: &R, k: usize, wt: &[f32], out: &mut [f32], wide: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if wide {
            // SAFETY: `wide` comes from `wide_simd`, which checked that the CPU has AVX2.
            unsafe { score_row_avx2(rows, k, wt, out) };
            return;
        }
    }
    let _ = wide;
    rows.scores_t(k, wt, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn score_row_avx2<R: Rows>(rows: &R, k: usize, wt: &[f32], out: &mut [f32]) {
    rows.scores_t(k, wt, out);
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
    fn scores_t(&self, k: usize, wt: &[f32], out: &mut [f32]) {
        self.rows.scores_t(self.idx[k], wt, out);
    }
    fn add_to(&self, k: usize, cols: Range<usize>, out: &mut [f32]) {
        self.rows.add_to(self.idx[k], cols, out);
    }
    fn norm2(&self, k: usize) -> f32 {
        self.rows.norm2(self.idx[k])
    }
}

/// k-means++ seeding: `c` distinct member positions.
fn kmeanspp<R: Rows>(
    rows: &R,
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
    let mut center = vec![0f32; d];
    let mut score = vec![0f32; n];
    while seeds.len() < c {
        let last = *seeds.last().unwrap_or(&first);
        center.fill(0.0);
        rows.add_to(last, 0..d, &mut center);
        let cn = norms[last];
        // `center` as a 1-column interleaved matrix is `center` itself
        score
            .par_iter_mut()
            .with_min_len(min_len)
            .enumerate()
            .for_each(|(k, s)| {
                let mut o = [0f32];
                rows.scores_t(k, &center, &mut o);
                *s = o[0];
            });
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
