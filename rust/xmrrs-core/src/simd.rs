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
    fn dot_is_accurate() {
        for n in [3, 64, 999] {
            let x = data(n, 3);
            let y = data(n, 4);
            let r = reference::dot(&x, &y);
            assert!((f64::from(dot(&x, &y)) - r).abs() < 1e-4 * (1.0 + r.abs()));
        }
    }
}
