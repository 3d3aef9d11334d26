//! L2-regularised linear binary classifiers solved in the dual by coordinate descent.
//!
//! The per-node problems of XR-Linear: for instances `x_i` with signs `y_i = ±1` and costs
//! `C_i > 0`, find `w` (and a bias weight `w_b` on a virtual feature of constant value `b`,
//! regularised like the others) minimising
//!
//! - [`Loss::SquaredHinge`]: `½|w|² + Σ C_i max(0, 1 − y_i w·x_i)²`
//! - [`Loss::Hinge`]: `½|w|² + Σ C_i max(0, 1 − y_i w·x_i)`
//! - [`Loss::Logistic`]: `½|w|² + Σ C_i log(1 + exp(−y_i w·x_i))`
//!
//! (`w·x_i` includes `w_b b`). The files, one concept each:
//! - `params.rs`: validation of [`SolverParams`];
//! - `local.rs`: the instances ([`LocalCsr`], gathered with a [`FeatureMap`]);
//! - `single.rs`: the one-problem [`Solver`] workspace, with its loss families' dual
//!   coordinate descent in `svm.rs` (squared hinge, hinge) and `logistic.rs`;
//! - `group.rs`: the lock-step [`GroupSolver`] (SVM losses, up to [`MAX_LANES`] sibling
//!   problems), with its lane machinery in `lanes.rs`.
//!
//! Precision: `w` is kept in `f32` (the features are `f32`). The one-problem [`Solver`] keeps
//! its dual variables, gradients and bias weight in `f64`; the lock-step [`GroupSolver`]
//! keeps them in `f32`, which halves its per-lane work (measured 20-50% faster on the XR
//! workloads, with the same pass counts and precision@k on the benchmark sets).

mod group;
mod lanes;
mod local;
mod logistic;
mod params;
mod single;
mod svm;
#[cfg(test)]
mod testutil;

#[cfg(doc)]
use crate::xr::{Loss, SolverParams};
pub use group::{GroupInfo, GroupSolver, LaneWeights, MAX_LANES};
pub use local::{FeatureMap, LocalCsr};
pub use single::{SolveInfo, Solver};
