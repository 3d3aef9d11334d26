//! The dual coordinate-descent solve of logistic regression for one problem.
//!
//! Logistic regression uses the dual coordinate descent of Yu, Huang and Lin (Machine
//! Learning, 2011): two dual variables per instance (`α_i + α'_i = C_i`), each coordinate
//! step an inner Newton solve of a one-variable problem with a log barrier, the inner
//! tolerance tightening as the outer passes need fewer Newton steps; it stops when the
//! largest gradient is below `tol`.

use super::local::LocalCsr;
use super::single::{SolveInfo, Solver};
use crate::cluster::SplitMix64;
use crate::xr::SolverParams;

impl Solver {
    pub(super) fn solve_logistic(
        &mut self,
        x: &LocalCsr,
        params: &SolverParams,
        rng: &mut SplitMix64,
    ) -> SolveInfo {
        const MAX_INNER: u32 = 100;
        const ETA: f64 = 0.1;
        let bias = f64::from(params.bias);
        let b2 = bias * bias;
        let eps = f64::from(params.tol);
        let w = &mut self.w[..];
        let mut wb = 0f64;
        // α_i starts tiny and positive (the barrier needs 0 < α_i < C_i); w = Σ y_i α_i x_i.
        for v in self.vars.iter_mut() {
            let c = v.upper;
            v.alpha = (1e-3 * c).min(1e-8);
            v.qd = f64::from(x.sq_norm[v.row as usize]) + b2;
            let d = f64::from(v.y) * v.alpha;
            x.axpy(d as f32, v.row as usize, w);
            wb += d * bias;
        }
        let n = self.vars.len();
        self.index.clear();
        self.index.extend(0..n as u32);
        let vars = &mut self.vars[..];
        let index = &mut self.index[..];
        let inner_min = eps.min(1e-8);
        let mut inner_eps = 1e-2f64;
        let mut info = SolveInfo::default();
        while info.iters < params.max_iter {
            for s in 0..n {
                let j = s + rng.below((n - s) as u64) as usize;
                index.swap(s, j);
            }
            info.visits += n as u64;
            let mut newton_steps = 0usize;
            let mut gmax = 0f64;
            for &vi in index.iter() {
                let v = &mut vars[vi as usize];
                let c = v.upper;
                let r = v.row as usize;
                let y = f64::from(v.y);
                let a = v.qd;
                let b = y * (f64::from(x.dot(w, r)) + wb * bias);
                // Work on whichever of (α, C − α) the Newton step moves away from its bound:
                // `z` is the variable solved for, `sign` is +1 for α and −1 for C − α.
                let (old, sign) = if 0.5 * a * ((c - v.alpha) - v.alpha) + b < 0.0 {
                    (c - v.alpha, -1.0)
                } else {
                    (v.alpha, 1.0)
                };
                let mut z = old;
                if c - z < 0.5 * c {
                    z *= 0.1;
                }
                let grad = |z: f64| a * (z - old) + sign * b + (z / (c - z)).ln();
                let mut gp = grad(z);
                gmax = gmax.max(gp.abs());
                let mut inner = 0u32;
                while inner < MAX_INNER && gp.abs() >= inner_eps {
                    let gpp = a + c / (c - z) / z;
                    let t = z - gp / gpp;
                    z = if t <= 0.0 { z * ETA } else { t };
                    gp = grad(z);
                    newton_steps += 1;
                    inner += 1;
                }
                if inner > 0 {
                    v.alpha = if sign > 0.0 { z } else { c - z };
                    let d = sign * (z - old) * y;
                    if d != 0.0 {
                        x.axpy(d as f32, r, w);
                        wb += d * bias;
                    }
                }
            }
            info.iters += 1;
            if gmax < eps {
                info.converged = true;
                break;
            }
            if newton_steps <= n / 10 {
                inner_eps = inner_min.max(0.1 * inner_eps);
            }
        }
        self.wb = wb;
        info
    }
}
