//! IEEE half precision (binary16) storage of dense rows: the solvers' working copies of the
//! dense feature block, and a model's dense weights.
//!
//! A dense row is read once per lane visit of the coordinate-descent solvers, so its bytes,
//! not its arithmetic, bound a visit; half precision halves them (and halves a model's dense
//! weights). Each row is scaled by a power of two before narrowing ([`HalfRows`]), so its
//! largest magnitude sits just under the format's top binade whatever the caller's scale,
//! and widening is exact.
//! Narrowing rounds to nearest, ties to even, in both the F16C and the portable path, so a
//! machine's answer does not depend on which one runs.

/// Widens binary16 bits to `f32` (exact).
#[inline]
pub fn to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let e = u32::from((h >> 10) & 0x1f);
    let m = u32::from(h & 0x3ff);
    if e == 0 {
        // zero or subnormal: m * 2^-24, exact in f32
        let v = m as f32 * f32::from_bits(0x3380_0000);
        return f32::from_bits(v.to_bits() | sign);
    }
    if e == 31 {
        return f32::from_bits(sign | 0x7f80_0000 | (m << 13));
    }
    f32::from_bits(sign | ((e + 112) << 23) | (m << 13))
}

/// Narrows an `f32` to binary16 bits, rounding to nearest with ties to even (overflow gives
/// infinity, as F16C's `vcvtps2ph` does).
#[inline]
pub fn from_f32(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign
            | 0x7c00
            | if man != 0 {
                0x200 | (man >> 13) as u16
            } else {
                0
            };
    }
    let e = exp - 112;
    if e >= 31 {
        return sign | 0x7c00;
    }
    // the 24-bit significand (the implicit bit set for normal inputs), its value in units
    // of the result's last place: drop `shift` bits, rounding to nearest even
    let (m24, shift) = if e >= 1 {
        (man | 0x80_0000, 13u32)
    } else {
        let m24 = if exp == 0 { man } else { man | 0x80_0000 };
        let shift = (14 - e) as u32;
        if shift > 24 {
            return sign;
        }
        (m24, shift)
    };
    let q = m24 >> shift;
    let r = m24 & ((1 << shift) - 1);
    let half = 1 << (shift - 1);
    let q = q + u32::from(r > half || (r == half && q & 1 == 1));
    if e >= 1 {
        // normal: the exponent field carries any rounding overflow of the significand
        sign | ((((e as u32) << 10) + (q - 0x400)) as u16)
    } else {
        sign | q as u16
    }
}

/// `2^k`, `k` clamped to the normal exponents `-126..=127` (total: a corrupt exponent
/// gives a wrong scale, never a panic; loaders check the range first).
#[inline]
pub fn pow2(k: i32) -> f32 {
    f32::from_bits(((127 + k.clamp(-126, 127)) as u32) << 23)
}

/// The range of a row's [`HalfRows::unscale_log2`].
pub const UNSCALE_LOG2: std::ops::RangeInclusive<i8> = -126..=126;

/// Whether binary16 bits hold a finite value.
#[inline]
pub fn is_finite(h: u16) -> bool {
    h & 0x7c00 != 0x7c00
}

/// Rows of `f32` values stored as binary16, each row scaled by its own power of two so that
/// its largest magnitude maps into `[2^14, 2^15)`: nothing overflows, and every row keeps
/// half precision's relative accuracy whatever its magnitude. Row `r`'s values are
/// `to_f32(bits) * 2^unscale_log2[r]`.
#[derive(Clone, Debug, Default)]
pub struct HalfRows {
    /// The rows' binary16 bits, row-major.
    pub bits: Vec<u16>,
    /// Per row, `log2` of the factor that turns the widened bits into the values.
    pub unscale_log2: Vec<i8>,
}

impl HalfRows {
    /// No rows yet, room for `rows` rows of `width`.
    pub fn with_capacity(rows: usize, width: usize) -> Self {
        HalfRows {
            bits: Vec::with_capacity(rows.saturating_mul(width)),
            unscale_log2: Vec::with_capacity(rows),
        }
    }

    /// Appends one row (finite values), scaled by its largest magnitude and narrowed.
    pub fn push(&mut self, row: &[f32]) {
        let top = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let e = if top > 0.0 {
            // the exponent of `top` (a subnormal counts as 2^-127)
            let ex = ((top.to_bits() >> 23) & 0xff) as i32 - 127;
            (14 - ex).clamp(-126, 126)
        } else {
            0
        };
        let at = self.bits.len();
        self.bits.resize(at + row.len(), 0);
        narrow_scaled(row, pow2(e), &mut self.bits[at..]);
        self.unscale_log2.push(-e as i8);
    }

    /// Packs the rows of `values` (row-major, `width` columns, finite).
    pub fn pack(values: &[f32], width: usize) -> Self {
        let mut h = Self::with_capacity(values.len() / width.max(1), width);
        if width > 0 {
            for row in values.chunks_exact(width) {
                h.push(row);
            }
        }
        h
    }

    /// Row `r`'s unscale factor.
    #[inline]
    pub fn unscale(&self, r: usize) -> f32 {
        pow2(i32::from(self.unscale_log2[r]))
    }
}

/// `out[i] = from_f32(values[i] * scale)`, eight at a time with F16C where the CPU has it
/// (the same bits: both round to nearest even).
fn narrow_scaled(values: &[f32], scale: f32, out: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_f16c() {
        // SAFETY: the CPU supports AVX2 and F16C (checked just above).
        unsafe { narrow_scaled_f16c(values, scale, out) };
        return;
    }
    for (o, &v) in out.iter_mut().zip(values) {
        *o = from_f32(v * scale);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn narrow_scaled_f16c(values: &[f32], scale: f32, out: &mut [u16]) {
    use std::arch::x86_64::*;
    let n = values.len().min(out.len());
    let body = n - n % 8;
    let s = _mm256_set1_ps(scale);
    let mut j = 0;
    while j < body {
        // SAFETY: j + 8 <= body <= n, within both slices.
        unsafe {
            let v = _mm256_mul_ps(_mm256_loadu_ps(values.as_ptr().add(j)), s);
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm_storeu_si128(out.as_mut_ptr().add(j).cast(), h);
        }
        j += 8;
    }
    for t in body..n {
        out[t] = from_f32(values[t] * scale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every binary16 value widens exactly and narrows back to itself; narrowing `f32`
    /// values (random bit patterns across the range, halfway cases, overflow, subnormals)
    /// gives the nearest even value, and F16C's bits where the CPU has it.
    #[test]
    fn conversions_round_to_nearest_even() {
        for h in 0..=u16::MAX {
            let f = to_f32(h);
            if f.is_nan() {
                assert!(to_f32(from_f32(f)).is_nan());
                continue;
            }
            assert_eq!(from_f32(f), h, "{h:#x}");
        }
        let mut s = 0x9e37_79b9u32;
        let mut xs: Vec<f32> = (0..200_000)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                f32::from_bits(s)
            })
            .filter(|v| v.is_finite())
            .collect();
        // exact halfway points between neighbours, and the edges of the range
        for h in (0..0x7bffu16).step_by(97) {
            let (a, b) = (f64::from(to_f32(h)), f64::from(to_f32(h + 1)));
            xs.push(((a + b) / 2.0) as f32);
            xs.push(-((a + b) / 2.0) as f32);
        }
        xs.extend([
            65504.0, 65519.0, 65520.0, 1e9, 5.9e-8, 2.98e-8, 2.99e-8, 1e-30, 0.0, -0.0,
        ]);
        for &x in &xs {
            let h = from_f32(x);
            let got = f64::from(to_f32(h));
            let xv = f64::from(x);
            if xv.abs() >= 65520.0 {
                assert!(got.is_infinite(), "{x}");
                continue;
            }
            // no binary16 value is nearer; on a tie the even one wins
            for n in [h.wrapping_sub(1), h.wrapping_add(1)] {
                let other = f64::from(to_f32(n));
                if !other.is_finite() || (n ^ h) & 0x8000 != 0 {
                    continue;
                }
                let (dg, dn) = ((got - xv).abs(), (other - xv).abs());
                assert!(dg < dn || (dg == dn && h & 1 == 0), "{x}: {h:#x} vs {n:#x}");
            }
        }
        #[cfg(target_arch = "x86_64")]
        if crate::simd::has_avx2_f16c() {
            let mut hw = vec![0u16; xs.len()];
            // SAFETY: checked just above.
            unsafe { narrow_scaled_f16c(&xs, 1.0, &mut hw) };
            let sw: Vec<u16> = xs.iter().map(|&x| from_f32(x)).collect();
            assert_eq!(hw, sw);
        }
    }

    /// Packing scales each row by a power of two into the top binades and keeps every value
    /// to half precision's relative accuracy, whatever the rows' magnitudes (here 60 orders
    /// of magnitude apart in one block).
    #[test]
    fn packing_keeps_relative_precision_at_any_scale() {
        let mags = [1e-30f32, 1e-6, 0.05, 1.0, 3e4, 1e30];
        let v: Vec<f32> = mags
            .iter()
            .flat_map(|&mag| (0..101).map(move |i| mag * ((i as f32) - 50.0) / 50.0))
            .collect();
        let p = HalfRows::pack(&v, 101);
        assert_eq!(p.unscale_log2.len(), mags.len());
        for (r, &mag) in mags.iter().enumerate() {
            assert!(UNSCALE_LOG2.contains(&p.unscale_log2[r]));
            for t in 0..101 {
                let (x, h) = (v[r * 101 + t], p.bits[r * 101 + t]);
                let back = to_f32(h) * p.unscale(r);
                assert!(
                    (back - x).abs() <= x.abs() * 4.9e-4 + mag * 1e-6,
                    "{mag} {x} {back}"
                );
            }
        }
        let z = HalfRows::pack(&[0.0, 0.0], 2);
        assert_eq!((z.bits, z.unscale_log2), (vec![0, 0], vec![0]));
        assert_eq!(HalfRows::pack(&[], 0).unscale_log2.len(), 0);
    }
}
