//! Label indexing: hierarchical k-means and the cluster tree's validation.
//!
//! A tree crosses the boundary as `(child_ptrs, leaf_ptr, labels)`: a list of uint32 arrays
//! (one per internal level, root first), then two uint32 arrays (see
//! `xmrrs_core::cluster::ClusterTree`).

use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use xmrrs_core::cluster::{self, ClusterTree, KMeansParams, ZView};

use crate::convert::{with_canonical, CsrArg};
use crate::run;

/// A tree as numpy arrays: `(child_ptrs, leaf_ptr, labels)`.
pub(crate) type TreeOut<'py> = (
    Vec<Bound<'py, PyArray1<u32>>>,
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<u32>>,
);

fn tree_out(py: Python<'_>, t: ClusterTree) -> TreeOut<'_> {
    let ptrs = t
        .child_ptrs()
        .iter()
        .map(|p| PyArray1::from_slice(py, p))
        .collect();
    (
        ptrs,
        PyArray1::from_slice(py, t.leaf_ptr()),
        PyArray1::from_slice(py, t.labels()),
    )
}

fn to_u32(a: &PyReadonlyArray1<'_, i64>, what: &str) -> PyResult<Vec<u32>> {
    let s = a
        .as_slice()
        .map_err(|_| PyValueError::new_err(format!("{what} must be contiguous")))?;
    s.iter()
        .enumerate()
        .map(|(i, &v)| {
            u32::try_from(v).map_err(|_| {
                PyValueError::new_err(format!(
                    "{what}[{i}] = {v} is out of range (ids must be in 0..2^32)"
                ))
            })
        })
        .collect()
}

fn positive(v: i64, what: &str, min: i64) -> PyResult<usize> {
    if v < min {
        return Err(PyValueError::new_err(format!(
            "{what} must be >= {min}, got {v}"
        )));
    }
    usize::try_from(v).map_err(|_| PyValueError::new_err(format!("{what} is too large: {v}")))
}

/// The k-means parameters, checked.
#[allow(clippy::too_many_arguments)]
fn kmeans_params(
    branching: i64,
    max_leaf_size: i64,
    spherical: bool,
    balanced: bool,
    max_iter: i64,
    tol: f32,
    seed: u64,
    fanouts: Option<Vec<i64>>,
    n_init: Option<i64>,
) -> PyResult<KMeansParams> {
    let fanouts = fanouts
        .map(|f| {
            f.into_iter()
                .map(|c| positive(c, "every fan-out", 2))
                .collect::<PyResult<Vec<usize>>>()
        })
        .transpose()?;
    Ok(KMeansParams {
        branching: positive(branching, "branching", 2)?,
        max_leaf_size: positive(max_leaf_size, "max_leaf_size", 1)?,
        spherical,
        balanced,
        max_iter: positive(max_iter, "max_iter", 0)?,
        tol: if (0.0..1.0).contains(&tol) {
            tol
        } else {
            return Err(PyValueError::new_err(format!(
                "tol must be in [0, 1), got {tol}"
            )));
        },
        seed,
        n_init: n_init.map(|r| positive(r, "n_init", 1)).transpose()?,
        fanouts,
    })
}

/// Hierarchical B-ary k-means of label representations `z` (a CSR tuple or a C-contiguous
/// float32 2-D array, one row per label): the tree's `(child_ptrs, leaf_ptr, labels)`.
#[pyfunction]
#[pyo3(signature = (z, branching=16, max_leaf_size=100, spherical=true, balanced=true, max_iter=20, tol=0.01, seed=0, n_jobs=None, fanouts=None, n_init=None))]
pub fn hierarchical_kmeans<'py>(
    py: Python<'py>,
    z: &Bound<'py, PyAny>,
    branching: i64,
    max_leaf_size: i64,
    spherical: bool,
    balanced: bool,
    max_iter: i64,
    tol: f32,
    seed: u64,
    n_jobs: Option<i64>,
    fanouts: Option<Vec<i64>>,
    n_init: Option<i64>,
) -> PyResult<TreeOut<'py>> {
    let params = kmeans_params(
        branching,
        max_leaf_size,
        spherical,
        balanced,
        max_iter,
        tol,
        seed,
        fanouts,
        n_init,
    )?;
    let tree = on_z(py, z, n_jobs, |z| cluster::hierarchical_kmeans(z, &params))?;
    Ok(tree_out(py, tree))
}

/// Runs `f` on the label representation `z` (a C-contiguous float32 2-D array, or a sparse
/// matrix made canonical first) in the thread pool of `n_jobs`, without the GIL.
fn on_z<'py, R: Send>(
    py: Python<'py>,
    z: &Bound<'py, PyAny>,
    n_jobs: Option<i64>,
    f: impl Fn(ZView<'_>) -> xmrrs_core::Result<R> + Send + Sync,
) -> PyResult<R> {
    if let Ok(a) = z.cast::<numpy::PyArray2<f32>>() {
        let r: PyReadonlyArray2<'py, f32> = a.readonly();
        let (n_rows, dim) = (r.shape()[0], r.shape()[1]);
        let data = r
            .as_slice()
            .map_err(|_| PyValueError::new_err("Z must be a C-contiguous float32 array"))?;
        run(py, n_jobs, || f(ZView::Dense { data, n_rows, dim }))
    } else {
        let a = CsrArg::extract(z, "Z")?;
        let v = a.view()?;
        run(py, n_jobs, || with_canonical(v, |v| f(ZView::Sparse(v))))
    }
}

/// The sub-trees under some nodes of level `level` of the tree `hierarchical_kmeans` builds
/// over `n_labels` labels, grown `len(first)` levels (`xmrrs_core::cluster::split_subtrees`):
/// `z` holds the rows of their labels (in increasing global id), node `k` the rows
/// `labels[node_ptr[k]:node_ptr[k + 1]]`, and `first[j][k]` is the index within level
/// `level + j` of node `k`'s first descendant there. Returns `(child_ptrs, ends, labels)`
/// in local ids.
#[pyfunction]
#[pyo3(signature = (z, n_labels, level, node_ptr, labels, first, branching=16, max_leaf_size=100, spherical=true, balanced=true, max_iter=20, tol=0.01, seed=0, n_jobs=None, fanouts=None, n_init=None))]
pub fn kmeans_split_subtrees<'py>(
    py: Python<'py>,
    z: &Bound<'py, PyAny>,
    n_labels: i64,
    level: i64,
    node_ptr: PyReadonlyArray1<'py, i64>,
    labels: PyReadonlyArray1<'py, i64>,
    first: Vec<PyReadonlyArray1<'py, i64>>,
    branching: i64,
    max_leaf_size: i64,
    spherical: bool,
    balanced: bool,
    max_iter: i64,
    tol: f32,
    seed: u64,
    n_jobs: Option<i64>,
    fanouts: Option<Vec<i64>>,
    n_init: Option<i64>,
) -> PyResult<TreeOut<'py>> {
    let params = kmeans_params(
        branching,
        max_leaf_size,
        spherical,
        balanced,
        max_iter,
        tol,
        seed,
        fanouts,
        n_init,
    )?;
    let n_labels = positive(n_labels, "n_labels", 1)?;
    let level = positive(level, "level", 0)?;
    let node_ptr = to_u32(&node_ptr, "node_ptr")?;
    let labels = to_u32(&labels, "labels")?;
    let first = first
        .iter()
        .enumerate()
        .map(|(j, f)| to_u32(f, &format!("first[{j}]")))
        .collect::<PyResult<Vec<_>>>()?;
    let out = on_z(py, z, n_jobs, |z| {
        cluster::split_subtrees(z, &params, n_labels, level, &node_ptr, &labels, &first)
    })?;
    let ptrs = out
        .child_ptrs
        .iter()
        .map(|p| PyArray1::from_slice(py, p))
        .collect();
    Ok((
        ptrs,
        PyArray1::from_slice(py, &out.ends),
        PyArray1::from_slice(py, &out.labels),
    ))
}

/// The fan-out of each level of the tree `hierarchical_kmeans` builds over `n_labels` labels
/// (`xmrrs_core::cluster::fanout_schedule`; empty: one leaf).
#[pyfunction]
pub fn kmeans_fanouts(n_labels: i64, branching: i64, max_leaf_size: i64) -> PyResult<Vec<usize>> {
    Ok(cluster::fanout_schedule(
        positive(n_labels, "n_labels", 0)?,
        positive(branching, "branching", 2)?,
        positive(max_leaf_size, "max_leaf_size", 1)?,
    ))
}

/// Validates a tree's raw arrays (int64) and returns them as uint32.
#[pyfunction]
pub fn cluster_tree_from_parts<'py>(
    py: Python<'py>,
    child_ptrs: Vec<PyReadonlyArray1<'py, i64>>,
    leaf_ptr: PyReadonlyArray1<'py, i64>,
    labels: PyReadonlyArray1<'py, i64>,
) -> PyResult<TreeOut<'py>> {
    let ptrs = child_ptrs
        .iter()
        .enumerate()
        .map(|(t, p)| to_u32(p, &format!("child_ptr[{t}]")))
        .collect::<PyResult<Vec<_>>>()?;
    let leaf_ptr = to_u32(&leaf_ptr, "leaf_ptr")?;
    let labels = to_u32(&labels, "labels")?;
    let t = run(py, Some(1), || {
        ClusterTree::from_parts(ptrs, leaf_ptr, labels)
    })?;
    Ok(tree_out(py, t))
}

/// Builds a tree from per-level parent assignments (int64 arrays, top level first; the last
/// gives the leaf of each label).
#[pyfunction]
pub fn cluster_tree_from_assignments<'py>(
    py: Python<'py>,
    assignments: Vec<PyReadonlyArray1<'py, i64>>,
) -> PyResult<TreeOut<'py>> {
    let levels = assignments
        .iter()
        .enumerate()
        .map(|(k, a)| to_u32(a, &format!("assignments[{k}]")))
        .collect::<PyResult<Vec<_>>>()?;
    let t = run(py, Some(1), || ClusterTree::from_assignments(&levels))?;
    Ok(tree_out(py, t))
}
