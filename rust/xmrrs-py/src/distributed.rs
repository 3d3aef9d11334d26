//! Distributed training: train a part of the tree on the rows that reach it, and assemble
//! the parts into one model (see `xmrrs_core::xr::train::train_subtrees` and
//! `xmrrs_core::xr::assemble`).

use numpy::{
    PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use xmrrs_core::xr::assemble::{assemble_layers, PartView};
use xmrrs_core::xr::model::XrModel;
use xmrrs_core::xr::train;

use crate::convert::{csr_out, with_canonical, CsrArg, CsrOut};
use crate::run;
use crate::xr::{dense_view, train_params, tree_of, u32s, PyXrModel, TreeArg};

/// One trained part: `(layer, parents, weights, bias, n_passes, seconds, dense)`; `dense`:
/// the rows' dense-block weights, `(n_rows, n_dense)` (`n_dense` 0 without a dense block).
type PartOut<'py> = (
    usize,
    Bound<'py, PyArray1<u32>>,
    CsrOut<'py>,
    Bound<'py, PyArray1<f32>>,
    u64,
    f64,
    Bound<'py, PyArray2<f32>>,
);

/// One part handed to `xr_assemble`: `(layer, parents, weights, bias, dense)`.
type PartArg<'py> = (
    usize,
    PyReadonlyArray1<'py, u32>,
    Bound<'py, PyAny>,
    PyReadonlyArray1<'py, f32>,
    PyReadonlyArray2<'py, f32>,
);

/// Trains the parents of layers `level..=last_layer` that descend from `roots` (nodes of
/// tree level `level`) on the rows given (those that reach the roots, in global order);
/// `tfn` negatives only; `x_dense`: the rows' dense block (a hybrid model, as `xr_train`).
/// Returns one part per layer (see `xr_assemble`).
#[pyfunction]
#[pyo3(signature = (x, y, tree, level, roots, last_layer, *, loss="squared_hinge", cp=1.0, cn=1.0, max_iter=100, tol=0.1, bias=1.0, threshold=0.1, negatives="tfn", seed=0, relevance=None, n_jobs=None, x_dense=None, dense_in_ranker=true))]
#[allow(clippy::too_many_arguments)]
pub fn xr_train_subtrees<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    tree: TreeArg<'py>,
    level: usize,
    roots: PyReadonlyArray1<'py, u32>,
    last_layer: usize,
    loss: &str,
    cp: f32,
    cn: f32,
    max_iter: u32,
    tol: f32,
    bias: f32,
    threshold: f32,
    negatives: &str,
    seed: u64,
    relevance: Option<&Bound<'py, PyAny>>,
    n_jobs: Option<i64>,
    x_dense: Option<PyReadonlyArray2<'py, f32>>,
    dense_in_ranker: bool,
) -> PyResult<Vec<PartOut<'py>>> {
    let mut params = train_params(
        (loss, cp, cn, max_iter, tol, bias, threshold),
        negatives,
        None,
        seed,
    )?;
    params.dense_in_ranker = dense_in_ranker;
    let tree = tree_of(&tree)?;
    let roots = u32s(&roots, "roots")?;
    let xd = dense_view(x_dense.as_ref())?;
    let xa = CsrArg::extract(x, "X")?;
    let ya = CsrArg::extract(y, "Y")?;
    let ra = relevance
        .map(|r| CsrArg::extract(r, "relevance"))
        .transpose()?;
    let (xv, yv) = (xa.view()?, ya.view()?);
    let rv = ra.as_ref().map(|r| r.view()).transpose()?;
    let parts = run(py, n_jobs, || {
        with_canonical(xv, |xv| {
            with_canonical(yv, |yv| {
                train::train_subtrees(
                    &xv,
                    xd.as_ref(),
                    &yv,
                    &tree,
                    &params,
                    rv.as_ref(),
                    level,
                    &roots,
                    last_layer,
                )
            })
        })
    })?;
    parts
        .into_iter()
        .map(|p| {
            let rows = p.bias.len();
            Ok((
                p.layer,
                PyArray1::from_vec(py, p.parents),
                csr_out(py, p.weights),
                PyArray1::from_vec(py, p.bias),
                p.n_passes,
                p.seconds,
                PyArray1::from_vec(py, p.dense).reshape([rows, p.n_dense])?,
            ))
        })
        .collect()
}

/// The rows of a block (global rows `start..start + n`) in the top layer's sample of
/// `fraction` for `seed`, as offsets from `start` (what `xr_train` keeps at layer 0).
#[pyfunction]
pub fn xr_top_sample_rows<'py>(
    py: Python<'py>,
    seed: u64,
    start: u64,
    n: usize,
    fraction: f64,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(PyValueError::new_err(format!(
            "fraction must be in (0, 1], got {fraction}"
        )));
    }
    if n > u32::MAX as usize || start.checked_add(n as u64).is_none() {
        return Err(PyValueError::new_err(format!(
            "rows {start}..{start}+{n}: a block holds at most {} rows and ends below 2^64",
            u32::MAX
        )));
    }
    let rows = py.detach(|| train::top_sample_rows(seed, start, n, fraction));
    Ok(PyArray1::from_vec(py, rows))
}

/// Assembles the parts of `xr_train_subtrees` (covering every parent of every layer once,
/// in any order) into a model over `tree` with `n_features` columns.
#[pyfunction]
pub fn xr_assemble<'py>(
    py: Python<'py>,
    tree: TreeArg<'py>,
    parts: Vec<PartArg<'py>>,
    n_features: usize,
) -> PyResult<PyXrModel> {
    let tree = tree_of(&tree)?;
    // the parts are read where they are (numpy arrays), not copied first
    let mut args = Vec::with_capacity(parts.len());
    for (layer, parents, w, b, d) in &parts {
        let contiguous = |what: &str| PyValueError::new_err(format!("{what} must be contiguous"));
        let parents = parents.as_slice().map_err(|_| contiguous("parents"))?;
        let bias = b.as_slice().map_err(|_| contiguous("bias"))?;
        let dense = d.as_slice().map_err(|_| contiguous("dense"))?;
        let n_dense = d.shape()[1];
        args.push((
            *layer,
            parents,
            CsrArg::extract(w, "weights")?,
            bias,
            dense,
            n_dense,
        ));
    }
    let views = args
        .iter()
        .map(|(layer, parents, w, bias, dense, n_dense)| {
            Ok(PartView {
                layer: *layer,
                parents,
                weights: w.view()?,
                bias,
                dense,
                n_dense: *n_dense,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let model = run(py, Some(1), || {
        let layers = assemble_layers(&tree, &views, n_features)?;
        XrModel::new(&tree, layers, n_features)
    })?;
    Ok(PyXrModel::wrap(model))
}
