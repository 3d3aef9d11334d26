//! Helpers shared by the model tests.

use super::xr_model::XrModel;
use crate::cluster::ClusterTree;
use crate::xr::testutil::{random_layers, random_tree};
use crate::xr::LayerWeights;

pub(super) fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("xmrrs-model-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub(super) fn sample(seed: u64) -> (ClusterTree, Vec<LayerWeights>, XrModel) {
    let tree = random_tree(&[3, 8], 50, seed);
    let layers = random_layers(&tree, 3, 30, seed);
    let model = XrModel::new(&tree, layers.clone(), 30).unwrap();
    (tree, layers, model)
}

pub(super) fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
