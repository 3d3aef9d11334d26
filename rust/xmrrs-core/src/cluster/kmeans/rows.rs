//! The rows abstraction: a node's member rows, sparse or dense, and their scoring against
//! column-interleaved centroids.

use std::ops::Range;
use std::sync::atomic::AtomicU32;

use super::centroids::add_lane;
use crate::simd::{self, CACHE_BYTES};
use crate::sparse::CsrView;

/// The rows of a node's members, whatever the storage.
pub(super) trait Rows: Sync {
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
pub(super) fn lane_stride(c: usize) -> usize {
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

pub(super) struct SparseRows<'a> {
    pub(super) z: CsrView<'a>,
    pub(super) members: Option<&'a [u32]>,
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

pub(super) struct DenseRows<'a> {
    pub(super) data: &'a [f32],
    pub(super) dim: usize,
    pub(super) members: &'a [u32],
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

/// A subset of a node's members (positions `idx` of `rows`).
pub(super) struct SubRows<'a, R: Rows> {
    pub(super) rows: &'a R,
    pub(super) idx: &'a [usize],
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
