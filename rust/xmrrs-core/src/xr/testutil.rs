//! Random trees, layer weights and queries for the tests of the XR modules, and an
//! exhaustive reference scorer.

use crate::cluster::{ClusterTree, SplitMix64};
use crate::sparse::Csr;
use crate::xr::{LayerWeights, PostProcessor};

/// Splits `n` into `k` positive parts, unevenly.
pub(crate) fn composition(n: usize, k: usize, rng: &mut SplitMix64) -> Vec<u32> {
    assert!(k >= 1 && n >= k);
    let mut parts = vec![1u32; k];
    // skewed: a few parts get most of the remainder
    let hot = 1 + rng.below(k as u64) as usize;
    for _ in 0..n - k {
        let p = if rng.below(3) == 0 {
            rng.below(k as u64) as usize
        } else {
            rng.below(hot as u64) as usize
        };
        parts[p] += 1;
    }
    parts
}

fn ptr_of(parts: &[u32]) -> Vec<u32> {
    let mut p = vec![0u32];
    for &x in parts {
        p.push(p.last().unwrap() + x);
    }
    p
}

/// A random tree with `level_sizes[t]` nodes at level `t + 1` (the last entry: leaves) over
/// `n_labels` labels; empty `level_sizes` gives a single leaf (depth 0).
pub(crate) fn random_tree(level_sizes: &[usize], n_labels: usize, seed: u64) -> ClusterTree {
    let mut rng = SplitMix64::new(seed);
    let mut child_ptr = Vec::new();
    let mut above = 1usize;
    for &n in level_sizes {
        child_ptr.push(ptr_of(&composition(n, above, &mut rng)));
        above = n;
    }
    let leaf_ptr = ptr_of(&composition(n_labels, above, &mut rng));
    let mut labels: Vec<u32> = (0..n_labels as u32).collect();
    for i in (1..labels.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        labels.swap(i, j);
    }
    let (leaf_ptr, child_ptr) = if level_sizes.is_empty() {
        (vec![0, n_labels as u32], vec![])
    } else {
        (leaf_ptr, child_ptr)
    };
    ClusterTree::from_parts(child_ptr, leaf_ptr, labels).unwrap()
}

fn uniform(rng: &mut SplitMix64) -> f32 {
    (rng.next_f64() * 2.0 - 1.0) as f32
}

/// Random weights for every layer of `tree` (or the first `n_layers`): rows with a varying
/// number of non-zeros (some empty, some sharing "hot" features so that dense chunk rows
/// appear), random biases.
pub(crate) fn random_layers(
    tree: &ClusterTree,
    n_layers: usize,
    d: usize,
    seed: u64,
) -> Vec<LayerWeights> {
    let mut rng = SplitMix64::new(seed ^ 0xabcdef);
    (0..n_layers)
        .map(|m| {
            let child_ptr = if m < tree.depth() {
                tree.child_ptr(m).unwrap().to_vec()
            } else {
                tree.leaf_ptr().to_vec()
            };
            let n = *child_ptr.last().unwrap() as usize;
            let mut trip = Vec::new();
            for c in 0..n {
                let kind = rng.below(5);
                let nnz = match kind {
                    0 => 0,
                    1 => rng.below(d as u64 / 2 + 1) as usize,
                    _ => rng.below(8) as usize,
                };
                for _ in 0..nnz {
                    trip.push((c as u32, rng.below(d as u64) as u32, uniform(&mut rng)));
                }
                // hot features: shared by many children of a chunk
                for f in 0..d.min(3) {
                    if rng.below(4) != 0 {
                        trip.push((c as u32, f as u32, uniform(&mut rng)));
                    }
                }
            }
            let mut weights = Csr::from_triplets(n, d, &trip).unwrap();
            // a few exact zeros stay stored: they must be ignored
            for v in weights.data.iter_mut().step_by(17) {
                *v = 0.0;
            }
            let bias = (0..n).map(|_| uniform(&mut rng) * 0.5).collect();
            LayerWeights {
                dense: Vec::new(),
                n_dense: 0,
                child_ptr,
                weights,
                bias,
            }
        })
        .collect()
}

/// Random queries: `n` rows over `d` features, up to `max_nnz` non-zeros, some rows empty.
pub(crate) fn random_queries(n: usize, d: usize, max_nnz: usize, seed: u64) -> Csr {
    let mut rng = SplitMix64::new(seed ^ 0x1234);
    let mut trip = Vec::new();
    for i in 0..n {
        let nnz = if i % 7 == 3 {
            0
        } else {
            rng.below(max_nnz as u64 + 1) as usize
        };
        for _ in 0..nnz {
            trip.push((i as u32, rng.below(d as u64) as u32, uniform(&mut rng)));
        }
    }
    Csr::from_triplets(n, d, &trip).unwrap()
}

/// The path score of every label, computed directly from the layer weights: for each node,
/// `margin = sum over the row's non-zeros in feature order of x_f * w_f` (skipping zero
/// factors) `+ bias`, then transformed and combined down the path. Returns scores indexed by
/// label id.
pub(crate) fn exhaustive_scores(
    tree: &ClusterTree,
    layers: &[LayerWeights],
    x: &[f32],
    pp: PostProcessor,
) -> Vec<f32> {
    let mut node_scores = vec![pp.root_score()];
    for lw in layers {
        let n = lw.n_children();
        let mut next = vec![0f32; n];
        for p in 0..lw.n_parents() {
            for c in lw.child_ptr[p] as usize..lw.child_ptr[p + 1] as usize {
                let (idx, val) = lw.weights.view().row(c);
                let mut acc = 0.0f32;
                for (&f, &w) in idx.iter().zip(val) {
                    let xv = x[f as usize];
                    if xv != 0.0 && w != 0.0 {
                        acc += xv * w;
                    }
                }
                next[c] = pp.combine(node_scores[p], pp.transform(acc + lw.bias[c]));
            }
        }
        node_scores = next;
    }
    if layers.len() == tree.depth() + 1 {
        let mut by_label = vec![0f32; tree.n_labels()];
        for (pos, &l) in tree.labels().iter().enumerate() {
            by_label[l as usize] = node_scores[pos];
        }
        by_label
    } else {
        node_scores
    }
}

/// The `k` best `(id, score)` of a score vector: higher first, ties to the lower id,
/// padded with `(-1, -inf)`.
pub(crate) fn topk_of(scores: &[f32], k: usize) -> (Vec<i64>, Vec<f32>) {
    let mut v: Vec<(f32, u32)> = scores.iter().copied().zip(0..).collect();
    v.sort_by(|a, b| (b.0 + 0.0).total_cmp(&(a.0 + 0.0)).then(a.1.cmp(&b.1)));
    let mut ids = vec![-1i64; k];
    let mut sc = vec![f32::NEG_INFINITY; k];
    for (t, &(s, id)) in v.iter().take(k).enumerate() {
        ids[t] = i64::from(id);
        sc[t] = s;
    }
    (ids, sc)
}
