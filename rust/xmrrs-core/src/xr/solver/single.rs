//! The one-problem solver: a reusable workspace for one binary problem, any loss.
//!
//! A [`Solver`] is a reusable workspace for one problem: after [`Solver::solve`],
//! [`Solver::emit`] writes the sparse weights back in global feature ids. The loss families'
//! solves are in `svm.rs` and `logistic.rs`.

use super::local::LocalCsr;
use crate::cluster::SplitMix64;
use crate::xr::{Loss, SolverParams};
use crate::{Error, Result};

/// One dual variable (one participating instance).
#[derive(Clone, Copy, Debug)]
pub(super) struct Var {
    /// SVM: α_i. Logistic: α_i (the second variable is `cost - alpha`).
    pub(super) alpha: f64,
    /// SVM: Q_ii + D_ii. Logistic: |x_i|² + b².
    pub(super) qd: f64,
    /// SVM: D_ii. Logistic: unused.
    pub(super) diag: f64,
    /// SVM: upper bound U_i. Logistic: C_i.
    pub(super) upper: f64,
    /// Local row.
    pub(super) row: u32,
    /// +1 or -1.
    pub(super) y: f32,
}

/// What a solve did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SolveInfo {
    /// Outer passes run.
    pub iters: u32,
    /// The stopping test passed (rather than running out of passes).
    pub converged: bool,
    /// Coordinate visits (dual variables examined, shrunk ones included).
    pub visits: u64,
}

/// A reusable workspace for one binary problem at a time: add the participating instances
/// with [`Solver::push`] after [`Solver::clear`], then [`Solver::solve`] and
/// [`Solver::emit`].
#[derive(Clone, Debug, Default)]
pub struct Solver {
    pub(super) w: Vec<f32>,
    pub(super) wb: f64,
    pub(super) vars: Vec<Var>,
    pub(super) index: Vec<u32>,
}

/// `Σ w[idx[k]] * val[k]` with four partial sums.
#[inline(always)]
pub(super) fn sparse_dot(w: &[f32], idx: &[u32], val: &[f32]) -> f32 {
    debug_assert!(idx.iter().all(|&j| (j as usize) < w.len()));
    let mut s = [0f32; 4];
    let mut ci = idx.chunks_exact(4);
    let mut cv = val.chunks_exact(4);
    for (jj, vv) in (&mut ci).zip(&mut cv) {
        for l in 0..4 {
            // SAFETY: every local index is below `w.len()` (LocalCsr invariant, checked
            // by `Solver::solve` through `n_features`).
            s[l] += vv[l] * unsafe { *w.get_unchecked(jj[l] as usize) };
        }
    }
    for (&j, &v) in ci.remainder().iter().zip(cv.remainder()) {
        // SAFETY: as above.
        s[0] += v * unsafe { *w.get_unchecked(j as usize) };
    }
    (s[0] + s[2]) + (s[1] + s[3])
}

/// `w[idx[k]] += a * val[k]`.
#[inline(always)]
pub(super) fn sparse_axpy(a: f32, idx: &[u32], val: &[f32], w: &mut [f32]) {
    debug_assert!(idx.iter().all(|&j| (j as usize) < w.len()));
    for (&j, &v) in idx.iter().zip(val) {
        // SAFETY: as in `sparse_dot`.
        unsafe { *w.get_unchecked_mut(j as usize) += a * v };
    }
}

impl Solver {
    /// An empty workspace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the previous problem's instances.
    pub fn clear(&mut self) {
        self.vars.clear();
    }

    /// Adds local row `row` as a positive or negative instance of penalty `cost`
    /// (instances of cost 0 do not affect the solution and are skipped).
    #[inline]
    pub fn push(&mut self, row: u32, positive: bool, cost: f64) {
        if cost > 0.0 {
            self.vars.push(Var {
                alpha: 0.0,
                qd: 0.0,
                diag: 0.0,
                upper: cost,
                row,
                y: if positive { 1.0 } else { -1.0 },
            });
        }
    }

    /// Number of instances added since the last [`Solver::clear`].
    pub fn n_instances(&self) -> usize {
        self.vars.len()
    }

    /// Solves the problem over the added instances (rows of `x`) with `params.loss`,
    /// `max_iter`, `tol` and `bias`; `seed` fixes the visiting order.
    ///
    /// Errors if an added row is not a row of `x`.
    pub fn solve(&mut self, x: &LocalCsr, params: &SolverParams, seed: u64) -> Result<SolveInfo> {
        if let Some(v) = self.vars.iter().find(|v| v.row as usize >= x.n_rows()) {
            return Err(Error::invalid(format!(
                "instance row {} is out of range for {} rows",
                v.row,
                x.n_rows()
            )));
        }
        self.w.clear();
        self.w.resize(x.n_features(), 0.0);
        self.wb = 0.0;
        let mut rng = SplitMix64::new(seed);
        Ok(match params.loss {
            Loss::SquaredHinge | Loss::Hinge => self.solve_svm(x, params, &mut rng),
            Loss::Logistic => self.solve_logistic(x, params, &mut rng),
        })
    }

    /// The dense local weights of the last solve and the bias feature's weight `w_b`
    /// (the model's additive term is `w_b * bias`).
    pub fn weights(&self) -> (&[f32], f64) {
        (&self.w, self.wb)
    }

    /// Appends the weights of the last solve with `|w| >= threshold` (and `w != 0`) to
    /// `indices`/`values` in increasing global feature id (`features` maps local ids, see
    /// [`LocalCsr::features`]); with `max_nonzeros > 0` only the largest that many by
    /// magnitude are kept (ties to the lower feature id). Returns the additive bias term
    /// `w_b * bias`, always kept.
    pub fn emit(
        &self,
        features: &[u32],
        threshold: f32,
        max_nonzeros: usize,
        bias: f32,
        indices: &mut Vec<u32>,
        values: &mut Vec<f32>,
    ) -> f32 {
        let mut pairs: Vec<(u32, f32)> = self
            .w
            .iter()
            .zip(features)
            .filter(|(&v, _)| v != 0.0 && v.abs() >= threshold)
            .map(|(&v, &f)| (f, v))
            .collect();
        finish_row(&mut pairs, max_nonzeros, indices, values);
        (self.wb * f64::from(bias)) as f32
    }

    /// The dense block's weights of the last solve (the last `n_dense` local weights; kept
    /// whole, no threshold: they are stored densely).
    pub fn dense_weights(&self, n_dense: usize) -> &[f32] {
        &self.w[self.w.len().saturating_sub(n_dense)..]
    }
}

/// Appends `pairs` (distinct features) to `indices`/`values` in feature order, keeping only
/// the `max_nonzeros` largest magnitudes (ties to the lower feature id) when that is not 0.
pub(super) fn finish_row(
    pairs: &mut Vec<(u32, f32)>,
    max_nonzeros: usize,
    indices: &mut Vec<u32>,
    values: &mut Vec<f32>,
) {
    if max_nonzeros > 0 && pairs.len() > max_nonzeros {
        pairs.select_nth_unstable_by(max_nonzeros - 1, |a, b| {
            crate::sparse::by_score_desc((a.1.abs(), a.0), (b.1.abs(), b.0))
        });
        pairs.truncate(max_nonzeros);
    }
    pairs.sort_unstable_by_key(|p| p.0);
    indices.extend(pairs.iter().map(|p| p.0));
    values.extend(pairs.iter().map(|p| p.1));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparse::Csr;
    use crate::xr::solver::testutil::{
        dense_rows, dotf, local_all, params, primal, problem, scalar_solve, solver_w,
    };

    /// Gradient descent on the smooth primal objectives (squared hinge, logistic).
    fn gd_reference(loss: Loss, rows: &[Vec<f64>], y: &[f64], c: &[f64]) -> Vec<f64> {
        let dim = rows[0].len();
        let lips: f64 = 1.0
            + rows
                .iter()
                .zip(c)
                .map(|(r, &ci)| ci * dotf(r, r))
                .sum::<f64>()
                * if loss == Loss::Logistic { 0.25 } else { 2.0 };
        let mut w = vec![0f64; dim];
        for _ in 0..40_000 {
            let mut g = w.clone();
            for ((r, &yi), &ci) in rows.iter().zip(y).zip(c) {
                let m = yi * dotf(&w, r);
                let coef = match loss {
                    Loss::SquaredHinge => -2.0 * ci * (1.0 - m).max(0.0) * yi,
                    _ => -ci * yi / (1.0 + m.exp()),
                };
                for (gk, rk) in g.iter_mut().zip(r) {
                    *gk += coef * rk;
                }
            }
            for (wk, gk) in w.iter_mut().zip(&g) {
                *wk -= gk / lips;
            }
        }
        w
    }

    #[test]
    fn squared_hinge_and_logistic_match_gradient_descent() {
        for loss in [Loss::SquaredHinge, Loss::Logistic] {
            let (x, y) = problem(60, 12, 5, 0.2, 9);
            let local = local_all(&x);
            let rows = dense_rows(&x, 1.0);
            let ys: Vec<f64> = y.iter().map(|&b| if b { 1.0 } else { -1.0 }).collect();
            let c: Vec<f64> = y.iter().map(|&b| if b { 1.5 } else { 1.0 }).collect();
            let (s, info) = scalar_solve(&local, &y, &c, &params(loss, 1e-4, 5_000), 1);
            assert!(info.converged, "{loss:?}: {info:?}");
            let w = solver_w(&s, &local, x.n_cols);
            let r = gd_reference(loss, &rows, &ys, &c);
            let err = w
                .iter()
                .zip(&r)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            let scale = r.iter().map(|v| v.abs()).fold(0.0, f64::max);
            assert!(scale > 0.1, "{loss:?}: degenerate reference");
            assert!(err < 2e-3 * (1.0 + scale), "{loss:?}: |w - w_ref| = {err}");
            let (pw, pr) = (
                primal(loss, &w, &rows, &ys, &c),
                primal(loss, &r, &rows, &ys, &c),
            );
            assert!(
                (pw - pr).abs() < 1e-4 * (1.0 + pr),
                "{loss:?}: {pw} vs {pr}"
            );
        }
    }

    #[test]
    fn separable_data_is_separated() {
        for loss in [Loss::SquaredHinge, Loss::Hinge, Loss::Logistic] {
            let (x, y) = problem(150, 40, 10, 0.0, 5);
            let local = local_all(&x);
            let rows = dense_rows(&x, 1.0);
            let c = vec![100.0; y.len()];
            let (s, _) = scalar_solve(&local, &y, &c, &params(loss, 1e-3, 20_000), 2);
            let w = solver_w(&s, &local, x.n_cols);
            for (r, &yi) in rows.iter().zip(&y) {
                let m = dotf(&w, r);
                assert_eq!(m > 0.0, yi, "{loss:?}: margin {m}");
            }
        }
    }

    #[test]
    fn empty_and_degenerate_problems() {
        let (x, y) = problem(10, 5, 3, 0.0, 1);
        let local = local_all(&x);
        let mut s = Solver::new();
        for loss in [Loss::SquaredHinge, Loss::Hinge, Loss::Logistic] {
            s.clear();
            let info = s.solve(&local, &params(loss, 0.1, 10), 0).unwrap();
            assert!(info.iters <= 1);
            assert!(s.weights().0.iter().all(|&v| v == 0.0) && s.weights().1 == 0.0);
        }
        // zero-cost instances are left out
        s.clear();
        s.push(0, true, 0.0);
        assert_eq!(s.n_instances(), 0);
        // a row outside the data is an error
        s.push(10, true, 1.0);
        assert!(s.solve(&local, &SolverParams::default(), 0).is_err());
        // hinge without bias on an empty row: the dual goes to its bound without dividing
        // by zero
        let empty = Csr::zeros(2, 3);
        let le = local_all(&empty);
        s.clear();
        s.push(0, true, 2.0);
        s.push(1, false, 1.0);
        let p = SolverParams {
            loss: Loss::Hinge,
            bias: 0.0,
            ..params(Loss::Hinge, 0.1, 10)
        };
        s.solve(&le, &p, 0).unwrap();
        assert_eq!(s.vars[0].alpha, 2.0);
        let _ = y;
    }

    #[test]
    fn emit_thresholds_caps_and_sorts() {
        let mut s = Solver::new();
        s.w = vec![0.5, -0.05, -2.0, 0.0, 0.1, 0.3];
        s.wb = -1.5;
        let features = [9u32, 4, 7, 1, 3, 0];
        let (mut idx, mut val) = (vec![], vec![]);
        let b = s.emit(&features, 0.1, 0, 2.0, &mut idx, &mut val);
        assert_eq!(b, -3.0);
        assert_eq!(idx, vec![0, 3, 7, 9]);
        assert_eq!(val, vec![0.3, 0.1, -2.0, 0.5]);
        let (mut idx, mut val) = (vec![], vec![]);
        s.emit(&features, 0.0, 2, 1.0, &mut idx, &mut val);
        assert_eq!(idx, vec![7, 9]);
        assert_eq!(val, vec![-2.0, 0.5]);
    }
}
