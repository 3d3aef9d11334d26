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
//! layer 0 uses every instance (or, with `top_fraction < 1`, a sample of them: see
//! [`top_sample_keep`]; a positive outside the sample is left out). Below it, `tfn` takes
//! the instances with a true label under `p` (column `p` of `K_{m-1}`), `man` the
//! instances whose beam search on the training set
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
//! vector of the subset's width, never `d`), then the children are solved on it in groups of
//! up to [`MAX_LANES`] siblings run in lock-step (SVM losses, [`GroupSolver`]) or one by one
//! (logistic loss). Parents are handed to the threads largest first (instances times
//! children); the groups of a parent run in parallel too (nested rayon). With `tfn` alone
//! every layer's sets are known up front, so all layers form one pool of parent tasks; with
//! `man`, layers run in order (each needs the beam of the layers above). A group's visiting
//! orders come from a stream seeded by `(seed, layer, first child)` (a child alone:
//! `(seed, layer, child)`), and rows are assembled in child order, so the weights are
//! bit-identical for any thread count.

use std::sync::Mutex;

use rayon::prelude::*;

use super::solver::{FeatureMap, GroupSolver, LocalCsr, Solver, MAX_LANES};
use super::{LayerWeights, Loss, Negatives, PostProcessor, SolverParams};
use crate::cluster::{ClusterTree, SplitMix64};
use crate::dense::{check_rows, DenseView};
use crate::sparse::{
    balanced_ranges, build_rows, by_score_desc, check_finite, col_gather, default_parts, transpose,
    Csr, CsrView,
};
use crate::{Error, Result};

mod subtree;
mod top_sample;
pub use subtree::{descendants, train_subtrees};
pub use top_sample::{top_sample_keep, top_sample_rows};

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
    /// With a dense block: whether the last layer (the ranker over the labels) trains on it
    /// too. `false` trains the label layer on the sparse block alone (it then has no dense
    /// weights, `n_dense == 0`), which removes most of the dense block's cost: that layer has
    /// the most problems.
    pub dense_in_ranker: bool,
    /// Share of the rows that layer 0 (the root's children) trains on, in (0, 1]; below 1 a
    /// sample of that share, row by row from a hash of `(seed, row)` (see
    /// [`top_sample_keep`]); the layers below keep every row that reaches them.
    pub top_fraction: f64,
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
            dense_in_ranker: true,
            top_fraction: 1.0,
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
        if !(self.top_fraction > 0.0 && self.top_fraction <= 1.0) {
            return Err(Error::invalid(format!(
                "top_fraction must be in (0, 1], got {}",
                self.top_fraction
            )));
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
    /// Sum over problems and passes of the instances examined (for lock-step groups: the
    /// instances still in the group's pass while the problem was running).
    pub n_visits: u64,
    /// Problems that hit `max_iter` before the stopping test passed.
    pub n_unconverged: usize,
    /// Stored weights (the bias terms not counted).
    pub nnz: usize,
    /// Sum over the layer's parents of the elapsed time of each parent's task (gather,
    /// solves, output); tasks overlap when several threads run, so this can exceed the
    /// elapsed time of the whole training.
    pub task_seconds: f64,
    /// Elapsed time of the training-set beam search for `man` (0 without `man`).
    pub matching_seconds: f64,
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

/// Node -> instance lists of every layer's children (`kt[m]` = K_m transposed, from the
/// labels up), and the relevance of each (label, instance) pair in leaf order, transposed.
pub(super) fn label_chain(
    y: &CsrView<'_>,
    tree: &ClusterTree,
    relevance: Option<&CsrView<'_>>,
) -> Result<(Vec<Csr>, Option<Csr>)> {
    let depth = tree.depth();
    let ptr_of = |m: usize| -> &[u32] {
        if m < depth {
            tree.child_ptr(m).unwrap_or(&[])
        } else {
            tree.leaf_ptr()
        }
    };
    let mut kt: Vec<Csr> = Vec::with_capacity(depth + 1);
    let mut k = col_gather(y, tree.labels())?;
    let rel_t = match relevance {
        Some(r) => Some(transpose(&col_gather(r, tree.labels())?.view())?),
        None => None,
    };
    for m in (0..=depth).rev() {
        kt.push(transpose(&k.view())?);
        if m > 0 {
            k = aggregate(&k.view(), ptr_of(m));
        }
    }
    kt.reverse();
    Ok((kt, rel_t))
}

/// The checks every training entry point makes of its inputs: shapes against each other and
/// the tree, finite values, canonical `Y`, and `relevance` on `Y`'s pattern, non-negative.
pub(super) fn check_inputs(
    x: &CsrView<'_>,
    y: &CsrView<'_>,
    tree: &ClusterTree,
    relevance: Option<&CsrView<'_>>,
) -> Result<()> {
    check_labels(y, tree)?;
    check_data(x, y, relevance)
}

/// `Y`'s columns against the tree's labels.
fn check_labels(y: &CsrView<'_>, tree: &ClusterTree) -> Result<()> {
    if y.n_cols() != tree.n_labels() {
        return Err(Error::shape(format!(
            "Y has {} columns but the tree has {} labels",
            y.n_cols(),
            tree.n_labels()
        )));
    }
    Ok(())
}

/// The checks of [`check_inputs`] that do not involve the tree (one pass over the values).
fn check_data(x: &CsrView<'_>, y: &CsrView<'_>, relevance: Option<&CsrView<'_>>) -> Result<()> {
    let n = x.n_rows();
    if y.n_rows() != n {
        return Err(Error::shape(format!(
            "X has {n} rows but Y has {}",
            y.n_rows()
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
    Ok(())
}

/// [`train_layers`] that also returns per-layer counters.
pub fn train_layers_with_stats(
    x: &CsrView<'_>,
    y: &CsrView<'_>,
    tree: &ClusterTree,
    params: &TrainParams,
    relevance: Option<&CsrView<'_>>,
) -> Result<(Vec<LayerWeights>, Vec<LayerStats>)> {
    train_hybrid_with_stats(x, None, y, tree, params, relevance)
}

/// [`train_layers_with_stats`] on a sparse block `x` and, when given, a dense block `xd`
/// ([`crate::dense`], one row per row of `x`): every layer's scorers get sparse weights over
/// `x`'s columns and dense weights over `xd`'s ([`LayerWeights::dense`], kept whole). The
/// dense block's rows join each parent's gathered instances (no CSR copy of them) and the
/// solvers read them as contiguous slices.
pub fn train_hybrid_with_stats(
    x: &CsrView<'_>,
    xd: Option<&DenseView<'_>>,
    y: &CsrView<'_>,
    tree: &ClusterTree,
    params: &TrainParams,
    relevance: Option<&CsrView<'_>>,
) -> Result<(Vec<LayerWeights>, Vec<LayerStats>)> {
    let mut out = train_ensemble_with_stats(x, xd, y, &[(tree, *params)], relevance)?;
    out.pop()
        .ok_or_else(|| Error::invalid("internal: no model for the tree"))
}

/// The layers of an ensemble: [`train_hybrid_with_stats`] for each `(tree, params)` of
/// `trees` (same data, one seed each), returned in that order.
///
/// Trees whose negatives are `tfn` alone put their parent tasks into one pool, largest first
/// across every tree and layer, so that threads stay busy where one tree's last tasks would
/// leave them idle; trees with `man` train after them, one at a time, layer by layer. A
/// task's result does not depend on which thread runs it or when, so each tree's layers are
/// bit-identical to training it alone.
pub fn train_ensemble_with_stats(
    x: &CsrView<'_>,
    xd: Option<&DenseView<'_>>,
    y: &CsrView<'_>,
    trees: &[(&ClusterTree, TrainParams)],
    relevance: Option<&CsrView<'_>>,
) -> Result<Vec<(Vec<LayerWeights>, Vec<LayerStats>)>> {
    for (tree, params) in trees {
        params.validate()?;
        check_labels(y, tree)?;
    }
    // the data once, not once per tree
    check_data(x, y, relevance)?;
    check_rows(xd, x.n_rows(), "X")?;
    let x_owned;
    let x = if x.is_canonical() {
        *x
    } else {
        x_owned = x.canonicalize();
        x_owned.view()
    };
    let chains: Vec<(Vec<Csr>, Option<Csr>)> = trees
        .iter()
        .map(|(tree, _)| label_chain(y, tree, relevance))
        .collect::<Result<_>>()?;
    let fmaps: Pool<FeatureMap> = Pool::new();
    let solvers: Pool<Solver> = Pool::new();
    let groups: Pool<GroupSolver> = Pool::new();
    let shared: Vec<Shared<'_>> = trees
        .iter()
        .zip(&chains)
        .map(|((tree, params), (kt, rel_t))| Shared {
            x: &x,
            xd,
            tree,
            kt,
            rel_t: rel_t.as_ref(),
            params,
            fmaps: &fmaps,
            solvers: &solvers,
            groups: &groups,
        })
        .collect();
    let mut out: Vec<Option<(Vec<LayerWeights>, Vec<LayerStats>)>> =
        (0..trees.len()).map(|_| None).collect();
    // Every layer's instance sets are known up front without `man`: one pool of
    // (tree, layer, parent) tasks, largest first, with no barrier between layers or trees.
    let pooled: Vec<usize> = (0..trees.len())
        .filter(|&t| !trees[t].1.negatives.man)
        .collect();
    let ctxs: Vec<Vec<LayerCtx<'_>>> = pooled
        .iter()
        .map(|&t| {
            let depth = trees[t].0.depth();
            (0..=depth).map(|m| shared[t].layer(m, None)).collect()
        })
        .collect();
    let mut tasks: Vec<(u64, usize, usize, usize)> = ctxs
        .iter()
        .enumerate()
        .flat_map(|(q, layers)| {
            layers.iter().enumerate().flat_map(move |(m, c)| {
                c.parent_costs().into_iter().map(move |(w, p)| (w, q, m, p))
            })
        })
        .collect();
    tasks.sort_unstable_by(|a, b| {
        b.0.cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    let order: Vec<(usize, usize, usize)> = tasks.iter().map(|t| (t.1, t.2, t.3)).collect();
    let mut done = run_largest_first(&order, |&(q, m, p)| ctxs[q][m].train_parent(p))?;
    // `done` follows `order`; put each layer's blocks back in parent order
    let mut per_layer: Vec<Vec<Vec<Option<TaskOut>>>> = ctxs
        .iter()
        .map(|layers| {
            layers
                .iter()
                .map(|c| (0..c.ptr.len() - 1).map(|_| None).collect())
                .collect()
        })
        .collect();
    for (&(q, m, p), task) in order.iter().zip(done.drain(..)) {
        per_layer[q][m][p] = Some(task);
    }
    for ((&t, layers), blocks) in pooled.iter().zip(&ctxs).zip(per_layer) {
        let (weights, stats) = layers
            .iter()
            .zip(blocks)
            .map(|(c, b)| c.assemble(b.into_iter().flatten().collect()))
            .unzip();
        out[t] = Some((weights, stats));
    }
    drop(ctxs);
    for (t, slot) in out.iter_mut().enumerate() {
        if slot.is_none() {
            *slot = Some(train_with_man(&shared[t])?);
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// The layers of one tree trained with `man` negatives: in order, each layer's instance sets
/// from the beam search of the layers above over the training rows.
fn train_with_man(shared: &Shared<'_>) -> Result<(Vec<LayerWeights>, Vec<LayerStats>)> {
    let (x, xd, params) = (shared.x, shared.xd, shared.params);
    let depth = shared.tree.depth();
    let mut layers: Vec<LayerWeights> = Vec::with_capacity(depth + 1);
    let mut stats: Vec<LayerStats> = Vec::with_capacity(depth + 1);
    let mut beam: Option<Csr> = None;
    for m in 0..=depth {
        let t0 = std::time::Instant::now();
        let man_t = if m > 0 {
            let prev = layers.last().expect("m > 0");
            let b = beam_match_hybrid(
                x,
                xd,
                beam.as_ref().map(|b| b.view()).as_ref(),
                prev,
                params.man_beam_size,
                params.man_post_processor,
            )?;
            let t = transpose(&b.view())?;
            beam = Some(b);
            Some(t)
        } else {
            None
        };
        let matching_seconds = t0.elapsed().as_secs_f64();
        let c = shared.layer(m, man_t.as_ref());
        let order: Vec<usize> = c.parent_costs().into_iter().map(|e| e.1).collect();
        let mut done = run_largest_first(&order, |&p| c.train_parent(p))?;
        let mut blocks: Vec<Option<TaskOut>> = (0..c.ptr.len() - 1).map(|_| None).collect();
        for (&p, out) in order.iter().zip(done.drain(..)) {
            blocks[p] = Some(out);
        }
        let (lw, mut st) = c.assemble(blocks.into_iter().flatten().collect());
        st.matching_seconds = matching_seconds;
        layers.push(lw);
        stats.push(st);
    }
    Ok((layers, stats))
}

/// What every layer's context borrows.
struct Shared<'a> {
    x: &'a CsrView<'a>,
    xd: Option<&'a DenseView<'a>>,
    tree: &'a ClusterTree,
    kt: &'a [Csr],
    rel_t: Option<&'a Csr>,
    params: &'a TrainParams,
    fmaps: &'a Pool<FeatureMap>,
    solvers: &'a Pool<Solver>,
    groups: &'a Pool<GroupSolver>,
}

impl Shared<'_> {
    fn layer<'b>(&'b self, m: usize, man: Option<&'b Csr>) -> LayerCtx<'b> {
        let depth = self.tree.depth();
        LayerCtx {
            x: self.x,
            xd: if m == depth && !self.params.dense_in_ranker {
                None
            } else {
                self.xd
            },
            layer: m,
            sampled: m == 0 && self.params.top_fraction < 1.0,
            ptr: if m < depth {
                self.tree.child_ptr(m).unwrap_or(&[])
            } else {
                self.tree.leaf_ptr()
            },
            pos: &self.kt[m],
            rel: if m == depth { self.rel_t } else { None },
            tfn: if m > 0 { Some(&self.kt[m - 1]) } else { None },
            man,
            use_tfn: self.params.negatives.tfn,
            params: self.params,
            fmaps: self.fmaps,
            solvers: self.solvers,
            groups: self.groups,
        }
    }
}

/// One finished parent: its children's rows and the elapsed time of its task.
type TaskOut = (Vec<ChildOut>, f64);

/// Runs `f` on every item of `order` on the current pool, items handed out one at a time in
/// that order to whichever thread is free (largest first keeps the threads busy to the end).
/// Returns the results in `order`'s order.
fn run_largest_first<T: Sync, F>(order: &[T], f: F) -> Result<Vec<TaskOut>>
where
    F: Fn(&T) -> Result<Vec<ChildOut>> + Sync,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let workers = rayon::current_num_threads().clamp(1, order.len().max(1));
    let parts: Vec<Vec<(usize, TaskOut)>> = (0..workers)
        .into_par_iter()
        .with_max_len(1)
        .map(|_| -> Result<Vec<(usize, TaskOut)>> {
            let mut out = Vec::new();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = order.get(k) else {
                    break;
                };
                let t0 = std::time::Instant::now();
                let r = f(item);
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        next.store(order.len(), Ordering::Relaxed);
                        return Err(e);
                    }
                };
                out.push((k, (r, t0.elapsed().as_secs_f64())));
            }
            Ok(out)
        })
        .collect::<Result<_>>()?;
    let mut slots: Vec<Option<TaskOut>> = (0..order.len()).map(|_| None).collect();
    for (k, out) in parts.into_iter().flatten() {
        slots[k] = Some(out);
    }
    slots
        .into_iter()
        .map(|s| s.ok_or_else(|| Error::invalid("internal: a training task did not run")))
        .collect()
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
    /// The dense block this layer trains on (None without one, or when left out: the
    /// layer then has no dense weights).
    xd: Option<&'a DenseView<'a>>,
    layer: usize,
    /// Layer 0 on a sample of the rows (`top_fraction < 1`): positives outside the sample
    /// are left out.
    sampled: bool,
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
    /// The dense block's weights (empty without one).
    dense: Vec<f32>,
    bias: f32,
    iters: u32,
    visits: u64,
    converged: bool,
    n_instances: usize,
}

impl LayerCtx<'_> {
    fn n_dense(&self) -> usize {
        self.xd.map_or(0, |d| d.n_cols())
    }

    fn row_ids(m: &Csr, p: usize) -> &[u32] {
        &m.indices[m.indptr[p] as usize..m.indptr[p + 1] as usize]
    }

    /// `(estimated work, parent)` for every parent, largest first (ties to the lower id):
    /// instances in its set times number of children.
    fn parent_costs(&self) -> Vec<(u64, usize)> {
        let n_parents = self.ptr.len() - 1;
        let len = |m: Option<&Csr>, p: usize| m.map_or(0, |m| m.indptr[p + 1] - m.indptr[p]);
        let mut out: Vec<(u64, usize)> = (0..n_parents)
            .map(|p| {
                let rows = match self.tfn {
                    None => self.x.n_rows() as u64,
                    Some(t) => len(Some(t), p) + len(self.man, p),
                };
                (rows * u64::from(self.ptr[p + 1] - self.ptr[p]), p)
            })
            .collect();
        out.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        out
    }

    /// Concatenates the parents' blocks (in parent order) into the layer.
    fn assemble(&self, blocks: Vec<TaskOut>) -> (LayerWeights, LayerStats) {
        let n_parents = self.ptr.len() - 1;
        debug_assert_eq!(blocks.len(), n_parents);
        let n_children = self.ptr[n_parents] as usize;
        let nnz: usize = blocks
            .iter()
            .flat_map(|b| &b.0)
            .map(|c| c.indices.len())
            .sum();
        let mut indptr = Vec::with_capacity(n_children + 1);
        let mut indices = Vec::with_capacity(nnz);
        let mut data = Vec::with_capacity(nnz);
        let mut bias = Vec::with_capacity(n_children);
        let n_dense = self.n_dense();
        let mut dense = Vec::with_capacity(n_children * n_dense);
        let mut st = LayerStats {
            n_problems: n_children,
            nnz,
            ..Default::default()
        };
        indptr.push(0u64);
        for (children, secs) in blocks {
            st.task_seconds += secs;
            for c in children {
                indices.extend_from_slice(&c.indices);
                data.extend_from_slice(&c.values);
                dense.extend_from_slice(&c.dense);
                indptr.push(indices.len() as u64);
                bias.push(c.bias);
                st.n_passes += u64::from(c.iters);
                st.n_visits += c.visits;
                st.n_instances += c.n_instances as u64;
                st.n_unconverged += usize::from(!c.converged);
            }
        }
        let weights = Csr {
            n_rows: n_children,
            n_cols: self.x.n_cols(),
            indptr,
            indices,
            data,
        };
        (
            LayerWeights {
                dense,
                n_dense,
                child_ptr: self.ptr.to_vec(),
                weights,
                bias,
            },
            st,
        )
    }

    fn train_parent(&self, p: usize) -> Result<Vec<ChildOut>> {
        let children = self.ptr[p] as usize..self.ptr[p + 1] as usize;
        // The parent's instance set (sorted) and, when not every member is matched, which are.
        let mut set: Vec<u32> = Vec::new();
        let mut matched: Option<Vec<bool>> = None;
        match (self.tfn, self.man) {
            (None, _) if self.sampled => set.extend(top_sample_rows(
                self.params.seed,
                0,
                self.x.n_rows(),
                self.params.top_fraction,
            )),
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
                    dense: vec![0.0; self.n_dense()],
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
            |fm| LocalCsr::gather_hybrid(self.x, self.xd, &set, fm),
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
                    let r = match set.binary_search(i) {
                        Ok(r) => r,
                        Err(_) if self.sampled => continue,
                        Err(_) => {
                            return Err(Error::invalid(
                                "internal: a positive lies outside its parent's set",
                            ))
                        }
                    };
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
                    dense: gs.dense_weights(l),
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
                if self.sampled {
                    // positives outside the sample are left out
                    while q < pos.len() && pos[q] < i {
                        q += 1;
                    }
                }
                if q < pos.len() && pos[q] == i {
                    let r_i = rel.map_or(1.0, |v| f64::from(v[q]));
                    solver.push(r as u32, true, cp * r_i);
                    q += 1;
                } else if matched.is_none_or(|f| f[r]) {
                    solver.push(r as u32, false, cn);
                }
            }
            if q != pos.len() && !self.sampled {
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
                dense: solver.dense_weights(local.n_dense()).to_vec(),
                bias,
                iters: info.iters,
                visits: info.visits,
                converged: info.converged,
                n_instances: solver.n_instances(),
            })
        })
    }
}

fn check_layer_input(
    x: &CsrView<'_>,
    xd: Option<&DenseView<'_>>,
    layer: &LayerWeights,
) -> Result<()> {
    let nd = xd.map_or(0, |d| d.n_cols());
    if layer.n_dense != nd && layer.n_dense != 0 {
        return Err(Error::shape(format!(
            "the layer has {} dense feature columns but the input has {nd}",
            layer.n_dense
        )));
    }
    check_rows(xd, x.n_rows(), "X")?;
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
    beam_match_hybrid(x, None, prev, layer, beam, pp)
}

/// [`beam_match`] with a dense block `xd` beside `x` (the layer's `n_dense` must be its
/// width): each child's margin adds the dot product of its dense weights with the row's.
pub fn beam_match_hybrid(
    x: &CsrView<'_>,
    xd: Option<&DenseView<'_>>,
    prev: Option<&CsrView<'_>>,
    layer: &LayerWeights,
    beam: usize,
    pp: PostProcessor,
) -> Result<Csr> {
    if beam == 0 {
        return Err(Error::invalid("beam size must be >= 1"));
    }
    check_layer_input(x, xd, layer)?;
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
    let wt = transpose(&layer.weights.view())?;
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
                    if let Some(d) = xd.filter(|_| layer.n_dense > 0) {
                        let xr = d.row(i);
                        for (t, a) in acc.iter_mut().enumerate() {
                            *a += crate::simd::dot(layer.dense_row(c0 as usize + t), xr);
                        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel;

    /// The hand-made tree of the tests: root -> {A, B}; A -> {leaf0, leaf1}, B -> {leaf2};
    /// leaf0 = {5, 0}, leaf1 = {1, 4}, leaf2 = {2, 3}.
    fn small_tree() -> ClusterTree {
        ClusterTree::from_parts(
            vec![vec![0, 2], vec![0, 2, 3]],
            vec![0, 2, 4, 6],
            vec![5, 0, 1, 4, 2, 3],
        )
        .unwrap()
    }

    fn csr(n_rows: usize, n_cols: usize, rows: &[&[u32]]) -> Csr {
        let mut t = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            for &c in *r {
                t.push((i as u32, c, 1.0));
            }
        }
        Csr::from_triplets(n_rows, n_cols, &t).unwrap()
    }

    /// Random features and labels where each label owns a few indicative features.
    fn synthetic(n: usize, d: usize, n_labels: usize, seed: u64) -> (Csr, Csr) {
        let mut rng = SplitMix64::new(seed);
        let (mut xt, mut yt) = (Vec::new(), Vec::new());
        for i in 0..n {
            let k = 1 + rng.below(2) as usize;
            for _ in 0..k {
                let l = rng.below(n_labels as u64) as u32;
                yt.push((i as u32, l, 1.0));
                for _ in 0..3 {
                    let j = (l as usize * 7 + rng.below(5) as usize) % d;
                    xt.push((i as u32, j as u32, 1.0));
                }
            }
            for _ in 0..4 {
                xt.push((i as u32, rng.below(d as u64) as u32, 0.5));
            }
        }
        let mut x = Csr::from_triplets(n, d, &xt).unwrap();
        crate::sparse::normalize_rows_l2(&mut x);
        let mut y = Csr::from_triplets(n, n_labels, &yt).unwrap();
        y.data.iter_mut().for_each(|v| *v = 1.0);
        (x, y)
    }

    /// A tree over `n_labels` labels: leaves of `leaf` consecutive ids, `fan` leaves per
    /// top node (label ids scrambled so leaf order differs from id order).
    fn grouped_tree(n_labels: usize, leaf: usize, fan: usize) -> ClusterTree {
        let leaf_of: Vec<u32> = (0..n_labels)
            .map(|l| (((l * 7) % n_labels) / leaf) as u32)
            .collect();
        let n_leaves = *leaf_of.iter().max().unwrap() as usize + 1;
        let top: Vec<u32> = (0..n_leaves).map(|f| (f / fan) as u32).collect();
        ClusterTree::from_assignments(&[top, leaf_of]).unwrap()
    }

    /// A layer's arrays, values as bit patterns (for exact comparisons).
    type LayerBits = (Vec<u32>, Vec<u64>, Vec<u32>, Vec<u32>);

    fn bits(layers: &[LayerWeights]) -> Vec<LayerBits> {
        layers
            .iter()
            .map(|l| {
                (
                    l.child_ptr.clone(),
                    l.weights.indptr.clone(),
                    l.weights.indices.clone(),
                    l.weights
                        .data
                        .iter()
                        .chain(&l.bias)
                        .map(|v| v.to_bits())
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn chain_matches_the_tree() {
        let tree = small_tree();
        let y = csr(6, 6, &[&[0], &[2, 5], &[], &[1], &[3], &[0, 4]]);
        // label layer in leaf order: position of label l
        let k3 = col_gather(&y.view(), tree.labels()).unwrap();
        // positions: 5->0, 0->1, 1->2, 4->3, 2->4, 3->5
        assert_eq!(k3.to_dense()[0..6], [0., 1., 0., 0., 0., 0.]);
        let k2 = aggregate(&k3.view(), tree.leaf_ptr());
        assert_eq!(k2.n_cols, 3);
        let rows: Vec<&[u32]> = (0..6).map(|i| k2.view().row(i).0).collect();
        assert_eq!(rows, vec![&[0u32][..], &[0, 2], &[], &[1], &[2], &[0, 1]]);
        let k1 = aggregate(&k2.view(), tree.child_ptr(1).unwrap());
        let rows: Vec<&[u32]> = (0..6).map(|i| k1.view().row(i).0).collect();
        assert_eq!(rows, vec![&[0u32][..], &[0, 1], &[], &[0], &[1], &[0]]);
        assert!(k1.data.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn tfn_sets_give_the_expected_problem_sizes() {
        let tree = small_tree();
        let y = csr(6, 6, &[&[0], &[2, 5], &[], &[1], &[3], &[0, 4]]);
        let (x, _) = synthetic(6, 10, 6, 1);
        let (layers, stats) =
            train_layers_with_stats(&x.view(), &y.view(), &tree, &TrainParams::default(), None)
                .unwrap();
        assert_eq!(layers.len(), 3);
        assert_eq!(layers[0].child_ptr, vec![0, 2]);
        assert_eq!(layers[1].child_ptr, vec![0, 2, 3]);
        assert_eq!(layers[2].child_ptr, vec![0, 2, 4, 6]);
        for l in &layers {
            l.validate().unwrap();
            assert_eq!(l.weights.n_cols, 10);
        }
        // layer 0: every row for both top nodes; layer 1: A has rows {0,1,3,5} for 2
        // leaves, B rows {1,4} for 1 leaf; layer 2: leaf0 rows {0,1,5}, leaf1 {3,5},
        // leaf2 {1,4}, two labels each.
        let sizes: Vec<(usize, u64)> = stats
            .iter()
            .map(|s| (s.n_problems, s.n_instances))
            .collect();
        assert_eq!(sizes, vec![(2, 12), (3, 10), (6, 14)]);
        // label 0 (position 1 of leaf 0) has positives {0, 5}, negative {1}: its margin
        // ranks rows 0 and 5 above row 1
        let margin = |row: usize, pos: usize| -> f32 {
            let (wi, wv) = layers[2].weights.view().row(pos);
            let (xi, xv) = x.view().row(row);
            let mut s = layers[2].bias[pos];
            for (j, v) in wi.iter().zip(wv) {
                if let Ok(k) = xi.binary_search(j) {
                    s += v * xv[k];
                }
            }
            s
        };
        assert!(margin(0, 1) > margin(1, 1) && margin(5, 1) > margin(1, 1));
    }

    #[test]
    fn man_sets_follow_the_training_beam() {
        let (x, y) = synthetic(200, 40, 12, 7);
        let tree = grouped_tree(12, 3, 2);
        for neg in [(true, true), (false, true)] {
            let params = TrainParams {
                negatives: Negatives {
                    tfn: neg.0,
                    man: neg.1,
                },
                man_beam_size: 1,
                ..TrainParams::default()
            };
            let (layers, stats) =
                train_layers_with_stats(&x.view(), &y.view(), &tree, &params, None).unwrap();
            // recompute the beam at the leaves' level and the expected label-layer sizes
            let b1 = beam_match(&x.view(), None, &layers[0], 1, params.man_post_processor).unwrap();
            let b2 = beam_match(
                &x.view(),
                Some(&b1.view()),
                &layers[1],
                1,
                params.man_post_processor,
            )
            .unwrap();
            let leaf_of = tree.leaf_of_label();
            let mut expected = 0u64;
            for leaf in 0..tree.n_leaves() {
                let labels = tree.labels_of_leaf(leaf).unwrap();
                for &l in labels {
                    expected += (0..x.n_rows)
                        .filter(|&i| {
                            let (yi, _) = y.view().row(i);
                            let reached = b2.view().row(i).0.contains(&(leaf as u32));
                            let under = yi.iter().any(|&m| leaf_of[m as usize] == leaf as u32);
                            let positive = yi.contains(&l);
                            if neg.0 {
                                reached || under
                            } else {
                                reached || positive
                            }
                        })
                        .count() as u64;
                }
            }
            assert_eq!(stats[2].n_instances, expected, "{neg:?}");
            // man adds instances beyond tfn on this data
            let tfn_only =
                train_layers_with_stats(&x.view(), &y.view(), &tree, &TrainParams::default(), None)
                    .unwrap()
                    .1;
            if neg.0 {
                assert!(stats[2].n_instances > tfn_only[2].n_instances);
            }
        }
    }

    #[test]
    fn beam_match_keeps_the_best_children() {
        // one parent with 3 children over 2 features, then 2 parents
        let layer0 = LayerWeights {
            dense: Vec::new(),
            n_dense: 0,
            child_ptr: vec![0, 3],
            weights: Csr::from_triplets(3, 2, &[(0, 0, 1.0), (1, 1, 2.0), (2, 0, -1.0)]).unwrap(),
            bias: vec![0.0, -0.5, 0.25],
        };
        let x = Csr::from_triplets(2, 2, &[(0, 0, 1.0), (1, 1, 1.0)]).unwrap();
        // margins row 0: [1, -0.5, -0.75]; row 1: [0, 1.5, 0.25]
        let b = beam_match(&x.view(), None, &layer0, 2, PostProcessor::Noop).unwrap();
        assert_eq!(b.indptr, vec![0, 2, 4]);
        assert_eq!(b.indices, vec![0, 1, 1, 2]);
        assert_eq!(b.data, vec![1.0, -0.5, 1.5, 0.25]);
        let hinge = PostProcessor::Hinge(3);
        let b = beam_match(&x.view(), None, &layer0, 1, hinge).unwrap();
        assert_eq!(b.indices, vec![0, 1]);
        assert_eq!(b.data, vec![hinge.transform(1.0), hinge.transform(1.5)]);
        // second layer: children of 0 = {0, 1}, of 1 = {2}, of 2 = {3}
        let layer1 = LayerWeights {
            dense: Vec::new(),
            n_dense: 0,
            child_ptr: vec![0, 2, 3, 4],
            weights: Csr::from_triplets(4, 2, &[(0, 0, 1.0), (1, 0, 3.0), (2, 1, 1.0)]).unwrap(),
            bias: vec![0.0; 4],
        };
        let prev = Csr::from_triplets(2, 3, &[(0, 0, 0.5), (1, 1, 1.0), (1, 2, 0.9)]).unwrap();
        let b = beam_match(&x.view(), Some(&prev.view()), &layer1, 3, hinge).unwrap();
        // row 0 expands parent 0 -> children 0, 1; row 1 expands parents 1, 2 -> 2, 3
        assert_eq!(b.indices, vec![0, 1, 2, 3]);
        assert_eq!(b.data[0], 0.5 * hinge.transform(1.0));
        assert_eq!(b.data[3], 0.9 * hinge.transform(0.0));
        // errors
        assert!(beam_match(&x.view(), None, &layer1, 3, hinge).is_err());
        assert!(beam_match(&x.view(), Some(&prev.view()), &layer1, 0, hinge).is_err());
        let wide = Csr::zeros(2, 5);
        assert!(beam_match(&wide.view(), None, &layer0, 1, hinge).is_err());
        let short = Csr::zeros(1, 3);
        assert!(beam_match(&x.view(), Some(&short.view()), &layer1, 1, hinge).is_err());
    }

    #[test]
    fn identical_for_any_thread_count() {
        let (x, y) = synthetic(600, 80, 40, 3);
        let tree = grouped_tree(40, 4, 3);
        let configs = [
            (Loss::SquaredHinge, true, false),
            (Loss::SquaredHinge, true, true),
            (Loss::Hinge, false, true),
            (Loss::Logistic, true, false),
        ];
        for (loss, tfn, man) in configs {
            let params = TrainParams {
                solver: SolverParams {
                    loss,
                    ..SolverParams::default()
                },
                negatives: Negatives { tfn, man },
                man_beam_size: 3,
                seed: 17,
                ..TrainParams::default()
            };
            let run = |threads: i64| {
                parallel::install(Some(threads), || {
                    train_layers(&x.view(), &y.view(), &tree, &params, None).unwrap()
                })
                .unwrap()
            };
            let (a, b) = (run(1), run(3));
            assert_eq!(bits(&a), bits(&b), "{loss:?} tfn {tfn} man {man}");
            assert!(a.iter().all(|l| l.weights.nnz() > 0));
            // another seed changes the visiting order, hence (slightly) the weights
            let other = TrainParams { seed: 18, ..params };
            let c = train_layers(&x.view(), &y.view(), &tree, &other, None).unwrap();
            assert_ne!(bits(&a), bits(&c));
        }
    }

    #[test]
    fn an_ensemble_is_its_trees_trained_alone() {
        let (x, y) = synthetic(500, 70, 36, 9);
        let trees = [
            grouped_tree(36, 4, 3),
            grouped_tree(36, 6, 2),
            grouped_tree(36, 3, 4),
        ];
        let params = |seed: u64, man: bool| TrainParams {
            negatives: Negatives { tfn: true, man },
            man_beam_size: 3,
            seed,
            ..TrainParams::default()
        };
        // a `man` tree between two pooled ones, and seeds that differ per tree
        let jobs = [
            (&trees[0], params(5, false)),
            (&trees[1], params(6, true)),
            (&trees[2], params(7, false)),
        ];
        for threads in [1, 3] {
            let together = parallel::install(Some(threads), || {
                train_ensemble_with_stats(&x.view(), None, &y.view(), &jobs, None).unwrap()
            })
            .unwrap();
            assert_eq!(together.len(), 3);
            for ((tree, p), (layers, stats)) in jobs.iter().zip(&together) {
                let alone = train_layers(&x.view(), &y.view(), tree, p, None).unwrap();
                assert_eq!(bits(&alone), bits(layers), "seed {}", p.seed);
                assert_eq!(stats.len(), tree.depth() + 1);
            }
        }
        // each tree's inputs are checked
        let wrong = grouped_tree(34, 4, 3);
        let bad = [(&trees[0], params(5, false)), (&wrong, params(6, false))];
        assert!(train_ensemble_with_stats(&x.view(), None, &y.view(), &bad, None).is_err());
        assert!(
            train_ensemble_with_stats(&x.view(), None, &y.view(), &[], None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn learns_a_learnable_problem() {
        let (x, y) = synthetic(800, 120, 30, 11);
        let tree = grouped_tree(30, 4, 3);
        let layers =
            train_layers(&x.view(), &y.view(), &tree, &TrainParams::default(), None).unwrap();
        let pred = predict_beam(&x.view(), &layers, &tree, 10, 5, PostProcessor::Hinge(3)).unwrap();
        assert_eq!((pred.n_rows, pred.n_cols), (800, 30));
        let mut hits = 0;
        for i in 0..x.n_rows {
            let (pi, pv) = pred.view().row(i);
            assert!(pi.windows(2).all(|w| w[0] < w[1]) && pi.len() <= 5);
            let best = pi
                .iter()
                .zip(pv)
                .max_by(|a, b| a.1.partial_cmp(b.1).unwrap().then(b.0.cmp(a.0)))
                .map(|e| *e.0)
                .unwrap();
            hits += usize::from(y.view().row(i).0.contains(&best));
        }
        assert!(
            hits as f64 / x.n_rows as f64 > 0.9,
            "training P@1 {hits}/800"
        );
        // a depth-0 tree is one-vs-all under one parent
        let flat = ClusterTree::from_parts(vec![], vec![0, 30], (0..30).rev().collect()).unwrap();
        let (ova, st) =
            train_layers_with_stats(&x.view(), &y.view(), &flat, &TrainParams::default(), None)
                .unwrap();
        assert_eq!(ova.len(), 1);
        assert_eq!(ova[0].child_ptr, vec![0, 30]);
        assert_eq!(st[0].n_instances, 30 * 800);
        let p = predict_beam(&x.view(), &ova, &flat, 10, 1, PostProcessor::Noop).unwrap();
        let hits = (0..800)
            .filter(|&i| y.view().row(i).0.contains(&p.view().row(i).0[0]))
            .count();
        assert!(hits > 720, "one-vs-all training P@1 {hits}/800");
        assert!(predict_beam(&x.view(), &ova, &tree, 10, 1, PostProcessor::Noop).is_err());
        assert!(predict_beam(&x.view(), &ova, &flat, 10, 0, PostProcessor::Noop).is_err());
    }

    #[test]
    fn relevance_scales_positive_costs_at_the_label_layer() {
        let (x, y) = synthetic(300, 60, 12, 5);
        let tree = grouped_tree(12, 3, 2);
        let p = TrainParams::default();
        let plain = train_layers(&x.view(), &y.view(), &tree, &p, None).unwrap();
        let ones = y.clone();
        let same = train_layers(&x.view(), &y.view(), &tree, &p, Some(&ones.view())).unwrap();
        assert_eq!(bits(&plain), bits(&same));
        let mut rel = y.clone();
        for (k, v) in rel.data.iter_mut().enumerate() {
            *v = (k % 4) as f32; // some zeros: those positives are left out
        }
        let weighted = train_layers(&x.view(), &y.view(), &tree, &p, Some(&rel.view())).unwrap();
        let (a, b) = (bits(&plain), bits(&weighted));
        assert_eq!(a[..2], b[..2], "upper layers do not use relevance");
        assert_ne!(a[2], b[2]);
    }

    #[test]
    fn labels_and_rows_without_positives_are_fine() {
        let (x, mut y) = synthetic(100, 30, 6, 2);
        // label 5 loses its positives; rows 0..10 lose their labels
        let mut t = Vec::new();
        for i in 0..y.n_rows {
            if i < 10 {
                continue;
            }
            for &l in y.view().row(i).0 {
                if l != 5 {
                    t.push((i as u32, l, 1.0));
                }
            }
        }
        y = Csr::from_triplets(100, 6, &t).unwrap();
        let tree = grouped_tree(6, 2, 2);
        let layers =
            train_layers(&x.view(), &y.view(), &tree, &TrainParams::default(), None).unwrap();
        let pos5 = tree.labels().iter().position(|&l| l == 5).unwrap();
        // a scorer trained on negatives only: its bias is negative
        assert!(layers[2].bias[pos5] < 0.0);
        assert!(layers.iter().all(|l| l.validate().is_ok()));
    }

    #[test]
    fn bad_input_is_an_error() {
        let (x, y) = synthetic(50, 20, 6, 4);
        let tree = grouped_tree(6, 2, 2);
        let p = TrainParams::default();
        let ok = |x: &Csr, y: &Csr, p: &TrainParams, r: Option<&Csr>| {
            train_layers(&x.view(), &y.view(), &tree, p, r.map(|r| r.view()).as_ref())
        };
        assert!(ok(&x, &y, &p, None).is_ok());
        // shapes
        let y49 = Csr::zeros(49, 6);
        assert!(ok(&x, &y49, &p, None).is_err());
        let y7 = Csr::zeros(50, 7);
        assert!(ok(&x, &y7, &p, None).is_err());
        // non-finite values
        let mut xn = x.clone();
        xn.data[3] = f32::NAN;
        assert!(ok(&xn, &y, &p, None).is_err());
        let mut yn = y.clone();
        yn.data[0] = f32::INFINITY;
        assert!(ok(&x, &yn, &p, None).is_err());
        // relevance: pattern, sign, finiteness, shape
        let mut r = y.clone();
        r.data[1] = -1.0;
        assert!(ok(&x, &y, &p, Some(&r)).is_err());
        let mut r = y.clone();
        r.data[1] = f32::NAN;
        assert!(ok(&x, &y, &p, Some(&r)).is_err());
        // same shape, one entry fewer: another pattern
        let mut t: Vec<(u32, u32, f32)> = Vec::new();
        for i in 0..50 {
            for &l in y.view().row(i).0 {
                t.push((i as u32, l, 1.0));
            }
        }
        t.pop();
        let r = Csr::from_triplets(50, 6, &t).unwrap();
        assert!(ok(&x, &y, &p, Some(&r)).is_err());
        let r = Csr::zeros(50, 6);
        assert!(ok(&x, &y, &p, Some(&r)).is_err());
        // parameters
        let bad = [
            TrainParams {
                negatives: Negatives {
                    tfn: false,
                    man: false,
                },
                ..p
            },
            TrainParams {
                negatives: Negatives {
                    tfn: true,
                    man: true,
                },
                man_beam_size: 0,
                ..p
            },
            TrainParams {
                solver: SolverParams {
                    cp: 0.0,
                    ..p.solver
                },
                ..p
            },
            TrainParams {
                solver: SolverParams {
                    tol: -1.0,
                    ..p.solver
                },
                ..p
            },
            TrainParams {
                solver: SolverParams {
                    threshold: -0.5,
                    ..p.solver
                },
                ..p
            },
        ];
        for b in &bad {
            assert!(ok(&x, &y, b, None).is_err(), "{b:?}");
        }
        // a non-canonical Y (unsorted row) is refused; a non-canonical X is sorted first
        let yu = Csr::new(
            50,
            6,
            [vec![0u64, 2], vec![2u64; 49]].concat(),
            vec![3, 1],
            vec![1.0; 2],
        )
        .unwrap();
        assert!(!yu.view().is_canonical());
        assert!(ok(&x, &yu, &p, None).is_err());
        let mut xu = x.clone();
        let (s, e) = (xu.indptr[0] as usize, xu.indptr[1] as usize);
        assert!(e - s >= 2);
        xu.indices[s..e].reverse();
        xu.data[s..e].reverse();
        let a = ok(&x, &y, &p, None).unwrap();
        let b = ok(&xu, &y, &p, None).unwrap();
        assert_eq!(bits(&a), bits(&b));
    }
}
