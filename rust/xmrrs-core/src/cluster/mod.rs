//! Semantic label indexing: the label tree of XR-Linear and the hierarchical k-means that
//! builds it.
//!
//! - [`ClusterTree`]: levels of nodes over `L` labels where the children of every node are
//!   contiguous at the next level (the inference layout). It can be built from validated raw
//!   arrays ([`ClusterTree::from_parts`]) or from arbitrary per-level parent assignments
//!   ([`ClusterTree::from_assignments`]), so any clustering can be plugged in.
//! - [`hierarchical_kmeans`]: real B-ary (not binary-then-merged) recursive k-means over label
//!   representations ([`ZView`]: sparse CSR or dense row-major), spherical or Euclidean,
//!   balanced or size-capped, bit-for-bit reproducible for a given seed whatever the thread
//!   count. See that function for the depth, fan-out and balancing rules.

mod kmeans;
mod rng;
mod tree;

pub use kmeans::{
    fanout_schedule, hierarchical_kmeans, split_subtrees, KMeansParams, Subtrees, ZView,
};
pub use rng::SplitMix64;
pub use tree::ClusterTree;
