//! The dense feature block: a row-major `f32` matrix that travels beside a CSR matrix.
//!
//! XR-Linear takes its features as a sparse block (CSR, columns `0..d_sparse`) and an
//! optional dense block (this type, columns `d_sparse..d_sparse + d_dense` of the combined
//! space), for example TF-IDF beside a text encoder's embedding. The dense block is never
//! converted to CSR: solvers and beam search read its rows as contiguous slices, and its
//! weights are stored densely (see [`crate::xr::LayerWeights::dense`]).

use crate::sparse::check_finite;
use crate::{Error, Result};

/// A borrowed row-major dense matrix (`data[i * n_cols + j]` is entry `(i, j)`).
#[derive(Clone, Copy, Debug)]
pub struct DenseView<'a> {
    n_rows: usize,
    n_cols: usize,
    data: &'a [f32],
}

impl<'a> DenseView<'a> {
    /// Wraps `data` after checking that it holds exactly `n_rows * n_cols` values (values
    /// are not inspected; see [`DenseView::check_finite`]).
    pub fn new(n_rows: usize, n_cols: usize, data: &'a [f32]) -> Result<Self> {
        let len = n_rows.checked_mul(n_cols).ok_or_else(|| {
            Error::invalid(format!("a dense block of {n_rows} x {n_cols} overflows"))
        })?;
        if data.len() != len {
            return Err(Error::shape(format!(
                "a dense block of {n_rows} x {n_cols} needs {len} values, got {}",
                data.len()
            )));
        }
        Ok(DenseView {
            n_rows,
            n_cols,
            data,
        })
    }
    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }
    /// Number of columns.
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }
    /// All values, row-major.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }
    /// Row `i` (panics when out of range, like slice indexing).
    #[inline]
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.n_cols..(i + 1) * self.n_cols]
    }
    /// Errors on the first NaN or infinity.
    pub fn check_finite(&self, what: &str) -> Result<()> {
        check_finite(self.data, what)
    }
}

/// Checks that an optional dense block has `n_rows` rows (`what` names the sparse block).
pub fn check_rows(dense: Option<&DenseView<'_>>, n_rows: usize, what: &str) -> Result<()> {
    if let Some(d) = dense {
        if d.n_rows() != n_rows {
            return Err(Error::shape(format!(
                "the dense block has {} rows but {what} has {n_rows}",
                d.n_rows()
            )));
        }
        d.check_finite("the dense block")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_checks_its_shape() {
        let v = [1f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let d = DenseView::new(2, 3, &v).unwrap();
        assert_eq!(d.row(1), &[4.0, 5.0, 6.0]);
        assert!(DenseView::new(2, 2, &v).is_err());
        assert!(DenseView::new(usize::MAX, 2, &v).is_err());
        assert!(check_rows(Some(&d), 3, "X").is_err());
        assert!(check_rows(Some(&d), 2, "X").is_ok());
        let bad = [1f32, f32::NAN];
        let b = DenseView::new(1, 2, &bad).unwrap();
        assert!(check_rows(Some(&b), 1, "X").is_err());
        let empty = DenseView::new(0, 5, &[]).unwrap();
        assert_eq!(empty.n_rows(), 0);
    }
}
