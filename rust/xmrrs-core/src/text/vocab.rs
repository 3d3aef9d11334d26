//! Vocabulary building: terms counted per document in parallel chunks, merged into one
//! sorted vocabulary with document frequencies, then pruned (`min_df`, `max_df`,
//! `max_features`) as scikit-learn's `CountVectorizer` does.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rayon::prelude::*;

use crate::{Error, Result};

use super::tokenize::{Analyzer, AnalyzerKind, Scratch};

/// The multiply-rotate hash of rustc (FxHash): fast on short keys, not DoS-resistant, which
/// is fine for counting the terms of a corpus.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // hashbrown takes the bucket from the low bits: bring the well-mixed high bits down
        self.hash.rotate_left(26)
    }
}

/// A hash map keyed by strings with [`FxHasher`].
pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A document-frequency bound: a count of documents, or a fraction of them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DocFreq {
    /// An absolute number of documents (at least 1).
    Count(u64),
    /// A fraction of the documents, in `[0, 1]`.
    Fraction(f64),
}

impl DocFreq {
    fn validate(self, name: &str) -> Result<()> {
        match self {
            DocFreq::Count(0) => Err(Error::invalid(format!(
                "{name} must be an int >= 1 or a float in [0.0, 1.0], got 0"
            ))),
            DocFreq::Fraction(f) if !(0.0..=1.0).contains(&f) => Err(Error::invalid(format!(
                "{name} must be an int >= 1 or a float in [0.0, 1.0], got {f}"
            ))),
            _ => Ok(()),
        }
    }

    /// The bound in documents, as scikit-learn computes it (a fraction is not rounded).
    fn docs(self, n_docs: usize) -> f64 {
        match self {
            DocFreq::Count(c) => c as f64,
            DocFreq::Fraction(f) => f * n_docs as f64,
        }
    }
}

/// Which terms are kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pruning {
    /// Drop terms found in fewer documents.
    pub min_df: DocFreq,
    /// Drop terms found in more documents.
    pub max_df: DocFreq,
    /// Keep at most this many terms, the most frequent in the corpus (ties: the term that
    /// sorts first wins).
    pub max_features: Option<usize>,
}

impl Default for Pruning {
    fn default() -> Self {
        Pruning {
            min_df: DocFreq::Count(1),
            max_df: DocFreq::Fraction(1.0),
            max_features: None,
        }
    }
}

impl Pruning {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<()> {
        self.min_df.validate("min_df")?;
        self.max_df.validate("max_df")?;
        if self.max_features == Some(0) {
            return Err(Error::invalid(
                "max_features must be None or an int >= 1, got 0",
            ));
        }
        Ok(())
    }
}

/// Term counts of one document, or of a chunk of consecutive documents: per document the
/// `(term id, count)` pairs sorted by id.
#[derive(Default)]
pub struct Counts {
    /// Row pointer into `ids` / `counts` (one more entry than documents).
    pub indptr: Vec<usize>,
    /// Term ids.
    pub ids: Vec<u32>,
    /// How often each term occurs in its document.
    pub counts: Vec<u32>,
}

impl Counts {
    /// Appends one document's terms (ids with repetitions; sorted in place).
    pub fn push_doc(&mut self, ids: &mut [u32]) {
        if self.indptr.is_empty() {
            self.indptr.push(0);
        }
        ids.sort_unstable();
        let mut i = 0;
        while i < ids.len() {
            let mut j = i + 1;
            while j < ids.len() && ids[j] == ids[i] {
                j += 1;
            }
            self.ids.push(ids[i]);
            self.counts.push(u32::try_from(j - i).unwrap_or(u32::MAX));
            i = j;
        }
        self.indptr.push(self.ids.len());
    }

    /// Number of documents.
    pub fn n_docs(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }
}

/// The terms of a chunk of documents with local ids (in order of first appearance).
struct Chunk {
    terms: Vec<Box<str>>,
    df: Vec<u64>,
    tf: Vec<u64>,
    counts: Counts,
}

fn count_chunk(docs: &[&str], analyzer: &Analyzer) -> Result<Chunk> {
    let mut map: FxMap<Box<str>, u32> = FxMap::default();
    let mut terms: Vec<Box<str>> = Vec::new();
    let mut sc = Scratch::default();
    let mut ids: Vec<u32> = Vec::new();
    let mut counts = Counts::default();
    counts.indptr.push(0);
    let mut overflow = false;
    for doc in docs {
        ids.clear();
        analyzer.analyze(doc, &mut sc, |t| {
            let id = match map.get(t) {
                Some(&id) => id,
                None => {
                    let Ok(id) = u32::try_from(terms.len()) else {
                        overflow = true;
                        return;
                    };
                    map.insert(t.into(), id);
                    terms.push(t.into());
                    id
                }
            };
            ids.push(id);
        });
        counts.push_doc(&mut ids);
    }
    if overflow {
        return Err(Error::invalid("more than 2^32 distinct terms"));
    }
    let mut df = vec![0u64; terms.len()];
    let mut tf = vec![0u64; terms.len()];
    for (&id, &c) in counts.ids.iter().zip(&counts.counts) {
        df[id as usize] += 1;
        tf[id as usize] += u64::from(c);
    }
    Ok(Chunk {
        terms,
        df,
        tf,
        counts,
    })
}

/// Splits `n` items into about `parts` consecutive ranges.
pub fn chunk_ranges(n: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    let step = n.div_ceil(parts).max(1);
    (0..n).step_by(step).map(|s| s..(s + step).min(n)).collect()
}

/// A fitted vocabulary: terms in sorted order (the column order) and a lookup table.
pub struct Vocabulary {
    terms: Vec<Box<str>>,
    /// Term to column, built on the first lookup (fitting alone never needs it).
    index: std::sync::OnceLock<FxMap<Box<str>, u32>>,
}

impl Vocabulary {
    /// A vocabulary of `terms`, which must be distinct and sorted (as Python sorts str).
    pub fn from_sorted(terms: Vec<Box<str>>) -> Result<Self> {
        if u32::try_from(terms.len()).is_err() {
            return Err(Error::invalid("more than 2^32 terms"));
        }
        if let Some(w) = terms.windows(2).position(|w| w[0] >= w[1]) {
            return Err(Error::invalid(format!(
                "vocabulary terms must be distinct and sorted; term {} ({:?}) is not after {:?}",
                w + 1,
                terms[w + 1],
                terms[w]
            )));
        }
        Ok(Vocabulary {
            terms,
            index: std::sync::OnceLock::new(),
        })
    }

    fn index(&self) -> &FxMap<Box<str>, u32> {
        self.index.get_or_init(|| {
            let mut index = FxMap::default();
            index.reserve(self.terms.len());
            for (i, t) in self.terms.iter().enumerate() {
                index.insert(t.clone(), i as u32);
            }
            index
        })
    }

    /// The terms, in column order.
    pub fn terms(&self) -> &[Box<str>] {
        &self.terms
    }

    /// Number of terms.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// Whether there is no term.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The column of `term`.
    pub fn get(&self, term: &str) -> Option<u32> {
        self.index().get(term).copied()
    }

    /// Counts the terms of `docs` that are in the vocabulary (others are ignored).
    pub fn count(&self, docs: &[&str], analyzer: &Analyzer, parts: usize) -> Vec<Counts> {
        let index = self.index();
        chunk_ranges(docs.len(), parts)
            .into_par_iter()
            .map(|r| {
                let mut sc = Scratch::default();
                let mut ids = Vec::new();
                let mut counts = Counts::default();
                counts.indptr.push(0);
                for doc in &docs[r] {
                    ids.clear();
                    analyzer.analyze(doc, &mut sc, |t| {
                        if let Some(&id) = index.get(t) {
                            ids.push(id);
                        }
                    });
                    counts.push_doc(&mut ids);
                }
                counts
            })
            .collect()
    }
}

/// What [`fit`] learns and counts: the pruned vocabulary, document frequencies of its terms,
/// and the documents' counts over it (one [`Counts`] per chunk of documents, in order).
pub struct Fitted {
    /// Kept terms, sorted.
    pub vocabulary: Vocabulary,
    /// Document frequency of each kept term.
    pub df: Vec<u64>,
    /// Term counts of the documents, column ids into `vocabulary`.
    pub counts: Vec<Counts>,
}

/// The terms of all chunks merged: frequencies by global term id, the ids in sorted term
/// order, and each chunk's counts over its local ids with their global ids.
pub(super) struct Merged {
    /// Document frequency by global id.
    pub df: Vec<u64>,
    /// Corpus frequency by global id.
    pub tf: Vec<u64>,
    /// The global ids of the terms in sorted order (UTF-8 byte order, as Python sorts str).
    pub order: Vec<u32>,
    /// Per chunk, the documents' counts over the chunk's local ids.
    pub counts: Vec<Counts>,
    /// Per chunk, the global id of each local id.
    pub local_to_global: Vec<Vec<u32>>,
}

/// Learns the vocabulary of `docs` and counts their terms, in `parts` parallel chunks
/// (the result does not depend on `parts`).
pub fn fit(docs: &[&str], analyzer: &Analyzer, pruning: &Pruning, parts: usize) -> Result<Fitted> {
    analyzer.validate()?;
    pruning.validate()?;
    if analyzer.kind == AnalyzerKind::Word {
        let (merged, term) = super::word::fit(docs, analyzer, parts)?;
        return prune(merged, term, docs.len(), pruning);
    }
    let mut chunks: Vec<Chunk> = chunk_ranges(docs.len(), parts)
        .into_par_iter()
        .map(|r| count_chunk(&docs[r], analyzer))
        .collect::<Result<_>>()?;
    let counts: Vec<Counts> = chunks
        .iter_mut()
        .map(|c| std::mem::take(&mut c.counts))
        .collect();

    // merge: global ids in order of first appearance (chunks in document order)
    let mut global: FxMap<&str, u32> = FxMap::default();
    let mut terms: Vec<&str> = Vec::new();
    let mut df: Vec<u64> = Vec::new();
    let mut tf: Vec<u64> = Vec::new();
    let mut local_to_global: Vec<Vec<u32>> = Vec::with_capacity(chunks.len());
    for ch in &chunks {
        let mut map = Vec::with_capacity(ch.terms.len());
        for (k, t) in ch.terms.iter().enumerate() {
            let g = *global.entry(t).or_insert_with(|| {
                terms.push(t);
                df.push(0);
                tf.push(0);
                (terms.len() - 1) as u32
            });
            df[g as usize] += ch.df[k];
            tf[g as usize] += ch.tf[k];
            map.push(g);
        }
        local_to_global.push(map);
    }
    if u32::try_from(terms.len()).is_err() {
        return Err(Error::invalid("more than 2^32 distinct terms"));
    }
    drop(global);
    // sorted order (UTF-8 byte order is code point order, as Python sorts str)
    let mut order: Vec<u32> = (0..terms.len() as u32).collect();
    order.par_sort_unstable_by(|&a, &b| terms[a as usize].cmp(terms[b as usize]));
    let merged = Merged {
        df,
        tf,
        order,
        counts,
        local_to_global,
    };
    prune(merged, |g| terms[g as usize].into(), docs.len(), pruning)
}

/// Prunes the merged terms and remaps the chunks' counts to the kept terms' columns.
fn prune(
    merged: Merged,
    term: impl Fn(u32) -> Box<str> + Sync,
    n_docs: usize,
    pruning: &Pruning,
) -> Result<Fitted> {
    let Merged {
        df,
        tf,
        order,
        counts,
        local_to_global,
    } = merged;
    if order.is_empty() {
        return Err(Error::invalid(
            "empty vocabulary; perhaps the documents only contain stop words",
        ));
    }
    let (high, low) = (pruning.max_df.docs(n_docs), pruning.min_df.docs(n_docs));
    if high < low {
        return Err(Error::invalid(
            "max_df corresponds to < documents than min_df",
        ));
    }

    let mut keep: Vec<bool> = order
        .iter()
        .map(|&g| {
            let d = df[g as usize] as f64;
            d <= high && d >= low
        })
        .collect();
    if let Some(limit) = pruning.max_features {
        let mut kept: Vec<usize> = (0..order.len()).filter(|&i| keep[i]).collect();
        if kept.len() > limit {
            // most frequent first; ties: the position in sorted order (a stable sort)
            kept.sort_by(|&a, &b| tf[order[b] as usize].cmp(&tf[order[a] as usize]));
            keep.iter_mut().for_each(|k| *k = false);
            for &i in &kept[..limit] {
                keep[i] = true;
            }
        }
    }
    let kept: Vec<u32> = order
        .iter()
        .zip(&keep)
        .filter(|e| *e.1)
        .map(|e| *e.0)
        .collect();
    if kept.is_empty() {
        return Err(Error::invalid(
            "After pruning, no terms remain. Try a lower min_df or a higher max_df.",
        ));
    }
    let mut column = vec![u32::MAX; df.len()];
    for (c, &g) in kept.iter().enumerate() {
        column[g as usize] = c as u32;
    }
    let kept_df: Vec<u64> = kept.iter().map(|&g| df[g as usize]).collect();
    let kept_terms: Vec<Box<str>> = kept.par_iter().map(|&g| term(g)).collect();

    // remap each chunk's counts to columns (dropping pruned terms), rows sorted by column
    let counts: Vec<Counts> = counts
        .into_par_iter()
        .zip(local_to_global.into_par_iter())
        .map(|(c, mut map)| {
            // local id to column
            for g in &mut map {
                *g = column[*g as usize];
            }
            let mut out = Counts {
                indptr: Vec::with_capacity(c.indptr.len()),
                ids: Vec::with_capacity(c.ids.len()),
                counts: Vec::with_capacity(c.ids.len()),
            };
            out.indptr.push(0);
            let mut row: Vec<(u32, u32)> = Vec::new();
            for d in 0..c.n_docs() {
                row.clear();
                for k in c.indptr[d]..c.indptr[d + 1] {
                    let col = map[c.ids[k] as usize];
                    if col != u32::MAX {
                        row.push((col, c.counts[k]));
                    }
                }
                row.sort_unstable_by_key(|e| e.0);
                out.ids.extend(row.iter().map(|e| e.0));
                out.counts.extend(row.iter().map(|e| e.1));
                out.indptr.push(out.ids.len());
            }
            out
        })
        .collect();
    Ok(Fitted {
        vocabulary: Vocabulary::from_sorted(kept_terms)?,
        df: kept_df,
        counts,
    })
}
