//! Training a part of the tree on the rows that reach it (distributed training).
//!
//! [`train_subtrees`] trains, for the layers `level..=last_layer`, the parents that descend
//! from some nodes of tree level `level` (the roots of sub-trees), given only the rows that
//! reach those roots. With `tfn` negatives a parent's instance set is the rows with a true
//! label under it, all of which reach its sub-tree root, so the sub-problems are exactly
//! those of [`super::train_layers`]: same instance sets in the same (increasing row) order,
//! same feature renumbering, same visiting-order seeds (derived from the global layer and
//! child ids). The weights are therefore bit-identical to a one-process run; the pieces are
//! put back together by [`crate::xr::assemble::assemble_layers`].
//!
//! The root's layer (`level == 0`) uses every row it is given: give it all of them. With a
//! dense block (the rows' dense features, as [`super::train_hybrid_with_stats`] takes them)
//! each part also carries its rows' dense weights.

use super::{
    check_inputs, label_chain, run_largest_first, ChildOut, Pool, Shared, TaskOut, TrainParams,
};
use crate::cluster::ClusterTree;
use crate::dense::{check_rows, DenseView};
use crate::sparse::{Csr, CsrView};
use crate::xr::assemble::LayerPart;
use crate::xr::solver::{FeatureMap, GroupSolver, Solver};
use crate::{Error, Result};

/// The nodes of each level `level..=last_layer` that descend from `roots` (nodes of
/// `level`), sorted; entry `m - level` lists the parents of layer `m`.
pub fn descendants(
    tree: &ClusterTree,
    level: usize,
    roots: &[u32],
    last_layer: usize,
) -> Result<Vec<Vec<u32>>> {
    let depth = tree.depth();
    if level > last_layer || last_layer > depth {
        return Err(Error::invalid(format!(
            "need level <= last_layer <= depth, got level {level}, last_layer {last_layer}, \
             depth {depth}"
        )));
    }
    let n_level = tree.n_nodes(level);
    let mut nodes: Vec<u32> = roots.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    if nodes.len() != roots.len() {
        return Err(Error::invalid("roots must be distinct"));
    }
    if let Some(&bad) = nodes.iter().find(|&&v| v as usize >= n_level) {
        return Err(Error::invalid(format!(
            "root {bad} is out of range for the {n_level} nodes of level {level}"
        )));
    }
    let mut out = Vec::with_capacity(last_layer - level + 1);
    for m in level..=last_layer {
        let next = if m < depth {
            let ptr = tree.child_ptr(m).unwrap_or(&[]);
            nodes
                .iter()
                .flat_map(|&p| ptr[p as usize]..ptr[p as usize + 1])
                .collect()
        } else {
            Vec::new()
        };
        out.push(std::mem::replace(&mut nodes, next));
    }
    Ok(out)
}

/// Trains the parents of layers `level..=last_layer` under `roots` (nodes of tree level
/// `level`) on the rows `x`, `y` (and `relevance`) given; see the module docs.
///
/// `x`, `y` hold the rows that reach the roots, in their global order (any other rows only
/// cost time: under `tfn` they join no set below the root). `y` keeps every label column
/// (`tree.n_labels()`). Only `tfn` negatives are supported (`man` needs the beam of the
/// layers above on every row). Layer 0 trains on every row given, whatever
/// `params.top_fraction` says: the caller passes the top layer's sample (the rows that
/// [`super::top_sample_rows`] keeps) when it wants one. Returns one [`LayerPart`] per layer,
/// parents in increasing order.
pub fn train_subtrees(
    x: &CsrView<'_>,
    xd: Option<&DenseView<'_>>,
    y: &CsrView<'_>,
    tree: &ClusterTree,
    params: &TrainParams,
    relevance: Option<&CsrView<'_>>,
    level: usize,
    roots: &[u32],
    last_layer: usize,
) -> Result<Vec<LayerPart>> {
    params.validate()?;
    if params.negatives.man {
        return Err(Error::invalid(
            "training a sub-tree supports tfn negatives only (man needs the beam of the \
             layers above on every row)",
        ));
    }
    let parents = descendants(tree, level, roots, last_layer)?;
    check_inputs(x, y, tree, relevance)?;
    check_rows(xd, x.n_rows(), "X")?;
    // the rows given are the rows to train on (see above)
    let params = &TrainParams {
        top_fraction: 1.0,
        ..*params
    };
    let x_owned;
    let x = if x.is_canonical() {
        *x
    } else {
        x_owned = x.canonicalize();
        x_owned.view()
    };

    // the label chain of these rows, as in train_layers (cheap next to the solves)
    let (kt, rel_t) = label_chain(y, tree, relevance)?;

    let fmaps: Pool<FeatureMap> = Pool::new();
    let solvers: Pool<Solver> = Pool::new();
    let groups: Pool<GroupSolver> = Pool::new();
    let shared = Shared {
        xd,
        x: &x,
        tree,
        kt: &kt,
        rel_t: rel_t.as_ref(),
        params,
        fmaps: &fmaps,
        solvers: &solvers,
        groups: &groups,
    };
    let ctxs: Vec<_> = (level..=last_layer)
        .map(|m| shared.layer(m, None))
        .collect();
    // (cost, layer offset, parent), largest first as in train_layers
    let mut tasks: Vec<(u64, usize, u32)> = Vec::new();
    for (i, c) in ctxs.iter().enumerate() {
        let mut cost = vec![0u64; c.ptr.len() - 1];
        for (w, p) in c.parent_costs() {
            cost[p] = w;
        }
        tasks.extend(parents[i].iter().map(|&p| (cost[p as usize], i, p)));
    }
    tasks.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let order: Vec<(usize, u32)> = tasks.iter().map(|t| (t.1, t.2)).collect();
    let done = run_largest_first(&order, |&(i, p)| ctxs[i].train_parent(p as usize))?;
    let mut per_layer: Vec<Vec<(u32, TaskOut)>> = ctxs.iter().map(|_| Vec::new()).collect();
    for (&(i, p), out) in order.iter().zip(done) {
        per_layer[i].push((p, out));
    }
    let mut out = Vec::with_capacity(ctxs.len());
    for (i, mut blocks) in per_layer.into_iter().enumerate() {
        blocks.sort_unstable_by_key(|b| b.0);
        out.push(part_of(level + i, x.n_cols(), ctxs[i].n_dense(), blocks));
    }
    Ok(out)
}

/// The rows of some parents of one layer, in parent order.
fn part_of(layer: usize, n_cols: usize, n_dense: usize, blocks: Vec<(u32, TaskOut)>) -> LayerPart {
    let children: Vec<&ChildOut> = blocks.iter().flat_map(|b| &b.1 .0).collect();
    let nnz: usize = children.iter().map(|c| c.indices.len()).sum();
    let mut indptr = Vec::with_capacity(children.len() + 1);
    let mut indices = Vec::with_capacity(nnz);
    let mut data = Vec::with_capacity(nnz);
    let mut bias = Vec::with_capacity(children.len());
    let mut dense = Vec::with_capacity(children.len() * n_dense);
    let mut n_passes = 0u64;
    indptr.push(0u64);
    for c in &children {
        indices.extend_from_slice(&c.indices);
        data.extend_from_slice(&c.values);
        indptr.push(indices.len() as u64);
        bias.push(c.bias);
        dense.extend_from_slice(&c.dense);
        n_passes += u64::from(c.iters);
    }
    LayerPart {
        layer,
        parents: blocks.iter().map(|b| b.0).collect(),
        weights: Csr {
            n_rows: children.len(),
            n_cols,
            indptr,
            indices,
            data,
        },
        bias,
        dense,
        n_dense,
        n_passes,
        seconds: blocks.iter().map(|b| b.1 .1).sum(),
    }
}
