//! The lock-step group solver: up to [`MAX_LANES`] sibling SVM problems on the same rows.
//!
//! A [`GroupSolver`] runs up to [`MAX_LANES`] sibling problems on the same rows in lock-step
//! (one visit of a row serves every lane, with SIMD over lanes), prefetching the rows and
//! duals of the visits a few steps ahead, since visits follow a random order, and their
//! weight rows too when the weights exceed [`CACHE_BYTES`]. Its lane machinery is in
//! `lanes.rs`.

use super::lanes::{
    aligned_offset, axpy_lanes, collect_kept, dense_axpys, dense_dots, dot_lanes, has_avx2_f16c,
    prefetch, prefetch_range, LaneState, Meta, PREFETCH_DIST,
};
use super::local::LocalCsr;
use super::single::{finish_row, SolveInfo};
use crate::cluster::SplitMix64;
use crate::simd::CACHE_BYTES;
use crate::xr::{Loss, SolverParams};
use crate::{Error, Result};

/// The most children solved together by a [`GroupSolver`].
pub const MAX_LANES: usize = 16;

/// Per-lane results of a [`GroupSolver`] solve.
pub type GroupInfo = [SolveInfo; MAX_LANES];

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
    /// The dense block's weights, lane-major by original lane (`lanes * n_dense`): a visit
    /// computes and updates only the lanes where the row is active (and changed), so their
    /// cost follows the active lanes, not the width of the group.
    wd: Vec<f32>,
    n_dense: usize,
    /// Sparse weights, `n_features * stride` (sparse local features), feature-major; starts
    /// at `w_off` (64-byte aligned).
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

    /// Solves every lane (SVM losses only; see [`Solver`](super::Solver) for logistic regression).
    ///
    /// Errors: a logistic loss, or a workspace not [`reset`](GroupSolver::reset) for
    /// `x.n_rows()` rows.
    pub fn solve(&mut self, x: &LocalCsr, params: &SolverParams, seed: u64) -> Result<GroupInfo> {
        let avx2 = has_avx2_f16c();
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
        let d = x.n_sparse();
        let n = x.n_rows();
        self.n_features = d;
        self.n_dense = x.n_dense();
        self.wd.clear();
        self.wd.resize(self.lanes * x.n_dense(), 0.0);
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
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run_avx2<const K: usize>(
        &mut self,
        x: &LocalCsr,
        params: &SolverParams,
        rng: &mut SplitMix64,
        info: &mut GroupInfo,
        st: &mut LaneState,
    ) {
        self.run_body::<K, true>(x, params, rng, info, st)
    }

    fn run<const K: usize>(
        &mut self,
        x: &LocalCsr,
        params: &SolverParams,
        rng: &mut SplitMix64,
        info: &mut GroupInfo,
        st: &mut LaneState,
    ) {
        self.run_body::<K, false>(x, params, rng, info, st)
    }

    /// Runs passes in the `K`-lane layout until every lane has finished or (for `K > 4`) at
    /// most `K / 2` lanes are still running. Same arithmetic in both dispatch variants, so
    /// results are identical.
    #[inline(always)]
    fn run_body<const K: usize, const AVX2: bool>(
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
        let d = x.n_sparse();
        let nd = x.n_dense();
        let xh = &x.dense.bits[..];
        let wd = &mut self.wd[..];
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
                    if nd > 0 {
                        prefetch_range(&xh[j * nd..(j + 1) * nd]);
                    }
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
                let mut dots = dot_lanes::<K>(w, idx, val);
                let xd = &xh[i * nd..(i + 1) * nd];
                let unscale = if nd > 0 { x.dense.unscale(i) } else { 1.0 };
                if nd > 0 {
                    // the dense part only where it is read: lanes active for this row
                    dense_dots::<K, AVX2>(&mut dots, am, &orig, wd, xd, unscale);
                }
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
                    if nd > 0 {
                        dense_axpys::<K, AVX2>(&delta, &orig, wd, xd, unscale);
                    }
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

    /// The local weights of lane `lane` (a copy: the sparse local features, then the dense
    /// block's) and its bias feature's weight.
    pub fn weights(&self, lane: usize) -> (Vec<f32>, f64) {
        let k = self.stride;
        let w = &self.w_buf[self.w_off..self.w_off + self.n_features * k];
        let nd = self.n_dense;
        (
            (0..self.n_features)
                .map(|j| w[j * k + lane])
                .chain(self.wd[lane * nd..(lane + 1) * nd].iter().copied())
                .collect(),
            self.wb[lane],
        )
    }

    /// The dense block's weights of lane `lane`, kept whole: they are stored densely.
    pub fn dense_weights(&self, lane: usize) -> Vec<f32> {
        let nd = self.n_dense;
        self.wd[lane * nd..(lane + 1) * nd].to_vec()
    }

    /// The sparse weights of every lane, as [`Solver::emit`](super::Solver::emit) writes them (one
    /// pass over the weights for all lanes).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xr::solver::testutil::{
        dense_rows, local_all, params, primal, problem, scalar_solve, solver_w,
    };

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
