//! Text featurization: documents (a list of str or UTF-8 bytes) to tf-idf CSR tuples.
//!
//! Documents are borrowed from the Python objects (no copy of str) and read with the GIL
//! released; the list passed in holds them alive for the call.

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyString};
use xmrrs_core::text::{
    Analyzer, AnalyzerKind, DocFreq, Norm, Pruning, Real, TfidfModel, Weighted, Weighting,
};

use crate::convert::CsrOut;
use crate::errors::to_py;
use crate::run;

/// The documents of `objs` as `&str`: str as is, bytes decoded as strict UTF-8.
fn doc_strs<'a>(objs: &'a [Bound<'_, PyAny>]) -> PyResult<Vec<&'a str>> {
    objs.iter()
        .enumerate()
        .map(|(i, o)| {
            if let Ok(s) = o.cast::<PyString>() {
                s.to_str().map_err(|_| {
                    PyValueError::new_err(format!(
                        "document {i} is not valid Unicode (it holds a lone surrogate)"
                    ))
                })
            } else if let Ok(b) = o.cast::<PyBytes>() {
                std::str::from_utf8(b.as_bytes()).map_err(|e| {
                    PyValueError::new_err(format!("document {i} is bytes but not UTF-8: {e}"))
                })
            } else {
                let t = o
                    .get_type()
                    .name()
                    .map_or_else(|_| "?".to_string(), |n| n.to_string());
                Err(PyTypeError::new_err(format!(
                    "document {i} is {t}, expected str (or UTF-8 bytes)"
                )))
            }
        })
        .collect()
}

fn doc_freq(v: &Bound<'_, PyAny>, name: &str) -> PyResult<DocFreq> {
    let bad = || {
        PyValueError::new_err(format!(
            "{name} must be an int >= 1 or a float in [0.0, 1.0], got {v}"
        ))
    };
    if v.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an int or a float, got a bool"
        )));
    }
    if v.is_instance_of::<PyInt>() {
        let c: i64 = v.extract().map_err(|_| bad())?;
        return u64::try_from(c)
            .ok()
            .filter(|&c| c >= 1)
            .map(DocFreq::Count)
            .ok_or_else(bad);
    }
    if v.is_instance_of::<PyFloat>() {
        let f: f64 = v.extract()?;
        return if (0.0..=1.0).contains(&f) {
            Ok(DocFreq::Fraction(f))
        } else {
            Err(bad())
        };
    }
    Err(PyTypeError::new_err(format!(
        "{name} must be an int or a float, got {}",
        v.get_type()
    )))
}

fn analyzer(name: &str, ngram_range: (i64, i64), lowercase: bool) -> PyResult<Analyzer> {
    let (lo, hi) = ngram_range;
    let n = |v: i64| {
        usize::try_from(v).map_err(|_| {
            PyValueError::new_err(format!(
                "ngram_range must be (min_n, max_n) with 1 <= min_n <= max_n, got ({lo}, {hi})"
            ))
        })
    };
    let a = Analyzer {
        kind: AnalyzerKind::parse(name).map_err(to_py)?,
        min_n: n(lo)?,
        max_n: n(hi)?,
        lowercase,
    };
    a.validate().map_err(to_py)?;
    Ok(a)
}

fn weighting(
    binary: bool,
    sublinear_tf: bool,
    use_idf: bool,
    smooth_idf: bool,
    norm: Option<&str>,
) -> PyResult<Weighting> {
    Ok(Weighting {
        binary,
        sublinear_tf,
        use_idf,
        smooth_idf,
        norm: Norm::parse(norm).map_err(to_py)?,
    })
}

fn weighted_out<T: Real + numpy::Element>(py: Python<'_>, m: Weighted<T>) -> CsrOut<'_> {
    let indptr: Vec<i64> = m.indptr.iter().map(|&v| v as i64).collect();
    // column ids are < n_features, which fits u32; int64 keeps scipy happy at any size
    let indices = if m.n_cols <= i32::MAX as usize {
        PyArray1::from_vec(py, m.indices.iter().map(|&v| v as i32).collect()).into_any()
    } else {
        PyArray1::from_vec(py, m.indices.iter().map(|&v| i64::from(v)).collect()).into_any()
    };
    (
        m.n_rows,
        m.n_cols,
        PyArray1::from_vec(py, indptr).into_any(),
        indices,
        PyArray1::from_vec(py, m.data).into_any(),
    )
}

/// A fitted tf-idf vectorizer of the core (vocabulary, idf, analyzer and weighting).
#[pyclass(name = "TfidfModel", module = "xmrrs._xmrrs", frozen)]
pub struct PyTfidfModel {
    inner: TfidfModel,
}

#[pymethods]
impl PyTfidfModel {
    /// Learns vocabulary and idf of `docs`: `(model, X)` with `X` a CSR tuple of float32
    /// (float64 when `float64`) tf-idf rows.
    #[staticmethod]
    #[pyo3(signature = (docs, analyzer="word", ngram_range=(1, 1), lowercase=true, min_df=None, max_df=None, max_features=None, binary=false, sublinear_tf=false, use_idf=true, smooth_idf=true, norm=Some("l2"), float64=false, n_jobs=None))]
    fn fit_transform<'py>(
        py: Python<'py>,
        docs: Vec<Bound<'py, PyAny>>,
        analyzer: &str,
        ngram_range: (i64, i64),
        lowercase: bool,
        min_df: Option<&Bound<'py, PyAny>>,
        max_df: Option<&Bound<'py, PyAny>>,
        max_features: Option<i64>,
        binary: bool,
        sublinear_tf: bool,
        use_idf: bool,
        smooth_idf: bool,
        norm: Option<&str>,
        float64: bool,
        n_jobs: Option<i64>,
    ) -> PyResult<(Self, CsrOut<'py>)> {
        let a = self::analyzer(analyzer, ngram_range, lowercase)?;
        let w = weighting(binary, sublinear_tf, use_idf, smooth_idf, norm)?;
        let mut pruning = Pruning::default();
        if let Some(v) = min_df {
            pruning.min_df = doc_freq(v, "min_df")?;
        }
        if let Some(v) = max_df {
            pruning.max_df = doc_freq(v, "max_df")?;
        }
        pruning.max_features = max_features
            .map(|m| {
                usize::try_from(m).ok().filter(|&m| m >= 1).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "max_features must be None or an int >= 1, got {m}"
                    ))
                })
            })
            .transpose()?;
        let strs = doc_strs(&docs)?;
        if float64 {
            let (m, x) = run(py, n_jobs, || {
                TfidfModel::fit_transform::<f64>(&strs, a, &pruning, w)
            })?;
            Ok((PyTfidfModel { inner: m }, weighted_out(py, x)))
        } else {
            let (m, x) = run(py, n_jobs, || {
                TfidfModel::fit_transform::<f32>(&strs, a, &pruning, w)
            })?;
            Ok((PyTfidfModel { inner: m }, weighted_out(py, x)))
        }
    }

    /// A model from saved parts: sorted distinct `terms`, their idf (finite, >= 1).
    #[staticmethod]
    #[pyo3(signature = (terms, idf, analyzer="word", ngram_range=(1, 1), lowercase=true, binary=false, sublinear_tf=false, use_idf=true, smooth_idf=true, norm=Some("l2")))]
    fn from_parts(
        terms: Vec<String>,
        idf: PyReadonlyArray1<'_, f64>,
        analyzer: &str,
        ngram_range: (i64, i64),
        lowercase: bool,
        binary: bool,
        sublinear_tf: bool,
        use_idf: bool,
        smooth_idf: bool,
        norm: Option<&str>,
    ) -> PyResult<Self> {
        let a = self::analyzer(analyzer, ngram_range, lowercase)?;
        let w = weighting(binary, sublinear_tf, use_idf, smooth_idf, norm)?;
        let idf = idf.as_slice()?.to_vec();
        let terms = terms.into_iter().map(String::into_boxed_str).collect();
        let inner = TfidfModel::from_parts(a, w, terms, idf).map_err(to_py)?;
        Ok(PyTfidfModel { inner })
    }

    /// The tf-idf rows of `docs` over the fitted vocabulary, a CSR tuple.
    #[pyo3(signature = (docs, float64=false, n_jobs=None))]
    fn transform<'py>(
        &self,
        py: Python<'py>,
        docs: Vec<Bound<'py, PyAny>>,
        float64: bool,
        n_jobs: Option<i64>,
    ) -> PyResult<CsrOut<'py>> {
        let strs = doc_strs(&docs)?;
        let m = &self.inner;
        if float64 {
            let x = run(py, n_jobs, || m.transform::<f64>(&strs))?;
            Ok(weighted_out(py, x))
        } else {
            let x = run(py, n_jobs, || m.transform::<f32>(&strs))?;
            Ok(weighted_out(py, x))
        }
    }

    /// The terms in column order.
    fn feature_names(&self) -> Vec<&str> {
        self.inner
            .vocabulary()
            .terms()
            .iter()
            .map(|t| &**t)
            .collect()
    }

    /// The idf of each term (float64).
    fn idf<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_slice(py, self.inner.idf())
    }

    /// Number of terms.
    #[getter]
    fn n_features(&self) -> usize {
        self.inner.vocabulary().len()
    }
}

/// The terms of each document as the analyzer sees them (for tests and debugging).
#[pyfunction]
#[pyo3(signature = (docs, analyzer="word", ngram_range=(1, 1), lowercase=true))]
pub fn text_analyze(
    docs: Vec<Bound<'_, PyAny>>,
    analyzer: &str,
    ngram_range: (i64, i64),
    lowercase: bool,
) -> PyResult<Vec<Vec<String>>> {
    let a = self::analyzer(analyzer, ngram_range, lowercase)?;
    let strs = doc_strs(&docs)?;
    let mut sc = xmrrs_core::text::tokenize::Scratch::default();
    Ok(strs
        .iter()
        .map(|d| {
            let mut out = Vec::new();
            a.analyze(d, &mut sc, |t| out.push(t.to_string()));
            out
        })
        .collect())
}
