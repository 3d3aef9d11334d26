//! k-means at one node: `n_init` restarts, each a seeding followed by Lloyd rounds until
//! convergence, keeping the run of the best objective.

use super::balance::assign_capacity;
use super::centroids::{plan_update, Centroids, SumPlan};
use super::colmajor::ColMajor;
use super::params::KMeansParams;
use super::rows::{lane_stride, Rows, SubRows};
use super::scoring::Scoring;
use super::seeding::{kmeanspp, sample_positions, SEED_SAMPLE_MIN, SEED_SAMPLE_PER_CLUSTER};
use crate::cluster::rng::SplitMix64;
use crate::simd::CACHE_BYTES;

/// Members per parallel task when scoring.
const MIN_ROWS_PER_TASK: usize = 256;
/// Below this much work (stored values), a node runs on one thread.
const PAR_WORK: usize = 1 << 16;

/// A node's Lloyd loop also stops (besides [`KMeansParams::tol`]) when, from round
/// `OBJ_MIN_ROUNDS` on, a round improves the objective (sum of member scores in their
/// clusters) by at most this fraction of its magnitude (the objective is noisy in the first
/// rounds, hence the floor).
const OBJ_REL_TOL: f32 = 1e-4;
const OBJ_MIN_ROUNDS: usize = 5;

/// Runs k-means on one node `runs` times, keeping the run of the best objective (the first
/// among equals); returns the child (cluster index) of each member. `norms`: of the member
/// rows; `dup`: from [`local_duplicates`](super::duplicates::local_duplicates).
#[allow(clippy::too_many_arguments)]
pub(super) fn kmeans_node<R: Rows>(
    rows: &R,
    norms: &[f32],
    dup: Option<&[u32]>,
    c: usize,
    hi: &[usize],
    params: &KMeansParams,
    runs: usize,
    rng: &mut SplitMix64,
) -> Vec<u16> {
    let d = rows.dim();
    let par = rows.work() >= PAR_WORK;
    let min_len = if par { MIN_ROWS_PER_TASK } else { usize::MAX };
    // scored by columns when the padded table would not stay in cache (streamed in order,
    // with no lanes of padding then)
    let colmajor = if lane_stride(c).saturating_mul(d).saturating_mul(4) > CACHE_BYTES {
        ColMajor::build(rows, dup, lane_stride(c), par)
    } else {
        None
    };
    let scoring = Scoring {
        rows,
        norms,
        spherical: params.spherical,
        c,
        min_len,
        dup,
        colmajor: colmajor.as_ref(),
    };
    let exact = runs > 1;
    let (mut best, mut best_obj) = kmeans_run(&scoring, hi, params, par, rng, exact);
    for _ in 1..runs {
        let (assign, obj) = kmeans_run(&scoring, hi, params, par, rng, exact);
        if obj > best_obj {
            (best, best_obj) = (assign, obj);
        }
    }
    best
}

/// One k-means run of [`kmeans_node`]: seeding, then Lloyd rounds. Returns the assignment
/// and its [`objective`]: against the centroids of the assignment itself when `exact` (one
/// more update and scoring of the members), else against those of the round before (a
/// lower bound for the spherical and Euclidean scores).
fn kmeans_run<R: Rows>(
    scoring: &Scoring<'_, R>,
    hi: &[usize],
    params: &KMeansParams,
    par: bool,
    rng: &mut SplitMix64,
    exact: bool,
) -> (Vec<u16>, f64) {
    let (rows, norms, c, min_len, dup) = (
        scoring.rows,
        scoring.norms,
        scoring.c,
        scoring.min_len,
        scoring.dup,
    );
    let n = rows.len();
    let mut cent = Centroids::new(c, rows.dim(), scoring.colmajor.is_none());
    let sample_cap = (SEED_SAMPLE_PER_CLUSTER * c).max(SEED_SAMPLE_MIN);
    let seeds = if n <= sample_cap {
        kmeanspp(rows, dup, c, norms, params.spherical, min_len, rng)
    } else {
        let idx = sample_positions(n, sample_cap, rng);
        let sub = SubRows { rows, idx: &idx };
        let sub_norms: Vec<f32> = idx.iter().map(|&k| norms[k]).collect();
        let sub_min = if sub.work() >= PAR_WORK {
            MIN_ROWS_PER_TASK
        } else {
            usize::MAX
        };
        kmeanspp(&sub, None, c, &sub_norms, params.spherical, sub_min, rng)
            .into_iter()
            .map(|k| idx[k])
            .collect()
    };
    // the table starts at zero: add each seed to its cluster
    let seed_ops: Vec<Vec<(u32, bool)>> = seeds.iter().map(|&k| vec![(k as u32, true)]).collect();
    cent.apply(rows, &seed_ops, par);
    let mut scores = vec![0f32; n * c];
    scoring.run(&cent, None, &mut scores);
    let mut assign = assign_capacity(&scores, n, c, hi, !params.balanced, min_len);
    let mut obj = objective(&scores, &assign, c);
    // how to bring the sums (now the seeds) to `assign`
    let mut plan = plan_update(None, &assign, dup, c);
    // members whose cluster may change in a round without another round being run
    let max_moved = (f64::from(params.tol) * n as f64).floor() as usize;
    let mut counts = vec![0usize; c];
    // brings the sums to `assign` (by `plan`) and scores every member against them
    let mut refresh = |plan: &SumPlan, assign: &[u16], cent: &mut Centroids, scores: &mut [f32]| {
        if plan.fresh {
            cent.recompute(rows, &plan.ops, par);
        } else {
            cent.apply(rows, &plan.ops, par);
        }
        counts.fill(0);
        for &a in assign {
            counts[a as usize] += 1;
        }
        scoring.run(cent, Some(&counts), scores);
    };
    for it in 0..params.max_iter {
        refresh(&plan, &assign, &mut cent, &mut scores);
        let next = assign_capacity(&scores, n, c, hi, !params.balanced, min_len);
        plan = plan_update(Some(&assign), &next, dup, c);
        let next_obj = objective(&scores, &next, c);
        let gain = next_obj - obj;
        assign = next;
        obj = next_obj;
        if plan.moved <= max_moved
            || (it + 1 >= OBJ_MIN_ROUNDS && gain <= f64::from(OBJ_REL_TOL) * obj.abs())
        {
            break;
        }
    }
    if exact {
        refresh(&plan, &assign, &mut cent, &mut scores);
        obj = objective(&scores, &assign, c);
    }
    (assign, obj)
}

/// Sum, in member order (f64), of each member's score in its assigned cluster.
fn objective(scores: &[f32], assign: &[u16], c: usize) -> f64 {
    assign
        .iter()
        .enumerate()
        .map(|(k, &a)| f64::from(scores[k * c + a as usize]))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::kmeans::driver::hierarchical_kmeans;
    use crate::cluster::kmeans::params::{ZView, AUTO_N_INIT_MAX_LABELS};
    use crate::cluster::kmeans::testutil::planted;
    use crate::cluster::tree::ClusterTree;

    /// The spherical k-means objective of a tree's leaves: the sum of each label's cosine
    /// to the sum of its leaf's rows.
    fn leaf_cosines(data: &[f32], dim: usize, t: &ClusterTree) -> f64 {
        let row = |l: u32| -> Vec<f64> {
            let r = &data[l as usize * dim..(l as usize + 1) * dim];
            r.iter().map(|&v| f64::from(v)).collect()
        };
        let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
        (0..t.n_leaves())
            .map(|leaf| {
                let labels = t.labels_of_leaf(leaf).unwrap();
                let mut s = vec![0f64; dim];
                for &l in labels {
                    s.iter_mut().zip(row(l)).for_each(|(a, v)| *a += v);
                }
                let ns = norm(&s);
                labels
                    .iter()
                    .map(|&l| {
                        let r = row(l);
                        r.iter().zip(&s).map(|(a, b)| a * b).sum::<f64>() / (norm(&r) * ns)
                    })
                    .sum::<f64>()
            })
            .sum()
    }

    #[test]
    fn n_init_keeps_the_best_run() {
        // eight planted groups in one 2-way split: some seedings end in poor local optima
        let (n, dim) = (240usize, 12usize);
        let (data, _) = planted(n, 8, dim, 3);
        let z = ZView::Dense {
            data: &data,
            n_rows: n,
            dim,
        };
        let fit = |n_init: Option<usize>, seed: u64, max_leaf_size: usize| {
            let p = KMeansParams {
                branching: 16,
                max_leaf_size,
                n_init,
                seed,
                ..Default::default()
            };
            hierarchical_kmeans(z, &p).unwrap()
        };
        let (mut one, mut three) = (Vec::new(), Vec::new());
        for seed in 0..16 {
            let t1 = fit(Some(1), seed, 200);
            let t3 = fit(Some(3), seed, 200);
            assert_eq!(t1.n_nodes_per_level(), vec![1, 2]);
            // "auto" is 3 runs at a node of at most 8 children
            assert_eq!(fit(None, seed, 200), t3);
            one.push(leaf_cosines(&data, dim, &t1));
            three.push(leaf_cosines(&data, dim, &t3));
        }
        // the first run is n_init = 1's run, so no seed ends worse; some end better
        assert!(
            one.iter().zip(&three).all(|(a, b)| *b >= a - 1e-6),
            "{one:?} {three:?}"
        );
        assert!(
            one.iter().zip(&three).any(|(a, b)| *b > a + 1.0),
            "{one:?} {three:?}"
        );
        // more than 8 children: "auto" is one run
        for seed in 0..4 {
            let t = fit(None, seed, 24);
            assert_eq!(t.n_nodes_per_level(), vec![1, 10]);
            assert_eq!(t, fit(Some(1), seed, 24));
        }
        // a tree of more than 10,000 labels: "auto" is one run
        let big = AUTO_N_INIT_MAX_LABELS + 1;
        let (data, _) = planted(big, 8, 4, 5);
        let z = ZView::Dense {
            data: &data,
            n_rows: big,
            dim: 4,
        };
        let fit = |n_init: Option<usize>| {
            let p = KMeansParams {
                fanouts: Some(vec![2]),
                n_init,
                seed: 1,
                ..Default::default()
            };
            hierarchical_kmeans(z, &p).unwrap()
        };
        assert_eq!(fit(None), fit(Some(1)));
        assert_ne!(fit(Some(3)), fit(Some(1)));
    }
}
