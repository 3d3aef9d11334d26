//! Tf-idf weighting of term counts, as scikit-learn's `TfidfTransformer` computes it.

use rayon::prelude::*;

use crate::{Error, Result};

use super::vocab::Counts;

/// How counts become weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weighting {
    /// Every non-zero count becomes 1.
    pub binary: bool,
    /// `1 + ln(count)` instead of the count.
    pub sublinear_tf: bool,
    /// Multiply by the inverse document frequency.
    pub use_idf: bool,
    /// Add one document that holds every term (no division by zero, smaller idf range).
    pub smooth_idf: bool,
    /// Scale every row to unit norm.
    pub norm: Norm,
}

/// The norm every output row is scaled to (rows of zeros stay zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// No scaling.
    None,
    /// Unit sum of absolute values.
    L1,
    /// Unit Euclidean norm.
    L2,
}

impl Norm {
    /// Parses scikit-learn's name: `None` or `"l1"` / `"l2"`.
    pub fn parse(name: Option<&str>) -> Result<Self> {
        match name {
            None => Ok(Norm::None),
            Some("l1") => Ok(Norm::L1),
            Some("l2") => Ok(Norm::L2),
            Some(other) => Err(Error::invalid(format!(
                "norm must be 'l1', 'l2' or None, got {other:?}"
            ))),
        }
    }

    /// scikit-learn's name of the norm.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Norm::None => None,
            Norm::L1 => Some("l1"),
            Norm::L2 => Some("l2"),
        }
    }
}

impl Default for Weighting {
    fn default() -> Self {
        Weighting {
            binary: false,
            sublinear_tf: false,
            use_idf: true,
            smooth_idf: true,
            norm: Norm::L2,
        }
    }
}

/// `ln((n + s) / (df + s)) + 1` per term, `s = 1` with smoothing (scikit-learn's idf).
pub fn idf(df: &[u64], n_docs: usize, smooth: bool) -> Vec<f64> {
    let s = if smooth { 1.0 } else { 0.0 };
    let n = n_docs as f64 + s;
    df.iter()
        .map(|&d| (n / (d as f64 + s)).ln() + 1.0)
        .collect()
}

/// A float type of the output values.
pub trait Real: Copy + Send + Sync + 'static {
    /// `v` rounded to this type.
    fn from_f64(v: f64) -> Self;
}

impl Real for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Real for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// A CSR matrix of tf-idf weights (sorted column indices per row).
pub struct Weighted<T> {
    /// Number of rows (documents).
    pub n_rows: usize,
    /// Number of columns (terms).
    pub n_cols: usize,
    /// Row pointer.
    pub indptr: Vec<u64>,
    /// Column indices.
    pub indices: Vec<u32>,
    /// Weights.
    pub data: Vec<T>,
}

/// Weighs `counts` (chunks of consecutive documents) into one CSR matrix; `idf` is used when
/// `w.use_idf`. Weights are computed in f64 and rounded once to `T`.
pub fn weigh<T: Real>(
    counts: &[Counts],
    idf: &[f64],
    n_cols: usize,
    w: &Weighting,
) -> Result<Weighted<T>> {
    if w.use_idf && idf.len() != n_cols {
        return Err(Error::shape(format!(
            "idf has {} values for {n_cols} terms",
            idf.len()
        )));
    }
    let parts: Vec<Vec<T>> = counts
        .par_iter()
        .map(|c| {
            let mut data = Vec::with_capacity(c.ids.len());
            let mut row = Vec::new();
            for d in 0..c.n_docs() {
                row.clear();
                let (mut sq, mut abs) = (0.0f64, 0.0f64);
                for k in c.indptr[d]..c.indptr[d + 1] {
                    let cnt = f64::from(c.counts[k]);
                    let mut v = if w.binary {
                        1.0
                    } else if w.sublinear_tf {
                        cnt.ln() + 1.0
                    } else {
                        cnt
                    };
                    if w.use_idf {
                        v *= idf[c.ids[k] as usize];
                    }
                    sq += v * v;
                    abs += v.abs();
                    row.push(v);
                }
                let scale = match w.norm {
                    Norm::L2 if sq > 0.0 => 1.0 / sq.sqrt(),
                    Norm::L1 if abs > 0.0 => 1.0 / abs,
                    _ => 1.0,
                };
                data.extend(row.iter().map(|&v| T::from_f64(v * scale)));
            }
            data
        })
        .collect();
    let n_rows: usize = counts.iter().map(Counts::n_docs).sum();
    let nnz: usize = counts.iter().map(|c| c.ids.len()).sum();
    let mut indptr = Vec::with_capacity(n_rows + 1);
    indptr.push(0u64);
    let mut indices = Vec::with_capacity(nnz);
    let mut data = Vec::with_capacity(nnz);
    for (c, p) in counts.iter().zip(parts) {
        let base = indices.len() as u64;
        indptr.extend(c.indptr[1..].iter().map(|&e| base + e as u64));
        indices.extend_from_slice(&c.ids);
        data.extend(p);
    }
    Ok(Weighted {
        n_rows,
        n_cols,
        indptr,
        indices,
        data,
    })
}
