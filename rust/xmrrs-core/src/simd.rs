//! Dense f32 kernels with runtime dispatch.
//!
//! Each kernel has one generic body compiled twice: once for the baseline target and once with
//! `avx2,fma` enabled, picked at run time. Both copies perform the same operations in the same
//! order (no fused multiply-add contraction), so results are bit-identical whichever runs.

/// About the cache of a core (L2 and a share of L3): tables read at random (k-means centroid
/// sums, the solvers' weights) are prefetched beyond this size, and k-means streams its
/// centroids by scoring columns; below it, prefetches only cost instructions.
pub const CACHE_BYTES: usize = 2 << 20;

/// `y += a * x` over the common length.
#[inline]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            unsafe { axpy_avx2(a, x, y) };
            return;
        }
    }
    axpy_body(a, x, y);
}

/// Dot product with eight independent partial sums (a fixed, documented summation order).
#[inline]
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            return unsafe { dot_avx2(x, y) };
        }
    }
    dot_body(x, y)
}

/// `out[r] += dot(&rows[r * n..(r + 1) * n], x)` for every row of the row-major `rows`
/// (`n = x.len()`, `rows.len() == out.len() * n`). Four rows go together, so their four
/// accumulator chains overlap (one row's dot is bound by the latency of its additions); each
/// row's products and sums are [`dot`]'s, in its order, so every result is bit-identical to it.
#[inline]
pub fn dots_add(rows: &[f32], x: &[f32], out: &mut [f32]) {
    assert_eq!(
        rows.len(),
        out.len() * x.len(),
        "rows must hold out.len() rows of x.len()"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            unsafe { dots_add_avx2(rows, x, out) };
            return;
        }
    }
    for (o, w) in out.iter_mut().zip(rows.chunks_exact(x.len().max(1))) {
        *o += dot_body(w, x);
    }
}

/// `out[r] += dot(widen(rows[r]), x) * 2^unscale_log2[r]` for binary16 rows (`rows` row-major,
/// `rows.len() == out.len() * x.len()`): [`dots_add`] over weights kept in half precision
/// (half the bytes to store). Each row's terms go in [`dot`]'s order, each product and sum
/// fused (one rounding: the widening costs an instruction, the fused step gives one back),
/// so the AVX2 and portable paths agree bit for bit.
#[inline]
pub fn dots_add_half(rows: &[u16], x: &[f32], unscale_log2: &[i8], out: &mut [f32]) {
    assert_eq!(
        rows.len(),
        out.len() * x.len(),
        "rows must hold out.len() rows of x.len()"
    );
    assert_eq!(unscale_log2.len(), out.len(), "one scale per row");
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_f16c() {
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked above).
            unsafe { dots_add_half_avx2(rows, x, unscale_log2, out) };
            return;
        }
    }
    for ((o, w), &k) in out
        .iter_mut()
        .zip(rows.chunks_exact(x.len().max(1)))
        .zip(unscale_log2)
    {
        *o += dot_half_body(w, x) * crate::half::pow2(i32::from(k));
    }
}

/// Scalar reference versions, kept for tests.
pub mod reference {
    /// `y += a * x`, one element at a time.
    pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi += a * *xi;
        }
    }
    /// Dot product accumulated in f64 (the accuracy reference).
    pub fn dot(x: &[f32], y: &[f32]) -> f64 {
        x.iter()
            .zip(y)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum()
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Whether the CPU has what the half-precision kernels use: AVX2, FMA and F16C (the one
/// check for them: the solvers', the queries' and the narrowing's).
#[inline]
pub fn has_avx2_f16c() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx2() && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[inline(always)]
fn axpy_body(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * *xi;
    }
}

#[inline(always)]
fn dot_body(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let mut acc = [0.0f32; 8];
    let mut xc = x.chunks_exact(8);
    let mut yc = y.chunks_exact(8);
    for (a, b) in (&mut xc).zip(&mut yc) {
        for l in 0..8 {
            acc[l] += a[l] * b[l];
        }
    }
    for (l, (a, b)) in xc.remainder().iter().zip(yc.remainder()).enumerate() {
        acc[l] += a * b;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(a: f32, x: &[f32], y: &mut [f32]) {
    axpy_body(a, x, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(x: &[f32], y: &[f32]) -> f32 {
    dot_body(x, y)
}

/// [`dots_add`] with AVX2 intrinsics: rows four at a time, each with [`dot_body`]'s single
/// 8-wide accumulator (a multiply, then an add), its remainder and its final sum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_add_avx2(rows: &[f32], x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = x.len();
    if n == 0 {
        return;
    }
    let body = n - n % 8;
    let finish = |acc: __m256, w: &[f32]| -> f32 {
        let mut a = [0f32; 8];
        // SAFETY: a holds 8 floats.
        unsafe { _mm256_storeu_ps(a.as_mut_ptr(), acc) };
        for (l, (p, q)) in w[body..].iter().zip(&x[body..]).enumerate() {
            a[l] += p * q;
        }
        ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
    };
    let mut groups = rows.chunks_exact(4 * n);
    let mut outs = out.chunks_exact_mut(4);
    for (g, o) in (&mut groups).zip(&mut outs) {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut j = 0;
        while j < body {
            // SAFETY: j + 8 <= body <= n: within x and within each of the 4 rows of g.
            let r = unsafe { _mm256_loadu_ps(x.as_ptr().add(j)) };
            for (k, a) in acc.iter_mut().enumerate() {
                let w = unsafe { _mm256_loadu_ps(g.as_ptr().add(k * n + j)) };
                *a = _mm256_add_ps(*a, _mm256_mul_ps(w, r));
            }
            j += 8;
        }
        for (k, a) in acc.into_iter().enumerate() {
            o[k] += finish(a, &g[k * n..(k + 1) * n]);
        }
    }
    for (w, o) in groups
        .remainder()
        .chunks_exact(n)
        .zip(outs.into_remainder())
    {
        *o += dot_body(w, x);
    }
}

/// [`dot_body`] with the first operand binary16 bits, widened exactly, and each product
/// fused with its sum.
#[inline(always)]
fn dot_half_body(w: &[u16], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let (w, x) = (&w[..n], &x[..n]);
    // two 8-wide accumulators: even 8-blocks into the first, odd ones into the second (two
    // independent chains per row hide the fused step's latency), the tail into the first
    let mut acc = [[0.0f32; 8]; 2];
    let mut wc = w.chunks_exact(8);
    let mut xc = x.chunks_exact(8);
    for (b, (a, c)) in (&mut wc).zip(&mut xc).enumerate() {
        let s = &mut acc[b & 1];
        for l in 0..8 {
            s[l] = crate::half::to_f32(a[l]).mul_add(c[l], s[l]);
        }
    }
    for (l, (a, c)) in wc.remainder().iter().zip(xc.remainder()).enumerate() {
        acc[0][l] = crate::half::to_f32(*a).mul_add(*c, acc[0][l]);
    }
    sum_halves(acc)
}

/// `acc[0] + acc[1]` lane by lane, then the lanes in [`dot_body`]'s order.
#[inline(always)]
fn sum_halves(acc: [[f32; 8]; 2]) -> f32 {
    let a: [f32; 8] = std::array::from_fn(|l| acc[0][l] + acc[1][l]);
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// [`dots_add_half`] with AVX2, FMA and F16C intrinsics: rows four at a time, each with
/// [`dot_half_body`]'s two 8-wide accumulators, its tail and its final sum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots_add_half_avx2(rows: &[u16], x: &[f32], unscale_log2: &[i8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = x.len();
    if n == 0 {
        return;
    }
    let body = n - n % 8;
    let pairs = n - n % 16;
    let finish = |acc: [__m256; 2], w: &[u16]| -> f32 {
        let mut a = [[0f32; 8]; 2];
        for (s, v) in a.iter_mut().zip(acc) {
            // SAFETY: s holds 8 floats.
            unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) };
        }
        for (l, (p, q)) in w[body..].iter().zip(&x[body..]).enumerate() {
            a[0][l] = crate::half::to_f32(*p).mul_add(*q, a[0][l]);
        }
        sum_halves(a)
    };
    let u = |k: i8| crate::half::pow2(i32::from(k));
    let mut groups = rows.chunks_exact(4 * n);
    let mut outs = out.chunks_exact_mut(4);
    let mut scales = unscale_log2.chunks_exact(4);
    for ((g, o), sc) in (&mut groups).zip(&mut outs).zip(&mut scales) {
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        // SAFETY (every load below): j + 8 <= body <= n, within x and each of the 4 rows of g.
        let load = |k: usize, j: usize| unsafe {
            _mm256_cvtph_ps(_mm_loadu_si128(g.as_ptr().add(k * n + j).cast()))
        };
        let mut j = 0;
        while j < pairs {
            let (r0, r1) = unsafe {
                (
                    _mm256_loadu_ps(x.as_ptr().add(j)),
                    _mm256_loadu_ps(x.as_ptr().add(j + 8)),
                )
            };
            for (k, a) in acc.iter_mut().enumerate() {
                a[0] = _mm256_fmadd_ps(load(k, j), r0, a[0]);
                a[1] = _mm256_fmadd_ps(load(k, j + 8), r1, a[1]);
            }
            j += 16;
        }
        if j < body {
            let r0 = unsafe { _mm256_loadu_ps(x.as_ptr().add(j)) };
            for (k, a) in acc.iter_mut().enumerate() {
                a[0] = _mm256_fmadd_ps(load(k, j), r0, a[0]);
            }
        }
        for (k, a) in acc.into_iter().enumerate() {
            o[k] += finish(a, &g[k * n..(k + 1) * n]) * u(sc[k]);
        }
    }
    for ((w, o), &k) in groups
        .remainder()
        .chunks_exact(n)
        .zip(outs.into_remainder())
        .zip(scales.remainder())
    {
        *o += dot_half_body(w, x) * u(k);
    }
}

/// The instruction set the dispatched kernels use on this CPU.
pub fn level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            return "avx2+fma";
        }
    }
    "portable"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn dispatched_matches_portable_bit_for_bit() {
        for n in [0, 1, 7, 8, 9, 31, 100, 1027] {
            let x = data(n, 1);
            let y = data(n, 2);
            assert_eq!(dot(&x, &y).to_bits(), dot_body(&x, &y).to_bits());
            let mut y1 = y.clone();
            let mut y2 = y.clone();
            axpy(0.37, &x, &mut y1);
            reference::axpy(0.37, &x, &mut y2);
            assert_eq!(y1, y2);
        }
    }

    #[test]
    fn dots_add_matches_dot_bit_for_bit() {
        for n in [0, 1, 7, 8, 9, 31, 100, 384, 385] {
            for m in [0, 1, 3, 4, 5, 9] {
                let rows = data(n * m, 5);
                let x = data(n, 6);
                let mut out = data(m, 7);
                let want: Vec<f32> = out
                    .iter()
                    .enumerate()
                    .map(|(r, &o)| o + dot(&rows[r * n..(r + 1) * n], &x))
                    .collect();
                dots_add(&rows, &x, &mut out);
                assert_eq!(
                    out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{n} {m}"
                );
            }
        }
    }

    /// Half-precision rows: the dispatched kernel equals the portable one bit for bit (both
    /// fuse each multiply-add, in `dot`'s order), and both are close to an f64 reference.
    #[test]
    fn dots_add_half_matches_the_portable_path() {
        for n in [0, 1, 7, 8, 9, 31, 100, 384, 385] {
            for m in [0, 1, 3, 4, 5, 9] {
                let rows: Vec<u16> = data(n * m, 8)
                    .iter()
                    .map(|&v| crate::half::from_f32(v * 3000.0))
                    .collect();
                let x = data(n, 9);
                let out0 = data(m, 10);
                let ks: Vec<i8> = (0..m).map(|r| r as i8 - 3).collect();
                let mut portable = out0.clone();
                for ((o, w), &k) in portable
                    .iter_mut()
                    .zip(rows.chunks_exact(n.max(1)))
                    .zip(&ks)
                {
                    *o += dot_half_body(w, &x) * crate::half::pow2(i32::from(k));
                }
                let mut out = out0.clone();
                dots_add_half(&rows, &x, &ks, &mut out);
                let b = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(b(&out), b(&portable), "{n} {m}");
                for (r, (&o, &o0)) in out.iter().zip(&out0).enumerate() {
                    let exact: f64 = rows[r * n..(r + 1) * n]
                        .iter()
                        .zip(&x)
                        .map(|(&h, &v)| f64::from(crate::half::to_f32(h)) * f64::from(v))
                        .sum::<f64>()
                        * f64::from(crate::half::pow2(i32::from(ks[r])))
                        + f64::from(o0);
                    assert!(
                        (f64::from(o) - exact).abs() < 1e-3 * (1.0 + exact.abs()),
                        "{n} {m}"
                    );
                }
            }
        }
    }

    #[test]
    fn dot_is_accurate() {
        for n in [3, 64, 999] {
            let x = data(n, 3);
            let y = data(n, 4);
            let r = reference::dot(&x, &y);
            assert!((f64::from(dot(&x, &y)) - r).abs() < 1e-4 * (1.0 + r.abs()));
        }
    }
}
