//! The instances of a problem: a parent node's rows gathered once, features renumbered.
//!
//! The instances are rows of a [`LocalCsr`], a parent node's instance subset gathered
//! once, with its features renumbered `0..n_features()` (most frequent first), so the dense
//! weight vector is small (`n_features()` of the subset, never the global `d`) and its hot
//! part compact. A dense feature block ([`DenseView`]) travels beside it: its rows are copied
//! in gather order and its features take the local ids after the sparse ones, so the solvers'
//! weight vectors hold the dense block's weights contiguously at the end.

use super::lanes::{half_axpy, half_dot};
use crate::dense::DenseView;
use crate::half::HalfRows;
use crate::sparse::CsrView;
use crate::{Error, Result};

/// A scratch map from global feature ids to local ids (one `u32` per global feature), kept
/// all-unset between uses so that each gather costs only what it touches.
#[derive(Clone, Debug, Default)]
pub struct FeatureMap {
    slot: Vec<u32>,
    touched: Vec<u32>,
}

const UNSET: u32 = u32::MAX;

impl FeatureMap {
    /// A map for `n_features` global features.
    pub fn new(n_features: usize) -> Self {
        FeatureMap {
            slot: vec![UNSET; n_features],
            touched: Vec::new(),
        }
    }
}

/// Rows of a matrix gathered into a compact block with renumbered features.
///
/// Local feature `k` is global feature `features()[k]`. Local ids go to the features by
/// decreasing number of occurrences among the rows (ties to the lower global id), so the
/// weights of the frequent features sit together in the solvers' dense vectors; rows keep
/// their source order of entries (so local ids within a row are not sorted). Row `r` is
/// source row `rows[r]` of the gather. With a dense block, local features
/// `n_sparse()..n_features()` are its columns, and [`LocalCsr::dense_row`] holds row `r`'s
/// values; `sq_norm` covers both parts.
#[derive(Clone, Debug, Default)]
pub struct LocalCsr {
    pub(super) indptr: Vec<usize>,
    pub(super) indices: Vec<u32>,
    pub(super) data: Vec<f32>,
    pub(super) sq_norm: Vec<f32>,
    features: Vec<u32>,
    /// Dense rows in gather order, `n_rows() * n_dense` values in half precision (empty
    /// without a dense block): the solvers read each row once per visit, so its bytes bound
    /// their speed, and half of them halve the dense block's training time.
    pub(super) dense: HalfRows,
    pub(super) n_dense: usize,
}

impl LocalCsr {
    /// Gathers rows `rows` of `x` (in that order, repeats allowed).
    ///
    /// `map` must have been built for `x.n_cols()` features; it is left unset again.
    /// Errors: a row out of range, or a map of the wrong size.
    pub fn gather(x: &CsrView<'_>, rows: &[u32], map: &mut FeatureMap) -> Result<Self> {
        Self::gather_hybrid(x, None, rows, map)
    }

    /// [`LocalCsr::gather`] of a sparse block and, when given, the same rows of a dense
    /// block (which must have `x.n_rows()` rows).
    pub fn gather_hybrid(
        x: &CsrView<'_>,
        xd: Option<&DenseView<'_>>,
        rows: &[u32],
        map: &mut FeatureMap,
    ) -> Result<Self> {
        if let Some(d) = xd {
            if d.n_rows() != x.n_rows() {
                return Err(Error::shape(format!(
                    "the dense block has {} rows, the sparse block {}",
                    d.n_rows(),
                    x.n_rows()
                )));
            }
        }
        if map.slot.len() != x.n_cols() {
            return Err(Error::shape(format!(
                "feature map built for {} features, matrix has {}",
                map.slot.len(),
                x.n_cols()
            )));
        }
        if let Some(&bad) = rows.iter().find(|&&r| r as usize >= x.n_rows()) {
            return Err(Error::invalid(format!(
                "row {bad} is out of range for {} rows",
                x.n_rows()
            )));
        }
        let slot = &mut map.slot;
        let touched = &mut map.touched;
        touched.clear();
        // count occurrences (slot holds the count while UNSET marks "not seen")
        let mut nnz = 0usize;
        for &r in rows {
            let (idx, _) = x.row(r as usize);
            nnz += idx.len();
            for &j in idx {
                let s = &mut slot[j as usize];
                if *s == UNSET {
                    *s = 1;
                    touched.push(j);
                } else {
                    *s += 1;
                }
            }
        }
        let mut order: Vec<(u32, u32)> = touched.iter().map(|&j| (slot[j as usize], j)).collect();
        order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        touched.clear();
        touched.extend(order.iter().map(|e| e.1));
        for (k, &j) in touched.iter().enumerate() {
            slot[j as usize] = k as u32;
        }
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        let mut indices = Vec::with_capacity(nnz);
        let mut data = Vec::with_capacity(nnz);
        let mut sq_norm = Vec::with_capacity(rows.len());
        let n_dense = xd.map_or(0, |d| d.n_cols());
        let mut dense = HalfRows::with_capacity(if n_dense > 0 { rows.len() } else { 0 }, n_dense);
        indptr.push(0);
        for &r in rows {
            let (idx, val) = x.row(r as usize);
            indices.extend(idx.iter().map(|&j| slot[j as usize]));
            data.extend_from_slice(val);
            let mut ss: f64 = val.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            if let Some(d) = xd {
                let dr = d.row(r as usize);
                dense.push(dr);
                ss += dr.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
            }
            sq_norm.push(ss as f32);
            indptr.push(indices.len());
        }
        for &j in touched.iter() {
            slot[j as usize] = UNSET;
        }
        let features = std::mem::take(touched);
        Ok(LocalCsr {
            indptr,
            indices,
            data,
            sq_norm,
            features,
            dense,
            n_dense,
        })
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.sq_norm.len()
    }
    /// Number of local features: the distinct sparse features among the rows, then the
    /// dense block's columns (the length of a solver's weight vector).
    pub fn n_features(&self) -> usize {
        self.features.len() + self.n_dense
    }
    /// Number of local sparse features (the dense block's weights start here).
    pub fn n_sparse(&self) -> usize {
        self.features.len()
    }
    /// Width of the dense block (0 = none).
    pub fn n_dense(&self) -> usize {
        self.n_dense
    }
    /// Dense values of row `r` as binary16 bits, scaled by `1 / dense_unscale(r)` (empty
    /// without a dense block).
    #[inline]
    pub fn dense_row(&self, r: usize) -> &[u16] {
        &self.dense.bits[r * self.n_dense..(r + 1) * self.n_dense]
    }
    /// The factor that turns [`LocalCsr::dense_row`]'s widened values into the row's.
    #[inline]
    pub fn dense_unscale(&self, r: usize) -> f32 {
        self.dense.unscale(r)
    }
    /// `w · x_r` over both blocks (`w` has [`LocalCsr::n_features`] entries); the sparse
    /// part is `sparse_dot`'s, the dense part is added when there is one.
    #[inline]
    pub(super) fn dot(&self, w: &[f32], r: usize) -> f32 {
        let (idx, val) = self.row(r);
        let s = super::single::sparse_dot(w, idx, val);
        if self.n_dense == 0 {
            s
        } else {
            s + half_dot(
                &w[self.features.len()..],
                self.dense_row(r),
                self.dense.unscale(r),
            )
        }
    }
    /// `w += a * x_r` over both blocks.
    #[inline]
    pub(super) fn axpy(&self, a: f32, r: usize, w: &mut [f32]) {
        let (idx, val) = self.row(r);
        super::single::sparse_axpy(a, idx, val, w);
        if self.n_dense > 0 {
            let ns = self.features.len();
            half_axpy(a, self.dense_row(r), self.dense.unscale(r), &mut w[ns..]);
        }
    }
    /// Global id of each local feature.
    pub fn features(&self) -> &[u32] {
        &self.features
    }
    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }
    /// Local feature ids and values of row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let s = self.indptr[r];
        let e = self.indptr[r + 1];
        (&self.indices[s..e], &self.data[s..e])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparse::Csr;

    #[test]
    fn gather_renumbers_by_frequency() {
        // rows: 0: {2, 5}, 1: {5}, 2: {1, 2, 5}
        let x = Csr::from_triplets(
            3,
            7,
            &[
                (0, 2, 1.0),
                (0, 5, 2.0),
                (1, 5, 3.0),
                (2, 1, 4.0),
                (2, 2, 5.0),
                (2, 5, 6.0),
            ],
        )
        .unwrap();
        let mut map = FeatureMap::new(7);
        let l = LocalCsr::gather(&x.view(), &[2, 0, 0], &mut map).unwrap();
        // counts over rows 2, 0, 0: f5 x3, f2 x3, f1 x1 -> order 2, 5 (tie by id), then 1
        assert_eq!(l.features(), &[2, 5, 1]);
        assert_eq!(l.n_rows(), 3);
        assert_eq!(l.row(0), (&[2u32, 0, 1][..], &[4f32, 5.0, 6.0][..]));
        assert_eq!(l.row(1), (&[0u32, 1][..], &[1f32, 2.0][..]));
        assert_eq!(l.sq_norm, vec![77.0, 5.0, 5.0]);
        // the map is left clean for the next gather
        let l2 = LocalCsr::gather(&x.view(), &[1], &mut map).unwrap();
        assert_eq!(l2.features(), &[5]);
        assert_eq!(l2.row(0), (&[0u32][..], &[3f32][..]));
        assert!(LocalCsr::gather(&x.view(), &[3], &mut map).is_err());
        assert!(LocalCsr::gather(&x.view(), &[0], &mut FeatureMap::new(6)).is_err());
        let empty = LocalCsr::gather(&x.view(), &[], &mut map).unwrap();
        assert_eq!((empty.n_rows(), empty.n_features()), (0, 0));
    }
}
