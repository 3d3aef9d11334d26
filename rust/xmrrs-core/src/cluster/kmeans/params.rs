//! The inputs of the clustering: label rows ([`ZView`]), parameters and their validation,
//! and the fan-out schedule of the tree.

use crate::sparse::CsrView;
use crate::{Error, Result};

/// Label representations to cluster: one row per label.
#[derive(Clone, Copy, Debug)]
pub enum ZView<'a> {
    /// Sparse rows (any order; non-canonical rows are canonicalised into a copy first).
    Sparse(CsrView<'a>),
    /// Dense row-major rows: `data.len() == n_rows * dim`.
    Dense {
        /// Row-major values.
        data: &'a [f32],
        /// Number of rows (labels).
        n_rows: usize,
        /// Number of columns.
        dim: usize,
    },
}

impl ZView<'_> {
    /// Number of rows (labels).
    pub fn n_rows(&self) -> usize {
        match self {
            ZView::Sparse(v) => v.n_rows(),
            ZView::Dense { n_rows, .. } => *n_rows,
        }
    }
}

/// Parameters of [`hierarchical_kmeans`](crate::cluster::hierarchical_kmeans).
#[derive(Clone, Debug, PartialEq)]
pub struct KMeansParams {
    /// Largest number of children of a node (`B >= 2`).
    pub branching: usize,
    /// Largest number of labels in a leaf (`>= 1`).
    pub max_leaf_size: usize,
    /// Spherical k-means (cosine similarity, L2-normalised centroids) rather than Euclidean.
    pub spherical: bool,
    /// Sibling sizes differ by at most one; otherwise sizes follow the data under a cap.
    pub balanced: bool,
    /// Largest number of Lloyd iterations per node (0: assign to the initial seeds only).
    pub max_iter: usize,
    /// A node's Lloyd loop stops once a round moves at most this fraction of its members
    /// (`0 <= tol < 1`; 0 runs until nothing moves or `max_iter`). Members with identical
    /// rows trading places do not count as moves.
    pub tol: f32,
    /// Seed of every random choice.
    pub seed: u64,
    /// k-means runs per node, each from its own k-means++ seeding (drawn one after another
    /// from the node's stream); the run with the best objective is kept. `None`:
    /// [`AUTO_N_INIT`] runs at nodes of at most [`AUTO_N_INIT_MAX_FANOUT`] children in trees
    /// of at most [`AUTO_N_INIT_MAX_LABELS`] labels, one elsewhere. `Some(0)` is invalid.
    pub n_init: Option<usize>,
    /// Explicit fan-out of every level (each `>= 2`), overriding the schedule derived from
    /// `branching` and `max_leaf_size` (both then unused for the shape; `max_leaf_size` still
    /// caps the unbalanced variant's children where the shape allows). Empty: one leaf.
    pub fanouts: Option<Vec<usize>>,
}

impl Default for KMeansParams {
    fn default() -> Self {
        KMeansParams {
            branching: 16,
            max_leaf_size: 100,
            spherical: true,
            balanced: true,
            max_iter: 20,
            tol: CONVERGE_TOL,
            seed: 0,
            n_init: None,
            fanouts: None,
        }
    }
}

impl KMeansParams {
    pub(super) fn validate(&self) -> Result<()> {
        if self.branching < 2 {
            return Err(Error::invalid(format!(
                "branching must be >= 2, got {}",
                self.branching
            )));
        }
        if self.branching > u16::MAX as usize {
            return Err(Error::invalid(format!(
                "branching must be <= {}, got {}",
                u16::MAX,
                self.branching
            )));
        }
        if self.max_leaf_size < 1 {
            return Err(Error::invalid(format!(
                "max_leaf_size must be >= 1, got {}",
                self.max_leaf_size
            )));
        }
        if self.n_init == Some(0) {
            return Err(Error::invalid("n_init must be >= 1"));
        }
        if let Some(f) = &self.fanouts {
            if let Some(&c) = f.iter().find(|&&c| c < 2 || c > u16::MAX as usize) {
                return Err(Error::invalid(format!(
                    "every fan-out must be in [2, {}], got {c}",
                    u16::MAX
                )));
            }
            if f.iter()
                .try_fold(1usize, |a, &c| a.checked_mul(c))
                .is_none()
            {
                return Err(Error::invalid("the fan-outs' product overflows"));
            }
        }
        Ok(())
    }
}

/// The fan-out of each level of the tree for `n_labels` labels (see
/// [`hierarchical_kmeans`](crate::cluster::hierarchical_kmeans)):
/// empty when every label fits in one leaf.
///
/// With `K = ceil(L / max_leaf_size)` leaves needed, the depth is the least `D` with
/// `B^D >= K`, and level `t`'s fan-out is the least `c` with `c^(D-t) >= R_t`, where
/// `R_0 = K` and `R_{t+1} = ceil(R_t / c_t)`: fan-outs are as even as possible, each `<= B`,
/// and their product is the smallest such that balanced leaves hold `<= max_leaf_size`.
pub fn fanout_schedule(n_labels: usize, branching: usize, max_leaf_size: usize) -> Vec<usize> {
    let (b, m) = (branching.max(2) as u128, max_leaf_size.max(1));
    let need = n_labels.div_ceil(m) as u128;
    if need <= 1 {
        return vec![];
    }
    let mut depth = 0u32;
    let mut cap = 1u128;
    while cap < need {
        cap = cap.saturating_mul(b);
        depth += 1;
    }
    let mut out = Vec::with_capacity(depth as usize);
    let mut rem = need;
    for left in (1..=depth).rev() {
        // least c with c^left >= rem
        let mut c = ((rem as f64).powf(1.0 / f64::from(left)).floor() as u128).max(1);
        while c.saturating_pow(left) < rem {
            c += 1;
        }
        while c > 1 && (c - 1).saturating_pow(left) >= rem {
            c -= 1;
        }
        let c = c.min(b);
        out.push(c as usize);
        rem = rem.div_ceil(c);
    }
    out
}

/// Default of [`KMeansParams::tol`]: a node's Lloyd loop stops once a round moves at most
/// this fraction of its members to another cluster (the balanced greedy assignment keeps flipping a few members near the
/// cut long after the centroids have settled).
const CONVERGE_TOL: f32 = 0.01;

/// Runs of k-means at a node of at most [`AUTO_N_INIT_MAX_FANOUT`] children in a tree of at
/// most [`AUTO_N_INIT_MAX_LABELS`] labels when [`KMeansParams::n_init`] is `None`. In a
/// small tree a few seeds decide the split of a large share of the labels, and a bad draw
/// leaves Lloyd's balanced iterations in a poor local optimum (on rcv1-subset1's one 2-way
/// split, 2 of 12 seeds fell to a mean cosine of 0.597-0.601 against 0.605-0.609, costing
/// 0.01-0.02 of P@1), while a run costs milliseconds. In large trees, three runs at the top
/// nodes of PECOS's shapes raised the objective but not P@1 consistently (mean over 8 seeds:
/// -0.0034 on debian/deps, +0.0027 on the 200k synthetic set) and cost up to a third more
/// indexing time; at their many small deep nodes they would triple a level's cost.
pub const AUTO_N_INIT: usize = 3;
/// See [`AUTO_N_INIT`].
pub const AUTO_N_INIT_MAX_FANOUT: usize = 8;
/// See [`AUTO_N_INIT`].
pub const AUTO_N_INIT_MAX_LABELS: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_rules() {
        assert!(fanout_schedule(100, 16, 100).is_empty());
        assert_eq!(fanout_schedule(101, 16, 100), vec![2]);
        assert_eq!(fanout_schedule(1000, 16, 100), vec![10]);
        assert_eq!(fanout_schedule(1700, 16, 100), vec![5, 4]);
        assert_eq!(fanout_schedule(44677, 16, 100), vec![8, 8, 7]);
        assert_eq!(fanout_schedule(7, 2, 1), vec![2, 2, 2]);
        for l in 1..300 {
            for b in [2, 3, 5, 16] {
                for m in [1, 2, 7, 50] {
                    let f = fanout_schedule(l, b, m);
                    let p: usize = f.iter().product();
                    assert!(p * m >= l && f.iter().all(|&c| c >= 1 && c <= b));
                }
            }
        }
    }
}
