//! Centroid updates: the column-interleaved centroid sums of a node, kept incrementally
//! (moved members only) or recomputed.

use std::sync::atomic::{AtomicU32, Ordering};

use rayon::prelude::*;

use super::duplicates::{IdHasher, NO_DUP};
use super::rows::{lane_stride, Rows};

/// A zeroed `f32` buffer whose start is 64-byte aligned (one cache line).
pub(super) struct AlignedBuf {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    pub(super) fn zeros(len: usize) -> Self {
        let buf = vec![0f32; len + 16];
        let off = buf.as_ptr().align_offset(64);
        // `align_offset` may decline (usize::MAX): then any start will do
        let off = if off <= 16 { off } else { 0 };
        AlignedBuf { buf, off, len }
    }
    pub(super) fn as_slice(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }
    pub(super) fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

/// Centroid sums are updated incrementally (moved members only) when at most
/// `1 / INCREMENTAL_FRAC` of the members moved, and recomputed otherwise.
const INCREMENTAL_FRAC: usize = 4;

/// How to bring the centroid sums to a new assignment.
pub(super) struct SumPlan {
    /// Per cluster, the members to add (true) or subtract (false), in member order.
    pub(super) ops: Vec<Vec<(u32, bool)>>,
    /// Whether the sums are recomputed from zero (else `ops` are applied to them).
    pub(super) fresh: bool,
    /// Members that changed cluster, less exchanges between identical rows.
    pub(super) moved: usize,
}

/// The [`SumPlan`] from assignment `held` (none: the sums hold something else) to `assign`. A
/// member moving from `a` to `b` is subtracted from `a` and added to `b`, except that moves of
/// identical rows (`first`, from [`local_duplicates`](super::duplicates::local_duplicates)) cancel:
/// for each cluster and set of identical members, only the net number of additions or subtractions
/// is kept (the first ones in member order). When more than `1 / INCREMENTAL_FRAC` of the members
/// still move, the sums are recomputed instead.
pub(super) fn plan_update(
    held: Option<&[u16]>,
    assign: &[u16],
    first: Option<&[u32]>,
    c: usize,
) -> SumPlan {
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
pub(super) struct Centroids {
    c: usize,
    pub(super) cp: usize,
    d: usize,
    pub(super) t: AlignedBuf,
    pub(super) ss: Vec<f64>,
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
pub(super) fn add_lane(o: &AtomicU32, x: f32) -> f64 {
    let old = f32::from_bits(o.load(Ordering::Relaxed));
    let new = old + x;
    o.store(new.to_bits(), Ordering::Relaxed);
    f64::from(new) * f64::from(new) - f64::from(old) * f64::from(old)
}

/// Columns per task when transposing the row-wise sums.
const TRANSPOSE_COLS: usize = 1024;

impl Centroids {
    /// `padded`: [`lane_stride`] lanes per column (for scoring row by row), else `c`.
    pub(super) fn new(c: usize, d: usize, padded: bool) -> Self {
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
    pub(super) fn recompute<R: Rows>(&mut self, rows: &R, ops: &[Vec<(u32, bool)>], par: bool) {
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
    pub(super) fn apply<R: Rows>(&mut self, rows: &R, ops: &[Vec<(u32, bool)>], par: bool) {
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
    pub(super) fn factors(
        &self,
        spherical: bool,
        counts: Option<&[usize]>,
    ) -> (Vec<f32>, Vec<f32>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::kmeans::rows::SparseRows;
    use crate::cluster::kmeans::testutil::random_sparse;
    use crate::cluster::rng::SplitMix64;
    use crate::sparse::Csr;

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
}
