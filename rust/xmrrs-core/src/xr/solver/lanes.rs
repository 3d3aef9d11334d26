//! The lane machinery of the group solver: per-row metadata, the state of the running lanes,
//! and kernels over `K` lanes (dot products, axpy, prefetching, the kept weights of a row).

use super::group::MAX_LANES;
use crate::half::to_f32;
pub(super) use crate::simd::has_avx2_f16c;

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

/// `Σ_j w[j] * x[j]` over a lane's dense weights, `x` a row of binary16 bits (widened
/// exactly): four independent 8-wide partial sums (a fixed summation order, the same in
/// both dispatch variants).
#[inline(always)]
pub(super) fn dense_dot(w: &[f32], x: &[u16]) -> f32 {
    // the remainder below goes to a0 before a1..a3 are added, as in `dense_dot_avx2`
    let n = w.len().min(x.len());
    let (w, x) = (&w[..n], &x[..n]);
    let (mut a0, mut a1, mut a2, mut a3) = ([0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8]);
    let mut cw = w.chunks_exact(32);
    let mut cx = x.chunks_exact(32);
    for (p, q) in (&mut cw).zip(&mut cx) {
        for t in 0..8 {
            a0[t] += p[t] * to_f32(q[t]);
            a1[t] += p[8 + t] * to_f32(q[8 + t]);
            a2[t] += p[16 + t] * to_f32(q[16 + t]);
            a3[t] += p[24 + t] * to_f32(q[24 + t]);
        }
    }
    for (t, (p, q)) in cw.remainder().iter().zip(cx.remainder()).enumerate() {
        a0[t % 8] += p * to_f32(*q);
    }
    for t in 0..8 {
        a0[t] = (a0[t] + a1[t]) + (a2[t] + a3[t]);
    }
    ((a0[0] + a0[4]) + (a0[1] + a0[5])) + ((a0[2] + a0[6]) + (a0[3] + a0[7]))
}

/// [`dense_dot`] with AVX2 and F16C intrinsics: the same products and sums in the same
/// order, so the result is bit-identical (LLVM does not keep the portable form's four
/// accumulators in registers). It is the one-lane case of [`dense_dot_multi_avx2`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn dense_dot_avx2(w: &[f32], x: &[u16]) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY: the caller's CPU supports AVX2 and F16C; w holds at least n floats.
    let [d] = unsafe { dense_dot_multi_avx2::<1>([w.as_ptr()], &x[..n]) };
    d
}

/// The portable path has no AVX2 variant to call.
#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn dense_dot_avx2(w: &[f32], x: &[u16]) -> f32 {
    dense_dot(w, x)
}

/// [`dense_dot`] of `M` lanes' dense weights against one row, with AVX2 and F16C, widening
/// each block of the row once for all `M` lanes (a row visit reads the row `M` times fewer).
/// Every lane gets [`dense_dot`]'s products and sums in its order (four 8-wide partial sums,
/// the remainder into the first), so each result is bit-identical to it. `M` is at most 3:
/// three lanes' four accumulators and the two operands fill the 16 vector registers.
///
/// # Safety
/// The CPU must support AVX2 and F16C, and every `w[m]` must hold at least `x.len()` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn dense_dot_multi_avx2<const M: usize>(
    w: [*const f32; M],
    x: &[u16],
) -> [f32; M] {
    use std::arch::x86_64::*;
    let n = x.len();
    let mut acc = [[_mm256_setzero_ps(); 4]; M];
    let body = n - n % 32;
    let mut j = 0;
    while j < body {
        for q in 0..4 {
            // SAFETY: j + 8 * q + 8 <= body <= n, within x and (by the contract) every w[m].
            let r = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(j + 8 * q).cast())) };
            for m in 0..M {
                let p = unsafe { _mm256_loadu_ps(w[m].add(j + 8 * q)) };
                acc[m][q] = _mm256_add_ps(acc[m][q], _mm256_mul_ps(p, r));
            }
        }
        j += 32;
    }
    let mut out = [0f32; M];
    for m in 0..M {
        let mut lanes = [[0f32; 8]; 4];
        for (q, l) in lanes.iter_mut().enumerate() {
            // SAFETY: each holds 8 floats.
            unsafe { _mm256_storeu_ps(l.as_mut_ptr(), acc[m][q]) };
        }
        let mut a0 = lanes[0];
        for t in body..n {
            // SAFETY: t < n, within x and w[m].
            a0[(t - body) % 8] += unsafe { *w[m].add(t) } * to_f32(x[t]);
        }
        for t in 0..8 {
            a0[t] = (a0[t] + lanes[1][t]) + (lanes[2][t] + lanes[3][t]);
        }
        out[m] = ((a0[0] + a0[4]) + (a0[1] + a0[5])) + ((a0[2] + a0[6]) + (a0[3] + a0[7]));
    }
    out
}

/// `w[m][j] += a[m] * x[j]` for `M` lanes, `x` binary16 bits widened once for all of them;
/// per element a product then a sum, as the portable path, so the weights are bit-identical.
///
/// # Safety
/// The CPU must support AVX2 and F16C; every `w[m]` must hold at least `x.len()` floats, and
/// no two may overlap.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn dense_axpy_multi_avx2<const M: usize>(
    a: [f32; M],
    x: &[u16],
    w: [*mut f32; M],
) {
    use std::arch::x86_64::*;
    let n = x.len();
    let body = n - n % 8;
    let av: [__m256; M] = std::array::from_fn(|m| _mm256_set1_ps(a[m]));
    let mut j = 0;
    while j < body {
        // SAFETY: j + 8 <= body <= n, within x and every w[m] (the contract).
        let r = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(j).cast())) };
        for m in 0..M {
            unsafe {
                let p = w[m].add(j);
                _mm256_storeu_ps(
                    p,
                    _mm256_add_ps(_mm256_loadu_ps(p), _mm256_mul_ps(av[m], r)),
                );
            }
        }
        j += 8;
    }
    for t in body..n {
        let v = to_f32(x[t]);
        for m in 0..M {
            // SAFETY: t < n, within w[m].
            unsafe { *w[m].add(t) += a[m] * v };
        }
    }
}

/// `dots[l] += (w_l · x) * unscale` for every lane `l` set in `bits`, where `w_l` is the
/// dense weight block `wd[orig[l] * nd..][..nd]`, `nd = x.len()`, and `x` holds binary16
/// bits of the row scaled by `1 / unscale`. With AVX2 the lanes go three at a time through
/// [`dense_dot_multi_avx2`] (bit-identical to one at a time).
#[inline(always)]
pub(super) fn dense_dots<const K: usize, const AVX2: bool>(
    dots: &mut [f32; K],
    bits: u32,
    orig: &[u8; MAX_LANES],
    wd: &[f32],
    x: &[u16],
    unscale: f32,
) {
    let nd = x.len();
    let mut ls = [0usize; K];
    let mut cnt = 0;
    let mut b = bits;
    while b != 0 {
        ls[cnt] = b.trailing_zeros() as usize;
        b &= b - 1;
        cnt += 1;
    }
    let w = |l: usize| &wd[orig[l] as usize * nd..orig[l] as usize * nd + nd];
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        let p = |l: usize| w(l).as_ptr();
        let mut t = 0;
        while t + 3 <= cnt {
            let (a, b, c) = (ls[t], ls[t + 1], ls[t + 2]);
            // SAFETY: AVX2 is only true where the caller checked AVX2, FMA and F16C; each
            // block holds nd = x.len() floats.
            let r = unsafe { dense_dot_multi_avx2::<3>([p(a), p(b), p(c)], x) };
            dots[a] += r[0] * unscale;
            dots[b] += r[1] * unscale;
            dots[c] += r[2] * unscale;
            t += 3;
        }
        if cnt - t == 2 {
            let (a, b) = (ls[t], ls[t + 1]);
            // SAFETY: as above.
            let r = unsafe { dense_dot_multi_avx2::<2>([p(a), p(b)], x) };
            dots[a] += r[0] * unscale;
            dots[b] += r[1] * unscale;
        } else if cnt - t == 1 {
            let a = ls[t];
            // SAFETY: as above.
            dots[a] += unsafe { dense_dot_avx2(w(a), x) } * unscale;
        }
        return;
    }
    for &l in &ls[..cnt] {
        dots[l] += dense_dot(w(l), x) * unscale;
    }
}

/// `w_l += (delta[l] * unscale) * x` for every lane with `delta[l] != 0`, `w_l`, `x` and
/// `unscale` as in [`dense_dots`]; with AVX2 three lanes at a time through
/// [`dense_axpy_multi_avx2`] (bit-identical).
#[inline(always)]
pub(super) fn dense_axpys<const K: usize, const AVX2: bool>(
    delta: &[f32; K],
    orig: &[u8; MAX_LANES],
    wd: &mut [f32],
    x: &[u16],
    unscale: f32,
) {
    let nd = x.len();
    let mut ls = [0usize; K];
    let mut cnt = 0;
    for (l, &dl) in delta.iter().enumerate() {
        if dl != 0.0 {
            ls[cnt] = l;
            cnt += 1;
        }
    }
    let a = |l: usize| delta[l] * unscale;
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        let base = wd.as_mut_ptr();
        assert!(ls[..cnt]
            .iter()
            .all(|&l| (orig[l] as usize + 1) * nd <= wd.len()));
        // SAFETY: within wd (asserted); lanes have distinct `orig`, so the blocks are disjoint.
        let p = |l: usize| unsafe { base.add(orig[l] as usize * nd) };
        let mut t = 0;
        while t + 3 <= cnt {
            let (l0, l1, l2) = (ls[t], ls[t + 1], ls[t + 2]);
            // SAFETY: AVX2 and F16C checked by the caller; disjoint blocks of nd floats.
            unsafe { dense_axpy_multi_avx2::<3>([a(l0), a(l1), a(l2)], x, [p(l0), p(l1), p(l2)]) };
            t += 3;
        }
        if cnt - t == 2 {
            let (l0, l1) = (ls[t], ls[t + 1]);
            // SAFETY: as above.
            unsafe { dense_axpy_multi_avx2::<2>([a(l0), a(l1)], x, [p(l0), p(l1)]) };
        } else if cnt - t == 1 {
            let l0 = ls[t];
            // SAFETY: as above.
            unsafe { dense_axpy_multi_avx2::<1>([a(l0)], x, [p(l0)]) };
        }
        return;
    }
    for &l in &ls[..cnt] {
        let o = orig[l] as usize * nd;
        let al = a(l);
        for (wj, &xj) in wd[o..o + nd].iter_mut().zip(x) {
            *wj += al * to_f32(xj);
        }
    }
}

/// `(w · x) * unscale` for one lane, `x` binary16 bits as in [`dense_dots`] (the scalar
/// solver's dense part): [`dense_dot`], with AVX2 where the CPU has it (the same bits).
#[inline]
pub(super) fn half_dot(w: &[f32], x: &[u16], unscale: f32) -> f32 {
    if has_avx2_f16c() {
        // SAFETY: checked just above.
        return unsafe { dense_dot_avx2(w, x) } * unscale;
    }
    dense_dot(w, x) * unscale
}

/// `w += (a * unscale) * x` for one lane, `x` as in [`half_dot`] (`w` at least as long).
#[inline]
pub(super) fn half_axpy(a: f32, x: &[u16], unscale: f32, w: &mut [f32]) {
    assert!(w.len() >= x.len(), "the weights must cover the row");
    let a = a * unscale;
    #[cfg(target_arch = "x86_64")]
    if has_avx2_f16c() {
        // SAFETY: checked just above; w holds at least x.len() floats (asserted).
        unsafe { dense_axpy_multi_avx2::<1>([a], x, [w.as_mut_ptr()]) };
        return;
    }
    for (wj, &xj) in w.iter_mut().zip(x) {
        *wj += a * to_f32(xj);
    }
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

    /// The fused kernels (two or three lanes per row load) give every lane exactly what the
    /// one-lane kernels give: the dots bit for bit, and the updated weights equal.
    #[test]
    fn fused_dense_kernels_match_one_lane_at_a_time() {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_f16c() {
            let mut s = 11u32;
            let mut next = || {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            };
            for nd in [1usize, 7, 8, 31, 32, 33, 100, 384, 385] {
                let wd: Vec<f32> = (0..MAX_LANES * nd).map(|_| next()).collect();
                let x: Vec<u16> = (0..nd).map(|_| crate::half::from_f32(next())).collect();
                let orig: [u8; MAX_LANES] = std::array::from_fn(|l| (MAX_LANES - 1 - l) as u8);
                for bits in [0u32, 1, 0b110, 0b1011, 0b1111_0111, 0xffff] {
                    let mut fused = [0.5f32; MAX_LANES];
                    dense_dots::<MAX_LANES, true>(&mut fused, bits, &orig, &wd, &x, 0.5);
                    let mut plain = [0.5f32; MAX_LANES];
                    dense_dots::<MAX_LANES, false>(&mut plain, bits, &orig, &wd, &x, 0.5);
                    assert_eq!(
                        fused.map(f32::to_bits),
                        plain.map(f32::to_bits),
                        "{nd} {bits:b}"
                    );
                    let delta: [f32; MAX_LANES] = std::array::from_fn(|l| {
                        if bits >> l & 1 == 1 {
                            0.25 + l as f32
                        } else {
                            0.0
                        }
                    });
                    let (mut a, mut b) = (wd.clone(), wd.clone());
                    dense_axpys::<MAX_LANES, true>(&delta, &orig, &mut a, &x, 0.5);
                    dense_axpys::<MAX_LANES, false>(&delta, &orig, &mut b, &x, 0.5);
                    assert_eq!(a, b, "{nd} {bits:b}");
                    assert_eq!(a == wd, bits == 0);
                }
            }
        }
    }

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
            let x: Vec<u16> = (0..n).map(|_| crate::half::from_f32(next())).collect();
            let p = dense_dot(&w, &x);
            let r: f64 = w
                .iter()
                .zip(&x)
                .map(|(a, b)| f64::from(*a) * f64::from(to_f32(*b)))
                .sum();
            assert!((f64::from(p) - r).abs() < 1e-4 * (1.0 + r.abs()), "{n}");
            #[cfg(target_arch = "x86_64")]
            if has_avx2_f16c() {
                // SAFETY: checked just above.
                let a = unsafe { dense_dot_avx2(&w, &x) };
                assert_eq!(a.to_bits(), p.to_bits(), "{n}");
            }
        }
    }
}
