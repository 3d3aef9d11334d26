//! The rows the top layer trains on when it is given a sample.
//!
//! Layer 0 (the root's children) is the only layer that trains on every row, so it bounds the
//! memory of one process in distributed training. With `TrainParams::top_fraction < 1` it
//! trains on a Bernoulli sample instead: row `i` is kept when a hash of `(seed, i)` falls
//! below `fraction · 2^64`. The decision depends on the row's global index alone, so row
//! blocks pick their rows independently and the sample is the same however the rows are
//! partitioned (the distributed top task then trains on exactly the rows `train_layers`
//! keeps).

use crate::cluster::SplitMix64;

/// Stream tag of the sample (layers use their index; this is none of them).
const TAG: u64 = u64::MAX;

/// Whether row `row` (global index) is in the top layer's sample of `fraction` for `seed`.
/// `fraction >= 1` keeps every row.
pub fn top_sample_keep(seed: u64, row: u64, fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    // fraction in (0, 1): the cut below 2^64 (the cast saturates, and is exact enough)
    let cut = (fraction * 18_446_744_073_709_551_616.0) as u64;
    SplitMix64::derived(seed, TAG, row).next_u64() < cut
}

/// The kept rows among `start..start + n` (global indices), as offsets from `start`.
pub fn top_sample_rows(seed: u64, start: u64, n: usize, fraction: f64) -> Vec<u32> {
    (0..n as u32)
        .filter(|&r| top_sample_keep(seed, start + u64::from(r), fraction))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_one_keeps_all_and_rate_follows_fraction() {
        assert_eq!(top_sample_rows(3, 0, 1000, 1.0).len(), 1000);
        for f in [0.1, 0.5, 0.9] {
            let k = top_sample_rows(7, 0, 20_000, f).len() as f64 / 20_000.0;
            assert!((k - f).abs() < 0.02, "fraction {f}: kept {k}");
        }
    }

    /// Blocks that select their rows with their global offsets keep the same rows as one
    /// selection over all rows; another seed keeps other rows.
    #[test]
    fn blocks_pick_the_same_rows_as_the_whole() {
        let whole = top_sample_rows(5, 0, 1000, 0.3);
        let mut pieced = Vec::new();
        for (start, n) in [(0u64, 333usize), (333, 1), (334, 666)] {
            pieced.extend(
                top_sample_rows(5, start, n, 0.3)
                    .iter()
                    .map(|&r| r + start as u32),
            );
        }
        assert_eq!(whole, pieced);
        assert_ne!(whole, top_sample_rows(6, 0, 1000, 0.3));
    }

    #[test]
    fn top_fraction_outside_zero_one_is_rejected() {
        use crate::xr::train::TrainParams;
        for f in [0.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
            let p = TrainParams {
                top_fraction: f,
                ..Default::default()
            };
            assert!(p.validate().is_err(), "{f}");
        }
        let p = TrainParams {
            top_fraction: 0.25,
            ..Default::default()
        };
        assert!(p.validate().is_ok());
    }
}
