//! XR-Linear: recursive linear models over a label tree, trained level by level and queried
//! with beam search.
//!
//! The stages meet at two plain types:
//! - [`LayerWeights`] is what training produces for one layer and what the inference layout
//!   ([`model`]) is built from; a user can build one from weights trained elsewhere.
//! - [`crate::cluster::ClusterTree`] is the index: layer `m` (0-based) scores the nodes of
//!   tree level `m + 1` given their parents at level `m`; the last layer (`m == depth`)
//!   scores the labels, in the tree's leaf order (`tree.labels()` maps that order back to
//!   label ids).
//!
//! Modules: [`solver`] (the binary problems), [`train`] (layer orchestration, negatives),
//! [`model`] (the chunked inference layout and its storage), [`infer`] (beam search).

pub mod assemble;
#[cfg(test)]
mod dense_tests;
pub mod infer;
mod kernel;
pub mod model;
pub mod solver;
mod store;
#[cfg(test)]
pub(crate) mod testutil;
pub mod train;

use crate::sparse::Csr;
use crate::{Error, Result};

/// The weights of one layer: one linear scorer per child node, grouped by parent.
///
/// Children of parent `p` are rows `child_ptr[p]..child_ptr[p + 1]` of `weights` (the
/// tree's contiguous layout). The margin of child `c` for a query `x` (sparse part `xs`,
/// dense part `xd`) is `weights.row(c) · xs + dense_row(c) · xd + bias[c]` (`bias` already
/// includes the bias feature's value).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerWeights {
    /// `n_parents + 1` offsets into the rows of `weights`, from 0, strictly increasing.
    pub child_ptr: Vec<u32>,
    /// `(n_children, n_features)`, canonical (sorted, unique indices), finite values.
    pub weights: Csr,
    /// One additive term per child.
    pub bias: Vec<f32>,
    /// Weights of the dense feature block ([`crate::dense`]), row-major
    /// `(n_children, n_dense)`: child `c`'s margin adds `dense[c * n_dense..][..n_dense] ·
    /// x_dense`. Empty when `n_dense == 0` (a sparse-only model, or a layer trained without
    /// the dense block; the other layers of a model have the same `n_dense`).
    pub dense: Vec<f32>,
    /// Width of the dense feature block (0 = none).
    pub n_dense: usize,
}

impl LayerWeights {
    /// Number of parent nodes (the width of the previous layer).
    pub fn n_parents(&self) -> usize {
        self.child_ptr.len().saturating_sub(1)
    }
    /// Number of child nodes (the width of this layer).
    pub fn n_children(&self) -> usize {
        self.weights.n_rows
    }

    /// Checks the invariants listed on the type.
    pub fn validate(&self) -> Result<()> {
        let ptr = &self.child_ptr;
        if ptr.len() < 2 || ptr[0] != 0 {
            return Err(Error::invalid(
                "child_ptr needs at least two entries and must start at 0",
            ));
        }
        if ptr.windows(2).any(|w| w[1] <= w[0]) {
            return Err(Error::invalid(
                "child_ptr must be strictly increasing (every parent needs a child)",
            ));
        }
        if *ptr.last().unwrap_or(&0) as usize != self.weights.n_rows {
            return Err(Error::shape(format!(
                "child_ptr ends at {} but the weights have {} rows",
                ptr.last().unwrap_or(&0),
                self.weights.n_rows
            )));
        }
        if self.bias.len() != self.weights.n_rows {
            return Err(Error::shape(format!(
                "{} bias terms for {} children",
                self.bias.len(),
                self.weights.n_rows
            )));
        }
        if !self.weights.view().is_canonical() {
            return Err(Error::invalid(
                "weight rows must have sorted, unique feature indices",
            ));
        }
        if Some(self.dense.len()) != self.weights.n_rows.checked_mul(self.n_dense) {
            return Err(Error::shape(format!(
                "{} dense weights for {} children of {} dense features",
                self.dense.len(),
                self.weights.n_rows,
                self.n_dense
            )));
        }
        crate::sparse::check_finite(&self.weights.data, "weights")?;
        crate::sparse::check_finite(&self.bias, "bias")?;
        crate::sparse::check_finite(&self.dense, "dense weights")?;
        Ok(())
    }

    /// The dense weights of child `c` (empty without a dense block).
    #[inline]
    pub fn dense_row(&self, c: usize) -> &[f32] {
        &self.dense[c * self.n_dense..(c + 1) * self.n_dense]
    }
}

/// The loss of the per-node binary problems (all L2-regularised, solved in the dual).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// L2-loss (squared hinge) SVM, dual coordinate descent. PECOS's default.
    SquaredHinge,
    /// L1-loss (hinge) SVM, dual coordinate descent.
    Hinge,
    /// Logistic regression, dual coordinate descent.
    Logistic,
}

/// Where each node's negative examples come from (at least one of the two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negatives {
    /// Teacher-forced: every instance whose true labels fall under the parent.
    pub tfn: bool,
    /// Matcher-aware: every instance whose beam (from the layers above, on the training
    /// set) reaches the parent.
    pub man: bool,
}

/// Settings of the binary problems.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SolverParams {
    pub loss: Loss,
    /// Penalty multiplier of positive examples.
    pub cp: f32,
    /// Penalty multiplier of negative examples.
    pub cn: f32,
    /// Maximum number of outer coordinate-descent passes.
    pub max_iter: u32,
    /// Stopping tolerance on the projected-gradient gap.
    pub tol: f32,
    /// Value of the constant feature appended to every instance (0 = no bias term).
    pub bias: f32,
    /// Weights with `|w| < threshold` are dropped (the bias term is always kept).
    pub threshold: f32,
    /// Keep at most this many weights per node, by magnitude (0 = no cap).
    pub max_nonzeros_per_node: usize,
}

impl Default for SolverParams {
    fn default() -> Self {
        SolverParams {
            loss: Loss::SquaredHinge,
            cp: 1.0,
            cn: 1.0,
            max_iter: 100,
            tol: 0.1,
            bias: 1.0,
            threshold: 0.1,
            max_nonzeros_per_node: 0,
        }
    }
}

/// How a margin becomes a score, and how a child's score combines with its parent's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PostProcessor {
    /// The margin itself; the parent's score is ignored.
    Noop,
    /// `1 / (1 + exp(-m))`, multiplied along the path.
    Sigmoid,
    /// `log sigmoid(m)`, added along the path.
    LogSigmoid,
    /// `exp(-max(0, 1 - m)^p)`, multiplied along the path (`p = 3` is PECOS's default).
    Hinge(u8),
    /// `-max(0, 1 - m)^p`, added along the path.
    LogHinge(u8),
}

impl PostProcessor {
    /// Parses PECOS's names: `noop`, `sigmoid`, `log-sigmoid`, `l{p}-hinge`,
    /// `log-l{p}-hinge` (p = 1..=4).
    pub fn parse(name: &str) -> Result<Self> {
        let hinge_p = |s: &str| -> Option<u8> {
            let p = s
                .strip_prefix('l')?
                .strip_suffix("-hinge")?
                .parse::<u8>()
                .ok()?;
            (1..=4).contains(&p).then_some(p)
        };
        match name {
            "noop" => Ok(PostProcessor::Noop),
            "sigmoid" => Ok(PostProcessor::Sigmoid),
            "log-sigmoid" => Ok(PostProcessor::LogSigmoid),
            _ => {
                if let Some(p) = name.strip_prefix("log-").and_then(hinge_p) {
                    Ok(PostProcessor::LogHinge(p))
                } else if let Some(p) = hinge_p(name) {
                    Ok(PostProcessor::Hinge(p))
                } else {
                    Err(Error::invalid(format!(
                        "unknown post_processor {name:?}; expected one of noop, sigmoid, \
                         log-sigmoid, l1-hinge..l4-hinge, log-l1-hinge..log-l4-hinge"
                    )))
                }
            }
        }
    }

    /// The canonical name (inverse of [`PostProcessor::parse`]).
    pub fn name(&self) -> String {
        match self {
            PostProcessor::Noop => "noop".into(),
            PostProcessor::Sigmoid => "sigmoid".into(),
            PostProcessor::LogSigmoid => "log-sigmoid".into(),
            PostProcessor::Hinge(p) => format!("l{p}-hinge"),
            PostProcessor::LogHinge(p) => format!("log-l{p}-hinge"),
        }
    }

    /// The score of a margin.
    #[inline]
    pub fn transform(&self, m: f32) -> f32 {
        match *self {
            PostProcessor::Noop => m,
            PostProcessor::Sigmoid => 1.0 / (1.0 + (-m).exp()),
            PostProcessor::LogSigmoid => -((-m).exp().ln_1p()),
            PostProcessor::Hinge(p) => (-(1.0 - m).max(0.0).powi(p as i32)).exp(),
            PostProcessor::LogHinge(p) => -(1.0 - m).max(0.0).powi(p as i32),
        }
    }

    /// Combines a child's transformed score with its parent's path score.
    #[inline]
    pub fn combine(&self, parent: f32, child: f32) -> f32 {
        match self {
            PostProcessor::Noop => child,
            PostProcessor::Sigmoid | PostProcessor::Hinge(_) => parent * child,
            PostProcessor::LogSigmoid | PostProcessor::LogHinge(_) => parent + child,
        }
    }

    /// The path score of the root (the identity of [`PostProcessor::combine`]).
    pub fn root_score(&self) -> f32 {
        match self {
            PostProcessor::Noop | PostProcessor::LogSigmoid | PostProcessor::LogHinge(_) => 0.0,
            PostProcessor::Sigmoid | PostProcessor::Hinge(_) => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_processor_names_round_trip() {
        for name in [
            "noop",
            "sigmoid",
            "log-sigmoid",
            "l1-hinge",
            "l3-hinge",
            "log-l2-hinge",
            "log-l4-hinge",
        ] {
            assert_eq!(PostProcessor::parse(name).unwrap().name(), name);
        }
        for bad in ["", "l0-hinge", "l5-hinge", "hinge", "log-noop", "L3-hinge"] {
            assert!(PostProcessor::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn l3_hinge_matches_its_formula() {
        let pp = PostProcessor::Hinge(3);
        assert_eq!(pp.transform(1.5), 1.0);
        assert!((pp.transform(0.0) - (-1f32).exp()).abs() < 1e-7);
        assert!((pp.transform(-1.0) - (-8f32).exp()).abs() < 1e-9);
        assert_eq!(pp.combine(0.5, 0.5), 0.25);
        let lp = PostProcessor::LogHinge(3);
        assert_eq!(lp.transform(-1.0), -8.0);
        assert_eq!(lp.combine(-1.0, -2.0), -3.0);
    }
}
