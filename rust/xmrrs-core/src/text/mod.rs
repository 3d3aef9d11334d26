//! Text featurization: raw documents to tf-idf vectors, equal to scikit-learn's
//! `TfidfVectorizer` with its default preprocessing (no accent stripping, no stop words).
//!
//! - [`normalize`]: CPython-compatible `str.lower`, `\w` and `\s` (generated tables).
//! - [`tokenize`]: analyzers: word n-grams of `(?u)\b\w\w+\b` tokens, character n-grams
//!   (`char`, `char_wb`).
//! - [`vocab`]: parallel counting, the sorted vocabulary with document frequencies, pruning
//!   by `min_df` / `max_df` / `max_features`.
//! - `word`: the word analyzer's vocabulary without a string per n-gram (n-grams as pairs
//!   of ids, merged in hash shards in parallel).
//! - [`tfidf`]: idf and the weighted, L2-normalised CSR output.
//!
//! Every step runs on the current rayon pool and gives the same output at any thread count.

pub mod normalize;
mod tables;
pub mod tfidf;
pub mod tokenize;
pub mod vocab;
mod word;

pub use tables::UNICODE_VERSION;
pub use tfidf::{Norm, Real, Weighted, Weighting};
pub use tokenize::{Analyzer, AnalyzerKind};
pub use vocab::{DocFreq, Pruning, Vocabulary};

use crate::{Error, Result};

/// Number of chunks the documents are split into (the output does not depend on it).
fn parts(n_docs: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    // enough chunks to balance uneven documents, few enough to merge vocabularies cheaply
    (threads * 4).min(n_docs.div_ceil(64)).max(1)
}

/// A fitted tf-idf vectorizer: analyzer, weighting, vocabulary and idf.
pub struct TfidfModel {
    /// How documents become terms.
    pub analyzer: Analyzer,
    /// How counts become weights.
    pub weighting: Weighting,
    vocabulary: Vocabulary,
    idf: Vec<f64>,
}

impl TfidfModel {
    /// Learns the vocabulary and idf of `docs` and returns them with the documents' tf-idf
    /// matrix.
    pub fn fit_transform<T: Real>(
        docs: &[&str],
        analyzer: Analyzer,
        pruning: &Pruning,
        weighting: Weighting,
    ) -> Result<(Self, Weighted<T>)> {
        let fitted = vocab::fit(docs, &analyzer, pruning, parts(docs.len()))?;
        let idf = tfidf::idf(&fitted.df, docs.len(), weighting.smooth_idf);
        let n_cols = fitted.vocabulary.len();
        let x = tfidf::weigh(&fitted.counts, &idf, n_cols, &weighting)?;
        let model = TfidfModel {
            analyzer,
            weighting,
            vocabulary: fitted.vocabulary,
            idf,
        };
        Ok((model, x))
    }

    /// A model from saved parts: sorted distinct `terms` and one finite idf >= 1 per term.
    pub fn from_parts(
        analyzer: Analyzer,
        weighting: Weighting,
        terms: Vec<Box<str>>,
        idf: Vec<f64>,
    ) -> Result<Self> {
        analyzer.validate()?;
        if terms.is_empty() {
            return Err(Error::invalid("the vocabulary is empty"));
        }
        if idf.len() != terms.len() {
            return Err(Error::shape(format!(
                "{} idf values for {} terms",
                idf.len(),
                terms.len()
            )));
        }
        if let Some(i) = idf.iter().position(|v| !(v.is_finite() && *v >= 1.0)) {
            return Err(Error::invalid(format!(
                "idf[{i}] = {} is not a finite value >= 1",
                idf[i]
            )));
        }
        Ok(TfidfModel {
            analyzer,
            weighting,
            vocabulary: Vocabulary::from_sorted(terms)?,
            idf,
        })
    }

    /// The tf-idf matrix of `docs` over the fitted vocabulary (unknown terms are ignored).
    pub fn transform<T: Real>(&self, docs: &[&str]) -> Result<Weighted<T>> {
        let counts = self
            .vocabulary
            .count(docs, &self.analyzer, parts(docs.len()));
        tfidf::weigh(&counts, &self.idf, self.vocabulary.len(), &self.weighting)
    }

    /// The vocabulary (terms in column order).
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    /// The idf of each term (`ln((n + s) / (df + s)) + 1`).
    pub fn idf(&self) -> &[f64] {
        &self.idf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(docs: &[&str], threads: usize) -> (TfidfModel, Weighted<f32>) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            TfidfModel::fit_transform(
                docs,
                Analyzer {
                    kind: AnalyzerKind::Word,
                    min_n: 1,
                    max_n: 2,
                    lowercase: true,
                },
                &Pruning::default(),
                Weighting::default(),
            )
            .unwrap()
        })
    }

    #[test]
    fn same_output_at_any_thread_count() {
        let docs: Vec<String> = (0..500)
            .map(|i| format!("doc {i} word{} shared Text w{}", i % 7, i % 13))
            .collect();
        let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
        let (m1, x1) = fit(&docs, 1);
        let (m3, x3) = fit(&docs, 3);
        assert_eq!(m1.vocabulary().terms(), m3.vocabulary().terms());
        assert_eq!(x1.indptr, x3.indptr);
        assert_eq!(x1.indices, x3.indices);
        assert_eq!(x1.data, x3.data);
        let t = m1.transform::<f32>(&docs).unwrap();
        assert_eq!(t.indices, x1.indices);
        assert_eq!(t.data, x1.data);
    }

    #[test]
    fn vocabulary_is_sorted_and_rows_unit() {
        let (m, x) = fit(&["b a aa bb", "bb cc"], 1);
        let terms: Vec<&str> = m.vocabulary().terms().iter().map(|t| &**t).collect();
        assert_eq!(terms, ["aa", "aa bb", "bb", "bb cc", "cc"]);
        let row0: f32 = x.data[..x.indptr[1] as usize].iter().map(|v| v * v).sum();
        assert!((row0 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn word_ngrams_sort_and_count_as_joined_strings() {
        // prefixes of words, non-ASCII words and repeated n-grams, in several chunks
        let docs: Vec<String> = (0..300)
            .map(|i| {
                format!(
                    "ab abc ab_{} Ünï ab abc z{} ab ab ÿ{} zz ab c{}",
                    i % 5,
                    i % 11,
                    i % 3,
                    i % 2
                )
            })
            .collect();
        let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
        for (min_n, max_n) in [(1, 1), (1, 2), (2, 3), (3, 3), (1, 4), (2, 99)] {
            let a = Analyzer {
                kind: AnalyzerKind::Word,
                min_n,
                max_n,
                lowercase: true,
            };
            // reference: the documents' terms as strings
            let mut df = std::collections::BTreeMap::<String, u64>::new();
            for d in &docs {
                let mut seen = std::collections::BTreeSet::new();
                a.analyze(d, &mut tokenize::Scratch::default(), |t| {
                    seen.insert(t.to_string());
                });
                for t in seen {
                    *df.entry(t).or_default() += 1;
                }
            }
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let fitted = pool
                    .install(|| vocab::fit(&docs, &a, &Pruning::default(), parts(docs.len())))
                    .unwrap();
                let terms: Vec<String> = fitted
                    .vocabulary
                    .terms()
                    .iter()
                    .map(|t| t.to_string())
                    .collect();
                assert_eq!(terms, df.keys().cloned().collect::<Vec<_>>());
                assert_eq!(fitted.df, df.values().copied().collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn empty_vocabulary_is_an_error() {
        let r = TfidfModel::fit_transform::<f32>(
            &["a b", ""],
            Analyzer {
                kind: AnalyzerKind::Word,
                min_n: 1,
                max_n: 1,
                lowercase: true,
            },
            &Pruning::default(),
            Weighting::default(),
        );
        assert!(matches!(r, Err(Error::InvalidInput(_))));
    }
}
