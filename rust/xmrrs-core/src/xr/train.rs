//! XR-Linear training: one layer of binary problems per tree level, solved parent by parent.
//!
//! **Layers.** Layer `m` (`0..=depth`) scores the nodes of tree level `m + 1` given their
//! parents at level `m`; the last layer (`m == depth`) scores the labels, in the tree's leaf
//! order (`tree.labels()`), grouped by leaf. A tree of depth 0 gives one layer: one-vs-all
//! over every label under a single parent.
//!
//! **Label chain.** `K_depth` is `Y` with its columns in leaf order; `K_{m-1}` marks, for each
//! instance, the parents of the nodes marked in `K_m` (a node indicator per level, computed
//! by mapping and de-duplicating ids, no float products). The positives of child `c` at
//! layer `m` are the instances marked in column `c` of `K_m` (only `Y`'s sparsity pattern
//! counts, as in PECOS; its values are ignored).
//!
//! **Matching** (which instances train the children of parent `p`, see [`Negatives`]):
//! layer 0 uses every instance. Below it, `tfn` takes the instances with a true label under
//! `p` (column `p` of `K_{m-1}`), `man` the instances whose beam search on the training set
//! ([`beam_match`] over the layers trained so far, beam `man_beam_size`, post-processor
//! `man_post_processor`) reaches `p`; with both, their union. The positives of a child are
//! always included. Every instance of the parent's set that is not a positive of child `c`
//! is a negative of `c` (with `man` alone, only those the beam matched to `p`).
//!
//! **Costs.** A positive costs `Cp · r` (`r` = its relevance at the label layer, 1
//! elsewhere or without relevance; positives of relevance 0 are left out), a negative `Cn`.
//!
//! **Edge cases.** A label (or node) without positives gets a scorer trained on negatives
//! only; a parent that no instance reaches gets all-zero scorers (bias 0). A row without
//! labels is a negative of every top-level node at layer 0; under `tfn` it plays no part
//! below, under `man` it is a negative wherever its beam goes.
//!
//! **Work and determinism.** All children of a parent share its instance set: the rows are
//! gathered once into a [`LocalCsr`] (features renumbered, so each solve uses a dense weight
//! vector of the subset's width, never `d`), then every child is solved on it. Parents run in
//! parallel and so do the children of each parent (nested rayon). Each child's solve draws
//! its visiting order from a stream seeded by `(seed, layer, child)`, and rows are assembled
//! in child order, so the weights are bit-identical for any thread count.

use std::sync::Mutex;

use rayon::prelude::*;

use super::solver::{FeatureMap, GroupSolver, LocalCsr, Solver, MAX_LANES};
use super::{LayerWeights, Loss, Negatives, PostProcessor, SolverParams};
use crate::cluster::{ClusterTree, SplitMix64};
use crate::sparse::{
    balanced_ranges, build_rows, by_score_desc, check_finite, col_gather, default_parts, transpose,
    Csr, CsrView,
};
use crate::{Error, Result};

/// Settings of [`train_layers`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainParams {
    /// The binary problems (loss, costs, stopping, bias, sparsification).
    pub solver: SolverParams,
    /// Where negatives come from below layer 0 (at least one of `tfn`, `man`).
    pub negatives: Negatives,
    /// Beam width of the training-set search used by `man` (>= 1; unused without `man`).
    pub man_beam_size: usize,
    /// Score transform of that search.
    pub man_post_processor: PostProcessor,
    /// Seed of every visiting order.
    pub seed: u64,
}

impl Default for TrainParams {
    /// PECOS's defaults: squared-hinge SVM (Cp = Cn = 1, 100 passes, tol 0.1, bias 1,
    /// threshold 0.1), `tfn` negatives, beam 10 with `l3-hinge` for `man`, seed 0.
    fn default() -> Self {
        TrainParams {
            solver: SolverParams::default(),
            negatives: Negatives {
                tfn: true,
                man: false,
            },
            man_beam_size: 10,
            man_post_processor: PostProcessor::Hinge(3),
            seed: 0,
        }
    }
}

impl TrainParams {
    /// Checks the solver settings, that some source of negatives is on, and the beam.
    pub fn validate(&self) -> Result<()> {
        self.solver.validate()?;
        if !self.negatives.tfn && !self.negatives.man {
            return Err(Error::invalid(
                "negatives: at least one of tfn and man must be enabled",
            ));
        }
        if self.negatives.man && self.man_beam_size == 0 {
            return Err(Error::invalid("man_beam_size must be >= 1"));
        }
        Ok(())
    }
}

/// Per-layer counters of a training run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerStats {
    /// Number of binary problems (children).
    pub n_problems: usize,
    /// Sum over problems of the number of instances.
    pub n_instances: u64,
    /// Sum over problems of the outer passes run.
    pub n_passes: u64,
    /// Sum over problems of the coordinate visits.
    pub n_visits: u64,
    /// Problems that hit `max_iter` before the stopping test passed.
    pub n_unconverged: usize,
    /// Stored weights (the bias terms not counted).
    pub nnz: usize,
    /// Wall time of the layer, seconds (the matching search included).
    pub seconds: f64,
}

/// A free list of workspaces shared by the threads of one training run.
struct Pool<T> {
    items: Mutex<Vec<T>>,
}

impl<T> Pool<T> {
    fn new() -> Self {
        Pool {
            items: Mutex::new(Vec::new()),
        }
    }
    fn with<R>(&self, make: impl FnOnce() -> T, f: impl FnOnce(&mut T) -> R) -> R {
        let taken = self.items.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut item = taken.unwrap_or_else(make);
        let out = f(&mut item);
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(item);
        out
    }
}

/// Trains every layer of an XR-Linear model over `tree` (see the module docs).
///
/// - `x`: `(n, d)` features (rows L2-normalised by the caller, as PECOS expects; a
///   non-canonical `x` is canonicalised into a copy).
/// - `y`: `(n, L)` label indicators, canonical, labels in their original ids; only the
///   sparsity pattern is used.
/// - `relevance`: optional `(n, L)` costs with exactly `y`'s pattern, values `>= 0`; a
///   positive's cost at the label layer becomes `Cp · r`.
///
/// Returns `depth + 1` layers; layer `m` has `child_ptr = tree.child_ptr(m)` (`leaf_ptr` for
/// the last) and `d` columns.
///
/// Errors: shapes that disagree, a non-canonical `y`, a relevance pattern unlike `y`'s,
/// negative or non-finite values, invalid parameters.
pub fn train_layers(
    x: &CsrView<'_>,
    y: &CsrView<'_>,
    tree: &ClusterTree,
    params: &TrainParams,
    relevance: Option<&CsrView<'_>>,
) -> Result<Vec<LayerWeights>> {
    train_layers_with_stats(x, y, tree, params, relevance).map(|(w, _)| w)
}

/// [`train_layers`] that also returns per-layer counters.
pub fn train_layers_with_stats(
    x: &CsrView<'_>,
    y: &CsrView<'_>,
    tree: &ClusterTree,
    params: &TrainParams,
    relevance: Option<&CsrView<'_>>,
) -> Result<(Vec<LayerWeights>, Vec<LayerStats>)> {
    params.validate()?;
    let n = x.n_rows();
    if y.n_rows() != n {
        return Err(Error::shape(format!(
            "X has {n} rows but Y has {}",
            y.n_rows()
        )));
    }
    if y.n_cols() != tree.n_labels() {
        return Err(Error::shape(format!(
            "Y has {} columns but the tree has {} labels",
            y.n_cols(),
            tree.n_labels()
        )));
    }
    if n > u32::MAX as usize {
        return Err(Error::invalid("too many rows for u32 instance ids"));
    }
    check_finite(x.data(), "X")?;
    check_finite(y.data(), "Y")?;
    if !y.is_canonical() {
        return Err(Error::invalid(
            "Y must be canonical (sorted, unique label ids in each row)",
        ));
    }
    if let Some(r) = relevance {
        if r.n_rows() != n || r.n_cols() != y.n_cols() {
            return Err(Error::shape(format!(
                "relevance is ({}, {}) but Y is ({n}, {})",
                r.n_rows(),
                r.n_cols(),
                y.n_cols()
            )));
        }
        if r.indptr() != y.indptr() || r.indices() != y.indices() {
            return Err(Error::invalid(
                "relevance must have exactly the sparsity pattern of Y",
            ));
        }
        check_finite(r.data(), "relevance")?;
        if let Some(v) = r.data().iter().find(|&&v| v < 0.0) {
            return Err(Error::invalid(format!(
                "relevance values must be >= 0, got {v}"
            )));
        }
    }
    let x_owned;
    let x = if x.is_canonical() {
        *x
    } else {
        x_owned = x.canonicalize();
        x_owned.view()
    };

    let depth = tree.depth();
    let ptr_of = |m: usize| -> &[u32] {
        if m < depth {
            tree.child_ptr(m).unwrap_or(&[])
        } else {
            tree.leaf_ptr()
        }
    };
    // Node -> instance lists of every layer's children (KT[m] = K_m transposed), bottom up.
    let mut kt: Vec<Csr> = Vec::with_capacity(depth + 1);
    let mut k = col_gather(y, tree.labels())?;
    let rel_t = match relevance {
        Some(r) => Some(transpose(&col_gather(r, tree.labels())?.view())),
        None => None,
    };
    for m in (0..=depth).rev() {
        kt.push(transpose(&k.view()));
        if m > 0 {
            k = aggregate(&k.view(), ptr_of(m));
        }
    }
    drop(k);
    kt.reverse();

    let fmaps: Pool<FeatureMap> = Pool::new();
    let solvers: Pool<Solver> = Pool::new();
    let groups: Pool<GroupSolver> = Pool::new();
    let mut layers: Vec<LayerWeights> = Vec::with_capacity(depth + 1);
    let mut stats: Vec<LayerStats> = Vec::with_capacity(depth + 1);
    let mut beam: Option<Csr> = None;
    for m in 0..=depth {
        let t0 = std::time::Instant::now();
        let man_t = if params.negatives.man && m > 0 {
            let prev = layers.last().expect("m > 0");
            let b = beam_match(
                &x,
                beam.as_ref().map(|b| b.view()).as_ref(),
                prev,
                params.man_beam_size,
                params.man_post_processor,
            )?;
            let t = transpose(&b.view());
            beam = Some(b);
            Some(t)
        } else {
            None
        };
        let ctx = LayerCtx {
            x: &x,
            layer: m,
            ptr: ptr_of(m),
            pos: &kt[m],
            rel: if m == depth { rel_t.as_ref() } else { None },
            tfn: if m > 0 { Some(&kt[m - 1]) } else { None },
            man: man_t.as_ref(),
            use_tfn: params.negatives.tfn,
            params,
            fmaps: &fmaps,
            solvers: &solvers,
            groups: &groups,
        };
        let (lw, mut st) = ctx.train()?;
        st.seconds = t0.elapsed().as_secs_f64();
        if std::env::var_os("XMRRS_DBG").is_some() {
            let cs = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
            let f: Vec<f64> = cs
                .rsplit_once(')')
                .map_or("", |p| p.1)
                .split_whitespace()
                .map(|v| v.parse::<f64>().unwrap_or(0.0))
                .collect();
            eprintln!(
                "DBG layer {m} done, process cpu {:.2}",
                (f[11] + f[12]) / 100.0
            );
        }
        layers.push(lw);
        stats.push(st);
    }
    Ok((layers, stats))
}

/// The parent indicator of a node indicator: row `i` marks the parents (per `ptr`, a child
/// pointer) of the nodes marked in row `i` of `k`. Rows of `k` must be canonical.
fn aggregate(k: &CsrView<'_>, ptr: &[u32]) -> Csr {
    let n_parents = ptr.len().saturating_sub(1);
    let mut parent = Vec::with_capacity(k.n_cols());
    for (p, w) in ptr.windows(2).enumerate() {
        parent.extend(std::iter::repeat_n(p as u32, (w[1] - w[0]) as usize));
    }
    let ranges = balanced_ranges(k.indptr(), default_parts(k.n_rows()));
    build_rows(k.n_rows(), n_parents, ranges, |r, lens, idx, val| {
        for i in r {
            let before = idx.len();
            // children of a parent are contiguous, so parents of sorted ids are sorted
            for &c in k.row(i).0 {
                let p = parent[c as usize];
                if idx.len() == before || *idx.last().unwrap_or(&u32::MAX) != p {
                    idx.push(p);
                    val.push(1.0);
                }
            }
            lens.push((idx.len() - before) as u64);
        }
    })
}

/// Sorted union of two sorted id lists.
fn union_sorted(a: &[u32], b: &[u32], out: &mut Vec<u32>) {
    out.clear();
    out.reserve(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
}

/// Everything one layer's training reads.
struct LayerCtx<'a> {
    x: &'a CsrView<'a>,
    layer: usize,
    ptr: &'a [u32],
    /// Child -> positive instances (sorted).
    pos: &'a Csr,
    /// Child -> relevance of those positives (same pattern), label layer only.
    rel: Option<&'a Csr>,
    /// Parent -> instances with a true label under it (None at layer 0).
    tfn: Option<&'a Csr>,
    /// Parent -> instances the beam matched to it.
    man: Option<&'a Csr>,
    use_tfn: bool,
    params: &'a TrainParams,
    fmaps: &'a Pool<FeatureMap>,
    solvers: &'a Pool<Solver>,
    groups: &'a Pool<GroupSolver>,
}

/// The trained rows of one child.
struct ChildOut {
    indices: Vec<u32>,
    values: Vec<f32>,
    bias: f32,
    iters: u32,
    visits: u64,
    converged: bool,
    n_instances: usize,
}

impl LayerCtx<'_> {
    fn row_ids(m: &Csr, p: usize) -> &[u32] {
        &m.indices[m.indptr[p] as usize..m.indptr[p + 1] as usize]
    }

    fn train(&self) -> Result<(LayerWeights, LayerStats)> {
        let n_parents = self.ptr.len() - 1;
        let blocks: Vec<Vec<ChildOut>> = (0..n_parents)
            .into_par_iter()
            .with_max_len(1)
            .map(|p| self.train_parent(p))
            .collect::<Result<_>>()?;
        let n_children = self.ptr[n_parents] as usize;
        let nnz: usize = blocks.iter().flatten().map(|c| c.indices.len()).sum();
        let mut indptr = Vec::with_capacity(n_children + 1);
        let mut indices = Vec::with_capacity(nnz);
        let mut data = Vec::with_capacity(nnz);
        let mut bias = Vec::with_capacity(n_children);
        let mut st = LayerStats {
            n_problems: n_children,
            nnz,
            ..Default::default()
        };
        indptr.push(0u64);
        for c in blocks.into_iter().flatten() {
            indices.extend_from_slice(&c.indices);
            data.extend_from_slice(&c.values);
            indptr.push(indices.len() as u64);
            bias.push(c.bias);
            st.n_passes += u64::from(c.iters);
            st.n_visits += c.visits;
            st.n_instances += c.n_instances as u64;
            st.n_unconverged += usize::from(!c.converged);
        }
        let weights = Csr {
            n_rows: n_children,
            n_cols: self.x.n_cols(),
            indptr,
            indices,
            data,
        };
        Ok((
            LayerWeights {
                child_ptr: self.ptr.to_vec(),
                weights,
                bias,
            },
            st,
        ))
    }

    fn train_parent(&self, p: usize) -> Result<Vec<ChildOut>> {
        let children = self.ptr[p] as usize..self.ptr[p + 1] as usize;
        // The parent's instance set (sorted) and, when not every member is matched, which are.
        let mut set: Vec<u32> = Vec::new();
        let mut matched: Option<Vec<bool>> = None;
        match (self.tfn, self.man) {
            (None, _) => set.extend(0..self.x.n_rows() as u32),
            (Some(t), None) => set.extend_from_slice(Self::row_ids(t, p)),
            (Some(t), Some(m)) => {
                let (tp, mp) = (Self::row_ids(t, p), Self::row_ids(m, p));
                union_sorted(tp, mp, &mut set);
                if !self.use_tfn {
                    let mut flags = vec![false; set.len()];
                    let mut q = 0;
                    for (r, &i) in set.iter().enumerate() {
                        while q < mp.len() && mp[q] < i {
                            q += 1;
                        }
                        flags[r] = q < mp.len() && mp[q] == i;
                    }
                    matched = Some(flags);
                }
            }
        }
        if set.is_empty() {
            return Ok(children
                .map(|_| ChildOut {
                    indices: vec![],
                    values: vec![],
                    bias: 0.0,
                    iters: 0,
                    visits: 0,
                    converged: true,
                    n_instances: 0,
                })
                .collect());
        }
        let d = self.x.n_cols();
        let local = self.fmaps.with(
            || FeatureMap::new(d),
            |fm| LocalCsr::gather(self.x, &set, fm),
        )?;
        let sp = &self.params.solver;
        if sp.loss == Loss::Logistic {
            return children
                .into_par_iter()
                .with_max_len(1)
                .map(|c| self.train_child(c, &set, matched.as_deref(), &local))
                .collect();
        }
        let c0 = children.start;
        let groups: Vec<std::ops::Range<usize>> = children
            .clone()
            .step_by(MAX_LANES)
            .map(|g| g..(g + MAX_LANES).min(children.end))
            .collect();
        let outs: Vec<Vec<ChildOut>> = groups
            .into_par_iter()
            .with_max_len(1)
            .map(|g| self.train_group(g, &set, matched.as_deref(), &local))
            .collect::<Result<_>>()?;
        debug_assert_eq!(
            outs.iter().map(|o| o.len()).sum::<usize>(),
            children.end - c0
        );
        Ok(outs.into_iter().flatten().collect())
    }

    /// Positive instances of child `c` and their relevance (if any).
    fn positives(&self, c: usize) -> (&[u32], Option<&[f32]>) {
        let r = self.pos.indptr[c] as usize..self.pos.indptr[c + 1] as usize;
        (
            &self.pos.indices[r.clone()],
            self.rel.map(|rel| &rel.data[r]),
        )
    }

    /// Solves children `g` of one parent together (SVM losses).
    fn train_group(
        &self,
        g: std::ops::Range<usize>,
        set: &[u32],
        matched: Option<&[bool]>,
        local: &LocalCsr,
    ) -> Result<Vec<ChildOut>> {
        let sp = &self.params.solver;
        let lanes = g.len();
        self.groups.with(GroupSolver::new, |gs| {
            gs.reset(set.len(), lanes, matched.is_none(), sp.cp, sp.cn);
            if let Some(flags) = matched {
                for (r, _) in flags.iter().enumerate().filter(|f| *f.1) {
                    for l in 0..lanes {
                        gs.set(r, l, false, sp.cn);
                    }
                }
            }
            for (l, c) in g.clone().enumerate() {
                let (pos, rel) = self.positives(c);
                for (q, i) in pos.iter().enumerate() {
                    let r = set.binary_search(i).map_err(|_| {
                        Error::invalid("internal: a positive lies outside its parent's set")
                    })?;
                    let r_i = rel.map_or(1.0, |v| v[q]);
                    gs.set(r, l, true, sp.cp * r_i);
                }
            }
            let seed =
                SplitMix64::derived(self.params.seed, self.layer as u64, g.start as u64).next_u64();
            let info = gs.solve(local, sp, seed)?;
            let out = gs.emit(
                local.features(),
                sp.threshold,
                sp.max_nonzeros_per_node,
                sp.bias,
            );
            Ok(out
                .into_iter()
                .enumerate()
                .map(|(l, (indices, values, bias))| ChildOut {
                    indices,
                    values,
                    bias,
                    iters: info[l].iters,
                    visits: info[l].visits,
                    converged: info[l].converged,
                    n_instances: gs.n_instances(l),
                })
                .collect())
        })
    }

    /// Solves child `c` alone (logistic loss).
    fn train_child(
        &self,
        c: usize,
        set: &[u32],
        matched: Option<&[bool]>,
        local: &LocalCsr,
    ) -> Result<ChildOut> {
        let sp = &self.params.solver;
        let (cp, cn) = (f64::from(sp.cp), f64::from(sp.cn));
        let (pos, rel) = self.positives(c);
        self.solvers.with(Solver::new, |solver| {
            solver.clear();
            let mut q = 0usize;
            for (r, &i) in set.iter().enumerate() {
                if q < pos.len() && pos[q] == i {
                    let r_i = rel.map_or(1.0, |v| f64::from(v[q]));
                    solver.push(r as u32, true, cp * r_i);
                    q += 1;
                } else if matched.is_none_or(|f| f[r]) {
                    solver.push(r as u32, false, cn);
                }
            }
            if q != pos.len() {
                return Err(Error::invalid(
                    "internal: a positive lies outside its parent's set",
                ));
            }
            let seed =
                SplitMix64::derived(self.params.seed, self.layer as u64, c as u64).next_u64();
            let info = solver.solve(local, sp, seed)?;
            let mut indices = Vec::new();
            let mut values = Vec::new();
            let bias = solver.emit(
                local.features(),
                sp.threshold,
                sp.max_nonzeros_per_node,
                sp.bias,
                &mut indices,
                &mut values,
            );
            Ok(ChildOut {
                indices,
                values,
                bias,
                iters: info.iters,
                visits: info.visits,
                converged: info.converged,
                n_instances: solver.n_instances(),
            })
        })
    }
}

fn check_layer_input(x: &CsrView<'_>, layer: &LayerWeights) -> Result<()> {
    if layer.weights.n_cols != x.n_cols() {
        return Err(Error::shape(format!(
            "the layer has {} feature columns but X has {}",
            layer.weights.n_cols,
            x.n_cols()
        )));
    }
    if layer.child_ptr.len() < 2
        || layer.child_ptr.last().copied().unwrap_or(0) as usize != layer.weights.n_rows
        || layer.bias.len() != layer.weights.n_rows
    {
        return Err(Error::invalid(
            "malformed layer (see LayerWeights::validate)",
        ));
    }
    Ok(())
}

/// One step of beam search: expands each row's beam at the parents' level to the children
/// of `layer`, scores them and keeps the best `beam`.
///
/// `prev` is the `(n, n_parents)` beam (values: path scores); `None` means the root alone
/// (score `pp.root_score()`, the layer must have one parent). A child's score is
/// `pp.combine(parent score, pp.transform(w_c · x + b_c))`. Returns the `(n, n_children)`
/// beam, each row canonical with at most `beam` entries (ties to the lower child id).
///
/// This is the plain kernel used for `man` matching on the training set: the weights are
/// transposed to feature-major once per call; rows run in parallel, and for each parent in
/// the beam every query feature walks its weight list over that parent's children (a
/// forward cursor per feature, parents visited in increasing order).
pub fn beam_match(
    x: &CsrView<'_>,
    prev: Option<&CsrView<'_>>,
    layer: &LayerWeights,
    beam: usize,
    pp: PostProcessor,
) -> Result<Csr> {
    if beam == 0 {
        return Err(Error::invalid("beam size must be >= 1"));
    }
    check_layer_input(x, layer)?;
    let n_parents = layer.n_parents();
    match prev {
        Some(p) if p.n_rows() != x.n_rows() || p.n_cols() != n_parents => {
            return Err(Error::shape(format!(
                "previous beam is ({}, {}), expected ({}, {n_parents})",
                p.n_rows(),
                p.n_cols(),
                x.n_rows()
            )))
        }
        None if n_parents != 1 => {
            return Err(Error::invalid(
                "without a previous beam the layer must have exactly one parent",
            ))
        }
        _ => {}
    }
    // Feature-major copy of the weights: row j lists (child, weight) by increasing child.
    let wt = transpose(&layer.weights.view());
    let max_children = layer
        .child_ptr
        .windows(2)
        .map(|w| (w[1] - w[0]) as usize)
        .max()
        .unwrap_or(0);
    let ranges = balanced_ranges(x.indptr(), default_parts(x.n_rows()));
    Ok(build_rows(
        x.n_rows(),
        layer.n_children(),
        ranges,
        |r, lens, idx, val| {
            let mut acc = vec![0f32; max_children];
            let mut cursor: Vec<usize> = Vec::new();
            let mut cand: Vec<(f32, u32)> = Vec::new();
            let root = [(0u32, pp.root_score())];
            let mut parents: Vec<(u32, f32)> = Vec::new();
            for i in r {
                let (xi, xv) = x.row(i);
                parents.clear();
                match prev {
                    Some(p) => {
                        let (pi, pv) = p.row(i);
                        parents.extend(pi.iter().copied().zip(pv.iter().copied()));
                    }
                    None => parents.extend_from_slice(&root),
                }
                // one cursor per query feature, moving forward as parents increase
                cursor.clear();
                cursor.extend(xi.iter().map(|&j| wt.indptr[j as usize] as usize));
                cand.clear();
                for &(p, s) in &parents {
                    let c0 = layer.child_ptr[p as usize];
                    let c1 = layer.child_ptr[p as usize + 1];
                    let acc = &mut acc[..(c1 - c0) as usize];
                    acc.copy_from_slice(&layer.bias[c0 as usize..c1 as usize]);
                    for ((&j, &v), cur) in xi.iter().zip(xv).zip(cursor.iter_mut()) {
                        let end = wt.indptr[j as usize + 1] as usize;
                        let col = &wt.indices[*cur..end];
                        let mut k = if col.first().is_some_and(|&c| c < c0) {
                            col.partition_point(|&c| c < c0)
                        } else {
                            0
                        };
                        while k < col.len() && col[k] < c1 {
                            acc[(col[k] - c0) as usize] += v * wt.data[*cur + k];
                            k += 1;
                        }
                        *cur += k;
                    }
                    for (t, &m) in acc.iter().enumerate() {
                        cand.push((pp.combine(s, pp.transform(m)), c0 + t as u32));
                    }
                }
                let better = |a: &(f32, u32), b: &(f32, u32)| by_score_desc(*a, *b);
                if cand.len() > beam {
                    cand.select_nth_unstable_by(beam - 1, better);
                    cand.truncate(beam);
                }
                cand.sort_unstable_by_key(|c| c.1);
                for &(s, c) in &cand {
                    idx.push(c);
                    val.push(s);
                }
                lens.push(cand.len() as u64);
            }
        },
    ))
}

/// Beam search through all layers with [`beam_match`]: `beam` on inner layers, `topk` on
/// the last; returns `(n, L)` path scores with columns in label ids (rows canonical).
///
/// Errors: layers that do not fit `tree` or `x`, `beam == 0` or `topk == 0`.
pub fn predict_beam(
    x: &CsrView<'_>,
    layers: &[LayerWeights],
    tree: &ClusterTree,
    beam: usize,
    topk: usize,
    pp: PostProcessor,
) -> Result<Csr> {
    if topk == 0 {
        return Err(Error::invalid("topk must be >= 1"));
    }
    let depth = tree.depth();
    if layers.len() != depth + 1 {
        return Err(Error::shape(format!(
            "{} layers for a tree of depth {depth}",
            layers.len()
        )));
    }
    for (m, l) in layers.iter().enumerate() {
        let want = if m < depth {
            tree.child_ptr(m).unwrap_or(&[])
        } else {
            tree.leaf_ptr()
        };
        if l.child_ptr != want {
            return Err(Error::invalid(format!(
                "layer {m}'s child_ptr does not match the tree"
            )));
        }
    }
    let mut cur: Option<Csr> = None;
    for (m, l) in layers.iter().enumerate() {
        let k = if m == depth { topk } else { beam };
        let next = beam_match(x, cur.as_ref().map(|c| c.view()).as_ref(), l, k, pp)?;
        cur = Some(next);
    }
    let leaf_order = cur.unwrap_or_default();
    let labels = tree.labels();
    let ranges = balanced_ranges(&leaf_order.indptr, default_parts(leaf_order.n_rows));
    let lv = leaf_order.view();
    Ok(build_rows(
        leaf_order.n_rows,
        tree.n_labels(),
        ranges,
        |r, lens, idx, val| {
            let mut buf: Vec<(u32, f32)> = Vec::new();
            for i in r {
                let (ci, cv) = lv.row(i);
                buf.clear();
                buf.extend(
                    ci.iter()
                        .map(|&c| labels[c as usize])
                        .zip(cv.iter().copied()),
                );
                buf.sort_unstable_by_key(|e| e.0);
                idx.extend(buf.iter().map(|e| e.0));
                val.extend(buf.iter().map(|e| e.1));
                lens.push(buf.len() as u64);
            }
        },
    ))
}
