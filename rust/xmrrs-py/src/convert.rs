//! numpy/scipy buffers in, numpy arrays out.
//!
//! A CSR matrix crosses the boundary as a tuple `(n_rows, n_cols, indptr, indices, data)` of
//! contiguous 1-D arrays. int32 indices and float32 data are borrowed without a copy;
//! int64 indices and float64 data are converted. indptr (n_rows + 1 values) is always copied
//! to u64. Borrowed buffers must not be modified by another thread during the call.

use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use xmrrs_core::sparse::{self, Csr, CsrView};
use xmrrs_core::{Error, Result};

use crate::errors::to_py;

/// A CSR argument, borrowed from numpy where the dtypes allow.
pub struct CsrArg<'py> {
    n_rows: usize,
    n_cols: usize,
    indptr: Vec<u64>,
    indices: Idx<'py>,
    data: Vals<'py>,
}

enum Idx<'py> {
    Borrowed(PyReadonlyArray1<'py, i32>),
    Owned(Vec<u32>),
}

enum Vals<'py> {
    Borrowed(PyReadonlyArray1<'py, f32>),
    Owned(Vec<f32>),
}

fn type_err(what: &str, obj: &Bound<'_, PyAny>) -> PyErr {
    let t = obj
        .getattr("dtype")
        .map(|d| d.to_string())
        .unwrap_or_else(|_| obj.get_type().to_string());
    PyTypeError::new_err(format!(
        "{what} must be a contiguous 1-D numpy array, got {t}"
    ))
}

fn slice<'a, T: numpy::Element>(a: &'a PyReadonlyArray1<'_, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be C-contiguous")))
}

impl<'py> CsrArg<'py> {
    /// Extracts and structurally checks a CSR tuple; `what` names it in messages ("X").
    pub fn extract(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        let (n_rows, n_cols, indptr, indices, data): (
            usize,
            usize,
            Bound<'py, PyAny>,
            Bound<'py, PyAny>,
            Bound<'py, PyAny>,
        ) = obj.extract()?;
        let indptr = if let Ok(a) = indptr.cast::<PyArray1<i32>>() {
            sparse::convert_indptr(slice(&a.readonly(), "indptr")?)
        } else if let Ok(a) = indptr.cast::<PyArray1<i64>>() {
            sparse::convert_indptr(slice(&a.readonly(), "indptr")?)
        } else {
            return Err(type_err(
                &format!("{what}.indptr (int32 or int64)"),
                &indptr,
            ));
        }
        .map_err(|e| to_py(prefix(what, e)))?;
        let indices = if let Ok(a) = indices.cast::<PyArray1<i32>>() {
            let r = a.readonly();
            let s = slice(&r, "indices")?;
            if n_cols > i32::MAX as usize {
                Idx::Owned(
                    sparse::convert_indices_i64(
                        &s.iter().map(|&v| i64::from(v)).collect::<Vec<_>>(),
                        n_cols,
                    )
                    .map_err(|e| to_py(prefix(what, e)))?,
                )
            } else {
                Idx::Borrowed(r)
            }
        } else if let Ok(a) = indices.cast::<PyArray1<i64>>() {
            Idx::Owned(
                sparse::convert_indices_i64(slice(&a.readonly(), "indices")?, n_cols)
                    .map_err(|e| to_py(prefix(what, e)))?,
            )
        } else {
            return Err(type_err(
                &format!("{what}.indices (int32 or int64)"),
                &indices,
            ));
        };
        let data = if let Ok(a) = data.cast::<PyArray1<f32>>() {
            Vals::Borrowed(a.readonly())
        } else if let Ok(a) = data.cast::<PyArray1<f64>>() {
            let r = a.readonly();
            Vals::Owned(slice(&r, "data")?.iter().map(|&v| v as f32).collect())
        } else {
            return Err(type_err(
                &format!("{what}.data (float32 or float64)"),
                &data,
            ));
        };
        let arg = CsrArg {
            n_rows,
            n_cols,
            indptr,
            indices,
            data,
        };
        let v = arg.view()?;
        sparse::check_finite(v.data(), what).map_err(to_py)?;
        Ok(arg)
    }

    /// The checked view (structure only; see [`CsrArg::canonical`]).
    pub fn view(&self) -> PyResult<CsrView<'_>> {
        let indices: &[u32] = match &self.indices {
            Idx::Owned(v) => v,
            Idx::Borrowed(a) => {
                let s = slice(a, "indices")?;
                // SAFETY: i32 and u32 have the same size and alignment; negative values map to
                // ids >= 2^31 > n_cols (n_cols <= i32::MAX here), which the check below rejects.
                unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u32>(), s.len()) }
            }
        };
        let data: &[f32] = match &self.data {
            Vals::Owned(v) => v,
            Vals::Borrowed(a) => slice(a, "data")?,
        };
        CsrView::new(self.n_rows, self.n_cols, &self.indptr, indices, data).map_err(to_py)
    }
}

/// Prefixes an error message with the argument's name.
pub fn prefix(what: &str, e: Error) -> Error {
    match e {
        Error::InvalidInput(m) => Error::InvalidInput(format!("{what}: {m}")),
        Error::Shape(m) => Error::Shape(format!("{what}: {m}")),
        other => other,
    }
}

/// Runs `f` on a canonical view of `v`, canonicalising into a temporary only when needed.
pub fn with_canonical<R>(v: CsrView<'_>, f: impl FnOnce(CsrView<'_>) -> Result<R>) -> Result<R> {
    if v.is_canonical() {
        f(v)
    } else {
        let c = v.canonicalize();
        f(c.view())
    }
}

/// The CSR tuple handed back to Python: `(n_rows, n_cols, indptr, indices, data)`.
pub type CsrOut<'py> = (
    usize,
    usize,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
);

/// Moves an owned matrix into numpy arrays (indices as int32 when they fit, without a copy).
pub fn csr_out(py: Python<'_>, m: Csr) -> CsrOut<'_> {
    let Csr {
        n_rows,
        n_cols,
        indptr,
        indices,
        data,
    } = m;
    let indptr: Vec<i64> = indptr.into_iter().map(|v| v as i64).collect();
    let indices = if n_cols <= i32::MAX as usize {
        PyArray1::from_vec(py, u32_to_i32(indices)).into_any()
    } else {
        PyArray1::from_vec(py, indices.into_iter().map(i64::from).collect()).into_any()
    };
    (
        n_rows,
        n_cols,
        PyArray1::from_vec(py, indptr).into_any(),
        indices,
        PyArray1::from_vec(py, data).into_any(),
    )
}

/// Reinterprets a vector of u32 (all < 2^31) as i32 without copying.
fn u32_to_i32(v: Vec<u32>) -> Vec<i32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    let (ptr, len, cap) = (v.as_mut_ptr(), v.len(), v.capacity());
    // SAFETY: u32 and i32 have identical size and alignment; the allocation is handed over
    // whole (same capacity), and every value is < 2^31 because it is a column index < n_cols
    // <= i32::MAX.
    unsafe { Vec::from_raw_parts(ptr.cast::<i32>(), len, cap) }
}
