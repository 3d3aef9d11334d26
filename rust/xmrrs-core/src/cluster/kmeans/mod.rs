//! Hierarchical B-ary k-means over label representations.
//!
//! The entry point is [`hierarchical_kmeans`] (in `driver.rs`); the files, one concept each:
//! - `params.rs`: the inputs ([`ZView`], [`KMeansParams`]), their validation and the fan-out
//!   schedule ([`fanout_schedule`]);
//! - `driver.rs`: the tree driver, level by level (the whole tree, or given sub-trees apart:
//!   [`split_subtrees`]), and the split of one node;
//! - `lloyd.rs`: k-means at one node (`n_init` restarts of seeding and Lloyd rounds);
//! - `seeding.rs`: k-means++ seeding;
//! - `rows.rs`: the rows abstraction (a node's dense or sparse member rows) and its kernels;
//! - `scoring.rs`, `colmajor.rs`: scoring members against centroids, by rows or by columns;
//! - `centroids.rs`: the centroid sums and their (incremental) updates;
//! - `balance.rs`: the assignment under per-cluster capacities;
//! - `duplicates.rs`: identical label rows.

mod balance;
mod centroids;
mod colmajor;
mod driver;
mod duplicates;
mod lloyd;
mod params;
mod rows;
mod scoring;
mod seeding;
#[cfg(test)]
mod testutil;

pub use driver::{hierarchical_kmeans, split_subtrees, Subtrees};
pub use params::{fanout_schedule, KMeansParams, ZView};
