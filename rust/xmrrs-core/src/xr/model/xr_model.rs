//! The model type, [`XrModel`]: construction from a tree and layer weights, and accessors.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::layout::{build_layer, Layer, LayerRef, LayoutParams};
use crate::cluster::ClusterTree;
use crate::sparse::Csr;
use crate::xr::kernel::{Col, LayerView};
use crate::xr::store::{Backing, Buf};
use crate::xr::LayerWeights;
use crate::{Error, Result};

/// An XR-Linear model ready for beam search (see the module docs for the layout and files).
///
/// A *full* model has one layer per tree level below the root and returns label ids. A
/// *partial* model ([`XrModel::new_partial`]) has only the first `m` layers; its "labels" are
/// the nodes of tree level `m` (identity ids), which is what training-time beams need.
#[derive(Clone, Debug)]
pub struct XrModel {
    pub(super) n_features: usize,
    /// Width of the dense feature block (0 = a sparse-only model).
    pub(super) n_dense: usize,
    pub(super) n_labels: usize,
    pub(super) partial: bool,
    pub(crate) layers: Vec<Layer>,
    pub(super) labels: Buf<u32>,
    pub(super) metadata: BTreeMap<String, String>,
    pub(super) mapped: bool,
    /// The buffer the arrays were loaded from and its expected checksum (for `verify`).
    pub(super) source: Option<(Arc<Backing>, String)>,
}

impl XrModel {
    /// Builds the model of a whole tree: `layers[m]` scores tree level `m + 1` given level
    /// `m`, so `layers.len() == tree.depth() + 1` and `layers[m].child_ptr` must equal
    /// `tree.child_ptr(m)` (`tree.leaf_ptr()` for the last layer). Every layer must have
    /// `n_features` columns and pass [`LayerWeights::validate`].
    pub fn new(tree: &ClusterTree, layers: Vec<LayerWeights>, n_features: usize) -> Result<Self> {
        if layers.len() != tree.depth() + 1 {
            return Err(Error::shape(format!(
                "a tree of depth {} needs {} layers, got {}",
                tree.depth(),
                tree.depth() + 1,
                layers.len()
            )));
        }
        Self::with_layout(tree, &layers, n_features, &LayoutParams::default())
    }

    /// Builds the model of the first `layers.len()` layers of `tree` (between 1 and
    /// `tree.depth() + 1`; the weights are read, not kept). With fewer layers than the tree
    /// needs, the model's outputs are the node ids of tree level `layers.len()`.
    pub fn new_partial(
        tree: &ClusterTree,
        layers: &[LayerWeights],
        n_features: usize,
    ) -> Result<Self> {
        Self::with_layout(tree, layers, n_features, &LayoutParams::default())
    }

    /// [`XrModel::new_partial`] with explicit layout knobs.
    pub fn with_layout(
        tree: &ClusterTree,
        layers: &[LayerWeights],
        n_features: usize,
        layout: &LayoutParams,
    ) -> Result<Self> {
        let depth = tree.depth();
        if layers.is_empty() || layers.len() > depth + 1 {
            return Err(Error::shape(format!(
                "a tree of depth {depth} takes 1 to {} layers, got {}",
                depth + 1,
                layers.len()
            )));
        }
        if n_features == 0 || n_features > u32::MAX as usize {
            return Err(Error::invalid(format!(
                "n_features must be in 1..=2^32-1, got {n_features}"
            )));
        }
        if layout.dense_min_fill.is_nan()
            || layout.dense_min_fill <= 0.0
            || layout.rows_per_bucket == 0
            || layout.dense_copy_min_fill.is_nan()
            || layout.dense_copy_min_fill < 0.0
        {
            return Err(Error::invalid(
                "dense_min_fill must be > 0, rows_per_bucket >= 1 and dense_copy_min_fill >= 0",
            ));
        }
        for (m, lw) in layers.iter().enumerate() {
            let expect = if m < depth {
                tree.child_ptr(m).unwrap_or(&[])
            } else {
                tree.leaf_ptr()
            };
            if lw.child_ptr.as_slice() != expect {
                return Err(Error::shape(format!(
                    "layer {m}: child_ptr does not match the tree's level {m} ({} parents, \
                     {} children expected; got {} parents, {} children)",
                    expect.len().saturating_sub(1),
                    expect.last().copied().unwrap_or(0),
                    lw.n_parents(),
                    lw.n_children()
                )));
            }
            if lw.weights.n_cols != n_features {
                return Err(Error::shape(format!(
                    "layer {m}: weights have {} columns, the model {n_features} features",
                    lw.weights.n_cols
                )));
            }
            lw.validate()
                .map_err(|e| Error::invalid(format!("layer {m}: {e}")))?;
        }
        // a layer scores the dense block with all of it or not at all
        let n_dense = layers.iter().map(|l| l.n_dense).max().unwrap_or(0);
        if let Some((m, lw)) = layers
            .iter()
            .enumerate()
            .find(|(_, l)| l.n_dense != n_dense && l.n_dense != 0)
        {
            return Err(Error::shape(format!(
                "layer {m} has {} dense features, another layer {n_dense}",
                lw.n_dense
            )));
        }
        let partial = layers.len() < depth + 1;
        let labels: Vec<u32> = if partial {
            (0..tree.n_nodes(layers.len()) as u32).collect()
        } else {
            tree.labels().to_vec()
        };
        let built: Vec<Layer> = layers
            .iter()
            .map(|lw| build_layer(lw, layout))
            .collect::<Result<_>>()?;
        Ok(XrModel {
            n_features,
            n_dense,
            n_labels: labels.len(),
            partial,
            layers: built,
            labels: labels.into(),
            metadata: BTreeMap::new(),
            mapped: false,
            source: None,
        })
    }

    /// Number of input features of the sparse block.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Width of the dense feature block (0 = the model takes sparse input only).
    pub fn n_dense(&self) -> usize {
        self.n_dense
    }
    /// Number of outputs: labels (nodes of the last level for a partial model).
    pub fn n_labels(&self) -> usize {
        self.n_labels
    }
    /// Number of layers (`tree.depth() + 1` for a full model).
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }
    /// Depth of the tree below the root that the layers cover (`n_layers() - 1`).
    pub fn depth(&self) -> usize {
        self.layers.len() - 1
    }
    /// Whether this is a partial model (outputs are tree nodes, not labels).
    pub fn is_partial(&self) -> bool {
        self.partial
    }
    /// Whether the arrays are memory-mapped from a file.
    pub fn is_mapped(&self) -> bool {
        self.mapped
    }
    /// Leaf-order position → label id (identity for a partial model).
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The parent -> children offsets of layer `m` (the tree's level `m`; `leaf_ptr` for the
    /// last layer), or `None` past the last layer.
    pub fn child_ptr(&self, m: usize) -> Option<&[u32]> {
        self.layers.get(m).map(|l| &l.child_ptr[..])
    }
    /// `(n_parents, n_children)` of each layer.
    pub fn layer_shapes(&self) -> Vec<(usize, usize)> {
        self.layers
            .iter()
            .map(|l| (l.n_parents, l.n_children))
            .collect()
    }
    /// Number of non-zero weights of each layer (biases and dense padding not counted).
    pub fn layer_nnz(&self) -> Vec<usize> {
        self.layers.iter().map(|l| l.nnz).collect()
    }
    /// Total bytes of the model's arrays (what the array file holds, headers aside; not the
    /// in-memory dense copies of small layers).
    pub fn nbytes(&self) -> usize {
        self.labels.len() * 4 + self.layers.iter().map(Layer::nbytes).sum::<usize>()
    }
    /// Free-form string metadata saved with the model (e.g. prediction defaults).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
    /// Mutable access to the metadata.
    pub fn metadata_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.metadata
    }

    /// The weights of layer `m` back in [`LayerWeights`] form (explicit zeros dropped).
    pub fn layer_weights(&self, m: usize) -> Result<LayerWeights> {
        let layer = self.layers.get(m).ok_or_else(|| {
            Error::invalid(format!(
                "layer {m} out of range ({} layers)",
                self.layers.len()
            ))
        })?;
        let corrupt = |_| Error::invalid("model data is corrupt (see XrModel::verify)");
        let mut trip: Vec<(u32, u32, f32)> = Vec::with_capacity(layer.nnz);
        fn collect<C: Col>(
            v: &LayerView<'_, C>,
            trip: &mut Vec<(u32, u32, f32)>,
        ) -> std::result::Result<(), crate::xr::kernel::Corrupt> {
            for j in 0..v.n_chunks() {
                let ch = v.chunk(j)?;
                let w = ch.width();
                for (r, &f) in ch.feat.iter().enumerate() {
                    let (s, e) = (ch.ptr[r] as usize, ch.ptr[r + 1] as usize);
                    let cols = ch.cols.get(s..e).ok_or(crate::xr::kernel::Corrupt)?;
                    let vals = ch.vals.get(s..e).ok_or(crate::xr::kernel::Corrupt)?;
                    for (c, &x) in cols.iter().zip(vals) {
                        if c.idx() >= w {
                            return Err(crate::xr::kernel::Corrupt);
                        }
                        if x != 0.0 {
                            trip.push(((ch.c0 + c.idx()) as u32, f, x));
                        }
                    }
                }
            }
            Ok(())
        }
        match layer.view() {
            LayerRef::U8(v) => collect(&v, &mut trip),
            LayerRef::U16(v) => collect(&v, &mut trip),
            LayerRef::U32(v) => collect(&v, &mut trip),
        }
        .map_err(corrupt)?;
        let weights = Csr::from_triplets(layer.n_children, self.n_features, &trip)?;
        Ok(LayerWeights {
            dense: layer
                .dense_w
                .chunks_exact(layer.n_dense.max(1))
                .zip(layer.dense_unscale.iter())
                .flat_map(|(row, &k)| {
                    let u = crate::half::pow2(i32::from(k));
                    row.iter().map(move |&h| crate::half::to_f32(h) * u)
                })
                .collect(),
            n_dense: layer.n_dense,
            child_ptr: layer.child_ptr.to_vec(),
            weights,
            bias: layer.bias.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xr::model::testutil::sample;

    #[test]
    fn models_and_searchers_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<XrModel>();
        send::<crate::xr::infer::Searcher>();
    }

    #[test]
    fn construction_is_validated() {
        let (tree, layers, _) = sample(1);
        assert!(XrModel::new(&tree, layers[..2].to_vec(), 30).is_err()); // too few layers
        assert!(XrModel::new(&tree, layers.clone(), 31).is_err()); // feature count
        let mut bad = layers.clone();
        bad.swap(0, 1);
        assert!(XrModel::new(&tree, bad, 30).is_err()); // child_ptr mismatch
        let mut bad = layers.clone();
        bad[2].bias[0] = f32::NAN;
        assert!(XrModel::new(&tree, bad, 30).is_err());
        let mut bad = layers.clone();
        bad[1].bias.pop();
        assert!(XrModel::new(&tree, bad, 30).is_err());
        assert!(XrModel::new_partial(&tree, &[], 30).is_err());
        let lp = LayoutParams {
            rows_per_bucket: 0,
            ..LayoutParams::default()
        };
        assert!(XrModel::with_layout(&tree, &layers, 30, &lp).is_err());
    }

    #[test]
    fn layer_weights_round_trip_and_accessors() {
        let (tree, layers, model) = sample(2);
        assert_eq!(model.n_layers(), 3);
        assert_eq!(model.depth(), 2);
        assert_eq!(model.n_labels(), 50);
        assert_eq!(model.labels(), tree.labels());
        assert!(!model.is_partial() && !model.is_mapped());
        for (m, lw) in layers.iter().enumerate() {
            let back = model.layer_weights(m).unwrap();
            let mut want = lw.clone();
            // explicit zeros are dropped by the layout
            let t: Vec<(u32, u32, f32)> = (0..want.weights.n_rows)
                .flat_map(|r| {
                    let (i, v) = lw.weights.view().row(r);
                    i.iter()
                        .zip(v)
                        .filter(|e| *e.1 != 0.0)
                        .map(move |(&c, &x)| (r as u32, c, x))
                        .collect::<Vec<_>>()
                })
                .collect();
            want.weights = Csr::from_triplets(want.weights.n_rows, 30, &t).unwrap();
            assert_eq!(back, want);
            assert_eq!(model.layer_nnz()[m], want.weights.nnz());
        }
        assert!(model.layer_weights(3).is_err());
        assert!(model.nbytes() > 0);
    }
}
