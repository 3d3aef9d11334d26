//! A small seeded generator (SplitMix64), so clustering is reproducible bit for bit on every
//! platform without an external crate.

/// SplitMix64 (Steele, Lea and Flood 2014): a 64-bit state advanced by a Weyl increment and
/// finalised by a bijective mixer. Good statistical quality for seeding and sampling.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

/// The SplitMix64 finaliser: a bijection of `u64` that mixes every input bit.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// A generator whose stream depends only on `(seed, a, b)`: used to give every tree node
    /// (level `a`, index `b`) its own stream, independent of scheduling.
    pub fn derived(seed: u64, a: u64, b: u64) -> Self {
        let h = mix64(seed ^ 0x9E37_79B9_7F4A_7C15);
        let h = mix64(h ^ a.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let h = mix64(h ^ b.wrapping_mul(0xA076_1D64_78BD_642F));
        SplitMix64 { state: h }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// A uniform integer in `0..n` (`n > 0`), by Lemire's multiply-shift with rejection.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let n = n.max(1);
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// A uniform double in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_in_range() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = SplitMix64::derived(1, 2, 3);
        let mut counts = [0u32; 7];
        for _ in 0..7000 {
            counts[r.below(7) as usize] += 1;
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
        assert!(counts.iter().all(|&c| c > 800 && c < 1200), "{counts:?}");
        assert_ne!(
            SplitMix64::derived(1, 2, 3).next_u64(),
            SplitMix64::derived(1, 3, 2).next_u64()
        );
    }
}
