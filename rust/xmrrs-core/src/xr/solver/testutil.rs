//! Test problems and reference solutions shared by the solver tests.

use super::local::{FeatureMap, LocalCsr};
use super::single::{SolveInfo, Solver};
use crate::cluster::SplitMix64;
use crate::sparse::Csr;
use crate::xr::{Loss, SolverParams};

/// A random sparse problem: `n` rows over `d` features (about `per_row` entries each,
/// values in (0, 1]), rows L2-normalised; signs from a hidden linear rule with `flip`
/// label noise.
pub(super) fn problem(
    n: usize,
    d: usize,
    per_row: usize,
    flip: f64,
    seed: u64,
) -> (Csr, Vec<bool>) {
    let mut rng = SplitMix64::new(seed);
    let truth: Vec<f64> = (0..d).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
    let mut trip = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let mut score = 0.0;
        for _ in 0..per_row {
            let j = rng.below(d as u64) as usize;
            let v = 0.05 + rng.next_f64() as f32;
            trip.push((i as u32, j as u32, v));
            score += truth[j] * f64::from(v);
        }
        let noisy = rng.next_f64() < flip;
        y.push((score > 0.0) != noisy);
    }
    let mut x = Csr::from_triplets(n, d, &trip).unwrap();
    crate::sparse::normalize_rows_l2(&mut x);
    (x, y)
}

pub(super) fn local_all(x: &Csr) -> LocalCsr {
    let rows: Vec<u32> = (0..x.n_rows as u32).collect();
    LocalCsr::gather(&x.view(), &rows, &mut FeatureMap::new(x.n_cols)).unwrap()
}

pub(super) fn params(loss: Loss, tol: f32, max_iter: u32) -> SolverParams {
    SolverParams {
        loss,
        tol,
        max_iter,
        threshold: 0.0,
        ..SolverParams::default()
    }
}

/// Dense rows with the bias feature appended (global feature order).
pub(super) fn dense_rows(x: &Csr, bias: f64) -> Vec<Vec<f64>> {
    let dense = x.to_dense();
    (0..x.n_rows)
        .map(|i| {
            let mut r: Vec<f64> = dense[i * x.n_cols..(i + 1) * x.n_cols]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            r.push(bias);
            r
        })
        .collect()
}

pub(super) fn dotf(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(p, q)| p * q).sum()
}

/// Primal objective at `w` (bias weight last).
pub(super) fn primal(loss: Loss, w: &[f64], rows: &[Vec<f64>], y: &[f64], c: &[f64]) -> f64 {
    let mut p = 0.5 * dotf(w, w);
    for ((r, &yi), &ci) in rows.iter().zip(y).zip(c) {
        let m = yi * dotf(w, r);
        p += ci
            * match loss {
                Loss::SquaredHinge => (1.0 - m).max(0.0).powi(2),
                Loss::Hinge => (1.0 - m).max(0.0),
                Loss::Logistic => (-m).exp().ln_1p(),
            };
    }
    p
}

/// The dense weights (global feature order, bias weight last) of a scalar solve.
pub(super) fn solver_w(s: &Solver, local: &LocalCsr, d: usize) -> Vec<f64> {
    let mut w = vec![0f64; d + 1];
    for (k, &f) in local.features().iter().enumerate() {
        w[f as usize] = f64::from(s.w[k]);
    }
    w[d] = s.wb;
    w
}

/// SVM dual objective `½|Σ y α x̃|² + ½ Σ D α² − Σ α` and the projected-gradient gap,
/// recomputed in f64 from the duals.
pub(super) fn svm_dual(
    s: &Solver,
    rows: &[Vec<f64>],
    y: &[f64],
    c: &[f64],
    squared: bool,
) -> (f64, f64, Vec<f64>) {
    let dim = rows[0].len();
    let mut w = vec![0f64; dim];
    let mut alpha = vec![0f64; rows.len()];
    for v in &s.vars {
        alpha[v.row as usize] = v.alpha;
    }
    for (i, r) in rows.iter().enumerate() {
        for (wk, rk) in w.iter_mut().zip(r) {
            *wk += y[i] * alpha[i] * rk;
        }
    }
    let mut obj = 0.5 * dotf(&w, &w);
    let (mut pgmax, mut pgmin) = (f64::NEG_INFINITY, f64::INFINITY);
    for (i, r) in rows.iter().enumerate() {
        let (diag, upper) = if squared {
            (0.5 / c[i], f64::INFINITY)
        } else {
            (0.0, c[i])
        };
        obj += 0.5 * diag * alpha[i] * alpha[i] - alpha[i];
        let g = y[i] * dotf(&w, r) - 1.0 + diag * alpha[i];
        let pg = if alpha[i] == 0.0 {
            g.min(0.0)
        } else if alpha[i] >= upper {
            g.max(0.0)
        } else {
            g
        };
        pgmax = pgmax.max(pg);
        pgmin = pgmin.min(pg);
    }
    (obj, pgmax - pgmin, w)
}

pub(super) fn scalar_solve(
    local: &LocalCsr,
    y: &[bool],
    c: &[f64],
    p: &SolverParams,
    seed: u64,
) -> (Solver, SolveInfo) {
    let mut s = Solver::new();
    s.clear();
    for (i, (&yi, &ci)) in y.iter().zip(c).enumerate() {
        s.push(i as u32, yi, ci);
    }
    let info = s.solve(local, p, seed).unwrap();
    (s, info)
}
