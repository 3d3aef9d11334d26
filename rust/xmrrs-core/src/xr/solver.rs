//! L2-regularised linear binary classifiers solved in the dual by coordinate descent.
//!
//! The per-node problems of XR-Linear: for instances `x_i` with signs `y_i = ±1` and costs
//! `C_i > 0`, find `w` (and a bias weight `w_b` on a virtual feature of constant value `b`,
//! regularised like the others) minimising
//!
//! - [`Loss::SquaredHinge`]: `½|w|² + Σ C_i max(0, 1 − y_i w·x_i)²`
//! - [`Loss::Hinge`]: `½|w|² + Σ C_i max(0, 1 − y_i w·x_i)`
//! - [`Loss::Logistic`]: `½|w|² + Σ C_i log(1 + exp(−y_i w·x_i))`
//!
//! (`w·x_i` includes `w_b b`). The SVM losses use dual coordinate descent (Hsieh, Chang, Lin,
//! Keerthi and Sundararajan, ICML 2008): the dual is `min ½ αᵀ(Q + D)α − Σ α_i` over
//! `0 ≤ α_i ≤ U_i` with `Q_ij = y_i y_j x_i·x_j`; the squared hinge has `D_ii = 1/(2 C_i)`
//! and `U_i = ∞`, the hinge `D_ii = 0` and `U_i = C_i`. Each pass visits the active
//! variables in a fresh random order and takes the exact one-variable Newton step clipped to
//! the box, keeping `w = Σ y_i α_i x_i` up to date. Variables at a bound whose projected
//! gradient lies beyond the previous pass's extremes are *shrunk* (dropped from the active
//! set). The run stops when the projected-gradient gap `PGmax − PGmin ≤ tol` on the active
//! set; if anything was shrunk, it re-checks once on the full set first. At most `max_iter`
//! passes.
//!
//! Logistic regression uses the dual coordinate descent of Yu, Huang and Lin (Machine
//! Learning, 2011): two dual variables per instance (`α_i + α'_i = C_i`), each coordinate
//! step an inner Newton solve of a one-variable problem with a log barrier, the inner
//! tolerance tightening as the outer passes need fewer Newton steps; it stops when the
//! largest gradient is below `tol`.
//!
//! Data: the instances are rows of a [`LocalCsr`], a parent node's instance subset gathered
//! once, with its features renumbered `0..n_features()` (most frequent first), so the dense
//! weight vector is small (`n_features()` of the subset, never the global `d`) and its hot
//! part compact.
//! A [`Solver`] is a reusable workspace for one problem: after [`Solver::solve`],
//! [`Solver::emit`] writes the sparse weights back in global feature ids. A [`GroupSolver`]
//! runs up to [`MAX_LANES`] sibling problems on the same rows in lock-step (one visit of a
//! row serves every lane, with SIMD over lanes), prefetching the rows and duals of the
//! visits a few steps ahead, since visits follow a random order, and their weight rows too
//! when the weights exceed [`CACHE_BYTES`].
//!
//! Precision: `w` is kept in `f32` (the features are `f32`). The one-problem [`Solver`] keeps
//! its dual variables, gradients and bias weight in `f64`; the lock-step [`GroupSolver`]
//! keeps them in `f32`, which halves its per-lane work (measured 20-50% faster on the XR
//! workloads, with the same pass counts and precision@k on the benchmark sets).

use crate::cluster::SplitMix64;
use crate::simd::CACHE_BYTES;
use crate::sparse::CsrView;
use crate::xr::{Loss, SolverParams};
use crate::{Error, Result};

impl SolverParams {
    /// Checks that every field is usable: `cp, cn > 0`, `tol > 0`, `max_iter >= 1`,
    /// `bias >= 0`, `threshold >= 0`, all finite.
    pub fn validate(&self) -> Result<()> {
        let pos = |v: f32, name: &str| -> Result<()> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "{name} must be a finite number > 0, got {v}"
                )))
            }
        };
        let nonneg = |v: f32, name: &str| -> Result<()> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "{name} must be a finite number >= 0, got {v}"
                )))
            }
        };
        pos(self.cp, "Cp")?;
        pos(self.cn, "Cn")?;
        pos(self.tol, "tol")?;
        nonneg(self.bias, "bias")?;
        nonneg(self.threshold, "threshold")?;
        if self.max_iter == 0 {
            return Err(Error::invalid("max_iter must be >= 1"));
        }
        Ok(())
    }
}

/// A scratch map from global feature ids to local ids (one `u32` per global feature), kept
/// all-unset between uses so that each gather costs only what it touches.
#[derive(Clone, Debug, Default)]
pub struct FeatureMap {
    slot: Vec<u32>,
    touched: Vec<u32>,
}

const UNSET: u32 = u32::MAX;

impl FeatureMap {
    /// A map for `n_features` global features.
    pub fn new(n_features: usize) -> Self {
        FeatureMap {
            slot: vec![UNSET; n_features],
            touched: Vec::new(),
        }
    }
}

/// Rows of a matrix gathered into a compact block with renumbered features.
///
/// Local feature `k` is global feature `features()[k]`. Local ids go to the features by
/// decreasing number of occurrences among the rows (ties to the lower global id), so the
/// weights of the frequent features sit together in the solvers' dense vectors; rows keep
/// their source order of entries (so local ids within a row are not sorted). Row `r` is
/// source row `rows[r]` of the gather.
#[derive(Clone, Debug, Default)]
pub struct LocalCsr {
    indptr: Vec<usize>,
    indices: Vec<u32>,
    data: Vec<f32>,
    sq_norm: Vec<f32>,
    features: Vec<u32>,
}

impl LocalCsr {
    /// Gathers rows `rows` of `x` (in that order, repeats allowed).
    ///
    /// `map` must have been built for `x.n_cols()` features; it is left unset again.
    /// Errors: a row out of range, or a map of the wrong size.
    pub fn gather(x: &CsrView<'_>, rows: &[u32], map: &mut FeatureMap) -> Result<Self> {
        if map.slot.len() != x.n_cols() {
            return Err(Error::shape(format!(
                "feature map built for {} features, matrix has {}",
                map.slot.len(),
                x.n_cols()
            )));
        }
        if let Some(&bad) = rows.iter().find(|&&r| r as usize >= x.n_rows()) {
            return Err(Error::invalid(format!(
                "row {bad} is out of range for {} rows",
                x.n_rows()
            )));
        }
        let slot = &mut map.slot;
        let touched = &mut map.touched;
        touched.clear();
        // count occurrences (slot holds the count while UNSET marks "not seen")
        let mut nnz = 0usize;
        for &r in rows {
            let (idx, _) = x.row(r as usize);
            nnz += idx.len();
            for &j in idx {
                let s = &mut slot[j as usize];
                if *s == UNSET {
                    *s = 1;
                    touched.push(j);
                } else {
                    *s += 1;
                }
            }
        }
        let mut order: Vec<(u32, u32)> = touched.iter().map(|&j| (slot[j as usize], j)).collect();
        order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        touched.clear();
        touched.extend(order.iter().map(|e| e.1));
        for (k, &j) in touched.iter().enumerate() {
            slot[j as usize] = k as u32;
        }
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        let mut indices = Vec::with_capacity(nnz);
        let mut data = Vec::with_capacity(nnz);
        let mut sq_norm = Vec::with_capacity(rows.len());
        indptr.push(0);
        for &r in rows {
            let (idx, val) = x.row(r as usize);
            indices.extend(idx.iter().map(|&j| slot[j as usize]));
            data.extend_from_slice(val);
            let ss: f64 = val.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            sq_norm.push(ss as f32);
            indptr.push(indices.len());
        }
        for &j in touched.iter() {
            slot[j as usize] = UNSET;
        }
        let features = std::mem::take(touched);
        Ok(LocalCsr {
            indptr,
            indices,
            data,
            sq_norm,
            features,
        })
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.sq_norm.len()
    }
    /// Number of local features (distinct features among the rows).
    pub fn n_features(&self) -> usize {
        self.features.len()
    }
    /// Global id of each local feature.
    pub fn features(&self) -> &[u32] {
        &self.features
    }
    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }
    /// Local feature ids and values of row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let s = self.indptr[r];
        let e = self.indptr[r + 1];
        (&self.indices[s..e], &self.data[s..e])
    }
}

/// One dual variable (one participating instance).
#[derive(Clone, Copy, Debug)]
struct Var {
    /// SVM: α_i. Logistic: α_i (the second variable is `cost - alpha`).
    alpha: f64,
    /// SVM: Q_ii + D_ii. Logistic: |x_i|² + b².
    qd: f64,
    /// SVM: D_ii. Logistic: unused.
    diag: f64,
    /// SVM: upper bound U_i. Logistic: C_i.
    upper: f64,
    /// Local row.
    row: u32,
    /// +1 or -1.
    y: f32,
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
    w: Vec<f32>,
    wb: f64,
    vars: Vec<Var>,
    index: Vec<u32>,
}

/// `Σ w[idx[k]] * val[k]` with four partial sums.
#[inline(always)]
fn sparse_dot(w: &[f32], idx: &[u32], val: &[f32]) -> f32 {
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
fn sparse_axpy(a: f32, idx: &[u32], val: &[f32], w: &mut [f32]) {
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

    fn solve_svm(
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
                let (idx, val) = x.row(v.row as usize);
                let y = f64::from(v.y);
                let g =
                    y * (f64::from(sparse_dot(w, idx, val)) + wb * bias) - 1.0 + v.diag * v.alpha;
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
                        sparse_axpy(d as f32, idx, val, w);
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

    fn solve_logistic(
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
            let (idx, val) = x.row(v.row as usize);
            let d = f64::from(v.y) * v.alpha;
            sparse_axpy(d as f32, idx, val, w);
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
                let (idx, val) = x.row(v.row as usize);
                let y = f64::from(v.y);
                let a = v.qd;
                let b = y * (f64::from(sparse_dot(w, idx, val)) + wb * bias);
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
                        sparse_axpy(d as f32, idx, val, w);
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
}

/// The most children solved together by a [`GroupSolver`].
pub const MAX_LANES: usize = 16;

/// Per-lane results of a [`GroupSolver`] solve.
pub type GroupInfo = [SolveInfo; MAX_LANES];

/// The per-instance state of a [`GroupSolver`]: lane bit masks and the squared norm.
#[derive(Clone, Copy, Debug, Default)]
struct Meta {
    /// Lanes where the instance is a positive.
    pos: u32,
    /// Lanes whose problem includes the instance.
    member: u32,
    /// Lanes where it is not shrunk.
    active: u32,
    /// `|x_i|² + bias²`.
    sq: f32,
    /// Number of stored entries of the row.
    len: u32,
    /// Offset of the row in the local CSR.
    start: usize,
}

/// One lane's weights, as `(global feature, value)` pairs in increasing feature order, and
/// its additive bias term.
pub type LaneWeights = (Vec<u32>, Vec<f32>, f32);

/// Dual coordinate descent for up to [`MAX_LANES`] SVM problems (squared hinge or hinge) on
/// the same rows, run in lock-step: sibling children of one parent, which share the parent's
/// instance set.
///
/// Each lane is its own problem with the algorithm of the module docs (its own dual
/// variables, shrinking, stopping test and pass count); the lanes share the visiting order
/// of each pass (a random permutation of the instances still active in some lane, drawn from
/// one seeded stream) and the weights are stored feature-major (`w[j * K + lane]`), so one
/// visit of an instance computes the margins of every lane and updates every lane's weights
/// with SIMD over lanes. A lane that has converged (or run `max_iter` passes) stops
/// changing; an instance leaves the pass once it is inactive in every live lane.
#[derive(Clone, Debug, Default)]
pub struct GroupSolver {
    /// Weights, `n_features * stride`, feature-major; starts at `w_off` (64-byte aligned).
    w_buf: Vec<f32>,
    w_off: usize,
    stride: usize,
    lanes: usize,
    n_features: usize,
    wb: [f64; MAX_LANES],
    cp: f32,
    cn: f32,
    /// `cost` holds a cost per (instance, lane); otherwise positives cost `cp`, negatives `cn`.
    custom: bool,
    /// `n * stride` dual variables.
    alpha: Vec<f32>,
    cost: Vec<f32>,
    meta: Vec<Meta>,
    index: Vec<u32>,
    /// Members of each lane's problem (counted when the solve starts).
    n_members: [usize; MAX_LANES],
    /// The layout of the running lanes: `k` lanes per weight row, in `w_work` (from
    /// `work_off`) once lanes have been repacked (`in_work`), else in `w_buf`.
    k: usize,
    in_work: bool,
    w_work: Vec<f32>,
    work_off: usize,
    /// Never repack (tests compare both ways).
    no_narrowing: bool,
}

/// Per-position state of the running lanes of a [`GroupSolver`] between passes.
#[derive(Clone, Copy, Debug)]
struct LaneState {
    wb: [f32; MAX_LANES],
    pgmax_old: [f32; MAX_LANES],
    pgmin_old: [f32; MAX_LANES],
    n_shrunk: [u32; MAX_LANES],
    /// The lane (problem) at each position.
    orig: [u8; MAX_LANES],
    /// Positions in use.
    used: usize,
    /// Positions still running.
    live: u32,
    /// Length of the pass's visiting list.
    active_len: usize,
}

/// Offset (in `f32`s) of the first 64-byte aligned element of `v`.
fn aligned_offset(v: &[f32]) -> usize {
    ((64 - v.as_ptr() as usize % 64) % 64) / 4
}

/// How many visits ahead the group solver prefetches.
const PREFETCH_DIST: usize = 4;

/// Hints the CPU to bring the cache line of `p` into L1 (no effect on results).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is only a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// [`prefetch`] of every cache line of a slice.
#[inline(always)]
fn prefetch_range<T>(s: &[T]) {
    let start = s.as_ptr() as usize;
    let end = start + std::mem::size_of_val(s);
    let mut a = start & !63;
    while a < end {
        prefetch(a as *const u8);
        a += 64;
    }
}

/// `acc[l] = Σ_k val[k] * w[idx[k] * K + l]` (two partial sums per lane).
#[inline(always)]
fn dot_lanes<const K: usize>(w: &[f32], idx: &[u32], val: &[f32]) -> [f32; K] {
    debug_assert!(idx.iter().all(|&j| (j as usize + 1) * K <= w.len()));
    let mut a0 = [0f32; K];
    let mut a1 = [0f32; K];
    let mut ci = idx.chunks_exact(2);
    let mut cv = val.chunks_exact(2);
    for (jj, vv) in (&mut ci).zip(&mut cv) {
        // SAFETY: local feature ids are below n_features and w holds n_features * K values
        // (LocalCsr invariant; `GroupSolver::solve` sizes w from the same LocalCsr).
        let (r0, r1) = unsafe {
            (
                &*(w.as_ptr().add(jj[0] as usize * K) as *const [f32; K]),
                &*(w.as_ptr().add(jj[1] as usize * K) as *const [f32; K]),
            )
        };
        for l in 0..K {
            a0[l] += vv[0] * r0[l];
            a1[l] += vv[1] * r1[l];
        }
    }
    for (&j, &v) in ci.remainder().iter().zip(cv.remainder()) {
        // SAFETY: as above.
        let r = unsafe { &*(w.as_ptr().add(j as usize * K) as *const [f32; K]) };
        for l in 0..K {
            a0[l] += v * r[l];
        }
    }
    for l in 0..K {
        a0[l] += a1[l];
    }
    a0
}

/// `w[idx[k] * K + l] += delta[l] * val[k]`.
#[inline(always)]
fn axpy_lanes<const K: usize>(delta: &[f32; K], idx: &[u32], val: &[f32], w: &mut [f32]) {
    debug_assert!(idx.iter().all(|&j| (j as usize + 1) * K <= w.len()));
    for (&j, &v) in idx.iter().zip(val) {
        // SAFETY: as in `dot_lanes`.
        let r = unsafe { &mut *(w.as_mut_ptr().add(j as usize * K) as *mut [f32; K]) };
        for l in 0..K {
            r[l] += delta[l] * v;
        }
    }
}

impl GroupSolver {
    /// An empty workspace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a group of `lanes` (1..=[`MAX_LANES`]) problems over the `n_rows` rows of a
    /// [`LocalCsr`]. With `all_members`, every row starts as a negative of every lane;
    /// otherwise in none (add rows with [`GroupSolver::set`]). Positives cost `cp` and
    /// negatives `cn` unless [`GroupSolver::set`] says otherwise.
    pub fn reset(&mut self, n_rows: usize, lanes: usize, all_members: bool, cp: f32, cn: f32) {
        let lanes = lanes.clamp(1, MAX_LANES);
        let stride = match lanes {
            0..=4 => 4,
            5..=8 => 8,
            _ => 16,
        };
        self.lanes = lanes;
        self.stride = stride;
        self.cp = cp;
        self.cn = cn;
        self.custom = false;
        self.cost.clear();
        let full = if all_members && cn > 0.0 {
            (1u32 << lanes) - 1
        } else {
            0
        };
        self.meta.clear();
        self.meta.resize(
            n_rows,
            Meta {
                pos: 0,
                member: full,
                active: 0,
                sq: 0.0,
                len: 0,
                start: 0,
            },
        );
    }

    /// Makes `row` a member of lane `lane`: positive or negative, of cost `cost` (a cost of
    /// 0 removes it from that lane's problem).
    #[inline]
    pub fn set(&mut self, row: usize, lane: usize, positive: bool, cost: f32) {
        let bit = 1u32 << lane;
        let default = if positive { self.cp } else { self.cn };
        if cost != default && cost > 0.0 && !self.custom {
            // switch to explicit costs, keeping every cost so far
            let k = self.stride;
            self.cost.clear();
            self.cost.reserve(self.meta.len() * k);
            for m in &self.meta {
                for l in 0..k {
                    self.cost.push(if m.pos >> l & 1 == 1 {
                        self.cp
                    } else {
                        self.cn
                    });
                }
            }
            self.custom = true;
        }
        let m = &mut self.meta[row];
        if positive {
            m.pos |= bit;
        } else {
            m.pos &= !bit;
        }
        if cost > 0.0 {
            m.member |= bit;
        } else {
            m.member &= !bit;
        }
        if self.custom {
            self.cost[row * self.stride + lane] = cost;
        }
    }

    /// Number of rows in lane `lane`'s problem (as of the last [`GroupSolver::solve`]).
    pub fn n_instances(&self, lane: usize) -> usize {
        self.n_members.get(lane).copied().unwrap_or(0)
    }

    /// Solves every lane (SVM losses only; see [`Solver`] for logistic regression).
    ///
    /// Errors: a logistic loss, or a workspace not [`reset`](GroupSolver::reset) for
    /// `x.n_rows()` rows.
    pub fn solve(&mut self, x: &LocalCsr, params: &SolverParams, seed: u64) -> Result<GroupInfo> {
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        self.solve_dispatch(x, params, seed, avx2)
    }

    /// [`GroupSolver::solve`] with the AVX2 variant (`avx2`, which the CPU must support) or
    /// the portable one.
    fn solve_dispatch(
        &mut self,
        x: &LocalCsr,
        params: &SolverParams,
        seed: u64,
        avx2: bool,
    ) -> Result<GroupInfo> {
        if params.loss == Loss::Logistic {
            return Err(Error::invalid(
                "the lock-step group solver handles the SVM losses only",
            ));
        }
        if self.meta.len() != x.n_rows() || self.lanes == 0 {
            return Err(Error::shape(format!(
                "group workspace set up for {} rows, data has {}",
                self.meta.len(),
                x.n_rows()
            )));
        }
        let d = x.n_features();
        let n = x.n_rows();
        self.n_features = d;
        self.w_buf.clear();
        self.w_buf.resize(d * self.stride + 16, 0.0);
        self.w_off = aligned_offset(&self.w_buf);
        self.k = self.stride;
        self.in_work = false;
        let b2 = params.bias * params.bias;
        for (r, (m, &sq)) in self.meta.iter_mut().zip(&x.sq_norm).enumerate() {
            m.active = m.member;
            m.sq = sq + b2;
            m.start = x.indptr[r];
            m.len = (x.indptr[r + 1] - x.indptr[r]) as u32;
        }
        self.alpha.clear();
        self.alpha.resize(n * self.stride, 0.0);
        self.wb = [0.0; MAX_LANES];
        self.index.clear();
        self.index.extend(0..n as u32);
        let mut info = [SolveInfo::default(); MAX_LANES];
        let mut st = LaneState {
            wb: [0.0; MAX_LANES],
            pgmax_old: [f32::INFINITY; MAX_LANES],
            pgmin_old: [f32::NEG_INFINITY; MAX_LANES],
            n_shrunk: [0; MAX_LANES],
            orig: std::array::from_fn(|l| l as u8),
            used: self.lanes,
            live: 0,
            active_len: n,
        };
        let any_member = self.meta.iter().fold(0u32, |a, m| a | m.member);
        st.live = any_member;
        for l in 0..self.lanes {
            self.n_members[l] = self
                .meta
                .iter()
                .filter(|m| (m.member >> l) & 1 == 1)
                .count();
            if (any_member >> l) & 1 == 0 {
                info[l].converged = true;
            }
        }
        let mut rng = SplitMix64::new(seed);
        while st.live != 0 {
            match (self.k, avx2) {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `avx2` is only true when the CPU supports AVX2 and FMA.
                (4, true) => unsafe { self.run_avx2::<4>(x, params, &mut rng, &mut info, &mut st) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                (8, true) => unsafe { self.run_avx2::<8>(x, params, &mut rng, &mut info, &mut st) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                (_, true) => unsafe {
                    self.run_avx2::<16>(x, params, &mut rng, &mut info, &mut st)
                },
                (4, _) => self.run::<4>(x, params, &mut rng, &mut info, &mut st),
                (8, _) => self.run::<8>(x, params, &mut rng, &mut info, &mut st),
                _ => self.run::<16>(x, params, &mut rng, &mut info, &mut st),
            }
            if st.live != 0 {
                self.narrow(n, &mut st);
            }
        }
        self.write_back(&st);
        Ok(info)
    }

    /// Copies the working lanes' weights and bias weights back to the result layout.
    fn write_back(&mut self, st: &LaneState) {
        for pos in 0..st.used {
            self.wb[st.orig[pos] as usize] = f64::from(st.wb[pos]);
        }
        if !self.in_work {
            return;
        }
        let (k, k0, d) = (self.k, self.stride, self.n_features);
        let work = &self.w_work[self.work_off..self.work_off + d * k];
        let res = &mut self.w_buf[self.w_off..self.w_off + d * k0];
        for (src, dst) in work.chunks_exact(k).zip(res.chunks_exact_mut(k0)) {
            for pos in 0..st.used {
                dst[st.orig[pos] as usize] = src[pos];
            }
        }
    }

    /// Repacks the live lanes into the narrowest layout that holds them (called between
    /// passes when at most half the lanes are still running): finished lanes' weights go
    /// to the result layout, and weights, duals, costs, masks and lane state of the live
    /// lanes move to consecutive positions of a `k' < k` layout. The arithmetic of a lane
    /// does not depend on its position, so this does not change any result.
    fn narrow(&mut self, n: usize, st: &mut LaneState) {
        self.write_back(st);
        let k = self.k;
        let live: Vec<usize> = (0..k).filter(|&p| (st.live >> p) & 1 == 1).collect();
        let k2 = match live.len() {
            0..=4 => 4,
            5..=8 => 8,
            _ => 16,
        };
        debug_assert!(k2 < k);
        let (d, k0) = (self.n_features, self.stride);
        // weights: from the result layout (every lane is there now)
        self.w_work.clear();
        self.w_work.resize(d * k2 + 16, 0.0);
        self.work_off = aligned_offset(&self.w_work);
        let res = &self.w_buf[self.w_off..self.w_off + d * k0];
        let work = &mut self.w_work[self.work_off..self.work_off + d * k2];
        for (src, dst) in res.chunks_exact(k0).zip(work.chunks_exact_mut(k2)) {
            for (q, &p) in live.iter().enumerate() {
                dst[q] = src[st.orig[p] as usize];
            }
        }
        // duals and costs
        let mut alpha = vec![0f32; n * k2];
        for i in 0..n {
            for (q, &p) in live.iter().enumerate() {
                alpha[i * k2 + q] = self.alpha[i * k + p];
            }
        }
        self.alpha = alpha;
        if self.custom {
            let mut cost = vec![0f32; n * k2];
            for i in 0..n {
                for (q, &p) in live.iter().enumerate() {
                    cost[i * k2 + q] = self.cost[i * k + p];
                }
            }
            self.cost = cost;
        }
        let remap = |m: u32| -> u32 {
            live.iter()
                .enumerate()
                .fold(0u32, |acc, (q, &p)| acc | (((m >> p) & 1) << q))
        };
        for m in self.meta.iter_mut() {
            m.pos = remap(m.pos);
            m.member = remap(m.member);
            m.active = remap(m.active);
        }
        let old = *st;
        for (q, &p) in live.iter().enumerate() {
            st.wb[q] = old.wb[p];
            st.pgmax_old[q] = old.pgmax_old[p];
            st.pgmin_old[q] = old.pgmin_old[p];
            st.n_shrunk[q] = old.n_shrunk[p];
            st.orig[q] = old.orig[p];
        }
        st.used = live.len();
        st.live = u32::MAX >> (32 - live.len());
        self.k = k2;
        self.in_work = true;
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2<const K: usize>(
        &mut self,
        x: &LocalCsr,
        params: &SolverParams,
        rng: &mut SplitMix64,
        info: &mut GroupInfo,
        st: &mut LaneState,
    ) {
        self.run_body::<K>(x, params, rng, info, st)
    }

    fn run<const K: usize>(
        &mut self,
        x: &LocalCsr,
        params: &SolverParams,
        rng: &mut SplitMix64,
        info: &mut GroupInfo,
        st: &mut LaneState,
    ) {
        self.run_body::<K>(x, params, rng, info, st)
    }

    /// Runs passes in the `K`-lane layout until every lane has finished or (for `K > 4`) at
    /// most `K / 2` lanes are still running. Same arithmetic in both dispatch variants, so
    /// results are identical.
    #[inline(always)]
    fn run_body<const K: usize>(
        &mut self,
        x: &LocalCsr,
        params: &SolverParams,
        rng: &mut SplitMix64,
        info: &mut GroupInfo,
        st: &mut LaneState,
    ) {
        debug_assert_eq!(K, self.k);
        let n = x.n_rows();
        let squared = params.loss == Loss::SquaredHinge;
        let bias = params.bias;
        let eps = params.tol;
        let (cp, cn) = (self.cp, self.cn);
        let (diag_p, upper_p, diag_n, upper_n) = if squared {
            (0.5 / cp, f32::INFINITY, 0.5 / cn, f32::INFINITY)
        } else {
            (0.0, cp, 0.0, cn)
        };
        let custom = self.custom;
        let d = x.n_features();
        let w = if self.in_work {
            &mut self.w_work[self.work_off..self.work_off + d * K]
        } else {
            &mut self.w_buf[self.w_off..self.w_off + d * K]
        };
        let alpha = &mut self.alpha[..n * K];
        let cost = &self.cost[..if custom { n * K } else { 0 }];
        let meta = &mut self.meta[..n];
        let index = &mut self.index;
        let orig = st.orig;
        let mut wb = [0f32; K];
        let mut pgmax_old = [f32::INFINITY; K];
        let mut pgmin_old = [f32::NEG_INFINITY; K];
        let mut n_shrunk = [0u32; K];
        wb.copy_from_slice(&st.wb[..K]);
        pgmax_old.copy_from_slice(&st.pgmax_old[..K]);
        pgmin_old.copy_from_slice(&st.pgmin_old[..K]);
        n_shrunk.copy_from_slice(&st.n_shrunk[..K]);
        let mut live = st.live;
        let mut active_len = st.active_len;
        let keep_layout = K == 4 || self.no_narrowing;
        // weight rows in cache already need no prefetch: this rule took 1-19% off the solver
        // time of the six smaller benchmark sets and 5-9% off debian/deps and the 200k set
        // (where prefetching every table was still 7% faster than never prefetching)
        let prefetch_w = d * K * 4 > CACHE_BYTES;
        while live != 0 && (keep_layout || live.count_ones() as usize > K / 2) {
            let mut pgmax_new = [f32::NEG_INFINITY; K];
            let mut pgmin_new = [f32::INFINITY; K];
            for s in 0..active_len {
                let j = s + rng.below((active_len - s) as u64) as usize;
                index.swap(s, j);
            }
            for l in 0..K {
                if live >> l & 1 == 1 {
                    info[orig[l] as usize].visits += active_len as u64;
                }
            }
            let mut s = 0;
            while s < active_len {
                // Visits are in random order: fetch ahead what later visits will read, in
                // three stages (row state, then row data and duals, then weight rows).
                if s + 3 * PREFETCH_DIST < active_len {
                    prefetch(&meta[index[s + 3 * PREFETCH_DIST] as usize]);
                }
                if s + 2 * PREFETCH_DIST < active_len {
                    let j = index[s + 2 * PREFETCH_DIST] as usize;
                    let mj = &meta[j];
                    let (a, b) = (mj.start, mj.start + mj.len as usize);
                    prefetch_range(&x.indices[a..b]);
                    prefetch_range(&x.data[a..b]);
                    prefetch_range(&alpha[j * K..j * K + K]);
                }
                if prefetch_w && s + PREFETCH_DIST < active_len {
                    let mj = &meta[index[s + PREFETCH_DIST] as usize];
                    for &f in &x.indices[mj.start..mj.start + mj.len as usize] {
                        prefetch(w.as_ptr().wrapping_add(f as usize * K));
                    }
                }
                let i = index[s] as usize;
                let mi = meta[i];
                let am = mi.active & live;
                if am == 0 {
                    active_len -= 1;
                    index.swap(s, active_len);
                    continue;
                }
                let (idx, val) = (
                    &x.indices[mi.start..mi.start + mi.len as usize],
                    &x.data[mi.start..mi.start + mi.len as usize],
                );
                let dots = dot_lanes::<K>(w, idx, val);
                // Per-lane penalty terms: D_ii and the upper bound U_i.
                let mut diag = [0f32; K];
                let mut upper = [0f32; K];
                if custom {
                    let cs = &cost[i * K..i * K + K];
                    for l in 0..K {
                        let c = cs[l];
                        (diag[l], upper[l]) = if squared {
                            (0.5 / c, f32::INFINITY)
                        } else {
                            (0.0, c)
                        };
                    }
                } else {
                    for l in 0..K {
                        let positive = (mi.pos >> l) & 1 == 1;
                        diag[l] = if positive { diag_p } else { diag_n };
                        upper[l] = if positive { upper_p } else { upper_n };
                    }
                }
                // One coordinate step in every active lane, written without branches so
                // that it runs as SIMD over the lanes (the same arithmetic as the scalar
                // `Solver`).
                let sq = mi.sq;
                let al: &mut [f32; K] = (&mut alpha[i * K..i * K + K])
                    .try_into()
                    .expect("K duals per row");
                let mut delta = [0f32; K];
                let mut shrunk = 0u32;
                for l in 0..K {
                    let on = (am >> l) & 1 == 1;
                    let y = if (mi.pos >> l) & 1 == 1 { 1.0 } else { -1.0 };
                    let a = al[l];
                    let g = y * (dots[l] + wb[l] * bias) - 1.0 + diag[l] * a;
                    let at0 = a == 0.0;
                    let atu = a == upper[l];
                    let shrink =
                        on & ((at0 & (g > pgmax_old[l])) | (!at0 & atu & (g < pgmin_old[l])));
                    let pg = if at0 {
                        if g < 0.0 {
                            g
                        } else {
                            0.0
                        }
                    } else if atu {
                        if g > 0.0 {
                            g
                        } else {
                            0.0
                        }
                    } else {
                        g
                    };
                    let seen = on & !shrink;
                    if seen & (pg > pgmax_new[l]) {
                        pgmax_new[l] = pg;
                    }
                    if seen & (pg < pgmin_new[l]) {
                        pgmin_new[l] = pg;
                    }
                    let step = seen & (pg.abs() > 1e-12);
                    let qd = sq + diag[l];
                    let t = a - g / qd;
                    let t = if t > 0.0 { t } else { 0.0 };
                    let t = if t < upper[l] { t } else { upper[l] };
                    let t = if qd > 0.0 { t } else { upper[l] };
                    let new = if step { t } else { a };
                    al[l] = new;
                    let dl = (new - a) * y;
                    delta[l] = dl;
                    wb[l] += dl * bias;
                    shrunk |= u32::from(shrink) << l;
                    n_shrunk[l] += u32::from(shrink);
                }
                let still = mi.active & !shrunk;
                let any = delta.iter().any(|&v| v != 0.0);
                meta[i].active = still;
                if any {
                    axpy_lanes::<K>(&delta, idx, val, w);
                }
                if still & live == 0 {
                    active_len -= 1;
                    index.swap(s, active_len);
                } else {
                    s += 1;
                }
            }
            let mut restart = false;
            for l in 0..K {
                let bit = 1u32 << l;
                if live & bit == 0 {
                    continue;
                }
                let lane = &mut info[orig[l] as usize];
                lane.iters += 1;
                if pgmax_new[l] - pgmin_new[l] <= eps {
                    if n_shrunk[l] == 0 {
                        lane.converged = true;
                        live &= !bit;
                        continue;
                    }
                    // converged on the active set: re-check once on the lane's full set
                    n_shrunk[l] = 0;
                    pgmax_old[l] = f32::INFINITY;
                    pgmin_old[l] = f32::NEG_INFINITY;
                    for m in meta.iter_mut() {
                        m.active |= m.member & bit;
                    }
                    restart = true;
                } else {
                    pgmax_old[l] = if pgmax_new[l] <= 0.0 {
                        f32::INFINITY
                    } else {
                        pgmax_new[l]
                    };
                    pgmin_old[l] = if pgmin_new[l] >= 0.0 {
                        f32::NEG_INFINITY
                    } else {
                        pgmin_new[l]
                    };
                }
                if lane.iters >= params.max_iter {
                    live &= !bit;
                }
            }
            if restart {
                active_len = n;
            }
        }
        st.wb[..K].copy_from_slice(&wb);
        st.pgmax_old[..K].copy_from_slice(&pgmax_old);
        st.pgmin_old[..K].copy_from_slice(&pgmin_old);
        st.n_shrunk[..K].copy_from_slice(&n_shrunk);
        st.live = live;
        st.active_len = active_len;
    }

    /// The dense local weights of lane `lane` (a copy, in local feature order) and its bias
    /// feature's weight.
    pub fn weights(&self, lane: usize) -> (Vec<f32>, f64) {
        let k = self.stride;
        let w = &self.w_buf[self.w_off..self.w_off + self.n_features * k];
        (
            (0..self.n_features).map(|j| w[j * k + lane]).collect(),
            self.wb[lane],
        )
    }

    /// The sparse weights of every lane, as [`Solver::emit`] writes them (one pass over the
    /// weights for all lanes).
    pub fn emit(
        &self,
        features: &[u32],
        threshold: f32,
        max_nonzeros: usize,
        bias: f32,
    ) -> Vec<LaneWeights> {
        let k = self.stride;
        let d = self.n_features.min(features.len());
        let w = &self.w_buf[self.w_off..self.w_off + d * k];
        let mut pairs: Vec<Vec<(u32, f32)>> = vec![Vec::new(); self.lanes];
        match k {
            4 => collect_kept::<4>(w, features, threshold, &mut pairs),
            8 => collect_kept::<8>(w, features, threshold, &mut pairs),
            _ => collect_kept::<16>(w, features, threshold, &mut pairs),
        }
        pairs
            .into_iter()
            .enumerate()
            .map(|(l, mut p)| {
                let mut idx = Vec::new();
                let mut val = Vec::new();
                finish_row(&mut p, max_nonzeros, &mut idx, &mut val);
                (idx, val, (self.wb[l] * f64::from(bias)) as f32)
            })
            .collect()
    }
}

/// For each feature row of a feature-major weight block (`K` lanes per row), appends
/// `(feature, w)` to `pairs[lane]` for every lane whose weight is nonzero with
/// `|w| >= threshold` (a SIMD mask per row; rows with nothing kept cost one compare).
fn collect_kept<const K: usize>(
    w: &[f32],
    features: &[u32],
    threshold: f32,
    pairs: &mut [Vec<(u32, f32)>],
) {
    for (row, &f) in w.chunks_exact(K).zip(features) {
        let row: &[f32; K] = row.try_into().expect("K lanes per row");
        let mut keep = 0u32;
        for l in 0..K {
            keep |= u32::from(row[l] != 0.0 && row[l].abs() >= threshold) << l;
        }
        while keep != 0 {
            let l = keep.trailing_zeros() as usize;
            keep &= keep - 1;
            if let Some(p) = pairs.get_mut(l) {
                p.push((f, row[l]));
            }
        }
    }
}

/// Appends `pairs` (distinct features) to `indices`/`values` in feature order, keeping only
/// the `max_nonzeros` largest magnitudes (ties to the lower feature id) when that is not 0.
fn finish_row(
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

    /// A random sparse problem: `n` rows over `d` features (about `per_row` entries each,
    /// values in (0, 1]), rows L2-normalised; signs from a hidden linear rule with `flip`
    /// label noise.
    fn problem(n: usize, d: usize, per_row: usize, flip: f64, seed: u64) -> (Csr, Vec<bool>) {
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

    fn local_all(x: &Csr) -> LocalCsr {
        let rows: Vec<u32> = (0..x.n_rows as u32).collect();
        LocalCsr::gather(&x.view(), &rows, &mut FeatureMap::new(x.n_cols)).unwrap()
    }

    fn params(loss: Loss, tol: f32, max_iter: u32) -> SolverParams {
        SolverParams {
            loss,
            tol,
            max_iter,
            threshold: 0.0,
            ..SolverParams::default()
        }
    }

    /// Dense rows with the bias feature appended (global feature order).
    fn dense_rows(x: &Csr, bias: f64) -> Vec<Vec<f64>> {
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

    fn dotf(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(p, q)| p * q).sum()
    }

    /// Primal objective at `w` (bias weight last).
    fn primal(loss: Loss, w: &[f64], rows: &[Vec<f64>], y: &[f64], c: &[f64]) -> f64 {
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
    fn solver_w(s: &Solver, local: &LocalCsr, d: usize) -> Vec<f64> {
        let mut w = vec![0f64; d + 1];
        for (k, &f) in local.features().iter().enumerate() {
            w[f as usize] = f64::from(s.w[k]);
        }
        w[d] = s.wb;
        w
    }

    /// SVM dual objective `½|Σ y α x̃|² + ½ Σ D α² − Σ α` and the projected-gradient gap,
    /// recomputed in f64 from the duals.
    fn svm_dual(
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

    fn scalar_solve(
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

    #[test]
    fn gather_renumbers_by_frequency() {
        // rows: 0: {2, 5}, 1: {5}, 2: {1, 2, 5}
        let x = Csr::from_triplets(
            3,
            7,
            &[
                (0, 2, 1.0),
                (0, 5, 2.0),
                (1, 5, 3.0),
                (2, 1, 4.0),
                (2, 2, 5.0),
                (2, 5, 6.0),
            ],
        )
        .unwrap();
        let mut map = FeatureMap::new(7);
        let l = LocalCsr::gather(&x.view(), &[2, 0, 0], &mut map).unwrap();
        // counts over rows 2, 0, 0: f5 x3, f2 x3, f1 x1 -> order 2, 5 (tie by id), then 1
        assert_eq!(l.features(), &[2, 5, 1]);
        assert_eq!(l.n_rows(), 3);
        assert_eq!(l.row(0), (&[2u32, 0, 1][..], &[4f32, 5.0, 6.0][..]));
        assert_eq!(l.row(1), (&[0u32, 1][..], &[1f32, 2.0][..]));
        assert_eq!(l.sq_norm, vec![77.0, 5.0, 5.0]);
        // the map is left clean for the next gather
        let l2 = LocalCsr::gather(&x.view(), &[1], &mut map).unwrap();
        assert_eq!(l2.features(), &[5]);
        assert_eq!(l2.row(0), (&[0u32][..], &[3f32][..]));
        assert!(LocalCsr::gather(&x.view(), &[3], &mut map).is_err());
        assert!(LocalCsr::gather(&x.view(), &[0], &mut FeatureMap::new(6)).is_err());
        let empty = LocalCsr::gather(&x.view(), &[], &mut map).unwrap();
        assert_eq!((empty.n_rows(), empty.n_features()), (0, 0));
    }

    #[test]
    fn params_are_validated() {
        assert!(SolverParams::default().validate().is_ok());
        let bad = [
            SolverParams {
                cp: 0.0,
                ..Default::default()
            },
            SolverParams {
                cn: -1.0,
                ..Default::default()
            },
            SolverParams {
                tol: 0.0,
                ..Default::default()
            },
            SolverParams {
                threshold: -0.1,
                ..Default::default()
            },
            SolverParams {
                bias: f32::NAN,
                ..Default::default()
            },
            SolverParams {
                max_iter: 0,
                ..Default::default()
            },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?}");
        }
    }

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

    /// Each lane of a group solve reaches its own problem's optimum (same as a scalar
    /// solve of that problem, within the tolerance), for 1..=16 lanes, both SVM losses,
    /// default and custom costs, and rows outside a lane's problem.
    #[test]
    fn group_lanes_solve_their_own_problems() {
        let (x, _) = problem(90, 30, 7, 0.0, 21);
        let local = local_all(&x);
        let rows = dense_rows(&x, 1.0);
        let mut rng = SplitMix64::new(4);
        let mut gs = GroupSolver::new();
        for loss in [Loss::SquaredHinge, Loss::Hinge] {
            for lanes in [1usize, 3, 4, 7, 8, 13, 16] {
                let custom = lanes % 2 == 1;
                let p = params(loss, 1e-4, 10_000);
                gs.reset(x.n_rows, lanes, true, 1.0, 0.5);
                // per lane: signs, costs (0 = not a member)
                let mut probs: Vec<(Vec<bool>, Vec<f64>)> = Vec::new();
                for l in 0..lanes {
                    let mut ys = vec![false; x.n_rows];
                    let mut cs = vec![0.5; x.n_rows];
                    for i in 0..x.n_rows {
                        let u = rng.next_f64();
                        if u < 0.15 {
                            ys[i] = true;
                            cs[i] = if custom {
                                0.3 + rng.next_f64() * 2.0
                            } else {
                                1.0
                            };
                            gs.set(i, l, true, cs[i] as f32);
                        } else if u < 0.25 {
                            cs[i] = 0.0;
                            gs.set(i, l, false, 0.0);
                        }
                        cs[i] = f64::from(cs[i] as f32);
                    }
                    probs.push((ys, cs));
                }
                let info = gs.solve(&local, &p, 99).unwrap();
                let out = gs.emit(local.features(), 0.0, 0, 1.0);
                assert_eq!(out.len(), lanes);
                for l in 0..lanes {
                    assert!(info[l].converged, "{loss:?} lanes {lanes} lane {l}");
                    let (ys, cs) = &probs[l];
                    assert_eq!(gs.n_instances(l), cs.iter().filter(|&&c| c > 0.0).count());
                    let (s, _) = scalar_solve(&local, ys, cs, &p, 5);
                    let ref_w = solver_w(&s, &local, x.n_cols);
                    let mut w = vec![0f64; x.n_cols + 1];
                    let (gw, gb) = gs.weights(l);
                    for (k, &f) in local.features().iter().enumerate() {
                        w[f as usize] = f64::from(gw[k]);
                    }
                    w[x.n_cols] = gb;
                    // the emitted row is the same weights, sorted by feature
                    let (ei, ev, eb) = &out[l];
                    assert!(ei.windows(2).all(|p| p[0] < p[1]));
                    for (&f, &v) in ei.iter().zip(ev) {
                        assert_eq!(v as f64, w[f as usize]);
                    }
                    assert_eq!(*eb, gb as f32);
                    let yv: Vec<f64> = ys.iter().map(|&b| if b { 1.0 } else { -1.0 }).collect();
                    let (pg, pr) = (
                        primal(loss, &w, &rows, &yv, cs),
                        primal(loss, &ref_w, &rows, &yv, cs),
                    );
                    assert!(
                        (pg - pr).abs() <= 2e-3 * (1.0 + pr),
                        "{loss:?} lanes {lanes} lane {l}: {pg} vs {pr}"
                    );
                }
            }
        }
        let lr = params(Loss::Logistic, 0.1, 10);
        assert!(gs.solve(&local, &lr, 0).is_err());
        gs.reset(3, 2, true, 1.0, 1.0);
        assert!(gs.solve(&local, &SolverParams::default(), 0).is_err());
    }

    #[test]
    fn narrowing_does_not_change_results() {
        let (x, y) = problem(400, 120, 10, 0.1, 12);
        let local = local_all(&x);
        for lanes in [7usize, 16] {
            let mut narrowed = 0;
            let run = |no_narrowing: bool, narrowed: &mut usize| {
                let mut gs = GroupSolver {
                    no_narrowing,
                    ..GroupSolver::new()
                };
                gs.reset(x.n_rows, lanes, true, 1.0, 1.0);
                for (i, &yi) in y.iter().enumerate() {
                    // lanes of very different sizes converge at different passes
                    if yi && i % (lanes + 3) < lanes {
                        gs.set(i, i % (lanes + 3), true, 1.0 + (i % 3) as f32);
                    }
                }
                let info = gs.solve(&local, &SolverParams::default(), 5).unwrap();
                *narrowed += usize::from(gs.in_work);
                let out = gs.emit(local.features(), 0.0, 0, 1.0);
                let iters: Vec<u32> = info.iter().map(|i| i.iters).collect();
                let bits: Vec<_> = out
                    .iter()
                    .map(|(i, v, b)| {
                        (
                            i.clone(),
                            v.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
                            b.to_bits(),
                        )
                    })
                    .collect();
                (iters, bits)
            };
            let a = run(false, &mut narrowed);
            let b = run(true, &mut narrowed);
            assert_eq!(
                narrowed, 1,
                "lanes {lanes}: the narrowing path was not taken"
            );
            assert_eq!(a, b, "lanes {lanes}");
        }
    }

    #[test]
    fn group_dispatch_variants_agree_bit_for_bit() {
        let (x, y) = problem(300, 200, 12, 0.1, 8);
        let local = local_all(&x);
        for lanes in [4usize, 8, 16] {
            let run = |avx2: bool| {
                let mut gs = GroupSolver::new();
                gs.reset(x.n_rows, lanes, true, 1.0, 1.0);
                for (i, &yi) in y.iter().enumerate() {
                    if yi {
                        gs.set(i, i % lanes, true, 1.0);
                    }
                }
                gs.solve_dispatch(&local, &SolverParams::default(), 3, avx2)
                    .unwrap();
                (0..lanes)
                    .map(|l| {
                        let (w, b) = gs.weights(l);
                        (
                            w.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            b.to_bits(),
                        )
                    })
                    .collect::<Vec<_>>()
            };
            if !std::is_x86_feature_detected!("avx2") || !std::is_x86_feature_detected!("fma") {
                return;
            }
            assert_eq!(run(false), run(true), "lanes {lanes}");
        }
    }
}
