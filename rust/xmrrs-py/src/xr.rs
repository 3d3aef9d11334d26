//! XR-Linear: training, the compiled model object, beam search and model files.
//!
//! `XrModel` wraps `xmrrs_core::xr::model::XrModel` (owned or memory-mapped) together with a
//! scratch `Searcher`, so that one-row queries (and a few rows, see `on_caller`) run without
//! a thread pool and without allocating; ensembles keep their scratch per calling thread.

use std::sync::Mutex;

use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use xmrrs_core::cluster::ClusterTree;
use xmrrs_core::dense::{check_rows, DenseView};
use xmrrs_core::sparse::{self, CsrView};
use xmrrs_core::xr::infer::{self, EnsembleSearcher, PredictParams, Searcher};
use xmrrs_core::xr::model::XrModel;
use xmrrs_core::xr::train::{self, TrainParams};
use xmrrs_core::xr::{Loss, Negatives, PostProcessor, SolverParams};

use crate::convert::{with_canonical, CsrArg};
use crate::errors::{guard, to_py};
use crate::indexing::TreeOut;
use crate::{run, TopK};

pub(crate) fn pp(name: &str) -> PyResult<PostProcessor> {
    PostProcessor::parse(name).map_err(|e| PyValueError::new_err(format!("post_processor: {e}")))
}

pub(crate) fn u32s(a: &PyReadonlyArray1<'_, u32>, what: &str) -> PyResult<Vec<u32>> {
    a.as_slice()
        .map(<[u32]>::to_vec)
        .map_err(|_| PyValueError::new_err(format!("{what} must be contiguous")))
}

/// Checks a post-processor name (raises `ValueError` listing the valid ones).
#[pyfunction]
pub fn check_post_processor(name: &str) -> PyResult<()> {
    pp(name).map(|_| ())
}

/// A compiled XR-Linear model: the tree's layers of sparse weights in the inference layout.
#[pyclass(name = "XrModel", module = "xmrrs._xmrrs", frozen)]
pub struct PyXrModel {
    inner: XrModel,
    scratch: Mutex<Scratch>,
}

/// Reusable buffers of the one-row path: the searcher and the normalised query values.
#[derive(Default)]
struct Scratch {
    searcher: Searcher,
    values: Vec<f32>,
}

impl PyXrModel {
    pub(crate) fn wrap(inner: XrModel) -> Self {
        PyXrModel {
            inner,
            scratch: Mutex::new(Scratch::default()),
        }
    }
}

/// The dense block argument: a C-contiguous float32 2-D array (the Python side makes one).
pub(crate) fn dense_view<'a>(
    a: Option<&'a PyReadonlyArray2<'_, f32>>,
) -> PyResult<Option<DenseView<'a>>> {
    let Some(a) = a else { return Ok(None) };
    let shape = a.shape();
    let data = a.as_slice().map_err(|_| {
        PyValueError::new_err("the dense block must be a C-contiguous float32 array")
    })?;
    Ok(Some(
        DenseView::new(shape[0], shape[1], data).map_err(to_py)?,
    ))
}

/// `f` on `v`, or on a copy of `v` with L2-normalised rows when `normalize` and some row is
/// not of unit norm already.
fn maybe_normalized<R>(
    v: CsrView<'_>,
    normalize: bool,
    f: impl FnOnce(&CsrView<'_>) -> xmrrs_core::Result<R>,
) -> xmrrs_core::Result<R> {
    if normalize && !sparse::rows_are_unit_l2(&v) {
        let mut m = v.to_owned();
        sparse::normalize_rows_l2(&mut m);
        f(&m.view())
    } else {
        f(&v)
    }
}

/// Prediction settings; `k` is capped at `n_labels` (a larger `k` would only add padding
/// columns) and the core caps `beam_size` the same way.
fn params(
    k: usize,
    beam_size: usize,
    post_processor: &str,
    n_labels: usize,
) -> PyResult<PredictParams> {
    let p = PredictParams {
        beam_size,
        topk: k.min(n_labels.max(1)),
        post_processor: pp(post_processor)?,
        ..PredictParams::default()
    };
    p.validate().map_err(to_py)?;
    Ok(p)
}

fn topk_out(
    py: Python<'_>,
    ids: Vec<i64>,
    scores: Vec<f32>,
    n: usize,
    k: usize,
) -> PyResult<TopK<'_>> {
    Ok((
        PyArray1::from_vec(py, ids).reshape([n, k])?,
        PyArray1::from_vec(py, scores).reshape([n, k])?,
    ))
}

#[pymethods]
impl PyXrModel {
    /// Number of input features.
    #[getter]
    fn n_features(&self) -> usize {
        self.inner.n_features()
    }
    /// Width of the dense feature block (0: sparse input only).
    #[getter]
    fn n_dense(&self) -> usize {
        self.inner.n_dense()
    }
    /// Number of labels.
    #[getter]
    fn n_labels(&self) -> usize {
        self.inner.n_labels()
    }
    /// Number of tree levels below the root.
    #[getter]
    fn depth(&self) -> usize {
        self.inner.depth()
    }
    /// Stored weights of each layer.
    #[getter]
    fn layer_nnz(&self) -> Vec<usize> {
        self.inner.layer_nnz()
    }
    /// Bytes of the arrays (mapped or owned).
    #[getter]
    fn nbytes(&self) -> usize {
        self.inner.nbytes()
    }
    /// Whether the arrays are memory-mapped from a model file.
    #[getter]
    fn is_mmap(&self) -> bool {
        self.inner.is_mapped()
    }

    /// The label tree as `(child_ptrs, leaf_ptr, labels)` (uint32 arrays).
    fn tree_parts<'py>(&self, py: Python<'py>) -> PyResult<TreeOut<'py>> {
        let n_layers = self.inner.n_layers();
        let mut ptrs = Vec::with_capacity(n_layers);
        for m in 0..n_layers {
            let ptr = self
                .inner
                .child_ptr(m)
                .ok_or_else(|| PyValueError::new_err("layer out of range"))?;
            ptrs.push(PyArray1::from_slice(py, ptr));
        }
        let leaf = ptrs
            .pop()
            .ok_or_else(|| PyValueError::new_err("model without layers"))?;
        Ok((ptrs, leaf, PyArray1::from_slice(py, self.inner.labels())))
    }

    /// Top-`k` label ids (int64, -1 padded) and scores (float32, -inf padded) of each row,
    /// `(n_rows, min(k, n_labels))`, rows L2-normalised first when `normalize` (the input is
    /// not modified). `x_dense` is the dense feature block of a hybrid model (one row per
    /// row of `x`; `normalize` does not apply to hybrid input: the caller scales it).
    /// A few rows (see `on_caller`) are searched on the calling thread with reusable scratch
    /// (no pool).
    #[pyo3(signature = (x, k, beam_size, post_processor, n_jobs=None, normalize=false, x_dense=None))]
    #[allow(clippy::too_many_arguments)]
    fn predict_topk<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        k: usize,
        beam_size: usize,
        post_processor: &str,
        n_jobs: Option<i64>,
        normalize: bool,
        x_dense: Option<PyReadonlyArray2<'py, f32>>,
    ) -> PyResult<TopK<'py>> {
        let p = params(k, beam_size, post_processor, self.inner.n_labels())?;
        let k = p.topk;
        let a = CsrArg::extract(x, "X")?;
        let v = a.view()?;
        let n = v.n_rows();
        let xd = dense_view(x_dense.as_ref())?;
        if xd.is_some() || self.inner.n_dense() > 0 {
            let (ids, scores) = run(py, n_jobs, || {
                with_canonical(v, |v| {
                    infer::predict_hybrid(&self.inner, &v, xd.as_ref(), &p)
                })
            })?;
            return topk_out(py, ids, scores, n, k);
        }
        if on_caller(n, n_jobs)? {
            let (mut ids, mut scores) = (vec![-1i64; n * k], vec![f32::NEG_INFINITY; n * k]);
            py.detach(|| {
                guard(|| {
                    with_canonical(v, |v| {
                        // a concurrent caller gets fresh scratch instead of waiting
                        let mut guard = self.scratch.try_lock().ok();
                        let mut local;
                        let s: &mut Scratch = match guard.as_deref_mut() {
                            Some(s) => s,
                            None => {
                                local = Scratch::default();
                                &mut local
                            }
                        };
                        for (i, (oi, os)) in ids.chunks_mut(k).zip(scores.chunks_mut(k)).enumerate()
                        {
                            let (idx, val) = v.row(i);
                            let val = normalized(val, normalize, &mut s.values);
                            s.searcher.search(&self.inner, idx, val, &p, oi, os)?;
                        }
                        Ok(())
                    })
                })
            })?;
            return topk_out(py, ids, scores, n, k);
        }
        let (ids, scores) = run(py, n_jobs, || {
            with_canonical(v, |v| {
                maybe_normalized(v, normalize, |v| infer::predict(&self.inner, v, &p))
            })
        })?;
        topk_out(py, ids, scores, n, k)
    }

    /// Writes the model to the directory `path` (atomically).
    fn save(&self, py: Python<'_>, path: &str) -> PyResult<()> {
        py.detach(|| guard(|| self.inner.save(path)))
    }

    /// Reads a model directory; `mmap=True` maps the arrays read-only.
    #[staticmethod]
    #[pyo3(signature = (path, mmap=false))]
    fn load(py: Python<'_>, path: &str, mmap: bool) -> PyResult<Self> {
        let m = py.detach(|| guard(|| XrModel::load(path, mmap)))?;
        Ok(Self::wrap(m))
    }

    /// The model file's content as one byte string (for pickle).
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let b = py.detach(|| guard(|| self.inner.to_bytes()))?;
        Ok(PyBytes::new(py, &b))
    }

    /// Rebuilds a model from :meth:`to_bytes` (fully verified).
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let m = py.detach(|| guard(|| XrModel::from_bytes(data)))?;
        Ok(Self::wrap(m))
    }

    /// Full check of a (mapped) model: checksum and structure.
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| guard(|| self.inner.verify()))
    }

    fn __repr__(&self) -> String {
        format!(
            "XrModel(n_features={}, n_labels={}, depth={}, nnz={}, mmap={})",
            self.inner.n_features(),
            self.inner.n_labels(),
            self.inner.depth(),
            self.inner.layer_nnz().iter().sum::<usize>(),
            self.inner.is_mapped()
        )
    }
}

pub(crate) fn loss(name: &str) -> PyResult<Loss> {
    match name {
        "squared_hinge" => Ok(Loss::SquaredHinge),
        "hinge" => Ok(Loss::Hinge),
        "logistic" => Ok(Loss::Logistic),
        _ => Err(PyValueError::new_err(format!(
            "loss must be squared_hinge, hinge or logistic, got {name:?}"
        ))),
    }
}

pub(crate) fn negatives(name: &str) -> PyResult<Negatives> {
    match name {
        "tfn" => Ok(Negatives {
            tfn: true,
            man: false,
        }),
        "man" => Ok(Negatives {
            tfn: false,
            man: true,
        }),
        "tfn+man" => Ok(Negatives {
            tfn: true,
            man: true,
        }),
        _ => Err(PyValueError::new_err(format!(
            "negatives must be tfn, man or tfn+man, got {name:?}"
        ))),
    }
}

/// The label tree as Python passes it: `(child_ptrs, leaf_ptr, labels)`.
pub(crate) type TreeArg<'py> = (
    Vec<PyReadonlyArray1<'py, u32>>,
    PyReadonlyArray1<'py, u32>,
    PyReadonlyArray1<'py, u32>,
);

/// The checked tree of a [`TreeArg`].
pub(crate) fn tree_of(tree: &TreeArg<'_>) -> PyResult<ClusterTree> {
    let ptrs = tree
        .0
        .iter()
        .enumerate()
        .map(|(t, p)| u32s(p, &format!("child_ptr[{t}]")))
        .collect::<PyResult<Vec<_>>>()?;
    ClusterTree::from_parts(ptrs, u32s(&tree.1, "leaf_ptr")?, u32s(&tree.2, "labels")?)
        .map_err(to_py)
}

/// The solver settings `(loss, cp, cn, max_iter, tol, bias, threshold)` of a training call.
pub(crate) type SolverArgs<'a> = (&'a str, f32, f32, u32, f32, f32, f32);

/// Training settings from the binding's arguments; `man` is the beam width and
/// post-processor of `man` negatives (defaults where the caller has none).
pub(crate) fn train_params(
    solver: SolverArgs<'_>,
    negatives: &str,
    man: Option<(usize, &str)>,
    seed: u64,
) -> PyResult<TrainParams> {
    let (loss, cp, cn, max_iter, tol, bias, threshold) = solver;
    let defaults = TrainParams::default();
    Ok(TrainParams {
        solver: SolverParams {
            loss: self::loss(loss)?,
            cp,
            cn,
            max_iter,
            tol,
            bias,
            threshold,
            ..SolverParams::default()
        },
        negatives: self::negatives(negatives)?,
        man_beam_size: man.map_or(defaults.man_beam_size, |m| m.0),
        man_post_processor: pp(man.map_or("l3-hinge", |m| m.1))?,
        seed,
        dense_in_ranker: defaults.dense_in_ranker,
        top_fraction: defaults.top_fraction,
    })
}

/// Trains every layer of an XR-Linear model over each label tree of `trees` (tree `i` with
/// visiting orders seeded by `seeds[i]`; the trees' tasks share one pool); returns, per tree,
/// the model and the mean number of solver passes per node of each layer.
#[pyfunction]
#[pyo3(signature = (x, y, trees, seeds, *, loss="squared_hinge", cp=1.0, cn=1.0, max_iter=100, tol=0.1, bias=1.0, threshold=0.1, negatives="tfn", beam_size=10, post_processor="l3-hinge", relevance=None, n_jobs=None, x_dense=None, dense_in_ranker=true, top_fraction=1.0))]
#[allow(clippy::too_many_arguments)]
pub fn xr_train<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    trees: Vec<TreeArg<'py>>,
    seeds: Vec<u64>,
    loss: &str,
    cp: f32,
    cn: f32,
    max_iter: u32,
    tol: f32,
    bias: f32,
    threshold: f32,
    negatives: &str,
    beam_size: usize,
    post_processor: &str,
    relevance: Option<&Bound<'py, PyAny>>,
    n_jobs: Option<i64>,
    x_dense: Option<PyReadonlyArray2<'py, f32>>,
    dense_in_ranker: bool,
    top_fraction: f64,
) -> PyResult<Vec<(PyXrModel, Vec<f64>)>> {
    if trees.len() != seeds.len() {
        return Err(PyValueError::new_err(format!(
            "{} trees but {} seeds",
            trees.len(),
            seeds.len()
        )));
    }
    let mut jobs: Vec<(ClusterTree, TrainParams)> = Vec::with_capacity(trees.len());
    for (tree, &seed) in trees.iter().zip(&seeds) {
        let mut params = train_params(
            (loss, cp, cn, max_iter, tol, bias, threshold),
            negatives,
            Some((beam_size, post_processor)),
            seed,
        )?;
        params.dense_in_ranker = dense_in_ranker;
        params.top_fraction = top_fraction;
        jobs.push((tree_of(tree)?, params));
    }
    let xa = CsrArg::extract(x, "X")?;
    let ya = CsrArg::extract(y, "Y")?;
    let ra = relevance
        .map(|r| CsrArg::extract(r, "relevance"))
        .transpose()?;
    let (xv, yv) = (xa.view()?, ya.view()?);
    let rv = ra.as_ref().map(|r| r.view()).transpose()?;
    let xd = dense_view(x_dense.as_ref())?;
    let refs: Vec<(&ClusterTree, TrainParams)> = jobs.iter().map(|(t, p)| (t, *p)).collect();
    let trained = run(py, n_jobs, || {
        with_canonical(xv, |xv| {
            with_canonical(yv, |yv| {
                let out =
                    train::train_ensemble_with_stats(&xv, xd.as_ref(), &yv, &refs, rv.as_ref())?;
                out.into_iter()
                    .zip(&refs)
                    .map(|((layers, stats), (tree, _))| {
                        Ok((XrModel::new(tree, layers, xv.n_cols())?, stats))
                    })
                    .collect::<xmrrs_core::Result<Vec<_>>>()
            })
        })
    })?;
    Ok(trained
        .into_iter()
        .map(|(model, stats)| {
            let passes = stats
                .iter()
                .map(|s| s.n_passes as f64 / s.n_problems.max(1) as f64)
                .collect();
            (PyXrModel::wrap(model), passes)
        })
        .collect())
}

/// Averages the predictions of several models over the same labels (see the core docs);
/// rows of `x` are L2-normalised first when `normalize`.
#[pyfunction]
#[pyo3(signature = (models, x, k, beam_size, post_processor, n_jobs=None, normalize=false, x_dense=None))]
#[allow(clippy::too_many_arguments)]
pub fn xr_predict_ensemble<'py>(
    py: Python<'py>,
    models: Vec<PyRef<'py, PyXrModel>>,
    x: &Bound<'py, PyAny>,
    k: usize,
    beam_size: usize,
    post_processor: &str,
    n_jobs: Option<i64>,
    normalize: bool,
    x_dense: Option<PyReadonlyArray2<'py, f32>>,
) -> PyResult<TopK<'py>> {
    let xd = dense_view(x_dense.as_ref())?;
    let n_labels = models.first().map_or(1, |m| m.inner.n_labels());
    let p = params(k, beam_size, post_processor, n_labels)?;
    let k = p.topk;
    let a = CsrArg::extract(x, "X")?;
    let v = a.view()?;
    let n = v.n_rows();
    let refs: Vec<&XrModel> = models.iter().map(|m| &m.inner).collect();
    if on_caller(n, n_jobs)? {
        // a few queries: on this thread, without the pool's hand-off (the batch's answers)
        let (mut ids, mut scores) = (vec![-1i64; n * k], vec![f32::NEG_INFINITY; n * k]);
        py.detach(|| {
            guard(|| {
                // as the batch checks it: one dense row per row of x
                check_rows(xd.as_ref(), n, "x")?;
                with_canonical(v, |v| {
                    ENSEMBLE_SCRATCH.with_borrow_mut(|(searcher, values)| {
                        for (i, (oi, os)) in ids.chunks_mut(k).zip(scores.chunks_mut(k)).enumerate()
                        {
                            let (idx, val) = v.row(i);
                            let val = normalized(val, normalize && xd.is_none(), values);
                            let dense = xd.as_ref().map_or(&[][..], |d| d.row(i));
                            searcher.search_hybrid(&refs, idx, val, dense, &p, oi, os)?;
                        }
                        Ok(())
                    })
                })
            })
        })?;
        return topk_out(py, ids, scores, n, k);
    }
    let (ids, scores) = run(py, n_jobs, || {
        with_canonical(v, |v| {
            maybe_normalized(v, normalize && xd.is_none(), |v| {
                infer::predict_ensemble_hybrid(&refs, v, xd.as_ref(), &p)
            })
        })
    })?;
    topk_out(py, ids, scores, n, k)
}

/// Most rows searched on the calling thread whatever `n_jobs` (handing a batch to the pool
/// and back costs about 100 us on the benchmark machine, a row 15-25 us).
const CALLER_ROWS: usize = 4;
/// Most rows searched on the calling thread when `n_jobs` gives one thread (the pool would
/// only add the hand-off); from this size on the batch's blocked search is faster per row.
const ONE_THREAD_ROWS: usize = 31;

/// Whether a search of `n` rows runs on the calling thread, row by row (the same answers as
/// the batch, which searches fewer than 32 rows that way and more rows bit-identically).
fn on_caller(n: usize, n_jobs: Option<i64>) -> PyResult<bool> {
    let threads = xmrrs_core::parallel::resolve_n_jobs(n_jobs).map_err(to_py)?;
    Ok(n >= 1 && (n <= CALLER_ROWS || (threads == 1 && n <= ONE_THREAD_ROWS)))
}

/// `val` L2-normalised into `buf` when `normalize`, else `val` itself.
fn normalized<'a>(val: &'a [f32], normalize: bool, buf: &'a mut Vec<f32>) -> &'a [f32] {
    if !normalize {
        return val;
    }
    buf.clear();
    buf.extend_from_slice(val);
    sparse::normalize_l2(buf);
    &buf[..]
}

thread_local! {
    /// Scratch of one-query ensemble searches, per calling thread (buffers grow to the
    /// largest model searched, then are reused).
    static ENSEMBLE_SCRATCH: std::cell::RefCell<(EnsembleSearcher, Vec<f32>)> =
        std::cell::RefCell::new((EnsembleSearcher::new(), Vec::new()));
}
