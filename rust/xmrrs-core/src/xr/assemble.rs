//! Putting a model together from the parts trained separately (distributed training).
//!
//! A [`LayerPart`] holds the trained rows of some parents of one layer (see
//! [`crate::xr::train::train_subtrees`]); [`assemble_layers`] checks that the parts cover
//! every parent of every layer exactly once and concatenates the rows in parent order into
//! the [`LayerWeights`] that [`crate::xr::model::XrModel::new`] takes. It reads the parts
//! through [`PartView`]s, so parts held elsewhere (numpy arrays) are not copied first.

use super::LayerWeights;
use crate::cluster::ClusterTree;
use crate::sparse::{Csr, CsrView};
use crate::{Error, Result};

/// The weights of some parents of one layer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerPart {
    /// The layer (0 = the root's children, `depth` = the labels).
    pub layer: usize,
    /// The parents (nodes of tree level `layer`), strictly increasing.
    pub parents: Vec<u32>,
    /// The rows of their children, parent after parent, children in tree order.
    pub weights: Csr,
    /// One bias term per row of `weights`.
    pub bias: Vec<f32>,
    /// The dense block's weights of those rows, `n_dense` per row (empty without one).
    pub dense: Vec<f32>,
    /// Width of the dense block (0 without one).
    pub n_dense: usize,
    /// Solver passes summed over the children (statistics only).
    pub n_passes: u64,
    /// Elapsed seconds summed over the parents' tasks (statistics only).
    pub seconds: f64,
}

/// A [`LayerPart`] borrowed: what [`assemble_layers`] reads.
#[derive(Clone, Copy, Debug)]
pub struct PartView<'a> {
    /// The layer (0 = the root's children, `depth` = the labels).
    pub layer: usize,
    /// The parents (nodes of tree level `layer`), strictly increasing.
    pub parents: &'a [u32],
    /// The rows of their children, parent after parent, children in tree order.
    pub weights: CsrView<'a>,
    /// One bias term per row of `weights`.
    pub bias: &'a [f32],
    /// The dense block's weights of those rows, `n_dense` per row (empty without one).
    pub dense: &'a [f32],
    /// Width of the dense block (0 without one).
    pub n_dense: usize,
}

impl LayerPart {
    /// The part as [`assemble_layers`] reads it.
    pub fn view(&self) -> PartView<'_> {
        PartView {
            layer: self.layer,
            parents: &self.parents,
            weights: self.weights.view(),
            bias: &self.bias,
            dense: &self.dense,
            n_dense: self.n_dense,
        }
    }
}

/// The layers of a model over `tree` from parts covering each parent of each layer exactly
/// once (in any order). Errors: a layer out of range, a parent missing or given twice, row
/// counts that disagree with the tree, weights without `n_features` columns.
pub fn assemble_layers(
    tree: &ClusterTree,
    parts: &[PartView<'_>],
    n_features: usize,
) -> Result<Vec<LayerWeights>> {
    let depth = tree.depth();
    let mut by_layer: Vec<Vec<&PartView<'_>>> = vec![Vec::new(); depth + 1];
    for (i, part) in parts.iter().enumerate() {
        if part.layer > depth {
            return Err(Error::invalid(format!(
                "part {i}: layer {} but the tree has {} layers",
                part.layer,
                depth + 1
            )));
        }
        if part.weights.n_cols() != n_features {
            return Err(Error::shape(format!(
                "part {i}: {} feature columns, expected {n_features}",
                part.weights.n_cols()
            )));
        }
        if part.bias.len() != part.weights.n_rows()
            || part.weights.indptr().len() != part.weights.n_rows() + 1
        {
            return Err(Error::shape(format!("part {i}: malformed rows or bias")));
        }
        if Some(part.dense.len()) != part.weights.n_rows().checked_mul(part.n_dense) {
            return Err(Error::shape(format!(
                "part {i}: {} dense weights for {} rows of width {}",
                part.dense.len(),
                part.weights.n_rows(),
                part.n_dense
            )));
        }
        by_layer[part.layer].push(part);
    }
    let mut layers = Vec::with_capacity(depth + 1);
    for (m, parts) in by_layer.into_iter().enumerate() {
        let ptr: &[u32] = if m < depth {
            tree.child_ptr(m).unwrap_or(&[])
        } else {
            tree.leaf_ptr()
        };
        let n_parents = ptr.len() - 1;
        // parent -> (part, first row of its children in that part)
        let mut slot: Vec<Option<(usize, usize)>> = vec![None; n_parents];
        for (k, part) in parts.iter().enumerate() {
            let mut row = 0usize;
            let mut last: Option<u32> = None;
            for &p in part.parents {
                if last.is_some_and(|l| p <= l) {
                    return Err(Error::invalid(format!(
                        "layer {m}: parents of a part must be strictly increasing"
                    )));
                }
                last = Some(p);
                let s = slot
                    .get_mut(p as usize)
                    .ok_or_else(|| Error::invalid(format!("layer {m}: parent {p} out of range")))?;
                if s.is_some() {
                    return Err(Error::invalid(format!(
                        "layer {m}: parent {p} is in two parts"
                    )));
                }
                *s = Some((k, row));
                row += (ptr[p as usize + 1] - ptr[p as usize]) as usize;
            }
            if row != part.weights.n_rows() {
                return Err(Error::shape(format!(
                    "layer {m}: a part has {} rows but its parents have {row} children",
                    part.weights.n_rows()
                )));
            }
        }
        if let Some(p) = slot.iter().position(Option::is_none) {
            return Err(Error::invalid(format!(
                "layer {m}: no part holds parent {p}"
            )));
        }
        let n_dense = parts.first().map_or(0, |p| p.n_dense);
        if parts.iter().any(|p| p.n_dense != n_dense) {
            return Err(Error::shape(format!(
                "layer {m}: parts with dense blocks of different widths"
            )));
        }
        let n_children = ptr[n_parents] as usize;
        let nnz: usize = parts.iter().map(|p| p.weights.indices().len()).sum();
        let mut dense = Vec::with_capacity(n_children * n_dense);
        let mut indptr = Vec::with_capacity(n_children + 1);
        let mut indices = Vec::with_capacity(nnz);
        let mut data = Vec::with_capacity(nnz);
        let mut bias = Vec::with_capacity(n_children);
        indptr.push(0u64);
        for (p, s) in slot.iter().enumerate() {
            let (k, first) = s.expect("checked above");
            let w = &parts[k].weights;
            let (w_ptr, w_idx, w_val) = (w.indptr(), w.indices(), w.data());
            for r in first..first + (ptr[p + 1] - ptr[p]) as usize {
                let range = w_ptr[r] as usize..w_ptr[r + 1] as usize;
                if range.end > w_idx.len() || range.end > w_val.len() {
                    return Err(Error::shape(format!("layer {m}: malformed part rows")));
                }
                indices.extend_from_slice(&w_idx[range.clone()]);
                data.extend_from_slice(&w_val[range]);
                indptr.push(indices.len() as u64);
                bias.push(parts[k].bias[r]);
                dense.extend_from_slice(&parts[k].dense[r * n_dense..(r + 1) * n_dense]);
            }
        }
        let layer = LayerWeights {
            dense,
            n_dense,
            child_ptr: ptr.to_vec(),
            weights: Csr {
                n_rows: n_children,
                n_cols: n_features,
                indptr,
                indices,
                data,
            },
            bias,
        };
        layer.validate()?;
        layers.push(layer);
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::SplitMix64;
    use crate::dense::DenseView;
    use crate::xr::train::{train_hybrid_with_stats, train_subtrees, TrainParams};
    use crate::xr::{Loss, Negatives};

    fn data(n: usize, d: usize, n_labels: usize, seed: u64) -> (Csr, Csr) {
        let mut rng = SplitMix64::new(seed);
        let (mut xt, mut yt) = (Vec::new(), Vec::new());
        for i in 0..n {
            for _ in 0..1 + rng.below(3) {
                let l = rng.below(n_labels as u64) as u32;
                yt.push((i as u32, l, 1.0));
                for _ in 0..3 {
                    let j = (l as usize * 5 + rng.below(7) as usize) % d;
                    xt.push((i as u32, j as u32, 1.0));
                }
            }
            xt.push((i as u32, rng.below(d as u64) as u32, 0.5));
        }
        let mut x = Csr::from_triplets(n, d, &xt).unwrap();
        crate::sparse::normalize_rows_l2(&mut x);
        let mut y = Csr::from_triplets(n, n_labels, &yt).unwrap();
        y.data.iter_mut().for_each(|v| *v = 1.0);
        (x, y)
    }

    /// Rows of `a` that have a label in `labels`.
    fn rows_reaching(y: &Csr, labels: &[u32]) -> Vec<usize> {
        (0..y.n_rows)
            .filter(|&i| y.view().row(i).0.iter().any(|l| labels.contains(l)))
            .collect()
    }

    /// Also with the top layer on a sample (`top_fraction < 1`): the top part, trained on
    /// the sampled rows alone, is the one-process model's layer 0; and with a dense block
    /// (in every layer, or not in the ranker).
    #[test]
    fn subtree_parts_assemble_to_the_one_process_model() {
        let (x, y) = data(300, 60, 40, 3);
        let tree = crate::xr::testutil::random_tree(&[3, 6, 10], 40, 7);
        let n_dense = 4;
        let mut rng = SplitMix64::new(9);
        let xd_all: Vec<f32> = (0..x.n_rows * n_dense)
            .map(|_| rng.next_f64() as f32 - 0.5)
            .collect();
        let dense_rows = |rows: &[usize]| -> Vec<f32> {
            rows.iter()
                .flat_map(|&r| xd_all[r * n_dense..(r + 1) * n_dense].to_vec())
                .collect()
        };
        for (loss, top_fraction, dense, dense_in_ranker) in [
            (Loss::SquaredHinge, 1.0, false, true),
            (Loss::Logistic, 1.0, false, true),
            (Loss::SquaredHinge, 0.4, false, true),
            (Loss::Logistic, 0.4, false, true),
            (Loss::SquaredHinge, 1.0, true, true),
            (Loss::SquaredHinge, 0.4, true, false),
            (Loss::Logistic, 1.0, true, true),
        ] {
            let nd = if dense { n_dense } else { 0 };
            let params = TrainParams {
                top_fraction,
                dense_in_ranker,
                solver: crate::xr::SolverParams {
                    loss,
                    ..Default::default()
                },
                negatives: Negatives {
                    tfn: true,
                    man: false,
                },
                seed: 11,
                ..Default::default()
            };
            let xd = view(&xd_all, n_dense);
            let xd = dense.then_some(&xd);
            let (whole, _) =
                train_hybrid_with_stats(&x.view(), xd, &y.view(), &tree, &params, None).unwrap();
            // the root's layer on its rows (all, or the sample), each level-1 node on its own
            let top = crate::xr::train::top_sample_rows(11, 0, x.n_rows, top_fraction);
            assert_eq!(top.len() == x.n_rows, top_fraction == 1.0);
            let top: Vec<usize> = top.iter().map(|&r| r as usize).collect();
            let xt = crate::sparse::row_gather(&x.view(), &top).unwrap();
            let yt = crate::sparse::row_gather(&y.view(), &top).unwrap();
            let dt = dense_rows(&top);
            let dt = view(&dt, n_dense);
            let mut parts = train_subtrees(
                &xt.view(),
                dense.then_some(&dt),
                &yt.view(),
                &tree,
                &params,
                None,
                0,
                &[0],
                0,
            )
            .unwrap();
            for v in 0..tree.n_nodes(1) as u32 {
                let under = super::super::train::descendants(&tree, 1, &[v], tree.depth())
                    .unwrap()
                    .pop()
                    .unwrap();
                let labels: Vec<u32> = under
                    .iter()
                    .flat_map(|&l| tree.labels_of_leaf(l as usize).unwrap().to_vec())
                    .collect();
                let rows = rows_reaching(&y, &labels);
                let xs = crate::sparse::row_gather(&x.view(), &rows).unwrap();
                let ys = crate::sparse::row_gather(&y.view(), &rows).unwrap();
                let ds = dense_rows(&rows);
                let ds = view(&ds, n_dense);
                parts.extend(
                    train_subtrees(
                        &xs.view(),
                        dense.then_some(&ds),
                        &ys.view(),
                        &tree,
                        &params,
                        None,
                        1,
                        &[v],
                        3,
                    )
                    .unwrap(),
                );
            }
            parts.reverse(); // any order
            let got = assemble_layers(&tree, &views(&parts), x.n_cols).unwrap();
            assert_eq!(got.len(), whole.len());
            for (a, b) in got.iter().zip(&whole) {
                assert_eq!(a.child_ptr, b.child_ptr);
                assert_eq!(a.weights.indptr, b.weights.indptr);
                assert_eq!(a.weights.indices, b.weights.indices);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a.weights.data), bits(&b.weights.data), "{loss:?}");
                assert_eq!(bits(&a.bias), bits(&b.bias));
                assert_eq!(a.n_dense, b.n_dense);
                assert_eq!(bits(&a.dense), bits(&b.dense));
            }
            let ranker = &got[got.len() - 1];
            assert_eq!(ranker.n_dense, if dense_in_ranker { nd } else { 0 });
            assert_eq!(got[0].n_dense, nd);
            if top_fraction < 1.0 {
                // the sample changes layer 0 only
                let full = TrainParams {
                    top_fraction: 1.0,
                    ..params
                };
                let (all, _) =
                    train_hybrid_with_stats(&x.view(), xd, &y.view(), &tree, &full, None).unwrap();
                assert_ne!(all[0].weights.data, whole[0].weights.data);
                for (a, b) in all.iter().zip(&whole).skip(1) {
                    assert_eq!(a.weights.data, b.weights.data);
                }
            }
            // a missing or doubled parent is an error
            let mut bad = parts.clone();
            bad.pop();
            assert!(assemble_layers(&tree, &views(&bad), x.n_cols).is_err());
            let mut bad = parts.clone();
            bad.push(parts[0].clone());
            assert!(assemble_layers(&tree, &views(&bad), x.n_cols).is_err());
            // dense weights that do not fit their rows, or widths that differ in a layer
            let mut bad = parts.clone();
            bad[0].n_dense += 1;
            assert!(assemble_layers(&tree, &views(&bad), x.n_cols).is_err());
            if dense {
                let mut bad = parts.clone();
                let k = bad.iter().position(|p| p.layer == 1).unwrap();
                bad[k].dense.clear();
                bad[k].n_dense = 0;
                assert!(assemble_layers(&tree, &views(&bad), x.n_cols).is_err());
            }
        }
    }

    fn view(v: &[f32], n_dense: usize) -> DenseView<'_> {
        DenseView::new(v.len() / n_dense, n_dense, v).unwrap()
    }

    fn views(parts: &[LayerPart]) -> Vec<PartView<'_>> {
        parts.iter().map(LayerPart::view).collect()
    }

    #[test]
    fn man_and_bad_ranges_are_rejected() {
        let (x, y) = data(50, 20, 10, 1);
        let tree = crate::xr::testutil::random_tree(&[2, 4], 10, 1);
        let mut p = TrainParams::default();
        let (x, y) = (&x.view(), &y.view());
        assert!(train_subtrees(x, None, y, &tree, &p, None, 1, &[5], 2).is_err());
        assert!(train_subtrees(x, None, y, &tree, &p, None, 2, &[0], 1).is_err());
        // a dense block with other rows than X
        let d = vec![0f32; 49 * 3];
        let d = DenseView::new(49, 3, &d).unwrap();
        assert!(train_subtrees(x, Some(&d), y, &tree, &p, None, 1, &[0], 2).is_err());
        p.negatives.man = true;
        assert!(train_subtrees(x, None, y, &tree, &p, None, 1, &[0], 2).is_err());
    }
}
