//! IEEE half precision (binary16) storage for the solvers' working copies of dense rows.
//!
//! A dense row is read once per lane visit of the coordinate-descent solvers, so its bytes,
//! not its arithmetic, bound a visit; half precision halves them. Values are scaled by a
//! power of two before narrowing ([`HalfRows::pack`]), so the block's largest magnitude sits
//! just under the format's top binade whatever the caller's scale, and widening is exact.
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

/// `2^k` for `k` in `-126..=127`.
pub fn pow2(k: i32) -> f32 {
    assert!((-126..=127).contains(&k), "2^{k} is not a normal f32");
    f32::from_bits(((127 + k) as u32) << 23)
}

/// `k` where `x == 2^k` (a normal power of two), else `None`.
pub fn log2_exact(x: f32) -> Option<i32> {
    let b = x.to_bits();
    let e = ((b >> 23) & 0xff) as i32;
    (b & 0x807f_ffff == 0 && e > 0 && e < 255).then_some(e - 127)
}

/// Whether binary16 bits hold a finite value.
#[inline]
pub fn is_finite(h: u16) -> bool {
    h & 0x7c00 != 0x7c00
}

/// Rows of `f32` values stored as binary16 after scaling by a power of two: the true
/// values are `to_f32(bits[..]) * unscale`.
#[derive(Clone, Debug, Default)]
pub struct HalfRows {
    /// The rows' binary16 bits, row-major.
    pub bits: Vec<u16>,
    /// The factor applied before narrowing (a power of two).
    pub scale: f32,
    /// `1 / scale`.
    pub unscale: f32,
}

impl HalfRows {
    /// No rows yet, scaled for values of largest magnitude `top` (finite): it maps into
    /// `[2^14, 2^15)`, so nothing overflows and small values keep their relative precision.
    pub fn for_magnitude(top: f32, capacity: usize) -> Self {
        let e = if top > 0.0 {
            // the exponent of `top` (a subnormal counts as 2^-127)
            let ex = ((top.to_bits() >> 23) & 0xff) as i32 - 127;
            (14 - ex).clamp(-126, 126)
        } else {
            0
        };
        HalfRows {
            bits: Vec::with_capacity(capacity),
            scale: pow2(e),
            unscale: pow2(-e),
        }
    }

    /// Appends `values`, scaled and narrowed. Values above the magnitude the rows were made
    /// for may round to infinity: the caller keeps to it.
    pub fn push(&mut self, values: &[f32]) {
        let at = self.bits.len();
        self.bits.resize(at + values.len(), 0);
        narrow_scaled(values, self.scale, &mut self.bits[at..]);
    }

    /// Packs `values` (finite) at the scale of their largest magnitude.
    pub fn pack(values: &[f32]) -> Self {
        let top = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        let mut h = Self::for_magnitude(top, values.len());
        h.push(values);
        h
    }
}

/// `out[i] = from_f32(values[i] * scale)`, eight at a time with F16C where the CPU has it
/// (the same bits: both round to nearest even).
fn narrow_scaled(values: &[f32], scale: f32, out: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx") && std::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU supports AVX and F16C (checked just above).
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
        if std::is_x86_feature_detected!("avx") && std::is_x86_feature_detected!("f16c") {
            let mut hw = vec![0u16; xs.len()];
            // SAFETY: checked just above.
            unsafe { narrow_scaled_f16c(&xs, 1.0, &mut hw) };
            let sw: Vec<u16> = xs.iter().map(|&x| from_f32(x)).collect();
            assert_eq!(hw, sw);
        }
    }

    /// Packing scales by a power of two into the top binades and keeps every value to half
    /// precision's relative accuracy, whatever the input's magnitude.
    #[test]
    fn packing_keeps_relative_precision_at_any_scale() {
        for mag in [1e-30f32, 1e-6, 0.05, 1.0, 3e4, 1e30] {
            let v: Vec<f32> = (0..101).map(|i| mag * ((i as f32) - 50.0) / 50.0).collect();
            let p = HalfRows::pack(&v);
            assert_eq!(p.unscale.to_bits() & 0x7f_ffff, 0, "a power of two");
            for (&x, &h) in v.iter().zip(&p.bits) {
                let back = to_f32(h) * p.unscale;
                assert!(
                    (back - x).abs() <= x.abs() * 4.9e-4 + mag * 1e-6,
                    "{mag} {x} {back}"
                );
            }
        }
        let z = HalfRows::pack(&[0.0, 0.0]);
        assert_eq!((z.bits, z.unscale), (vec![0, 0], 1.0));
    }
}
