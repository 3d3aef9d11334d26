//! The dual coordinate-descent solve of the SVM losses (squared hinge, hinge) for one problem.
//!
//! The SVM losses use dual coordinate descent (Hsieh, Chang, Lin,
//! Keerthi and Sundararajan, ICML 2008): the dual is `min ½ αᵀ(Q + D)α − Σ α_i` over
//! `0 ≤ α_i ≤ U_i` with `Q_ij = y_i y_j x_i·x_j`; the squared hinge has `D_ii = 1/(2 C_i)`
//! and `U_i = ∞`, the hinge `D_ii = 0` and `U_i = C_i`. Each pass visits the active
//! variables in a fresh random order and takes the exact one-variable Newton step clipped to
//! the box, keeping `w = Σ y_i α_i x_i` up to date. Variables at a bound whose projected
//! gradient lies beyond the previous pass's extremes are *shrunk* (dropped from the active
//! set). The run stops when the projected-gradient gap `PGmax − PGmin ≤ tol` on the active
//! set; if anything was shrunk, it re-checks once on the full set first. At most `max_iter`
//! passes.

use super::local::LocalCsr;
use super::single::{SolveInfo, Solver};
use crate::cluster::SplitMix64;
use crate::xr::{Loss, SolverParams};

impl Solver {
    pub(super) fn solve_svm(
        &mut self,
        x: &LocalCsr,
        params: &SolverParams,
        rng: &mut SplitMix64,
    ) -> SolveInfo {
        let squared = params.loss == Loss::SquaredHinge;
        let bias = f64::from(params.bias);
        let b2 = bias * bias;
        let eps = f64::from(params.tol);
        for v in self.vars.iter_mut() {
            let c = v.upper;
            v.alpha = 0.0;
            if squared {
                v.diag = 0.5 / c;
                v.upper = f64::INFINITY;
            } else {
                v.diag = 0.0;
            }
            v.qd = f64::from(x.sq_norm[v.row as usize]) + b2 + v.diag;
        }
        let n = self.vars.len();
        self.index.clear();
        self.index.extend(0..n as u32);
        let w = &mut self.w[..];
        let vars = &mut self.vars[..];
        let index = &mut self.index[..];
        let mut wb = 0f64;
        let mut active = n;
        let (mut pgmax_old, mut pgmin_old) = (f64::INFINITY, f64::NEG_INFINITY);
        let mut info = SolveInfo::default();
        while info.iters < params.max_iter {
            let (mut pgmax, mut pgmin) = (f64::NEG_INFINITY, f64::INFINITY);
            for s in 0..active {
                let j = s + rng.below((active - s) as u64) as usize;
                index.swap(s, j);
            }
            info.visits += active as u64;
            let mut s = 0;
            while s < active {
                let vi = index[s] as usize;
                let v = &mut vars[vi];
                let r = v.row as usize;
                let y = f64::from(v.y);
                let g = y * (f64::from(x.dot(w, r)) + wb * bias) - 1.0 + v.diag * v.alpha;
                let mut pg = 0.0;
                if v.alpha == 0.0 {
                    if g > pgmax_old {
                        active -= 1;
                        index.swap(s, active);
                        continue;
                    }
                    if g < 0.0 {
                        pg = g;
                    }
                } else if v.alpha == v.upper {
                    if g < pgmin_old {
                        active -= 1;
                        index.swap(s, active);
                        continue;
                    }
                    if g > 0.0 {
                        pg = g;
                    }
                } else {
                    pg = g;
                }
                pgmax = pgmax.max(pg);
                pgmin = pgmin.min(pg);
                if pg.abs() > 1e-12 {
                    let old = v.alpha;
                    let new = if v.qd > 0.0 {
                        (old - g / v.qd).max(0.0).min(v.upper)
                    } else {
                        // an all-zero instance without bias: the dual is linear in α_i
                        // with slope -1, so α_i goes to its bound.
                        v.upper
                    };
                    v.alpha = new;
                    let d = (new - old) * y;
                    if d != 0.0 {
                        x.axpy(d as f32, r, w);
                        wb += d * bias;
                    }
                }
                s += 1;
            }
            info.iters += 1;
            if pgmax - pgmin <= eps {
                if active == n {
                    info.converged = true;
                    break;
                }
                active = n;
                pgmax_old = f64::INFINITY;
                pgmin_old = f64::NEG_INFINITY;
                continue;
            }
            pgmax_old = if pgmax <= 0.0 { f64::INFINITY } else { pgmax };
            pgmin_old = if pgmin >= 0.0 {
                f64::NEG_INFINITY
            } else {
                pgmin
            };
        }
        self.wb = wb;
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xr::solver::testutil::{
        dense_rows, local_all, params, primal, problem, scalar_solve, solver_w, svm_dual,
    };

    #[test]
    fn svm_dual_objective_decreases_pass_by_pass() {
        for loss in [Loss::SquaredHinge, Loss::Hinge] {
            let (x, y) = problem(80, 25, 6, 0.15, 3);
            let local = local_all(&x);
            let rows = dense_rows(&x, 1.0);
            let ys: Vec<f64> = y.iter().map(|&b| if b { 1.0 } else { -1.0 }).collect();
            let c: Vec<f64> = y.iter().map(|&b| if b { 2.0 } else { 0.7 }).collect();
            let mut last = 0.0; // the dual objective at alpha = 0
            for k in 1..=12 {
                // runs with max_iter = k are prefixes of the same run (same seed)
                let (s, _) = scalar_solve(&local, &y, &c, &params(loss, 1e-9, k), 11);
                let (obj, _, _) = svm_dual(&s, &rows, &ys, &c, loss == Loss::SquaredHinge);
                assert!(obj <= last + 1e-9, "{loss:?} pass {k}: {obj} > {last}");
                last = obj;
            }
            assert!(last < -1.0, "{loss:?}: the objective barely moved ({last})");
        }
    }

    #[test]
    fn svm_converges_to_kkt_and_zero_duality_gap() {
        for loss in [Loss::SquaredHinge, Loss::Hinge] {
            for seed in 0..3 {
                let (x, y) = problem(120, 30, 8, 0.1, seed);
                let local = local_all(&x);
                let rows = dense_rows(&x, 1.0);
                let ys: Vec<f64> = y.iter().map(|&b| if b { 1.0 } else { -1.0 }).collect();
                let c: Vec<f64> = (0..y.len()).map(|i| 0.5 + (i % 3) as f64).collect();
                let (s, info) = scalar_solve(&local, &y, &c, &params(loss, 1e-4, 10_000), seed);
                assert!(info.converged, "{loss:?} did not converge: {info:?}");
                let squared = loss == Loss::SquaredHinge;
                let (dual, gap, w_from_alpha) = svm_dual(&s, &rows, &ys, &c, squared);
                // the f32 weights kept along the way agree with the duals
                let w = solver_w(&s, &local, x.n_cols);
                let drift = w.iter().zip(&w_from_alpha).map(|(a, b)| (a - b).abs());
                assert!(drift.fold(0.0, f64::max) < 1e-4);
                // KKT: projected-gradient gap within tol (slack for f32 weights)
                assert!(gap <= 1e-4 + 1e-3, "{loss:?}: PG gap {gap}");
                // strong duality: primal = -dual at the optimum
                let p = primal(loss, &w_from_alpha, &rows, &ys, &c);
                assert!(
                    (p + dual).abs() <= 1e-3 * (1.0 + p.abs()),
                    "{loss:?}: primal {p} dual {dual}"
                );
            }
        }
    }
}
