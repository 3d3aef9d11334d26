//! The lane machinery of the group solver: per-row metadata, the state of the running lanes,
//! and kernels over `K` lanes (dot products, axpy, prefetching, the kept weights of a row).

use super::group::MAX_LANES;

/// The per-instance state of a [`GroupSolver`](super::GroupSolver): lane bit masks and the squared
/// norm.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Meta {
    /// Lanes where the instance is a positive.
    pub(super) pos: u32,
    /// Lanes whose problem includes the instance.
    pub(super) member: u32,
    /// Lanes where it is not shrunk.
    pub(super) active: u32,
    /// `|x_i|² + bias²`.
    pub(super) sq: f32,
    /// Number of stored entries of the row.
    pub(super) len: u32,
    /// Offset of the row in the local CSR.
    pub(super) start: usize,
}

/// Per-position state of the running lanes of a [`GroupSolver`](super::GroupSolver) between passes.
#[derive(Clone, Copy, Debug)]
pub(super) struct LaneState {
    pub(super) wb: [f32; MAX_LANES],
    pub(super) pgmax_old: [f32; MAX_LANES],
    pub(super) pgmin_old: [f32; MAX_LANES],
    pub(super) n_shrunk: [u32; MAX_LANES],
    /// The lane (problem) at each position.
    pub(super) orig: [u8; MAX_LANES],
    /// Positions in use.
    pub(super) used: usize,
    /// Positions still running.
    pub(super) live: u32,
    /// Length of the pass's visiting list.
    pub(super) active_len: usize,
}

/// Offset (in `f32`s) of the first 64-byte aligned element of `v`.
pub(super) fn aligned_offset(v: &[f32]) -> usize {
    ((64 - v.as_ptr() as usize % 64) % 64) / 4
}

/// How many visits ahead the group solver prefetches.
pub(super) const PREFETCH_DIST: usize = 4;

/// Hints the CPU to bring the cache line of `p` into L1 (no effect on results).
#[inline(always)]
pub(super) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is only a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// [`prefetch`] of every cache line of a slice.
#[inline(always)]
pub(super) fn prefetch_range<T>(s: &[T]) {
    let start = s.as_ptr() as usize;
    let end = start + std::mem::size_of_val(s);
    let mut a = start & !63;
    while a < end {
        prefetch(a as *const u8);
        a += 64;
    }
}

/// `acc[l] = Σ_k val[k] * w[idx[k] * K + l]` (two partial sums per lane).
#[inline(always)]
pub(super) fn dot_lanes<const K: usize>(w: &[f32], idx: &[u32], val: &[f32]) -> [f32; K] {
    debug_assert!(idx.iter().all(|&j| (j as usize + 1) * K <= w.len()));
    let mut a0 = [0f32; K];
    let mut a1 = [0f32; K];
    let mut ci = idx.chunks_exact(2);
    let mut cv = val.chunks_exact(2);
    for (jj, vv) in (&mut ci).zip(&mut cv) {
        // SAFETY: local feature ids are below n_features and w holds n_features * K values
        // (LocalCsr invariant; `GroupSolver::solve` sizes w from the same LocalCsr).
        let (r0, r1) = unsafe {
            (
                &*(w.as_ptr().add(jj[0] as usize * K) as *const [f32; K]),
                &*(w.as_ptr().add(jj[1] as usize * K) as *const [f32; K]),
            )
        };
        for l in 0..K {
            a0[l] += vv[0] * r0[l];
            a1[l] += vv[1] * r1[l];
        }
    }
    for (&j, &v) in ci.remainder().iter().zip(cv.remainder()) {
        // SAFETY: as above.
        let r = unsafe { &*(w.as_ptr().add(j as usize * K) as *const [f32; K]) };
        for l in 0..K {
            a0[l] += v * r[l];
        }
    }
    for l in 0..K {
        a0[l] += a1[l];
    }
    a0
}

/// `w[idx[k] * K + l] += delta[l] * val[k]`.
#[inline(always)]
pub(super) fn axpy_lanes<const K: usize>(
    delta: &[f32; K],
    idx: &[u32],
    val: &[f32],
    w: &mut [f32],
) {
    debug_assert!(idx.iter().all(|&j| (j as usize + 1) * K <= w.len()));
    for (&j, &v) in idx.iter().zip(val) {
        // SAFETY: as in `dot_lanes`.
        let r = unsafe { &mut *(w.as_mut_ptr().add(j as usize * K) as *mut [f32; K]) };
        for l in 0..K {
            r[l] += delta[l] * v;
        }
    }
}

/// `Σ_j w[j] * x[j]` over a lane's dense weights: four independent 8-wide partial sums
/// (a fixed summation order, the same in both dispatch variants).
#[inline(always)]
pub(super) fn dense_dot(w: &[f32], x: &[f32]) -> f32 {
    // the remainder below goes to a0 before a1..a3 are added, as in `dense_dot_avx2`
    let n = w.len().min(x.len());
    let (w, x) = (&w[..n], &x[..n]);
    let (mut a0, mut a1, mut a2, mut a3) = ([0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8]);
    let mut cw = w.chunks_exact(32);
    let mut cx = x.chunks_exact(32);
    for (p, q) in (&mut cw).zip(&mut cx) {
        for t in 0..8 {
            a0[t] += p[t] * q[t];
            a1[t] += p[8 + t] * q[8 + t];
            a2[t] += p[16 + t] * q[16 + t];
            a3[t] += p[24 + t] * q[24 + t];
        }
    }
    for (t, (p, q)) in cw.remainder().iter().zip(cx.remainder()).enumerate() {
        a0[t % 8] += p * q;
    }
    for t in 0..8 {
        a0[t] = (a0[t] + a1[t]) + (a2[t] + a3[t]);
    }
    ((a0[0] + a0[4]) + (a0[1] + a0[5])) + ((a0[2] + a0[6]) + (a0[3] + a0[7]))
}

/// [`dense_dot`] with AVX2 intrinsics: the same products and sums in the same order, so the
/// result is bit-identical (LLVM does not keep the portable form's four accumulators in
/// registers).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn dense_dot_avx2(w: &[f32], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = w.len().min(x.len());
    let (w, x) = (&w[..n], &x[..n]);
    let mut acc = [_mm256_setzero_ps(); 4];
    let body = n - n % 32;
    let mut j = 0;
    while j < body {
        for (q, a) in acc.iter_mut().enumerate() {
            // SAFETY: j + 8 * q + 8 <= body <= n, the length of both slices.
            let (p, r) = unsafe {
                (
                    _mm256_loadu_ps(w.as_ptr().add(j + 8 * q)),
                    _mm256_loadu_ps(x.as_ptr().add(j + 8 * q)),
                )
            };
            *a = _mm256_add_ps(*a, _mm256_mul_ps(p, r));
        }
        j += 32;
    }
    let mut a0 = [0f32; 8];
    // SAFETY: a0 holds 8 floats.
    unsafe { _mm256_storeu_ps(a0.as_mut_ptr(), acc[0]) };
    let mut lanes = [[0f32; 8]; 3];
    for (q, l) in lanes.iter_mut().enumerate() {
        // SAFETY: each holds 8 floats.
        unsafe { _mm256_storeu_ps(l.as_mut_ptr(), acc[q + 1]) };
    }
    for (t, (p, q)) in w[body..].iter().zip(&x[body..]).enumerate() {
        a0[t % 8] += p * q;
    }
    for t in 0..8 {
        a0[t] = (a0[t] + lanes[0][t]) + (lanes[1][t] + lanes[2][t]);
    }
    ((a0[0] + a0[4]) + (a0[1] + a0[5])) + ((a0[2] + a0[6]) + (a0[3] + a0[7]))
}

/// The portable path has no AVX2 variant to call.
#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn dense_dot_avx2(w: &[f32], x: &[f32]) -> f32 {
    dense_dot(w, x)
}

/// For each feature row of a feature-major weight block (`K` lanes per row), appends
/// `(feature, w)` to `pairs[lane]` for every lane whose weight is nonzero with
/// `|w| >= threshold` (a SIMD mask per row; rows with nothing kept cost one compare).
pub(super) fn collect_kept<const K: usize>(
    w: &[f32],
    features: &[u32],
    threshold: f32,
    pairs: &mut [Vec<(u32, f32)>],
) {
    for (row, &f) in w.chunks_exact(K).zip(features) {
        let row: &[f32; K] = row.try_into().expect("K lanes per row");
        let mut keep = 0u32;
        for l in 0..K {
            keep |= u32::from(row[l] != 0.0 && row[l].abs() >= threshold) << l;
        }
        while keep != 0 {
            let l = keep.trailing_zeros() as usize;
            keep &= keep - 1;
            if let Some(p) = pairs.get_mut(l) {
                p.push((f, row[l]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 dense dot product equals the portable one bit for bit at every length
    /// (whole 32-blocks, remainders), and both match an f64 reference closely.
    #[test]
    fn dense_dot_variants_agree() {
        let mut s = 7u32;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2001) as f32 / 1000.0 - 1.0
        };
        for n in [0usize, 1, 7, 31, 32, 33, 64, 100, 384, 385] {
            let w: Vec<f32> = (0..n).map(|_| next()).collect();
            let x: Vec<f32> = (0..n).map(|_| next()).collect();
            let p = dense_dot(&w, &x);
            let r: f64 = w
                .iter()
                .zip(&x)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            assert!((f64::from(p) - r).abs() < 1e-4 * (1.0 + r.abs()), "{n}");
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: checked just above.
                let a = unsafe { dense_dot_avx2(&w, &x) };
                assert_eq!(a.to_bits(), p.to_bits(), "{n}");
            }
        }
    }
}
