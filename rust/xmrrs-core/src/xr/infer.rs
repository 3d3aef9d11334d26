//! Beam search over an [`XrModel`].
//!
//! For each layer, every node in a query's beam expands to its children; the margins
//! `w·x + b` of those children are computed (one chunk per beam node, or the one chunk of a
//! merged small layer, see `kernel.rs`), turned into scores with the post-processor and
//! combined with the parent's path score, and the best `beam_size` survive (`topk` on the
//! last layer). Selection is branch-and-bound but exact: beams are kept sorted, a node whose
//! path score is below the current `k`-th best is skipped (children never exceed their
//! parent, except with `noop`), and a child whose margin is provably too low is not
//! transformed (see `kernel::margin_floor`). As in
//! PECOS, inner layers keep `beam_size` nodes even when `topk` is larger: the last layer
//! then picks `topk` among the children of `beam_size` nodes, and rows are padded with id
//! `-1` and score `-inf` when fewer labels are reachable. Raise `beam_size` for more.
//!
//! Ranking: higher score first, ties to the lower id (label id on the last layer, node id on
//! inner layers); `-0.0` ties with `0.0`; a NaN (only from a corrupt model) ranks first
//! rather than breaking the order.
//!
//! Execution:
//! - [`Searcher`]: one query at a time, all scratch reused (no allocation once warm, no
//!   thread pool): the real-time path.
//! - [`predict`]: a batch. Large batches run layer by layer over blocks of queries: the
//!   (query, beam node) tasks of a layer are bucketed by chunk with a counting sort, so each
//!   chunk is scored for all its queries while it is in cache, in parallel over task ranges
//!   (rayon; the caller installs the pool); then each query keeps its best candidates, in
//!   parallel over queries. Small batches run one [`Searcher`] per thread. Every path gives
//!   bit-identical results, whatever the thread count.

use crate::dense::{check_rows, DenseView};
use std::cmp::Ordering;
use std::ops::Range;

use rayon::prelude::*;

pub use super::kernel::Kernel;

mod ensemble;
use super::kernel::{
    child_bounded_by_parent, finite_margin, for_each_score, margin_floor, margins, Chunk, Col,
    Corrupt, LayerView,
};
use super::model::{LayerRef, XrModel};
use super::PostProcessor;
use crate::alloc::{checked_len, try_vec};
use crate::sparse::{balanced_ranges, check_finite, Csr, CsrView};
use crate::{Error, Result};
pub use ensemble::{predict_ensemble, predict_ensemble_hybrid, EnsembleSearcher};

/// Settings of a prediction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PredictParams {
    /// Nodes kept per query on each inner layer (>= 1).
    pub beam_size: usize,
    /// Labels returned per query (>= 1).
    pub topk: usize,
    /// Score transform and path combination.
    pub post_processor: PostProcessor,
    /// How queries find chunk rows (a tuning/testing knob: results are identical for every
    /// choice; [`Kernel::Auto`] is the fastest).
    pub kernel: Kernel,
}

impl Default for PredictParams {
    /// Beam 10, top 10, `l3-hinge`, automatic kernel.
    fn default() -> Self {
        PredictParams {
            beam_size: 10,
            topk: 10,
            post_processor: PostProcessor::Hinge(3),
            kernel: Kernel::Auto,
        }
    }
}

impl PredictParams {
    /// Errors on `beam_size == 0` or `topk == 0`.
    pub fn validate(&self) -> Result<()> {
        if self.beam_size == 0 {
            return Err(Error::invalid("beam_size must be >= 1"));
        }
        if self.topk == 0 {
            return Err(Error::invalid("topk must be >= 1"));
        }
        Ok(())
    }

    /// The same search with `beam_size` capped at the model's label count: a wider beam
    /// keeps every node of every level anyway, so results are unchanged, and no buffer is
    /// sized by a larger request.
    fn capped(&self, model: &XrModel) -> PredictParams {
        PredictParams {
            beam_size: self.beam_size.min(model.n_labels().max(1)),
            ..*self
        }
    }
}

fn corrupt(_: Corrupt) -> Error {
    Error::invalid("model data is corrupt (XrModel::verify tells where)")
}

/// Best first: higher score, then lower id; a total order (see the module docs).
#[inline]
fn better(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    (b.0 + 0.0).total_cmp(&(a.0 + 0.0)).then(a.1.cmp(&b.1))
}

/// Keeps the `k` best of `cand` (sorted best first when `sorted`).
#[inline]
fn select(cand: &mut Vec<(f32, u32)>, k: usize, sorted: bool) {
    if cand.len() > k {
        cand.select_nth_unstable_by(k - 1, better);
        cand.truncate(k);
    }
    if sorted {
        cand.sort_unstable_by(better);
    }
}

/// Collects the `k` best `(score, id)` of a stream: candidates go into a buffer of up to
/// `2k + 32`; when it fills, it is cut to the best `k` and the `k`-th best becomes a
/// threshold that later candidates must beat, so most are rejected with one comparison.
#[derive(Default)]
struct TopK {
    k: usize,
    buf: Vec<(f32, u32)>,
    thr: Option<(f32, u32)>,
}

impl TopK {
    fn reset(&mut self, k: usize) {
        self.k = k;
        self.buf.clear();
        self.thr = None;
    }
    #[inline(always)]
    fn push(&mut self, c: (f32, u32)) {
        if let Some(t) = &self.thr {
            if better(&c, t) != Ordering::Less {
                return;
            }
        }
        self.buf.push(c);
        if self.buf.len() >= self.k.saturating_mul(2).saturating_add(32) {
            select(&mut self.buf, self.k, false);
            self.thr = self.buf.iter().copied().max_by(better);
        }
    }
    /// The best `k` (sorted best first when `sorted`).
    fn finish(&mut self, sorted: bool) -> &[(f32, u32)] {
        select(&mut self.buf, self.k, sorted);
        &self.buf
    }
}

fn write_hits(cand: &[(f32, u32)], ids: &mut [i64], scores: &mut [f32]) {
    for (t, (oi, os)) in ids.iter_mut().zip(scores.iter_mut()).enumerate() {
        match cand.get(t) {
            Some(&(s, id)) => {
                *oi = i64::from(id);
                // finite margins can still combine to -inf (log post-processors, noop sums)
                *os = finite_margin(s);
            }
            None => {
                *oi = -1;
                *os = f32::NEG_INFINITY;
            }
        }
    }
}

/// The `(n, k)` output arrays, padded: `-1` ids and `-inf` scores ([`Error::Memory`] when
/// they cannot be allocated).
fn output(n: usize, k: usize) -> Result<(Vec<i64>, Vec<f32>)> {
    let len = checked_len(n, k, "the top-k output")?;
    Ok((
        try_vec(len, -1i64, "the top-k ids")?,
        try_vec(len, f32::NEG_INFINITY, "the top-k scores")?,
    ))
}

/// Output buffers of one query: `topk` slots each.
fn check_out(ids: &[i64], scores: &[f32], topk: usize) -> Result<()> {
    if ids.len() != topk || scores.len() != topk {
        return Err(Error::shape(format!(
            "output buffers have {} and {} slots, topk is {topk}",
            ids.len(),
            scores.len()
        )));
    }
    Ok(())
}

fn check_query(model: &XrModel, indices: &[u32], values: &[f32], dense: &[f32]) -> Result<()> {
    if dense.len() != model.n_dense() {
        return Err(Error::shape(format!(
            "the model takes a dense block of {} features, the query has {}",
            model.n_dense(),
            dense.len()
        )));
    }
    if let Some(p) = dense.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "the query's dense block has a non-finite value ({}) at position {p}",
            dense[p]
        )));
    }
    if indices.len() != values.len() {
        return Err(Error::shape(format!(
            "{} indices but {} values",
            indices.len(),
            values.len()
        )));
    }
    if indices.windows(2).any(|w| w[1] <= w[0]) {
        return Err(Error::invalid(
            "query indices must be strictly increasing (sorted, no duplicates)",
        ));
    }
    if let Some(&f) = indices.last() {
        if f as usize >= model.n_features() {
            return Err(Error::shape(format!(
                "query feature {f} is out of range for a model with {} features",
                model.n_features()
            )));
        }
    }
    // sequential on purpose: the real-time path must not touch a thread pool
    if let Some(p) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "query values contain a non-finite value ({}) at position {p}",
            values[p]
        )));
    }
    Ok(())
}

/// Dense scatter of one query, zero outside it.
#[derive(Default)]
struct Dense {
    xd: Vec<f32>,
    filled: bool,
}

impl Dense {
    /// The scatter of `(qi, qv)`, filled on first use.
    #[inline]
    fn get(&mut self, n_features: usize, qi: &[u32], qv: &[f32]) -> &[f32] {
        if !self.filled {
            if self.xd.len() != n_features {
                self.xd.clear();
                self.xd.resize(n_features, 0.0);
            }
            for (&f, &v) in qi.iter().zip(qv) {
                self.xd[f as usize] = v;
            }
            self.filled = true;
        }
        &self.xd
    }
    /// Clears what `get` wrote.
    #[inline]
    fn reset(&mut self, qi: &[u32]) {
        if self.filled {
            for &f in qi {
                self.xd[f as usize] = 0.0;
            }
            self.filled = false;
        }
    }
}

/// The margins of every child of chunk `chunk` for one query, into `out`
/// (`out.len() == chunk.width()`).
#[inline]
fn chunk_margins<C: Col>(
    chunk: &Chunk<'_, C>,
    kernel: Kernel,
    n_features: usize,
    qi: &[u32],
    qv: &[f32],
    qd: &[f32],
    dense: &mut Dense,
    out: &mut [f32],
) -> std::result::Result<(), Corrupt> {
    let use_dense = match kernel {
        Kernel::Scan => true,
        Kernel::Auto => chunk.prefers_scan(qi.len()),
        Kernel::Lookup | Kernel::Merge => false,
    };
    let xd = if use_dense {
        Some(dense.get(n_features, qi, qv))
    } else {
        None
    };
    margins(chunk, kernel, qi, qv, xd, qd, out)
}

/// Whether beam node `(ps, _)` cannot improve the collector's current best `k`.
#[inline]
fn node_pruned(top: &TopK, pp: PostProcessor, ps: f32) -> bool {
    match &top.thr {
        Some(t) => child_bounded_by_parent(pp) && ps < t.0,
        None => false,
    }
}

/// Feeds the children of one beam node (margins `m`, first child `c0`, parent path score
/// `ps`) to the collector: node ids on inner layers, label ids (`labels`) on the last.
/// Children whose margin is surely too low for the current threshold are skipped without
/// computing their transform.
#[inline]
fn collect_children(
    top: &mut TopK,
    pp: PostProcessor,
    ps: f32,
    m: &[f32],
    c0: usize,
    labels: Option<&[u32]>,
) -> std::result::Result<(), Corrupt> {
    let ids = match labels {
        Some(l) => Some(l.get(c0..c0 + m.len()).ok_or(Corrupt)?),
        None => None,
    };
    let mut floor = top
        .thr
        .map_or(f32::NEG_INFINITY, |t| margin_floor(pp, ps, t.0));
    let mut thr_seen = top.thr;
    for (c, &x) in m.iter().enumerate() {
        if x < floor {
            continue;
        }
        let s = transform_combine(pp, ps, x);
        let id = match ids {
            Some(ids) => ids[c],
            None => (c0 + c) as u32,
        };
        top.push((s, id));
        if top.thr != thr_seen {
            thr_seen = top.thr;
            floor = top
                .thr
                .map_or(f32::NEG_INFINITY, |t| margin_floor(pp, ps, t.0));
        }
    }
    Ok(())
}

/// `pp.combine(ps, pp.transform(x))`.
#[inline(always)]
fn transform_combine(pp: PostProcessor, ps: f32, x: f32) -> f32 {
    let mut out = 0.0;
    for_each_score(pp, ps, std::slice::from_ref(&x), |_, s| out = s);
    out
}

// -------------------------------------------------------------------------------------
// one query at a time

/// Reusable scratch for searching one query at a time (the real-time path).
///
/// ```
/// # use xmrrs_core::xr::infer::{Searcher, PredictParams};
/// # fn f(model: &xmrrs_core::xr::model::XrModel) -> xmrrs_core::Result<()> {
/// let params = PredictParams::default();
/// let mut s = Searcher::new();
/// let (mut ids, mut scores) = (vec![0i64; params.topk], vec![0f32; params.topk]);
/// s.search(model, &[3, 17], &[0.6, 0.8], &params, &mut ids, &mut scores)?;
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct Searcher {
    dense: Dense,
    marg: Vec<f32>,
    beam: Vec<(f32, u32)>,
    top: TopK,
}

impl Searcher {
    /// Empty scratch (buffers grow on first use, then are reused).
    pub fn new() -> Self {
        Searcher::default()
    }

    /// Searches one query given by sorted, unique feature `indices` and their `values`.
    /// Writes the `topk` best labels and scores, best first, into `ids` and `scores` (each of
    /// length exactly `params.topk`), padded with `-1` / `-inf`; returns the number of real
    /// hits. Allocates nothing once the buffers have grown to the model's size.
    pub fn search(
        &mut self,
        model: &XrModel,
        indices: &[u32],
        values: &[f32],
        params: &PredictParams,
        ids: &mut [i64],
        scores: &mut [f32],
    ) -> Result<usize> {
        self.search_hybrid(model, indices, values, &[], params, ids, scores)
    }

    /// [`Searcher::search`] of a query with a dense block `dense` (of the model's
    /// [`XrModel::n_dense`] values; empty for a sparse-only model).
    #[allow(clippy::too_many_arguments)]
    pub fn search_hybrid(
        &mut self,
        model: &XrModel,
        indices: &[u32],
        values: &[f32],
        dense: &[f32],
        params: &PredictParams,
        ids: &mut [i64],
        scores: &mut [f32],
    ) -> Result<usize> {
        params.validate()?;
        let params = &params.capped(model);
        check_query(model, indices, values, dense)?;
        check_out(ids, scores, params.topk)?;
        let hits = self.run(model, indices, values, dense, params)?;
        write_hits(hits, ids, scores);
        Ok(hits.len())
    }

    /// Runs the search; returns the final hits, best first.
    fn run(
        &mut self,
        model: &XrModel,
        qi: &[u32],
        qv: &[f32],
        qd: &[f32],
        params: &PredictParams,
    ) -> Result<&[(f32, u32)]> {
        self.beam.clear();
        self.beam.push((params.post_processor.root_score(), 0));
        let n_layers = model.layers.len();
        let mut result = Ok(());
        for (m, layer) in model.layers.iter().enumerate() {
            let last = m + 1 == n_layers;
            if self.marg.len() < layer.chunk_width() {
                self.marg.resize(layer.chunk_width(), 0.0);
            }
            self.top
                .reset(if last { params.topk } else { params.beam_size });
            let labels = if last { Some(model.labels()) } else { None };
            let r = match layer.view() {
                LayerRef::U8(v) => {
                    self.expand(&v, model.n_features(), labels, (qi, qv, qd), params)
                }
                LayerRef::U16(v) => {
                    self.expand(&v, model.n_features(), labels, (qi, qv, qd), params)
                }
                LayerRef::U32(v) => {
                    self.expand(&v, model.n_features(), labels, (qi, qv, qd), params)
                }
            };
            if let Err(e) = r {
                result = Err(corrupt(e));
                break;
            }
            if !last {
                self.beam.clear();
                self.beam.extend_from_slice(self.top.finish(true));
            }
        }
        self.dense.reset(qi);
        match result {
            Ok(()) => Ok(self.top.finish(true)),
            Err(e) => Err(e),
        }
    }

    fn expand<C: Col>(
        &mut self,
        v: &LayerView<'_, C>,
        n_features: usize,
        labels: Option<&[u32]>,
        (qi, qv, qd): (&[u32], &[f32], &[f32]),
        params: &PredictParams,
    ) -> std::result::Result<(), Corrupt> {
        let pp = params.post_processor;
        // the beam is sorted best first, so the threshold rises fast and nodes that cannot
        // improve it are skipped before their margins are computed
        if v.whole {
            let chunk = v.chunk(0)?;
            let marg = &mut self.marg[..chunk.width()];
            chunk_margins(
                &chunk,
                params.kernel,
                n_features,
                qi,
                qv,
                qd,
                &mut self.dense,
                marg,
            )?;
            for &(ps, p) in &self.beam {
                if node_pruned(&self.top, pp, ps) {
                    break;
                }
                let r = v.children(p as usize)?;
                let m = marg.get(r.clone()).ok_or(Corrupt)?;
                collect_children(&mut self.top, pp, ps, m, r.start, labels)?;
            }
        } else {
            for &(ps, p) in &self.beam {
                if node_pruned(&self.top, pp, ps) {
                    break;
                }
                let chunk = v.chunk(p as usize)?;
                let marg = &mut self.marg[..chunk.width()];
                chunk_margins(
                    &chunk,
                    params.kernel,
                    n_features,
                    qi,
                    qv,
                    qd,
                    &mut self.dense,
                    marg,
                )?;
                collect_children(&mut self.top, pp, ps, marg, chunk.c0, labels)?;
            }
        }
        Ok(())
    }
}

// -------------------------------------------------------------------------------------
// batches

/// Below this many queries a batch runs one [`Searcher`] per thread.
const SMALL_BATCH: usize = 32;
/// Margins (floats) held per block of queries in the chunk-major path.
const BLOCK_FLOATS: usize = 1 << 22;

/// Predicts the `topk` best labels of every row of `x`: row-major `(n_rows, topk)` label
/// ids and scores, best first, padded with `-1` / `-inf`.
///
/// `x` must have `model.n_features()` columns and finite values; rows need not be sorted
/// (a canonical copy is made if they are not). All-zero rows score by the biases alone.
pub fn predict(
    model: &XrModel,
    x: &CsrView<'_>,
    params: &PredictParams,
) -> Result<(Vec<i64>, Vec<f32>)> {
    predict_hybrid(model, x, None, params)
}

/// [`predict`] of rows with a dense block `xd` beside `x` (one row per row of `x`, the
/// model's [`XrModel::n_dense`] columns; `None` for a sparse-only model).
pub fn predict_hybrid(
    model: &XrModel,
    x: &CsrView<'_>,
    xd: Option<&DenseView<'_>>,
    params: &PredictParams,
) -> Result<(Vec<i64>, Vec<f32>)> {
    params.validate()?;
    let nd = xd.map_or(0, |d| d.n_cols());
    if nd != model.n_dense() {
        return Err(Error::shape(format!(
            "the model takes a dense block of {} features, the input has {nd}",
            model.n_dense()
        )));
    }
    check_rows(xd, x.n_rows(), "x")?;
    let params = &params.capped(model);
    if x.n_cols() != model.n_features() {
        return Err(Error::shape(format!(
            "x has {} columns but the model has {} features",
            x.n_cols(),
            model.n_features()
        )));
    }
    check_finite(x.data(), "x")?;
    let owned;
    let x = if x.is_canonical() {
        *x
    } else {
        owned = x.canonicalize();
        owned.view()
    };
    let n = x.n_rows();
    let k = params.topk;
    let (mut ids, mut scores) = output(n, k)?;
    if n == 0 {
        return Ok((ids, scores));
    }
    if n < SMALL_BATCH {
        ids.par_chunks_mut(k)
            .zip(scores.par_chunks_mut(k))
            .enumerate()
            .try_for_each_init(Searcher::new, |s, (i, (oi, os))| {
                let (qi, qv) = x.row(i);
                let qd = xd.map_or(&[][..], |d| d.row(i));
                write_hits(s.run(model, qi, qv, qd, params)?, oi, os);
                Ok::<(), Error>(())
            })?;
        return Ok((ids, scores));
    }
    let cap = params.beam_size;
    let per_query = model
        .layers
        .iter()
        .map(|l| {
            if l.whole {
                l.n_children
            } else {
                cap.saturating_mul(l.max_width)
            }
        })
        .max()
        .unwrap_or(1)
        .max(1);
    let block = (BLOCK_FLOATS / per_query)
        .clamp(1, n)
        .min(u32::MAX as usize / cap.max(1));
    let mut start = 0;
    let mut marg = Vec::new();
    while start < n {
        let end = (start + block).min(n);
        run_block(
            model,
            &x,
            xd,
            start..end,
            params,
            &mut marg,
            &mut ids[start * k..end * k],
            &mut scores[start * k..end * k],
        )?;
        start = end;
    }
    Ok((ids, scores))
}

/// The beams of a block of queries: `cap` slots per query.
struct Beams {
    node: Vec<u32>,
    score: Vec<f32>,
    len: Vec<u32>,
}

#[allow(clippy::too_many_arguments)]
fn run_block(
    model: &XrModel,
    x: &CsrView<'_>,
    xd: Option<&DenseView<'_>>,
    rows: Range<usize>,
    params: &PredictParams,
    marg: &mut Vec<f32>,
    out_ids: &mut [i64],
    out_scores: &mut [f32],
) -> Result<()> {
    let nq = rows.len();
    let cap = params.beam_size;
    let mut beams = Beams {
        node: vec![0; nq * cap],
        score: vec![params.post_processor.root_score(); nq * cap],
        len: vec![1; nq],
    };
    let n_layers = model.layers.len();
    for (m, layer) in model.layers.iter().enumerate() {
        let last = m + 1 == n_layers;
        let labels = if last { Some(model.labels()) } else { None };
        let ctx = BlockCtx {
            x,
            xd,
            row0: rows.start,
            cap,
            params,
            n_features: model.n_features(),
        };
        let r = match layer.view() {
            LayerRef::U8(v) => ctx.layer(&v, &mut beams, labels, marg, out_ids, out_scores),
            LayerRef::U16(v) => ctx.layer(&v, &mut beams, labels, marg, out_ids, out_scores),
            LayerRef::U32(v) => ctx.layer(&v, &mut beams, labels, marg, out_ids, out_scores),
        };
        r.map_err(corrupt)?;
    }
    Ok(())
}

struct BlockCtx<'a, 'x> {
    x: &'a CsrView<'x>,
    xd: Option<&'a DenseView<'x>>,
    row0: usize,
    cap: usize,
    params: &'a PredictParams,
    n_features: usize,
}

/// Where the margins of each (query, beam slot) are: `off[slot_pos[t]]` in the margins
/// buffer, plus the child's offset within its chunk.
struct MarginIndex {
    /// Start of each task's margins (tasks in chunk order), `n_tasks + 1` entries.
    off: Vec<u64>,
    /// Task of each (query, beam slot).
    task_of: Vec<u32>,
}

impl BlockCtx<'_, '_> {
    /// One layer for a block: the margins of every (query, chunk) task, chunk by chunk in
    /// parallel; then per query (in parallel) the path scores of its beam's children and
    /// the best of them (into `beams`, or the outputs on the last layer).
    fn layer<C: Col>(
        &self,
        v: &LayerView<'_, C>,
        beams: &mut Beams,
        labels: Option<&[u32]>,
        marg: &mut Vec<f32>,
        out_ids: &mut [i64],
        out_scores: &mut [f32],
    ) -> std::result::Result<(), Corrupt> {
        let cap = self.cap;
        let nq = beams.len.len();
        let (tasks, index) = if v.whole {
            // one task per query: the whole layer
            let w = v.chunk(0)?.width();
            let tasks: Vec<(u32, u32)> = (0..nq as u32).map(|q| (q, 0)).collect();
            let off = (0..=nq as u64).map(|q| q * w as u64).collect();
            let task_of = (0..nq * cap).map(|t| (t / cap) as u32).collect();
            (tasks, MarginIndex { off, task_of })
        } else {
            self.chunk_tasks(v, beams)?
        };
        // every slot is written by its task: the buffer is only zeroed when it grows
        let n = *index.off.last().unwrap_or(&0) as usize;
        if marg.len() < n {
            marg.resize(n, 0.0);
        }
        let marg = &mut marg[..n];
        self.margins_phase(v, &tasks, &index.off, marg)?;
        self.select_phase(v, beams, labels, &index, marg, out_ids, out_scores)
    }

    /// Tasks (query, chunk) of a per-parent layer, bucketed by chunk with a counting sort
    /// (stable: queries stay in order within a chunk).
    fn chunk_tasks<C: Col>(
        &self,
        v: &LayerView<'_, C>,
        beams: &Beams,
    ) -> std::result::Result<(Vec<(u32, u32)>, MarginIndex), Corrupt> {
        let cap = self.cap;
        let nq = beams.len.len();
        let n_chunks = v.n_chunks();
        let mut next = vec![0u32; n_chunks + 1];
        for qi in 0..nq {
            for &p in &beams.node[qi * cap..qi * cap + beams.len[qi] as usize] {
                *next.get_mut(p as usize + 1).ok_or(Corrupt)? += 1;
            }
        }
        for p in 0..n_chunks {
            next[p + 1] += next[p];
        }
        let n_tasks = next[n_chunks] as usize;
        let mut tasks = vec![(0u32, 0u32); n_tasks];
        let mut task_of = vec![0u32; nq * cap];
        for qi in 0..nq {
            for j in 0..beams.len[qi] as usize {
                let t = qi * cap + j;
                let p = beams.node[t] as usize;
                let pos = next[p] as usize;
                next[p] += 1;
                tasks[pos] = (qi as u32, p as u32);
                task_of[t] = pos as u32;
            }
        }
        let mut off = vec![0u64; n_tasks + 1];
        for (pos, &(_, p)) in tasks.iter().enumerate() {
            let w = v.children(p as usize)?.len();
            off[pos + 1] = off[pos] + w as u64;
        }
        Ok((tasks, MarginIndex { off, task_of }))
    }

    /// Margins of every task into `marg` (task `i` at `off[i]..off[i + 1]`), in parallel
    /// over balanced ranges of tasks.
    fn margins_phase<C: Col>(
        &self,
        v: &LayerView<'_, C>,
        tasks: &[(u32, u32)],
        off: &[u64],
        marg: &mut [f32],
    ) -> std::result::Result<(), Corrupt> {
        let ranges = balanced_ranges(off, rayon::current_num_threads() * 8);
        let mut slices: Vec<(Range<usize>, &mut [f32])> = Vec::with_capacity(ranges.len());
        let mut rest: &mut [f32] = marg;
        for r in ranges {
            let len = (off[r.end] - off[r.start]) as usize;
            let (a, b) = rest.split_at_mut(len);
            slices.push((r, a));
            rest = b;
        }
        slices
            .into_par_iter()
            .try_for_each_init(Dense::default, |dense, (r, out)| {
                let base = off[r.start];
                for pos in r {
                    let (q, j) = tasks[pos];
                    let (qi, qv) = self.x.row(self.row0 + q as usize);
                    let qd = self.xd.map_or(&[][..], |d| d.row(self.row0 + q as usize));
                    let chunk = v.chunk(j as usize)?;
                    let o = (off[pos] - base) as usize;
                    let o = out.get_mut(o..o + chunk.width()).ok_or(Corrupt)?;
                    let res = chunk_margins(
                        &chunk,
                        self.params.kernel,
                        self.n_features,
                        qi,
                        qv,
                        qd,
                        dense,
                        o,
                    );
                    dense.reset(qi);
                    res?;
                }
                Ok(())
            })
    }

    /// Per query: path scores of the beam's children, and the best of them.
    #[allow(clippy::too_many_arguments)]
    fn select_phase<C: Col>(
        &self,
        v: &LayerView<'_, C>,
        beams: &mut Beams,
        labels: Option<&[u32]>,
        index: &MarginIndex,
        marg: &[f32],
        out_ids: &mut [i64],
        out_scores: &mut [f32],
    ) -> std::result::Result<(), Corrupt> {
        let cap = self.cap;
        let nq = beams.len.len();
        let pp = self.params.post_processor;
        let gather = |qi: usize, top: &mut TopK, k: usize| -> std::result::Result<(), Corrupt> {
            top.reset(k);
            for j in 0..beams.len[qi] as usize {
                let t = qi * cap + j;
                if node_pruned(top, pp, beams.score[t]) {
                    break; // beams are sorted best first
                }
                let p = beams.node[t] as usize;
                let r = v.children(p)?;
                let task = index.task_of[t] as usize;
                // offset of the children within the task's margins
                let start = index.off[task] as usize + if v.whole { r.start } else { 0 };
                let m = marg.get(start..start + r.len()).ok_or(Corrupt)?;
                collect_children(top, pp, beams.score[t], m, r.start, labels)?;
            }
            Ok(())
        };
        if labels.is_some() {
            let k = self.params.topk;
            out_ids
                .par_chunks_mut(k)
                .zip(out_scores.par_chunks_mut(k))
                .enumerate()
                .try_for_each_init(TopK::default, |top, (qi, (oi, os))| {
                    gather(qi, top, k)?;
                    write_hits(top.finish(true), oi, os);
                    Ok(())
                })
        } else {
            let mut node = vec![0u32; nq * cap];
            let mut score = vec![0f32; nq * cap];
            let mut len = vec![0u32; nq];
            node.par_chunks_mut(cap)
                .zip(score.par_chunks_mut(cap))
                .zip(len.par_iter_mut())
                .enumerate()
                .try_for_each_init(TopK::default, |top, (qi, ((bn, bs), bl))| {
                    gather(qi, top, cap)?;
                    let best = top.finish(true);
                    for (t, &(s, id)) in best.iter().enumerate() {
                        bn[t] = id;
                        bs[t] = s;
                    }
                    *bl = best.len() as u32;
                    Ok(())
                })?;
            *beams = Beams { node, score, len };
            Ok(())
        }
    }
}

/// Like [`predict`], as a CSR matrix `(n_rows, n_labels)` whose rows hold each query's hits
/// sorted by label id (padding dropped).
pub fn predict_csr(model: &XrModel, x: &CsrView<'_>, params: &PredictParams) -> Result<Csr> {
    let (ids, scores) = predict(model, x, params)?;
    Ok(hits_to_csr(
        &ids,
        &scores,
        x.n_rows(),
        params.topk,
        model.n_labels(),
    ))
}

fn hits_to_csr(ids: &[i64], scores: &[f32], n: usize, k: usize, n_cols: usize) -> Csr {
    let mut indptr = Vec::with_capacity(n + 1);
    indptr.push(0u64);
    let mut indices = Vec::with_capacity(ids.len());
    let mut data = Vec::with_capacity(ids.len());
    let mut row: Vec<(u32, f32)> = Vec::with_capacity(k);
    for i in 0..n {
        row.clear();
        for t in i * k..(i + 1) * k {
            if ids[t] >= 0 {
                row.push((ids[t] as u32, scores[t]));
            }
        }
        row.sort_unstable_by_key(|e| e.0);
        for &(j, s) in &row {
            indices.push(j);
            data.push(s);
        }
        indptr.push(indices.len() as u64);
    }
    Csr {
        n_rows: n,
        n_cols,
        indptr,
        indices,
        data,
    }
}

/// The nodes each row of `x` reaches at the last layer of `model` (usually a partial model,
/// [`XrModel::new_partial`]) with beam `beam`, and their path scores: a CSR matrix
/// `(n_rows, model.n_labels())` whose rows are sorted by node id. This is what
/// matcher-aware negatives need. Equivalent to [`predict_csr`] with `topk = beam`.
pub fn beam_nodes(
    model: &XrModel,
    x: &CsrView<'_>,
    beam: usize,
    post_processor: PostProcessor,
) -> Result<Csr> {
    predict_csr(
        model,
        x,
        &PredictParams {
            beam_size: beam,
            topk: beam,
            post_processor,
            kernel: Kernel::Auto,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterTree;
    use crate::parallel::install;
    use crate::xr::model::LayoutParams;
    use crate::xr::testutil::*;
    use crate::xr::LayerWeights;

    const PPS: [PostProcessor; 5] = [
        PostProcessor::Hinge(3),
        PostProcessor::Noop,
        PostProcessor::Sigmoid,
        PostProcessor::LogHinge(2),
        PostProcessor::LogSigmoid,
    ];

    /// (level sizes, n_labels, n_features)
    const SHAPES: [(&[usize], usize, usize); 6] = [
        (&[], 37, 20),         // depth 0: one chunk holding every label
        (&[3], 40, 30),        // depth 1
        (&[2, 5], 60, 25),     // uneven fan-outs
        (&[4, 9, 23], 90, 40), // depth 3
        (&[1, 1, 3], 10, 8),   // single-child chains
        (&[7], 7, 300),        // one label per leaf, sparse queries vs big feature space
    ];

    fn setup(shape: usize, seed: u64) -> (ClusterTree, Vec<LayerWeights>, usize) {
        let (levels, n_labels, d) = SHAPES[shape];
        let tree = random_tree(levels, n_labels, seed);
        let layers = random_layers(&tree, tree.depth() + 1, d, seed);
        (tree, layers, d)
    }

    fn dense_row(x: &Csr, i: usize) -> Vec<f32> {
        let mut xd = vec![0f32; x.n_cols];
        let (idx, val) = x.view().row(i);
        for (&f, &v) in idx.iter().zip(val) {
            xd[f as usize] = v;
        }
        xd
    }

    fn widest_level(tree: &ClusterTree) -> usize {
        (0..=tree.depth()).map(|t| tree.n_nodes(t)).max().unwrap()
    }

    #[test]
    fn full_beam_equals_exhaustive_scoring() {
        for shape in 0..SHAPES.len() {
            for seed in 0..3 {
                let (tree, layers, d) = setup(shape, seed);
                let merged = XrModel::new(&tree, layers.clone(), d).unwrap();
                let lp = LayoutParams {
                    merge_max_children: 0,
                    ..LayoutParams::default()
                };
                let per_parent = XrModel::with_layout(&tree, &layers, d, &lp).unwrap();
                let x = random_queries(45, d, 12, seed + 100);
                let beam = widest_level(&tree);
                for (model, pp) in [&merged, &per_parent]
                    .into_iter()
                    .flat_map(|m| PPS.map(|p| (m, p)))
                {
                    for topk in [1, 5, tree.n_labels() + 3] {
                        let params = PredictParams {
                            beam_size: beam,
                            topk,
                            post_processor: pp,
                            kernel: Kernel::Auto,
                        };
                        let (ids, sc) = predict(model, &x.view(), &params).unwrap();
                        for i in 0..x.n_rows {
                            let all = exhaustive_scores(&tree, &layers, &dense_row(&x, i), pp);
                            let (ei, es) = topk_of(&all, topk);
                            assert_eq!(&ids[i * topk..(i + 1) * topk], &ei[..], "{shape} {pp:?}");
                            assert_eq!(&sc[i * topk..(i + 1) * topk], &es[..], "{shape} {pp:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn kernels_layouts_and_paths_agree_bit_for_bit() {
        for shape in 0..SHAPES.len() {
            let (tree, layers, d) = setup(shape, 7);
            let x = random_queries(70, d, 30, 8);
            let base = XrModel::new(&tree, layers.clone(), d).unwrap();
            let layouts = [
                LayoutParams {
                    merge_max_children: 0,
                    ..LayoutParams::default()
                },
                LayoutParams {
                    merge_max_children: 0,
                    dense_min_fill: 0.01,
                    ..LayoutParams::default()
                },
                LayoutParams {
                    dense_min_fill: 2.0,
                    ..LayoutParams::default()
                },
                LayoutParams {
                    dense_min_fill: 0.01,
                    rows_per_bucket: 1,
                    ..LayoutParams::default()
                },
                LayoutParams {
                    rows_per_bucket: 64,
                    wide_cols: true,
                    ..LayoutParams::default()
                },
                // no dense copies, and dense copies of every one-chunk layer
                LayoutParams {
                    dense_copy_max_bytes: 0,
                    ..LayoutParams::default()
                },
                LayoutParams {
                    dense_copy_max_bytes: usize::MAX,
                    dense_copy_min_fill: 0.0,
                    ..LayoutParams::default()
                },
                // no feature-indexed pointers (the bucket index everywhere)
                LayoutParams {
                    direct_max_bytes: 0,
                    ..LayoutParams::default()
                },
            ];
            let direct = |m: &XrModel| m.layers.iter().filter(|l| l.direct.is_some()).count();
            assert!(
                direct(&base) > 0,
                "shape {shape}: no layer has a direct pointer"
            );
            let plain = XrModel::with_layout(&tree, &layers, d, &layouts[7]).unwrap();
            assert_eq!(direct(&plain), 0);
            let copied = |m: &XrModel| m.layers.iter().filter(|l| l.dense.is_some()).count();
            let all = XrModel::with_layout(&tree, &layers, d, &layouts[6]).unwrap();
            assert!(copied(&all) > 0, "shape {shape}: no layer has a dense copy");
            let none = XrModel::with_layout(&tree, &layers, d, &layouts[5]).unwrap();
            assert_eq!(copied(&none), 0);
            let models: Vec<XrModel> = std::iter::once(base)
                .chain(
                    layouts
                        .iter()
                        .map(|lp| XrModel::with_layout(&tree, &layers, d, lp).unwrap()),
                )
                .collect();
            for pp in PPS {
                for beam in [1, 2, 5] {
                    let mut want: Option<(Vec<i64>, Vec<f32>)> = None;
                    for model in &models {
                        for kernel in [Kernel::Auto, Kernel::Lookup, Kernel::Merge, Kernel::Scan] {
                            let params = PredictParams {
                                beam_size: beam,
                                topk: 4,
                                post_processor: pp,
                                kernel,
                            };
                            let got = predict(model, &x.view(), &params).unwrap();
                            // one query at a time
                            let mut s = Searcher::new();
                            for i in 0..x.n_rows {
                                let (qi, qv) = x.view().row(i);
                                let (mut oi, mut os) = (vec![0i64; 4], vec![0f32; 4]);
                                s.search(model, qi, qv, &params, &mut oi, &mut os).unwrap();
                                assert_eq!(&oi[..], &got.0[i * 4..i * 4 + 4]);
                                let b: Vec<u32> = os.iter().map(|v| v.to_bits()).collect();
                                let g: Vec<u32> = got.1[i * 4..i * 4 + 4]
                                    .iter()
                                    .map(|v| v.to_bits())
                                    .collect();
                                assert_eq!(b, g);
                            }
                            // small batches take the per-thread searcher path
                            let small = crate::sparse::row_gather(&x.view(), &[3, 0, 5]).unwrap();
                            let gs = predict(model, &small.view(), &params).unwrap();
                            for (r, &i) in [3usize, 0, 5].iter().enumerate() {
                                assert_eq!(&gs.0[r * 4..r * 4 + 4], &got.0[i * 4..i * 4 + 4]);
                            }
                            match &want {
                                None => want = Some(got),
                                Some(w) => {
                                    assert_eq!(w.0, got.0, "{shape} {pp:?} {kernel:?}");
                                    let a: Vec<u32> = w.1.iter().map(|v| v.to_bits()).collect();
                                    let b: Vec<u32> = got.1.iter().map(|v| v.to_bits()).collect();
                                    assert_eq!(a, b, "{shape} {pp:?} {kernel:?}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn same_result_for_any_thread_count() {
        let (tree, layers, d) = setup(3, 11);
        let model = XrModel::new(&tree, layers, d).unwrap();
        let x = random_queries(300, d, 20, 12);
        let params = PredictParams {
            beam_size: 3,
            topk: 7,
            ..PredictParams::default()
        };
        let one = install(Some(1), || predict(&model, &x.view(), &params).unwrap()).unwrap();
        for t in [2, 3, 5] {
            let got = install(Some(t), || predict(&model, &x.view(), &params).unwrap()).unwrap();
            assert_eq!(one.0, got.0);
            assert_eq!(
                one.1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                got.1.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn padding_when_few_labels_are_reachable() {
        let (tree, layers, d) = setup(2, 3);
        let model = XrModel::new(&tree, layers, d).unwrap();
        let x = random_queries(40, d, 5, 4);
        let params = PredictParams {
            beam_size: 1,
            topk: 200,
            ..PredictParams::default()
        };
        let (ids, sc) = predict(&model, &x.view(), &params).unwrap();
        let leaf_max = tree
            .leaf_ptr()
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap() as usize;
        for i in 0..x.n_rows {
            let row = &ids[i * 200..(i + 1) * 200];
            let n = row.iter().filter(|&&v| v >= 0).count();
            assert!(n >= 1 && n <= leaf_max);
            assert!(row[n..].iter().all(|&v| v == -1));
            assert!(sc[i * 200 + n..(i + 1) * 200]
                .iter()
                .all(|&v| v == f32::NEG_INFINITY));
            // best first
            assert!(sc[i * 200..i * 200 + n].windows(2).all(|w| w[0] >= w[1]));
        }
        let csr = predict_csr(&model, &x.view(), &params).unwrap();
        assert_eq!(csr.nnz(), ids.iter().filter(|&&v| v >= 0).count());
        assert!(csr.view().is_canonical());
        assert_eq!(csr.n_cols, tree.n_labels());
    }

    #[test]
    fn bad_input_is_an_error_and_empty_rows_score_by_bias() {
        let (tree, layers, d) = setup(1, 5);
        let model = XrModel::new(&tree, layers.clone(), d).unwrap();
        let x = random_queries(5, d, 4, 1);
        let p = PredictParams::default();
        let wrong = random_queries(5, d + 1, 4, 1);
        assert!(predict(&model, &wrong.view(), &p).is_err());
        assert!(predict(&model, &x.view(), &PredictParams { topk: 0, ..p }).is_err());
        assert!(predict(&model, &x.view(), &PredictParams { beam_size: 0, ..p }).is_err());
        let mut nan = x.clone();
        if let Some(v) = nan.data.first_mut() {
            *v = f32::NAN;
        }
        assert!(predict(&model, &nan.view(), &p).is_err());
        let mut s = Searcher::new();
        let (mut oi, mut os) = (vec![0i64; 10], vec![0f32; 10]);
        assert!(s
            .search(&model, &[2, 1], &[1.0, 1.0], &p, &mut oi, &mut os)
            .is_err());
        assert!(s
            .search(&model, &[1, 1], &[1.0, 1.0], &p, &mut oi, &mut os)
            .is_err());
        assert!(s
            .search(&model, &[d as u32], &[1.0], &p, &mut oi, &mut os)
            .is_err());
        assert!(s
            .search(&model, &[1], &[1.0, 2.0], &p, &mut oi, &mut os)
            .is_err());
        assert!(s
            .search(&model, &[1], &[1.0], &p, &mut oi[..3], &mut os)
            .is_err());
        // an all-zero query: scores from the biases alone
        let n = s.search(&model, &[], &[], &p, &mut oi, &mut os).unwrap();
        let all = exhaustive_scores(&tree, &layers, &vec![0.0; d], p.post_processor);
        let beam_all = PredictParams {
            beam_size: 100,
            ..p
        };
        s.search(&model, &[], &[], &beam_all, &mut oi, &mut os)
            .unwrap();
        let (ei, es) = topk_of(&all, 10);
        assert_eq!(oi, ei);
        assert_eq!(os, es);
        assert!(n >= 1);
        // unsorted rows in a batch are canonicalised
        let un = Csr {
            n_rows: 1,
            n_cols: d,
            indptr: vec![0, 2],
            indices: vec![5, 2],
            data: vec![0.5, 0.25],
        };
        let so = Csr {
            indices: vec![2, 5],
            data: vec![0.25, 0.5],
            ..un.clone()
        };
        assert_eq!(
            predict(&model, &un.view(), &p).unwrap(),
            predict(&model, &so.view(), &p).unwrap()
        );
    }

    #[test]
    fn partial_model_beams_reach_the_best_nodes() {
        let (tree, layers, d) = setup(3, 21);
        let x = random_queries(50, d, 10, 22);
        for m in 1..=tree.depth() {
            let part = XrModel::new_partial(&tree, &layers[..m], d).unwrap();
            assert!(part.is_partial());
            assert_eq!(part.n_labels(), tree.n_nodes(m));
            let beam = widest_level(&tree);
            let pp = PostProcessor::Hinge(3);
            let got = beam_nodes(&part, &x.view(), beam, pp).unwrap();
            assert_eq!(got.n_cols, tree.n_nodes(m));
            for i in 0..x.n_rows {
                let all = exhaustive_scores(&tree, &layers[..m], &dense_row(&x, i), pp);
                let (idx, val) = got.view().row(i);
                assert_eq!(idx.len(), all.len().min(beam));
                for (&j, &v) in idx.iter().zip(val) {
                    assert_eq!(v, all[j as usize]);
                }
            }
            // a narrow beam keeps exactly `beam` nodes per row, sorted by id
            let narrow = beam_nodes(&part, &x.view(), 2, pp).unwrap();
            for i in 0..x.n_rows {
                let (idx, _) = narrow.view().row(i);
                assert_eq!(idx.len(), 2.min(tree.n_nodes(m)));
                assert!(idx.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }
}
