//! `xmrrs._xmrrs`: the thin PyO3 layer over `xmrrs-core`.
//!
//! Every function extracts its arguments while attached to the interpreter, runs the core
//! with the GIL released (`Python::detach`) inside a rayon pool sized by `n_jobs`, and turns
//! errors and panics into Python exceptions (see `errors`).

mod convert;
mod distributed;
mod errors;
mod indexing;
mod text;
mod xr;

use std::path::PathBuf;

use numpy::{
    PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use xmrrs_core::io::xc;
use xmrrs_core::{parallel, sparse};

use convert::{csr_out, prefix, with_canonical, CsrArg, CsrOut};
use errors::guard;

/// Top-k ids and scores, each `(n_rows, k)`.
type TopK<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

/// Runs `f` without the GIL inside the pool for `n_jobs`, mapping errors and panics.
fn run<T: Send>(
    py: Python<'_>,
    n_jobs: Option<i64>,
    f: impl FnOnce() -> xmrrs_core::Result<T> + Send,
) -> PyResult<T> {
    py.detach(|| guard(|| parallel::install(n_jobs, f)?))
}

fn dense_slice<'a>(a: &'a PyReadonlyArray2<'_, f32>, what: &str) -> PyResult<&'a [f32]> {
    a.as_slice()
        .map_err(|_| PyValueError::new_err(format!("{what} must be a C-contiguous float32 array")))
}

fn out2<'py>(
    py: Python<'py>,
    v: Vec<f32>,
    n: usize,
    k: usize,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    PyArray1::from_vec(py, v).reshape([n, k])
}

/// Sorts each row's indices and sums duplicates.
#[pyfunction]
#[pyo3(signature = (a, n_jobs=None))]
fn csr_canonicalize<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    n_jobs: Option<i64>,
) -> PyResult<CsrOut<'py>> {
    let a = CsrArg::extract(a, "A")?;
    let v = a.view()?;
    let m = run(py, n_jobs, || Ok(v.canonicalize()))?;
    Ok(csr_out(py, m))
}

/// The transpose in CSR form (the CSC form of the input).
#[pyfunction]
#[pyo3(signature = (a, n_jobs=None))]
fn csr_transpose<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    n_jobs: Option<i64>,
) -> PyResult<CsrOut<'py>> {
    let a = CsrArg::extract(a, "A")?;
    let v = a.view()?;
    let m = run(py, n_jobs, || with_canonical(v, |v| sparse::transpose(&v)))?;
    Ok(csr_out(py, m))
}

/// Rows scaled to unit L2 norm (zero rows unchanged); the result is canonical.
#[pyfunction]
#[pyo3(signature = (a, n_jobs=None))]
fn csr_normalize_rows<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    n_jobs: Option<i64>,
) -> PyResult<CsrOut<'py>> {
    let a = CsrArg::extract(a, "A")?;
    let v = a.view()?;
    let m = run(py, n_jobs, || {
        with_canonical(v, |v| {
            let mut m = v.to_owned();
            sparse::normalize_rows_l2(&mut m);
            Ok(m)
        })
    })?;
    Ok(csr_out(py, m))
}

/// Whether every row of `a` has unit L2 norm already (or stores no non-zero value).
#[pyfunction]
#[pyo3(signature = (a, n_jobs=None))]
fn csr_rows_are_unit<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    n_jobs: Option<i64>,
) -> PyResult<bool> {
    let a = CsrArg::extract(a, "A")?;
    let v = a.view()?;
    // on the canonical form: duplicate entries are summed before norms are taken
    run(py, n_jobs, || {
        with_canonical(v, |v| Ok(sparse::rows_are_unit_l2(&v)))
    })
}

/// `a` with every row that stores no entry set to the row `(cols, vals)` (sorted columns).
#[pyfunction]
#[pyo3(signature = (a, cols, vals, n_jobs=None))]
fn csr_fill_empty_rows<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    cols: PyReadonlyArray1<'py, i64>,
    vals: PyReadonlyArray1<'py, f32>,
    n_jobs: Option<i64>,
) -> PyResult<CsrOut<'py>> {
    let a = CsrArg::extract(a, "A")?;
    let v = a.view()?;
    let cols = sparse::convert_indices_i64(cols.as_slice()?, v.n_cols()).map_err(errors::to_py)?;
    let vals = vals.as_slice()?;
    let m = run(py, n_jobs, || {
        with_canonical(v, |v| sparse::fill_empty_rows(&v, &cols, vals))
    })?;
    Ok(csr_out(py, m))
}

/// Sparse x sparse product.
#[pyfunction]
#[pyo3(signature = (a, b, n_jobs=None))]
fn csr_spgemm<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    n_jobs: Option<i64>,
) -> PyResult<CsrOut<'py>> {
    let a = CsrArg::extract(a, "A")?;
    let b = CsrArg::extract(b, "B")?;
    let (va, vb) = (a.view()?, b.view()?);
    let m = run(py, n_jobs, || {
        with_canonical(va, |va| with_canonical(vb, |vb| sparse::spgemm(&va, &vb)))
    })?;
    Ok(csr_out(py, m))
}

/// Sparse x dense product `A @ B`.
#[pyfunction]
#[pyo3(signature = (a, b, n_jobs=None))]
fn csr_dense<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: PyReadonlyArray2<'py, f32>,
    n_jobs: Option<i64>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let a = CsrArg::extract(a, "A")?;
    let v = a.view()?;
    let k = b.shape()[1];
    let bs = dense_slice(&b, "B")?;
    let out = run(py, n_jobs, || {
        xmrrs_core::sparse::check_finite(bs, "B")?;
        sparse::csr_dense(&v, bs, k)
    })?;
    out2(py, out, v.n_rows(), k)
}

/// Row-wise sparse dot against a dense block: `A @ W.T`.
#[pyfunction]
#[pyo3(signature = (a, w, n_jobs=None))]
fn csr_dot_dense_rows<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    w: PyReadonlyArray2<'py, f32>,
    n_jobs: Option<i64>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let a = CsrArg::extract(a, "A")?;
    let v = a.view()?;
    let (m, d) = (w.shape()[0], w.shape()[1]);
    if d != v.n_cols() {
        return Err(PyValueError::new_err(format!(
            "shape mismatch: W has {d} columns but A has {}",
            v.n_cols()
        )));
    }
    let ws = dense_slice(&w, "W")?;
    let out = run(py, n_jobs, || {
        xmrrs_core::sparse::check_finite(ws, "W")?;
        sparse::csr_dot_dense_rows(&v, ws, m)
    })?;
    out2(py, out, v.n_rows(), m)
}

/// Converts int64 ids to an unsigned index type, rejecting negative or too large ids.
fn ids<T: TryFrom<i64>>(a: &PyReadonlyArray1<'_, i64>, what: &str) -> PyResult<Vec<T>> {
    let s = a
        .as_slice()
        .map_err(|_| PyValueError::new_err(format!("{what} ids must be contiguous")))?;
    s.iter()
        .map(|&v| {
            T::try_from(v).map_err(|_| {
                PyValueError::new_err(format!(
                    "{what} index {v} is out of range (negative or too large)"
                ))
            })
        })
        .collect()
}

/// Rows of `A` by index (int64, repeats allowed).
#[pyfunction]
#[pyo3(signature = (a, rows, n_jobs=None))]
fn csr_row_gather<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    rows: PyReadonlyArray1<'py, i64>,
    n_jobs: Option<i64>,
) -> PyResult<CsrOut<'py>> {
    let a = CsrArg::extract(a, "A")?;
    let v = a.view()?;
    let rows: Vec<usize> = ids(&rows, "row")?;
    let m = run(py, n_jobs, || sparse::row_gather(&v, &rows))?;
    Ok(csr_out(py, m))
}

/// Columns of `A` by index (int64, repeats allowed).
#[pyfunction]
#[pyo3(signature = (a, cols, n_jobs=None))]
fn csr_col_gather<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    cols: PyReadonlyArray1<'py, i64>,
    n_jobs: Option<i64>,
) -> PyResult<CsrOut<'py>> {
    let a = CsrArg::extract(a, "A")?;
    let v = a.view()?;
    let cols: Vec<u32> = ids(&cols, "column")?;
    let m = run(py, n_jobs, || {
        with_canonical(v, |v| sparse::col_gather(&v, &cols))
    })?;
    Ok(csr_out(py, m))
}

/// Per-row top-k: `(ids, scores)`, each `(n_rows, min(k, n_cols))`, best first, padded with
/// -1 / -inf.
#[pyfunction]
#[pyo3(signature = (a, k, n_jobs=None))]
fn csr_topk<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    k: usize,
    n_jobs: Option<i64>,
) -> PyResult<TopK<'py>> {
    let a = CsrArg::extract(a, "A")?;
    let v = a.view()?;
    let n = v.n_rows();
    // a row stores at most n_cols entries: a larger k only adds padding
    let k = k.min(v.n_cols());
    let (ids, sc) = run(py, n_jobs, || with_canonical(v, |v| sparse::topk(&v, k)))?;
    Ok((
        PyArray1::from_vec(py, ids).reshape([n, k])?,
        out2(py, sc, n, k)?,
    ))
}

/// Keeps the k largest entries of each row, as CSR.
#[pyfunction]
#[pyo3(signature = (a, k, n_jobs=None))]
fn csr_topk_csr<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    k: usize,
    n_jobs: Option<i64>,
) -> PyResult<CsrOut<'py>> {
    let a = CsrArg::extract(a, "A")?;
    let v = a.view()?;
    let m = run(py, n_jobs, || {
        with_canonical(v, |v| Ok(sparse::topk_csr(&v, k)))
    })?;
    Ok(csr_out(py, m))
}

/// Reads an XC (`header=True`) or LIBSVM multilabel file: `(X, Y)` as CSR tuples.
#[pyfunction]
#[pyo3(signature = (path, header=true, zero_based=None, n_features=None, n_labels=None, n_jobs=None))]
fn read_xc<'py>(
    py: Python<'py>,
    path: PathBuf,
    header: bool,
    zero_based: Option<bool>,
    n_features: Option<usize>,
    n_labels: Option<usize>,
    n_jobs: Option<i64>,
) -> PyResult<(CsrOut<'py>, CsrOut<'py>)> {
    let opts = xc::ReadOptions {
        header,
        zero_based,
        n_features,
        n_labels,
    };
    let d = run(py, n_jobs, || xc::read_file(&path, &opts))?;
    Ok((csr_out(py, d.x), csr_out(py, d.y)))
}

/// Writes `X`, `Y` in the XC format (`header=True`) or LIBSVM multilabel, atomically.
#[pyfunction]
#[pyo3(signature = (path, x, y, header=true, n_jobs=None))]
fn write_xc<'py>(
    py: Python<'py>,
    path: PathBuf,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    header: bool,
    n_jobs: Option<i64>,
) -> PyResult<()> {
    let x = CsrArg::extract(x, "X")?;
    let y = CsrArg::extract(y, "Y")?;
    let (vx, vy) = (x.view()?, y.view()?);
    run(py, n_jobs, || {
        with_canonical(vx, |vx| {
            with_canonical(vy, |vy| xc::write_file(&path, &vx, &vy, header))
        })
    })
}

/// The SIMD level the dense kernels dispatch to on this CPU ("avx2+fma" or "portable").
#[pyfunction]
fn simd_level() -> &'static str {
    xmrrs_core::simd::level()
}

/// Resolves `n_jobs` to a thread count (None and -1: all cores).
#[pyfunction]
#[pyo3(signature = (n_jobs=None))]
fn effective_n_jobs(n_jobs: Option<i64>) -> PyResult<usize> {
    parallel::resolve_n_jobs(n_jobs).map_err(|e| errors::to_py(prefix("n_jobs", e)))
}

/// Panics on purpose inside a worker thread, to test that panics become `RuntimeError`.
#[pyfunction]
fn _test_panic(py: Python<'_>) -> PyResult<()> {
    run(py, Some(2), || {
        use rayon::prelude::*;
        (0..4)
            .into_par_iter()
            .for_each(|i| assert!(i < 3, "deliberate test panic"));
        Ok(())
    })
}

/// The compiled core of xmrrs.
#[pymodule]
fn _xmrrs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(csr_canonicalize, m)?)?;
    m.add_function(wrap_pyfunction!(csr_transpose, m)?)?;
    m.add_function(wrap_pyfunction!(csr_normalize_rows, m)?)?;
    m.add_function(wrap_pyfunction!(csr_rows_are_unit, m)?)?;
    m.add_function(wrap_pyfunction!(csr_fill_empty_rows, m)?)?;
    m.add_function(wrap_pyfunction!(csr_spgemm, m)?)?;
    m.add_function(wrap_pyfunction!(csr_dense, m)?)?;
    m.add_function(wrap_pyfunction!(csr_dot_dense_rows, m)?)?;
    m.add_function(wrap_pyfunction!(csr_row_gather, m)?)?;
    m.add_function(wrap_pyfunction!(csr_col_gather, m)?)?;
    m.add_function(wrap_pyfunction!(csr_topk, m)?)?;
    m.add_function(wrap_pyfunction!(csr_topk_csr, m)?)?;
    m.add_function(wrap_pyfunction!(read_xc, m)?)?;
    m.add_function(wrap_pyfunction!(write_xc, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(effective_n_jobs, m)?)?;
    m.add_function(wrap_pyfunction!(_test_panic, m)?)?;
    m.add_function(wrap_pyfunction!(indexing::hierarchical_kmeans, m)?)?;
    m.add_function(wrap_pyfunction!(indexing::kmeans_split_subtrees, m)?)?;
    m.add_function(wrap_pyfunction!(indexing::kmeans_fanouts, m)?)?;
    m.add_function(wrap_pyfunction!(indexing::cluster_tree_from_parts, m)?)?;
    m.add_function(wrap_pyfunction!(
        indexing::cluster_tree_from_assignments,
        m
    )?)?;
    m.add_class::<text::PyTfidfModel>()?;
    m.add_function(wrap_pyfunction!(text::text_analyze, m)?)?;
    m.add("TEXT_UNICODE_VERSION", xmrrs_core::text::UNICODE_VERSION)?;
    m.add_class::<xr::PyXrModel>()?;
    m.add_function(wrap_pyfunction!(xr::xr_train, m)?)?;
    m.add_function(wrap_pyfunction!(xr::xr_predict_ensemble, m)?)?;
    m.add_function(wrap_pyfunction!(xr::check_post_processor, m)?)?;
    m.add_function(wrap_pyfunction!(distributed::xr_train_subtrees, m)?)?;
    m.add_function(wrap_pyfunction!(distributed::xr_assemble, m)?)?;
    m.add_function(wrap_pyfunction!(distributed::xr_top_sample_rows, m)?)?;
    Ok(())
}
