//! Compressed sparse matrices: u32 indices, f32 values, 64-bit indptr.
//!
//! [`CsrView`] borrows three slices (for example numpy buffers) after checking them;
//! [`Csr`] owns its buffers. A CSC matrix is stored as the CSR matrix of its transpose
//! ([`Csc`]), so every row kernel is also a column kernel.
//!
//! "Canonical" means: indices strictly increasing within each row (sorted, no duplicates).
//! Kernels require canonical input unless they say otherwise; [`CsrView::canonicalize`]
//! sorts and merges duplicates (summing them, as scipy's `sum_duplicates` does).

mod ops;
mod validate;

pub use ops::*;
pub use validate::{check_finite, convert_indices_i64, convert_indptr};

use crate::{Error, Result};

/// A borrowed CSR matrix. Construct with [`CsrView::new`], which checks the structure.
#[derive(Clone, Copy, Debug)]
pub struct CsrView<'a> {
    n_rows: usize,
    n_cols: usize,
    indptr: &'a [u64],
    indices: &'a [u32],
    data: &'a [f32],
}

/// An owned CSR matrix.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Csr {
    /// Number of rows.
    pub n_rows: usize,
    /// Number of columns.
    pub n_cols: usize,
    /// Row pointer, `n_rows + 1` entries, starting at 0.
    pub indptr: Vec<u64>,
    /// Column index of each stored entry.
    pub indices: Vec<u32>,
    /// Value of each stored entry.
    pub data: Vec<f32>,
}

/// An owned CSC matrix of shape `(n_rows, n_cols)`, stored as the CSR matrix of its
/// transpose: `t.n_rows == n_cols`, and `t`'s row `j` lists column `j`'s entries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Csc {
    /// The transpose, in CSR form.
    pub t: Csr,
}

impl<'a> CsrView<'a> {
    /// Wraps three slices after checking that they form a CSR matrix of the given shape:
    /// `indptr` has `n_rows + 1` non-decreasing entries from 0 to `nnz`, `indices` and `data`
    /// have `nnz` entries, and every index is below `n_cols`. Values are not inspected (see
    /// [`check_finite`]); sortedness is not required (see [`CsrView::is_canonical`]).
    pub fn new(
        n_rows: usize,
        n_cols: usize,
        indptr: &'a [u64],
        indices: &'a [u32],
        data: &'a [f32],
    ) -> Result<Self> {
        validate::check_structure(n_rows, n_cols, indptr, indices, data)?;
        Ok(Self {
            n_rows,
            n_cols,
            indptr,
            indices,
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
    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }
    /// The row pointer.
    pub fn indptr(&self) -> &'a [u64] {
        self.indptr
    }
    /// The column indices.
    pub fn indices(&self) -> &'a [u32] {
        self.indices
    }
    /// The values.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }
    /// Range of row `i` in `indices`/`data`.
    #[inline]
    pub fn row_range(&self, i: usize) -> std::ops::Range<usize> {
        self.indptr[i] as usize..self.indptr[i + 1] as usize
    }
    /// Column indices and values of row `i`.
    #[inline]
    pub fn row(&self, i: usize) -> (&'a [u32], &'a [f32]) {
        let r = self.row_range(i);
        (&self.indices[r.clone()], &self.data[r])
    }
    /// True when every row's indices are strictly increasing.
    pub fn is_canonical(&self) -> bool {
        use rayon::prelude::*;
        (0..self.n_rows)
            .into_par_iter()
            .with_min_len(4096)
            .all(|i| {
                let (idx, _) = self.row(i);
                idx.windows(2).all(|w| w[0] < w[1])
            })
    }
    /// A canonical copy: each row sorted by column, duplicates summed (explicit zeros kept).
    pub fn canonicalize(&self) -> Csr {
        ops::canonicalize(self)
    }
    /// Copies into an owned matrix.
    pub fn to_owned(&self) -> Csr {
        Csr {
            n_rows: self.n_rows,
            n_cols: self.n_cols,
            indptr: self.indptr.to_vec(),
            indices: self.indices.to_vec(),
            data: self.data.to_vec(),
        }
    }
}

impl Csr {
    /// An all-zero matrix of the given shape.
    pub fn zeros(n_rows: usize, n_cols: usize) -> Self {
        Csr {
            n_rows,
            n_cols,
            indptr: vec![0; n_rows + 1],
            indices: vec![],
            data: vec![],
        }
    }

    /// Builds an owned matrix after the same checks as [`CsrView::new`].
    pub fn new(
        n_rows: usize,
        n_cols: usize,
        indptr: Vec<u64>,
        indices: Vec<u32>,
        data: Vec<f32>,
    ) -> Result<Self> {
        validate::check_structure(n_rows, n_cols, &indptr, &indices, &data)?;
        Ok(Csr {
            n_rows,
            n_cols,
            indptr,
            indices,
            data,
        })
    }

    /// Builds a canonical matrix from `(row, col, value)` triplets (duplicates summed).
    pub fn from_triplets(
        n_rows: usize,
        n_cols: usize,
        triplets: &[(u32, u32, f32)],
    ) -> Result<Self> {
        let mut counts = crate::alloc::try_vec(n_rows + 1, 0u64, "a row pointer")?;
        for &(r, c, _) in triplets {
            if r as usize >= n_rows || c as usize >= n_cols {
                return Err(Error::invalid(format!(
                    "triplet ({r}, {c}) out of range for shape ({n_rows}, {n_cols})"
                )));
            }
            counts[r as usize + 1] += 1;
        }
        for i in 0..n_rows {
            counts[i + 1] += counts[i];
        }
        let mut next = counts.clone();
        let mut indices = vec![0u32; triplets.len()];
        let mut data = vec![0f32; triplets.len()];
        for &(r, c, v) in triplets {
            let p = next[r as usize] as usize;
            indices[p] = c;
            data[p] = v;
            next[r as usize] += 1;
        }
        let m = Csr {
            n_rows,
            n_cols,
            indptr: counts,
            indices,
            data,
        };
        Ok(m.view().canonicalize())
    }

    /// A borrowed view (no checks: an owned `Csr` is valid by construction).
    pub fn view(&self) -> CsrView<'_> {
        CsrView {
            n_rows: self.n_rows,
            n_cols: self.n_cols,
            indptr: &self.indptr,
            indices: &self.indices,
            data: &self.data,
        }
    }

    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// The dense row-major copy (tests and small matrices only).
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n_rows * self.n_cols];
        for i in 0..self.n_rows {
            let (idx, val) = self.view().row(i);
            for (&j, &v) in idx.iter().zip(val) {
                out[i * self.n_cols + j as usize] += v;
            }
        }
        out
    }
}

impl Csc {
    /// Shape `(n_rows, n_cols)` of the matrix (not of its stored transpose).
    pub fn shape(&self) -> (usize, usize) {
        (self.t.n_cols, self.t.n_rows)
    }
    /// Row indices and values of column `j`.
    pub fn col(&self, j: usize) -> (&[u32], &[f32]) {
        let r = self.t.indptr[j] as usize..self.t.indptr[j + 1] as usize;
        (&self.t.indices[r.clone()], &self.t.data[r])
    }
    /// Converts a CSR matrix (parallel transpose).
    pub fn from_csr(a: &CsrView<'_>) -> Result<Self> {
        Ok(Csc { t: transpose(a)? })
    }
    /// Converts back to CSR (parallel transpose).
    pub fn to_csr(&self) -> Result<Csr> {
        transpose(&self.t.view())
    }
}
