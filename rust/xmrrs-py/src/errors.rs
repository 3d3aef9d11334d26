//! Core errors become typed Python exceptions; panics never cross into Python.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{
    PyFileNotFoundError, PyMemoryError, PyOSError, PyPermissionError, PyRuntimeError, PyValueError,
};
use pyo3::PyErr;
use xmrrs_core::Error;

/// Maps a core error to the Python exception a user would expect.
pub fn to_py(e: Error) -> PyErr {
    match e {
        Error::InvalidInput(_) | Error::Shape(_) | Error::Parse { .. } => {
            PyValueError::new_err(e.to_string())
        }
        Error::Memory(_) => PyMemoryError::new_err(e.to_string()),
        Error::Io { ref source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(e.to_string()),
            std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(e.to_string()),
            _ => PyOSError::new_err(e.to_string()),
        },
    }
}

/// Runs `f`, turning a core error into its Python exception and a panic (a bug of ours)
/// into a `RuntimeError` that asks for a report, instead of letting it unwind into Python.
pub fn guard<T>(f: impl FnOnce() -> xmrrs_core::Result<T>) -> Result<T, PyErr> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py(e)),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(PyRuntimeError::new_err(format!(
                "internal error in xmrrs: {msg}. Input arrays must not be modified (by another \
                 thread) while an xmrrs call reads them; if none was, please report this"
            )))
        }
    }
}
