//! Test data shared by the k-means tests.

use crate::cluster::rng::SplitMix64;
use crate::sparse::Csr;

/// `n` points around `k` well-separated random directions in `dim` dimensions.
pub(super) fn planted(n: usize, k: usize, dim: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
    let mut r = SplitMix64::new(seed);
    let mut g = || (r.next_f64() * 2.0 - 1.0) as f32;
    let centers: Vec<Vec<f32>> = (0..k)
        .map(|_| (0..dim).map(|_| g() * 3.0).collect())
        .collect();
    let mut data = Vec::with_capacity(n * dim);
    let mut truth = Vec::with_capacity(n);
    for i in 0..n {
        let t = i % k;
        truth.push(t);
        for x in &centers[t] {
            data.push(x + 0.3 * g());
        }
    }
    (data, truth)
}

/// A sparse `n x d` matrix of random rows (`per_row` values each, in `0.1..1.1`) where
/// every row `i` with `i % dup_every == 1` copies row `i - 1`.
pub(super) fn random_sparse(
    n: usize,
    d: usize,
    per_row: usize,
    dup_every: usize,
    seed: u64,
) -> Csr {
    let mut r = SplitMix64::new(seed);
    let mut trip = Vec::new();
    let mut prev: Vec<(u32, f32)> = Vec::new();
    for i in 0..n {
        let row: Vec<(u32, f32)> = if dup_every > 1 && i % dup_every == 1 {
            prev.clone()
        } else {
            let mut cols: Vec<u32> = (0..per_row).map(|_| r.below(d as u64) as u32).collect();
            cols.sort_unstable();
            cols.dedup();
            cols.iter()
                .map(|&j| (j, 0.1 + r.next_f64() as f32))
                .collect()
        };
        for &(j, v) in &row {
            trip.push((i as u32, j, v));
        }
        prev = row;
    }
    Csr::from_triplets(n, d, &trip).unwrap()
}
