//! The XR-Linear model in its inference layout, and its files.
//!
//! # Layout
//!
//! Layer `m` scores the nodes of tree level `m + 1` (the labels, in leaf order, for the last
//! layer). Its weights are cut into one *chunk* per parent: the block of the parent's
//! children, stored row-major over features (see `kernel.rs`). A small layer (at most
//! [`LayoutParams::merge_max_children`] children, typically the top levels, which the beam
//! covers wholly or largely) is instead one chunk holding every child, so a query looks each
//! of its features up once per layer rather than once per beam node. Arrays per layer:
//!
//! | array | dtype | length | meaning |
//! |---|---|---|---|
//! | `child_ptr` | u32 | parents + 1 | children of parent `j`: `child_ptr[j]..child_ptr[j+1]` |
//! | `bias` | f32 | children | additive term per child |
//! | `chunk_rows` | u64 | chunks + 1 | rows of chunk `j` in `row_feat` |
//! | `chunk_ents` | u64 | chunks + 1 | entries of chunk `j` in `cols`/`vals` |
//! | `chunk_bkts` | u64 | chunks + 1 | bucket pointers of chunk `j` in `bkt` |
//! | `chunk_shift` | u8 | chunks | bucket of feature `f` is `f >> shift` |
//! | `row_feat` | u32 | rows | feature id of each row, increasing within a chunk |
//! | `row_ptr` | u32 | rows + chunks | per chunk, `rows + 1` entry offsets relative to the chunk |
//! | `bkt` | u32 | buckets | per chunk, `n_buckets + 1` row offsets relative to the chunk |
//! | `cols` | u16 or u32 | entries | local column (child offset in the chunk) of each entry |
//! | `vals` | f32 | entries | weight of each entry |
//!
//! A row whose share of non-zero children is at least [`LayoutParams::dense_min_fill`] is
//! stored densely (every child, zeros included, columns `0..width`); the kernels recognise
//! it by its length and accumulate it with one SIMD axpy. Local columns are `u16` when no
//! chunk has more than 65536 children, else `u32` (measured: no speed difference, u16 is
//! 20% smaller). `chunks` is `parents` or 1. Plus one global array, `labels` (u32,
//! leaf-order position → label id). The defaults of [`LayoutParams`] were chosen with
//! `examples/xr_predict_bench.rs --what kernels`, except `dense_min_fill`: 0.65 rather than
//! the fastest 0.5, because zero padding made the delicious model (983 labels, 500
//! features) larger than PECOS's (2.39 MiB at 0.5, 2.14 at 0.65, 1.69 with full rows only;
//! PECOS 2.3); at 0.65 its batch time is unchanged and debian/deps' is 19% longer.
//!
//! A layer stored as one chunk whose rows fit in [`LayoutParams::dense_copy_max_bytes`] when
//! dense, and are at least [`LayoutParams::dense_copy_min_fill`] full, also gets a dense
//! row-major copy in memory (built at construction and at load, never written): each of its
//! rows is then one SIMD axpy. On bibtex (one block of 159 labels by 1836 feature rows, 49%
//! full) this made a batch of the test set 1.27x faster on one thread.
//!
//! # Files
//!
//! [`XrModel::save`] writes a directory with two files, each atomically (temporary file,
//! fsync, rename; the array file first, under a name the current manifest does not use, so
//! that replacing a model is crash-safe):
//! - `xr_model.json`, the manifest: format name and version, shapes, per-layer sizes, the
//!   dtype, length and byte offset of every array, the CRC-32 of the array file, and
//!   free-form string metadata;
//! - `xr_model.safetensors`, every array in one [safetensors](https://github.com/huggingface/safetensors)
//!   file (readable from numpy with `safetensors.numpy.load_file`), arrays ordered by
//!   decreasing element size so each is aligned for its dtype when the file is mapped.
//!
//! [`XrModel::load`] either reads the array file into memory and checks everything
//! (checksum and full structure), or maps it read-only and checks only the manifest, sizes,
//! offsets and the small per-chunk pointer arrays (O(parents), not O(weights)): the search
//! kernels check each index they read from the file and report corruption as an error.
//! [`XrModel::verify`] runs the full check on a mapped model.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::kernel::{Col, LayerView};
use super::store::{self, ArrayOut, Backing, Buf, Dtype, Placed};
use super::LayerWeights;
use crate::cluster::ClusterTree;
use crate::sparse::Csr;
use crate::{Error, Result};

/// Name of the manifest file in a model directory.
pub const MANIFEST_FILE: &str = "xr_model.json";
/// Name of the array file in a model directory.
pub const DATA_FILE: &str = "xr_model.safetensors";
/// The array file's name while replacing a model whose array file is [`DATA_FILE`].
pub const ALT_DATA_FILE: &str = "xr_model.1.safetensors";
/// The `format` field of the manifest.
pub const FORMAT_NAME: &str = "xmrrs.xr_model";
/// The manifest version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Largest manifest file that [`XrModel::load`] reads (a real one is a few KiB).
const MAX_MANIFEST_BYTES: u64 = 64 << 20;
const BYTES_MAGIC: &[u8; 8] = b"XMRRSXR\0";

/// Tuning knobs of the inference layout (the defaults were chosen by measurement, see
/// `examples/xr_predict_bench.rs`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayoutParams {
    /// A chunk row is stored densely when at least this fraction of the chunk's children
    /// have a non-zero weight for its feature (a value above 1 disables dense rows).
    pub dense_min_fill: f32,
    /// Target average number of rows per bucket of each chunk's feature index (>= 1).
    pub rows_per_bucket: u32,
    /// Store local columns as u32 even where u16 would do (for measurement).
    pub wide_cols: bool,
    /// A layer with at most this many children is stored as one chunk holding them all
    /// (one lookup per query feature instead of one per beam node); 0 disables.
    pub merge_max_children: usize,
    /// A layer stored as one chunk also gets a dense in-memory copy of its rows (never
    /// written to the file) when that copy takes at most this many bytes and ...
    pub dense_copy_max_bytes: usize,
    /// ... at least this fraction of its cells are non-zero. Every row then takes one SIMD
    /// axpy instead of a scatter; results are bit-identical (the same products are added in
    /// the same order, plus zeros).
    pub dense_copy_min_fill: f32,
}

impl Default for LayoutParams {
    fn default() -> Self {
        LayoutParams {
            dense_min_fill: 0.65,
            rows_per_bucket: 2,
            wide_cols: false,
            merge_max_children: 4096,
            dense_copy_max_bytes: 4 << 20,
            dense_copy_min_fill: 0.2,
        }
    }
}

/// Local column ids of one layer.
#[derive(Clone, Debug)]
pub(crate) enum Cols {
    U8(Buf<u8>),
    U16(Buf<u16>),
    U32(Buf<u32>),
}

/// One layer in the chunked layout (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Layer {
    pub n_parents: usize,
    pub n_children: usize,
    /// One chunk for the whole layer (else one per parent).
    pub whole: bool,
    /// The largest number of children of a parent.
    pub max_width: usize,
    /// Non-zero weights (without dense padding).
    pub nnz: usize,
    pub child_ptr: Buf<u32>,
    pub bias: Buf<f32>,
    pub chunk_rows: Buf<u64>,
    pub chunk_ents: Buf<u64>,
    pub chunk_bkts: Buf<u64>,
    pub chunk_shift: Buf<u8>,
    pub row_feat: Buf<u32>,
    pub row_ptr: Buf<u32>,
    pub bkt: Buf<u32>,
    pub cols: Cols,
    pub vals: Buf<f32>,
    /// Dense row-major copy (rows x width) of a one-chunk layer (see
    /// [`LayoutParams::dense_copy_max_bytes`]); in memory only.
    pub dense: Option<Vec<f32>>,
}

/// A borrowed layer with its column type resolved.
pub(crate) enum LayerRef<'a> {
    U8(LayerView<'a, u8>),
    U16(LayerView<'a, u16>),
    U32(LayerView<'a, u32>),
}

impl Layer {
    /// The widest chunk (the whole layer when merged).
    pub(crate) fn chunk_width(&self) -> usize {
        if self.whole {
            self.n_children
        } else {
            self.max_width
        }
    }

    fn view_with<'a, C: Col>(&'a self, cols: &'a [C]) -> LayerView<'a, C> {
        LayerView {
            child_ptr: &self.child_ptr,
            whole: self.whole,
            bias: &self.bias,
            chunk_rows: &self.chunk_rows,
            chunk_ents: &self.chunk_ents,
            chunk_bkts: &self.chunk_bkts,
            chunk_shift: &self.chunk_shift,
            row_feat: &self.row_feat,
            row_ptr: &self.row_ptr,
            bkt: &self.bkt,
            cols,
            vals: &self.vals,
            dense: self.dense.as_deref(),
        }
    }

    pub(crate) fn view(&self) -> LayerRef<'_> {
        match &self.cols {
            Cols::U8(c) => LayerRef::U8(self.view_with(c)),
            Cols::U16(c) => LayerRef::U16(self.view_with(c)),
            Cols::U32(c) => LayerRef::U32(self.view_with(c)),
        }
    }

    fn n_entries(&self) -> usize {
        self.vals.len()
    }

    fn nbytes(&self) -> usize {
        let cols = match &self.cols {
            Cols::U8(c) => c.len(),
            Cols::U16(c) => c.len() * 2,
            Cols::U32(c) => c.len() * 4,
        };
        4 * (self.child_ptr.len()
            + self.bias.len()
            + self.row_feat.len()
            + self.row_ptr.len()
            + self.bkt.len()
            + self.vals.len())
            + 8 * (self.chunk_rows.len() + self.chunk_ents.len() + self.chunk_bkts.len())
            + self.chunk_shift.len()
            + cols
    }
}

/// One chunk under construction.
#[derive(Default)]
struct ChunkOut {
    feat: Vec<u32>,
    /// `feat.len() + 1` relative entry offsets.
    ptr: Vec<u32>,
    /// `n_buckets + 1` relative row offsets.
    bkt: Vec<u32>,
    shift: u8,
    cols: Vec<u32>,
    vals: Vec<f32>,
    nnz: usize,
}

/// The bucket shift for a chunk with `n_rows` rows whose largest feature id is `fmax`.
fn choose_shift(n_rows: usize, fmax: u32, rows_per_bucket: u32) -> u8 {
    let target = (n_rows / rows_per_bucket.max(1) as usize).max(1) as u64;
    let mut s = 0u32;
    while s < 31 && (u64::from(fmax >> s) + 1) > target {
        s += 1;
    }
    s as u8
}

/// The bucket pointer of sorted row ids `feat` for `shift` (`n_buckets + 1` entries, or one
/// entry for a chunk without rows).
fn bucket_ptr(feat: &[u32], shift: u8) -> Vec<u32> {
    let nb = feat.last().map_or(0, |&f| (f >> shift) as usize + 1);
    let mut bkt = vec![0u32; nb + 1];
    for &f in feat {
        bkt[(f >> shift) as usize + 1] += 1;
    }
    for b in 0..nb {
        bkt[b + 1] += bkt[b];
    }
    bkt
}

fn build_chunk(lw: &LayerWeights, c0: usize, c1: usize, lp: &LayoutParams) -> Result<ChunkOut> {
    let width = c1 - c0;
    let w = lw.weights.view();
    let mut trip: Vec<(u32, u32, f32)> = Vec::new();
    for c in c0..c1 {
        let (idx, val) = w.row(c);
        for (&f, &v) in idx.iter().zip(val) {
            if v != 0.0 {
                trip.push((f, (c - c0) as u32, v));
            }
        }
    }
    trip.sort_unstable_by_key(|t| (t.0, t.1));
    let mut out = ChunkOut {
        nnz: trip.len(),
        ptr: vec![0],
        ..ChunkOut::default()
    };
    let dense_min = (lp.dense_min_fill * width as f32).ceil().max(1.0) as usize;
    let mut s = 0;
    while s < trip.len() {
        let f = trip[s].0;
        let mut e = s + 1;
        while e < trip.len() && trip[e].0 == f {
            e += 1;
        }
        out.feat.push(f);
        if e - s >= dense_min || e - s == width {
            let base = out.vals.len();
            out.vals.resize(base + width, 0.0);
            out.cols.extend(0..width as u32);
            for t in &trip[s..e] {
                out.vals[base + t.1 as usize] = t.2;
            }
        } else {
            for t in &trip[s..e] {
                out.cols.push(t.1);
                out.vals.push(t.2);
            }
        }
        let n = u32::try_from(out.vals.len()).map_err(|_| {
            Error::invalid(format!(
                "children {c0}..{c1} have more than 2^32 weights in one block; use a deeper tree"
            ))
        })?;
        out.ptr.push(n);
        s = e;
    }
    out.shift = choose_shift(
        out.feat.len(),
        out.feat.last().copied().unwrap_or(0),
        lp.rows_per_bucket,
    );
    out.bkt = bucket_ptr(&out.feat, out.shift);
    Ok(out)
}

/// Every chunk's local columns in chunk order, converted by `narrow` (`n`: their total).
fn concat_cols<T>(chunks: &[ChunkOut], n: usize, narrow: impl Fn(u32) -> T) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    for c in chunks {
        v.extend(c.cols.iter().map(|&x| narrow(x)));
    }
    v
}

fn build_layer(lw: &LayerWeights, lp: &LayoutParams) -> Result<Layer> {
    let n_parents = lw.n_parents();
    let whole = n_parents > 1 && lw.n_children() <= lp.merge_max_children;
    let chunks: Vec<ChunkOut> = if whole {
        vec![build_chunk(lw, 0, lw.n_children(), lp)?]
    } else {
        (0..n_parents)
            .into_par_iter()
            .map(|j| {
                build_chunk(
                    lw,
                    lw.child_ptr[j] as usize,
                    lw.child_ptr[j + 1] as usize,
                    lp,
                )
            })
            .collect::<Result<_>>()?
    };
    let n_chunks = chunks.len();
    let max_width = lw
        .child_ptr
        .windows(2)
        .map(|w| (w[1] - w[0]) as usize)
        .max()
        .unwrap_or(0);
    let mut chunk_rows = vec![0u64];
    let mut chunk_ents = vec![0u64];
    let mut chunk_bkts = vec![0u64];
    let mut chunk_shift = Vec::with_capacity(n_chunks);
    let (mut n_rows, mut n_ents, mut n_bkts) = (0u64, 0u64, 0u64);
    for c in &chunks {
        n_rows += c.feat.len() as u64;
        n_ents += c.vals.len() as u64;
        n_bkts += c.bkt.len() as u64;
        chunk_rows.push(n_rows);
        chunk_ents.push(n_ents);
        chunk_bkts.push(n_bkts);
        chunk_shift.push(c.shift);
    }
    let mut row_feat = Vec::with_capacity(n_rows as usize);
    let mut row_ptr = Vec::with_capacity(n_rows as usize + n_chunks);
    let mut bkt = Vec::with_capacity(n_bkts as usize);
    let mut vals = Vec::with_capacity(n_ents as usize);
    let mut nnz = 0;
    for c in &chunks {
        row_feat.extend_from_slice(&c.feat);
        row_ptr.extend_from_slice(&c.ptr);
        bkt.extend_from_slice(&c.bkt);
        vals.extend_from_slice(&c.vals);
        nnz += c.nnz;
    }
    let chunk_width = if whole { lw.n_children() } else { max_width };
    // the narrowest type that holds a local column (< chunk_width)
    let n = n_ents as usize;
    let cols = if lp.wide_cols || chunk_width > 1 << 16 {
        Cols::U32(concat_cols(&chunks, n, |x| x).into())
    } else if chunk_width > 1 << 8 {
        Cols::U16(concat_cols(&chunks, n, |x| x as u16).into())
    } else {
        Cols::U8(concat_cols(&chunks, n, |x| x as u8).into())
    };
    let mut layer = Layer {
        n_parents,
        n_children: lw.n_children(),
        whole,
        max_width,
        nnz,
        child_ptr: lw.child_ptr.clone().into(),
        bias: lw.bias.clone().into(),
        chunk_rows: chunk_rows.into(),
        chunk_ents: chunk_ents.into(),
        chunk_bkts: chunk_bkts.into(),
        chunk_shift: chunk_shift.into(),
        row_feat: row_feat.into(),
        row_ptr: row_ptr.into(),
        bkt: bkt.into(),
        cols,
        vals: vals.into(),
        dense: None,
    };
    layer.dense = dense_copy(&layer, lp);
    Ok(layer)
}

/// The dense copy of a one-chunk layer's rows (see [`LayoutParams::dense_copy_max_bytes`]),
/// or `None` when the layer has several chunks, the copy would be too large or too empty, or
/// the arrays are inconsistent (a corrupt mapped file: the kernels then report it).
fn dense_copy(l: &Layer, lp: &LayoutParams) -> Option<Vec<f32>> {
    if l.chunk_shift.len() != 1 {
        return None;
    }
    let width = l.chunk_width();
    let rows = l.row_feat.len();
    let cells = rows.checked_mul(width)?;
    if cells == 0
        || cells.checked_mul(4)? > lp.dense_copy_max_bytes
        || (l.nnz as f64) < f64::from(lp.dense_copy_min_fill) * cells as f64
    {
        return None;
    }
    let ptr = l.row_ptr.get(..rows + 1)?;
    let mut d = vec![0f32; cells];
    match &l.cols {
        Cols::U8(c) => fill_dense(ptr, c, &l.vals, width, &mut d)?,
        Cols::U16(c) => fill_dense(ptr, c, &l.vals, width, &mut d)?,
        Cols::U32(c) => fill_dense(ptr, c, &l.vals, width, &mut d)?,
    }
    Some(d)
}

/// Scatters the entries of rows `ptr` (offsets into `cols`/`vals`) into the row-major `d`.
fn fill_dense<C: Col>(
    ptr: &[u32],
    cols: &[C],
    vals: &[f32],
    width: usize,
    d: &mut [f32],
) -> Option<()> {
    for (r, w) in ptr.windows(2).enumerate() {
        let (a, b) = (w[0] as usize, w[1] as usize);
        let row = d.get_mut(r * width..(r + 1) * width)?;
        for (c, &v) in cols.get(a..b)?.iter().zip(vals.get(a..b)?) {
            *row.get_mut(c.idx())? = v;
        }
    }
    Some(())
}

/// An XR-Linear model ready for beam search (see the module docs for the layout and files).
///
/// A *full* model has one layer per tree level below the root and returns label ids. A
/// *partial* model ([`XrModel::new_partial`]) has only the first `m` layers; its "labels" are
/// the nodes of tree level `m` (identity ids), which is what training-time beams need.
#[derive(Clone, Debug)]
pub struct XrModel {
    n_features: usize,
    n_labels: usize,
    partial: bool,
    pub(crate) layers: Vec<Layer>,
    labels: Buf<u32>,
    metadata: BTreeMap<String, String>,
    mapped: bool,
    /// The buffer the arrays were loaded from and its expected checksum (for `verify`).
    source: Option<(Arc<Backing>, String)>,
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
            n_labels: labels.len(),
            partial,
            layers: built,
            labels: labels.into(),
            metadata: BTreeMap::new(),
            mapped: false,
            source: None,
        })
    }

    /// Number of input features.
    pub fn n_features(&self) -> usize {
        self.n_features
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
        ) -> std::result::Result<(), super::kernel::Corrupt> {
            for j in 0..v.n_chunks() {
                let ch = v.chunk(j)?;
                let w = ch.width();
                for (r, &f) in ch.feat.iter().enumerate() {
                    let (s, e) = (ch.ptr[r] as usize, ch.ptr[r + 1] as usize);
                    let cols = ch.cols.get(s..e).ok_or(super::kernel::Corrupt)?;
                    let vals = ch.vals.get(s..e).ok_or(super::kernel::Corrupt)?;
                    for (c, &x) in cols.iter().zip(vals) {
                        if c.idx() >= w {
                            return Err(super::kernel::Corrupt);
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
            child_ptr: layer.child_ptr.to_vec(),
            weights,
            bias: layer.bias.to_vec(),
        })
    }

    // ----------------------------------------------------------------------------------
    // files

    fn arrays<'a>(&'a self) -> Vec<ArrayOut<'a>> {
        let mut out = vec![ArrayOut {
            name: "labels".into(),
            dtype: Dtype::U32,
            bytes: bytemuck::cast_slice(&self.labels),
        }];
        for (m, l) in self.layers.iter().enumerate() {
            let mut push = |name: &str, dtype: Dtype, bytes: &'a [u8]| {
                out.push(ArrayOut {
                    name: format!("layer{m}.{name}"),
                    dtype,
                    bytes,
                })
            };
            push("child_ptr", Dtype::U32, bytemuck::cast_slice(&l.child_ptr));
            push("bias", Dtype::F32, bytemuck::cast_slice(&l.bias));
            push(
                "chunk_rows",
                Dtype::U64,
                bytemuck::cast_slice(&l.chunk_rows),
            );
            push(
                "chunk_ents",
                Dtype::U64,
                bytemuck::cast_slice(&l.chunk_ents),
            );
            push(
                "chunk_bkts",
                Dtype::U64,
                bytemuck::cast_slice(&l.chunk_bkts),
            );
            push("chunk_shift", Dtype::U8, &l.chunk_shift);
            push("row_feat", Dtype::U32, bytemuck::cast_slice(&l.row_feat));
            push("row_ptr", Dtype::U32, bytemuck::cast_slice(&l.row_ptr));
            push("bkt", Dtype::U32, bytemuck::cast_slice(&l.bkt));
            match &l.cols {
                Cols::U8(c) => push("cols", Dtype::U8, c),
                Cols::U16(c) => push("cols", Dtype::U16, bytemuck::cast_slice(c)),
                Cols::U32(c) => push("cols", Dtype::U32, bytemuck::cast_slice(c)),
            }
            push("vals", Dtype::F32, bytemuck::cast_slice(&l.vals));
        }
        out
    }

    fn manifest(&self, data_file: &str, placed: &[Placed], data_bytes: u64, crc: u32) -> Manifest {
        Manifest {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            n_features: self.n_features as u64,
            n_labels: self.n_labels as u64,
            partial: self.partial,
            layers: self
                .layers
                .iter()
                .map(|l| LayerMeta {
                    n_parents: l.n_parents as u64,
                    n_children: l.n_children as u64,
                    n_chunks: l.chunk_shift.len() as u64,
                    n_rows: l.row_feat.len() as u64,
                    n_entries: l.n_entries() as u64,
                    n_buckets: l.bkt.len() as u64,
                    nnz: l.nnz as u64,
                    col_dtype: match l.cols {
                        Cols::U8(_) => "U8".into(),
                        Cols::U16(_) => "U16".into(),
                        Cols::U32(_) => "U32".into(),
                    },
                })
                .collect(),
            data_file: data_file.into(),
            data_bytes,
            checksum: format!("crc32:{crc:08x}"),
            arrays: placed
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        ArrayMeta {
                            dtype: p.dtype.name().into(),
                            shape: vec![p.len as u64],
                            offset: p.offset as u64,
                            nbytes: (p.len * p.dtype.size()) as u64,
                        },
                    )
                })
                .collect(),
            metadata: self.metadata.clone(),
        }
    }

    /// Saves the model into directory `dir` (created if missing), crash-safely: the array
    /// file is written under a name that the manifest in `dir` (if any) does not use
    /// ([`DATA_FILE`], or [`ALT_DATA_FILE`] when that one is in use), then the manifest
    /// replaces the old one by an atomic rename (the commit point), and only then is the old
    /// array file removed. Each file is written to a temporary file, synced and renamed, and
    /// the directory is synced, so at every instant `dir` holds the complete old model or the
    /// complete new one. Files other than the manifest and the array files are not touched.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| store::io_err(dir, e))?;
        let current = store::read_text(&dir.join(MANIFEST_FILE), MAX_MANIFEST_BYTES)
            .ok()
            .and_then(|t| peek_data_file(&t).ok())
            .map(|(f, _)| f);
        let data_file = if current.as_deref() == Some(DATA_FILE) {
            ALT_DATA_FILE
        } else {
            DATA_FILE
        };
        let mut arrays = self.arrays();
        let (placed, n, crc) = store::write_atomic(&dir.join(data_file), |w| {
            store::write_safetensors(w, &mut arrays)
        })?;
        let manifest = self.manifest(data_file, &placed, n, crc);
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::invalid(format!("cannot encode the manifest: {e}")))?;
        store::write_atomic(&dir.join(MANIFEST_FILE), |w| {
            std::io::Write::write_all(w, &text)
        })?;
        // the other array name is ours and no longer named by the manifest (an interrupted
        // earlier save may have left it too)
        let other = if data_file == DATA_FILE {
            ALT_DATA_FILE
        } else {
            DATA_FILE
        };
        match std::fs::remove_file(dir.join(other)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(store::io_err(&dir.join(other), e))
            }
            _ => Ok(()),
        }
    }

    /// The manifest and the array file in one buffer (for pickling): an 8-byte magic, the
    /// manifest length (u64 little-endian), the manifest, zero padding to a multiple of 8,
    /// then the array file.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut arrays = self.arrays();
        let mut data = Vec::new();
        let (placed, n, crc) = store::write_safetensors(&mut data, &mut arrays)
            .map_err(|e| Error::invalid(format!("cannot serialise the model: {e}")))?;
        let manifest = serde_json::to_vec(&self.manifest(DATA_FILE, &placed, n, crc))
            .map_err(|e| Error::invalid(format!("cannot encode the manifest: {e}")))?;
        let pad = manifest.len().next_multiple_of(8) - manifest.len();
        let mut out = Vec::with_capacity(16 + manifest.len() + pad + data.len());
        out.extend_from_slice(BYTES_MAGIC);
        out.extend_from_slice(&(manifest.len() as u64).to_le_bytes());
        out.extend_from_slice(&manifest);
        out.resize(out.len() + pad, 0);
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Rebuilds a model from [`XrModel::to_bytes`]'s output (copied, fully verified).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |what: &str| Error::invalid(format!("not an xmrrs XR model buffer: {what}"));
        if bytes.len() < 16 || &bytes[..8] != BYTES_MAGIC {
            return Err(bad("wrong magic bytes"));
        }
        let mlen = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| bad("short"))?);
        let mlen = usize::try_from(mlen).map_err(|_| bad("manifest length"))?;
        let mend = mlen
            .checked_add(16)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| bad("truncated manifest"))?;
        let manifest = std::str::from_utf8(&bytes[16..mend]).map_err(|_| bad("manifest"))?;
        let dstart = mlen.next_multiple_of(8) + 16;
        let data = bytes.get(dstart..).ok_or_else(|| bad("truncated data"))?;
        let backing = Arc::new(Backing::copy_from(data));
        Self::from_parts(manifest, backing, true, false)
    }

    /// Loads a model saved by [`XrModel::save`].
    ///
    /// With `mmap == false` the array file is read into memory and fully checked (checksum
    /// and structure). With `mmap == true` it is mapped read-only and only the manifest,
    /// array sizes and offsets and the per-chunk pointer arrays are checked; call
    /// [`XrModel::verify`] for the full check. Either way a corrupt or truncated model gives
    /// an error, at load or at search time, never a crash.
    pub fn load(dir: impl AsRef<Path>, mmap: bool) -> Result<Self> {
        let dir = dir.as_ref();
        let mpath = dir.join(MANIFEST_FILE);
        let text = store::read_text(&mpath, MAX_MANIFEST_BYTES)?;
        let (data_file, data_bytes) = peek_data_file(&text)?;
        let dpath = dir.join(data_file);
        let backing = if mmap {
            Backing::map_file(&dpath, data_bytes)?
        } else {
            Backing::read_file(&dpath, data_bytes)?
        };
        Self::from_parts(&text, Arc::new(backing), !mmap, mmap)
    }

    fn from_parts(
        manifest: &str,
        backing: Arc<Backing>,
        full_check: bool,
        mapped: bool,
    ) -> Result<Self> {
        if cfg!(target_endian = "big") {
            return Err(Error::invalid(
                "model files are little-endian; big-endian hosts are not supported",
            ));
        }
        let man = parse_manifest(manifest)?;
        let bytes = backing.bytes();
        if bytes.len() as u64 != man.data_bytes {
            return Err(Error::invalid(format!(
                "array file has {} bytes, the manifest says {} (truncated or replaced?)",
                bytes.len(),
                man.data_bytes
            )));
        }
        if full_check {
            let got = format!("crc32:{:08x}", store::crc32(bytes));
            if got != man.checksum {
                return Err(Error::invalid(format!(
                    "array file checksum {got} does not match the manifest's {}: the file \
                     is corrupt",
                    man.checksum
                )));
            }
        }
        let placed = store::read_safetensors_header(bytes)?;
        let mut by_name: BTreeMap<&str, &Placed> = BTreeMap::new();
        for p in &placed {
            by_name.insert(p.name.as_str(), p);
        }
        if by_name.len() != man.arrays.len() {
            return Err(Error::invalid(format!(
                "array file holds {} arrays, the manifest lists {}",
                by_name.len(),
                man.arrays.len()
            )));
        }
        for (name, a) in &man.arrays {
            let p = by_name.get(name.as_str()).ok_or_else(|| {
                Error::invalid(format!("array {name} is in the manifest but not the file"))
            })?;
            if a.dtype != p.dtype.name()
                || a.shape != [p.len as u64]
                || a.offset != p.offset as u64
                || a.nbytes != (p.len * p.dtype.size()) as u64
            {
                return Err(Error::invalid(format!(
                    "array {name}: the manifest and the array file disagree"
                )));
            }
        }
        let get = |name: &str, dtype: Dtype, len: u64| -> Result<&Placed> {
            let p = by_name
                .get(name)
                .ok_or_else(|| Error::invalid(format!("array {name} is missing")))?;
            if p.dtype != dtype || p.len as u64 != len {
                return Err(Error::invalid(format!(
                    "array {name}: expected {} x {len}, found {} x {}",
                    dtype.name(),
                    p.dtype.name(),
                    p.len
                )));
            }
            Ok(p)
        };
        fn buf<T: bytemuck::Pod>(b: &Arc<Backing>, p: &Placed) -> Result<Buf<T>> {
            Buf::shared(b, p.offset, p.len)
        }
        let n_features = usize::try_from(man.n_features)
            .ok()
            .filter(|&d| d >= 1 && d <= u32::MAX as usize)
            .ok_or_else(|| Error::invalid("n_features out of range"))?;
        if man.layers.is_empty() {
            return Err(Error::invalid("the model has no layers"));
        }
        let labels: Buf<u32> = buf(&backing, get("labels", Dtype::U32, man.n_labels)?)?;
        let mut layers = Vec::with_capacity(man.layers.len());
        let mut n_above = 1u64;
        for (m, lm) in man.layers.iter().enumerate() {
            if lm.n_parents != n_above {
                return Err(Error::invalid(format!(
                    "layer {m} has {} parents but the level above has {n_above} nodes",
                    lm.n_parents
                )));
            }
            n_above = lm.n_children;
            let np = lm.n_parents;
            let nc = lm.n_chunks;
            if nc != np && nc != 1 {
                return Err(Error::invalid(format!(
                    "layer {m} has {nc} chunks; expected 1 or one per parent ({np})"
                )));
            }
            let name = |s: &str| format!("layer{m}.{s}");
            let child_ptr: Buf<u32> = buf(&backing, get(&name("child_ptr"), Dtype::U32, np + 1)?)?;
            let bias = buf(&backing, get(&name("bias"), Dtype::F32, lm.n_children)?)?;
            let chunk_rows: Buf<u64> =
                buf(&backing, get(&name("chunk_rows"), Dtype::U64, nc + 1)?)?;
            let chunk_ents: Buf<u64> =
                buf(&backing, get(&name("chunk_ents"), Dtype::U64, nc + 1)?)?;
            let chunk_bkts: Buf<u64> =
                buf(&backing, get(&name("chunk_bkts"), Dtype::U64, nc + 1)?)?;
            let chunk_shift: Buf<u8> = buf(&backing, get(&name("chunk_shift"), Dtype::U8, nc)?)?;
            let row_feat = buf(&backing, get(&name("row_feat"), Dtype::U32, lm.n_rows)?)?;
            let row_ptr = buf(&backing, get(&name("row_ptr"), Dtype::U32, lm.n_rows + nc)?)?;
            let bkt = buf(&backing, get(&name("bkt"), Dtype::U32, lm.n_buckets)?)?;
            let cols = match lm.col_dtype.as_str() {
                "U8" => Cols::U8(buf(&backing, get(&name("cols"), Dtype::U8, lm.n_entries)?)?),
                "U16" => Cols::U16(buf(
                    &backing,
                    get(&name("cols"), Dtype::U16, lm.n_entries)?,
                )?),
                "U32" => Cols::U32(buf(
                    &backing,
                    get(&name("cols"), Dtype::U32, lm.n_entries)?,
                )?),
                other => {
                    return Err(Error::invalid(format!(
                        "layer {m}: unknown column dtype {other}"
                    )))
                }
            };
            let vals = buf(&backing, get(&name("vals"), Dtype::F32, lm.n_entries)?)?;
            let as_usize = |v: u64| usize::try_from(v).map_err(|_| Error::invalid("size overflow"));
            let mut layer = Layer {
                n_parents: as_usize(np)?,
                n_children: as_usize(lm.n_children)?,
                whole: nc == 1 && np > 1,
                max_width: 0,
                nnz: as_usize(lm.nnz)?,
                child_ptr,
                bias,
                chunk_rows,
                chunk_ents,
                chunk_bkts,
                chunk_shift,
                row_feat,
                row_ptr,
                bkt,
                cols,
                vals,
                dense: None,
            };
            check_small(&mut layer).map_err(|e| Error::invalid(format!("layer {m}: {e}")))?;
            layer.dense = dense_copy(&layer, &LayoutParams::default());
            layers.push(layer);
        }
        if n_above != man.n_labels {
            return Err(Error::invalid(format!(
                "the last layer has {n_above} children but the model {} labels",
                man.n_labels
            )));
        }
        let model = XrModel {
            n_features,
            n_labels: as_usize_u64(man.n_labels)?,
            partial: man.partial,
            layers,
            labels,
            metadata: man.metadata,
            mapped,
            source: Some((Arc::clone(&backing), man.checksum)),
        };
        model.verify_structure()?;
        if full_check {
            model.verify_values()?;
        }
        Ok(model)
    }

    /// Checks everything a non-mmap load checks: the array file's checksum (for a loaded
    /// model), the structure (as every load does, see [`XrModel::load`]) and the values:
    /// weights finite, and as many non-zero weights per layer as the manifest says.
    pub fn verify(&self) -> Result<()> {
        if let Some((backing, expect)) = &self.source {
            let got = format!("crc32:{:08x}", store::crc32(backing.bytes()));
            if &got != expect {
                return Err(Error::invalid(format!(
                    "array file checksum {got} does not match the manifest's {expect}: the \
                     file is corrupt"
                )));
            }
        }
        self.verify_structure()?;
        self.verify_values()
    }

    /// Every structural invariant, in time linear in the index arrays: `labels` a
    /// permutation (the identity for a partial model); per layer the pointers, every row
    /// feature id (increasing, in range), row pointer, bucket index and column id consistent
    /// and in range; biases finite. Weights are not read.
    fn verify_structure(&self) -> Result<()> {
        let n = self.n_labels;
        let mut seen = crate::alloc::try_vec(n, false, "the label check")?;
        for &l in self.labels.iter() {
            match seen.get_mut(l as usize) {
                Some(s) if !*s => *s = true,
                _ => {
                    return Err(Error::invalid(
                        "labels are not a permutation of 0..n_labels",
                    ))
                }
            }
        }
        if self.partial
            && self
                .labels
                .iter()
                .enumerate()
                .any(|(i, &l)| l as usize != i)
        {
            return Err(Error::invalid(
                "a partial model's labels must be the identity",
            ));
        }
        for (m, layer) in self.layers.iter().enumerate() {
            let r = match layer.view() {
                LayerRef::U8(v) => verify_layer(&v, layer, self.n_features),
                LayerRef::U16(v) => verify_layer(&v, layer, self.n_features),
                LayerRef::U32(v) => verify_layer(&v, layer, self.n_features),
            };
            r.map_err(|e| Error::invalid(format!("model data is corrupt: layer {m}: {e}")))?;
        }
        Ok(())
    }

    /// The value checks of [`XrModel::verify`]: one pass over the weights.
    fn verify_values(&self) -> Result<()> {
        for (m, layer) in self.layers.iter().enumerate() {
            let bad = |e: String| Error::invalid(format!("model data is corrupt: layer {m}: {e}"));
            if layer.vals.par_iter().any(|x| !x.is_finite()) {
                return Err(bad("non-finite weight".into()));
            }
            let nnz = layer.vals.par_iter().filter(|&&x| x != 0.0).count();
            if nnz != layer.nnz {
                return Err(bad(format!(
                    "{nnz} non-zero weights, the manifest says {}",
                    layer.nnz
                )));
            }
        }
        Ok(())
    }
}

fn as_usize_u64(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::invalid("size overflow"))
}

/// Checks the O(parents) arrays of a layer and sets `max_width`.
fn check_small(l: &mut Layer) -> std::result::Result<(), String> {
    let cp = &l.child_ptr;
    if cp.first() != Some(&0) || cp.windows(2).any(|w| w[1] <= w[0]) {
        return Err("child_ptr must start at 0 and increase strictly".into());
    }
    if *cp.last().unwrap_or(&0) as usize != l.n_children {
        return Err("child_ptr does not end at the number of children".into());
    }
    l.max_width = cp
        .windows(2)
        .map(|w| (w[1] - w[0]) as usize)
        .max()
        .unwrap_or(0);
    let chunk_width = if l.whole { l.n_children } else { l.max_width };
    if matches!(l.cols, Cols::U8(_)) && chunk_width > 1 << 8 {
        return Err("u8 columns with more than 256 children per parent".into());
    }
    if matches!(l.cols, Cols::U16(_)) && chunk_width > 1 << 16 {
        return Err("u16 columns with more than 65536 children per parent".into());
    }
    let check = |p: &[u64], total: usize, what: &str| -> std::result::Result<(), String> {
        if p.first() != Some(&0)
            || p.windows(2).any(|w| w[1] < w[0])
            || *p.last().unwrap_or(&0) != total as u64
        {
            return Err(format!("{what} is not a pointer from 0 to {total}"));
        }
        Ok(())
    };
    check(&l.chunk_rows, l.row_feat.len(), "chunk_rows")?;
    check(&l.chunk_ents, l.vals.len(), "chunk_ents")?;
    check(&l.chunk_bkts, l.bkt.len(), "chunk_bkts")?;
    if l.chunk_bkts.windows(2).any(|w| w[1] == w[0]) {
        return Err("every chunk needs at least one bucket pointer".into());
    }
    if l.chunk_shift.iter().any(|&s| s > 31) {
        return Err("bucket shift above 31".into());
    }
    Ok(())
}

fn verify_layer<C: Col>(
    v: &LayerView<'_, C>,
    l: &Layer,
    n_features: usize,
) -> std::result::Result<(), String> {
    crate::sparse::check_finite(&l.bias, "bias").map_err(|e| e.to_string())?;
    (0..v.n_chunks())
        .into_par_iter()
        .try_for_each(|j| -> std::result::Result<(), String> {
            let ch = v.chunk(j).map_err(|_| format!("chunk {j}: bad pointers"))?;
            let w = ch.width();
            let err = |what: &str| format!("chunk {j}: {what}");
            if ch.feat.windows(2).any(|p| p[1] <= p[0]) {
                return Err(err("row feature ids are not increasing"));
            }
            if ch.feat.last().is_some_and(|&f| f as usize >= n_features) {
                return Err(err("feature id out of range"));
            }
            if ch.ptr.first() != Some(&0)
                || ch.ptr.windows(2).any(|p| p[1] <= p[0])
                || *ch.ptr.last().unwrap_or(&0) as usize != ch.vals.len()
            {
                return Err(err("bad row pointer"));
            }
            if bucket_ptr(ch.feat, ch.shift as u8) != ch.bkt {
                return Err(err("bucket index does not match the rows"));
            }
            for r in 0..ch.feat.len() {
                let (s, e) = (ch.ptr[r] as usize, ch.ptr[r + 1] as usize);
                let cols = &ch.cols[s..e];
                if e - s == w {
                    if cols.iter().enumerate().any(|(k, c)| c.idx() != k) {
                        return Err(err("dense row with wrong columns"));
                    }
                } else if cols.windows(2).any(|p| p[1].idx() <= p[0].idx())
                    || cols.last().is_some_and(|c| c.idx() >= w)
                {
                    return Err(err("bad column ids"));
                }
            }
            Ok(())
        })
}

// ---------------------------------------------------------------------------------------
// manifest

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    n_features: u64,
    n_labels: u64,
    partial: bool,
    layers: Vec<LayerMeta>,
    data_file: String,
    data_bytes: u64,
    checksum: String,
    arrays: BTreeMap<String, ArrayMeta>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct LayerMeta {
    n_parents: u64,
    n_children: u64,
    /// `n_parents` (one chunk per parent) or 1 (one chunk for the whole layer).
    n_chunks: u64,
    n_rows: u64,
    n_entries: u64,
    n_buckets: u64,
    nnz: u64,
    col_dtype: String,
}

#[derive(Serialize, Deserialize)]
struct ArrayMeta {
    dtype: String,
    shape: Vec<u64>,
    offset: u64,
    nbytes: u64,
}

fn check_format(v: &serde_json::Value) -> Result<()> {
    let format = v.get("format").and_then(|f| f.as_str());
    if format != Some(FORMAT_NAME) {
        return Err(Error::invalid(format!(
            "not an xmrrs XR model manifest (format {:?}, expected {FORMAT_NAME:?})",
            format.unwrap_or("missing")
        )));
    }
    match v.get("version").and_then(|f| f.as_u64()) {
        Some(x) if x == u64::from(FORMAT_VERSION) => Ok(()),
        Some(x) => Err(Error::invalid(format!(
            "model format version {x} is not supported by this build (it reads version \
             {FORMAT_VERSION}); upgrade xmrrs or re-save the model"
        ))),
        None => Err(Error::invalid("the manifest has no format version")),
    }
}

fn parse_manifest(text: &str) -> Result<Manifest> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid(format!("the model manifest is not valid JSON: {e}")))?;
    check_format(&v)?;
    serde_json::from_value(v)
        .map_err(|e| Error::invalid(format!("the model manifest is malformed: {e}")))
}

/// The manifest's array file name (a plain name inside the model directory) and size.
fn peek_data_file(text: &str) -> Result<(String, u64)> {
    let man = parse_manifest(text)?;
    let f = man.data_file;
    if f.is_empty() || f.contains(['/', '\\']) || f == "." || f == ".." {
        return Err(Error::invalid(format!(
            "bad data_file {f:?} in the manifest"
        )));
    }
    Ok((f, man.data_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xr::infer::{predict, PredictParams};
    use crate::xr::testutil::*;
    use crate::xr::PostProcessor;

    fn tmpdir(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("xmrrs-model-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn sample(seed: u64) -> (ClusterTree, Vec<LayerWeights>, XrModel) {
        let tree = random_tree(&[3, 8], 50, seed);
        let layers = random_layers(&tree, 3, 30, seed);
        let model = XrModel::new(&tree, layers.clone(), 30).unwrap();
        (tree, layers, model)
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

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

    #[test]
    fn owned_mapped_and_bytes_give_identical_predictions() {
        let (_, _, mut model) = sample(3);
        model
            .metadata_mut()
            .insert("post_processor".into(), "l3-hinge".into());
        let dir = tmpdir("roundtrip");
        model.save(&dir).unwrap();
        let loaded = XrModel::load(&dir, false).unwrap();
        let mapped = XrModel::load(&dir, true).unwrap();
        let from_bytes = XrModel::from_bytes(&model.to_bytes().unwrap()).unwrap();
        assert!(mapped.is_mapped() && !loaded.is_mapped());
        mapped.verify().unwrap();
        let x = random_queries(80, 30, 10, 4);
        let p = PredictParams {
            beam_size: 3,
            topk: 6,
            ..PredictParams::default()
        };
        let want = predict(&model, &x.view(), &p).unwrap();
        for m in [&loaded, &mapped, &from_bytes] {
            assert_eq!(
                m.metadata().get("post_processor").map(String::as_str),
                Some("l3-hinge")
            );
            assert_eq!(m.layer_nnz(), model.layer_nnz());
            assert_eq!(m.nbytes(), model.nbytes());
            let got = predict(m, &x.view(), &p).unwrap();
            assert_eq!(got.0, want.0);
            assert_eq!(bits(&got.1), bits(&want.1));
            for l in 0..3 {
                assert_eq!(m.layer_weights(l).unwrap(), model.layer_weights(l).unwrap());
            }
        }
        // saving again over a mapped model keeps the map valid (rename, not rewrite)
        let (_, _, other) = sample(4);
        other.save(&dir).unwrap();
        let got = predict(&mapped, &x.view(), &p).unwrap();
        assert_eq!(got.0, want.0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn partial_models_and_u8_u16_u32_columns_round_trip() {
        for n_labels in [200, 3_000, 70_000] {
            let tree = random_tree(&[2], n_labels, 5);
            // the widest leaf picks the column type: <= 256 u8, <= 65536 u16, else u32
            let width = tree
                .leaf_ptr()
                .windows(2)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap();
            let layers = random_layers(&tree, 2, 10, 5);
            let model = XrModel::new(&tree, layers.clone(), 10).unwrap();
            let want = match width {
                0..=256 => "U8",
                257..=65536 => "U16",
                _ => "U32",
            };
            let got = match model.layers[1].cols {
                Cols::U8(_) => "U8",
                Cols::U16(_) => "U16",
                Cols::U32(_) => "U32",
            };
            assert_eq!(got, want, "leaf width {width}");
            let back = XrModel::from_bytes(&model.to_bytes().unwrap()).unwrap();
            let x = random_queries(40, 10, 5, 6);
            let p = PredictParams::default();
            assert_eq!(
                predict(&model, &x.view(), &p).unwrap(),
                predict(&back, &x.view(), &p).unwrap()
            );
        }
        let tree = random_tree(&[2], 70_000, 5);
        let layers = random_layers(&tree, 2, 10, 5);
        let part = XrModel::new_partial(&tree, &layers[..1], 10).unwrap();
        let back = XrModel::from_bytes(&part.to_bytes().unwrap()).unwrap();
        assert!(back.is_partial());
        assert_eq!(back.labels(), &[0, 1]);
    }

    #[test]
    fn wrong_version_and_format_are_clear_errors() {
        let (_, _, model) = sample(6);
        let dir = tmpdir("version");
        model.save(&dir).unwrap();
        let mpath = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&mpath).unwrap();
        let v2 = text.replace("\"version\": 1", "\"version\": 2");
        assert_ne!(v2, text);
        std::fs::write(&mpath, &v2).unwrap();
        for mmap in [false, true] {
            let e = XrModel::load(&dir, mmap).unwrap_err().to_string();
            assert!(e.contains("version 2"), "{e}");
        }
        std::fs::write(&mpath, text.replace(FORMAT_NAME, "pecos")).unwrap();
        let e = XrModel::load(&dir, true).unwrap_err().to_string();
        assert!(e.contains("not an xmrrs XR model"), "{e}");
        std::fs::write(&mpath, "{").unwrap();
        assert!(XrModel::load(&dir, true).is_err());
        std::fs::remove_file(&mpath).unwrap();
        assert!(XrModel::load(&dir, true).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every truncation and many single-byte corruptions of the array file: loading and
    /// predicting give `Ok` or `Err`, never a panic; a non-mmap load, `verify` and
    /// `from_bytes` reject every change.
    #[test]
    fn corrupt_and_truncated_files_never_panic() {
        let (_, _, model) = sample(7);
        let dir = tmpdir("corrupt");
        model.save(&dir).unwrap();
        let dpath = dir.join(DATA_FILE);
        let good = std::fs::read(&dpath).unwrap();
        let bytes = model.to_bytes().unwrap();
        let x = random_queries(40, 30, 12, 8);
        let p = PredictParams {
            beam_size: 4,
            ..PredictParams::default()
        };
        let try_predict = |m: &XrModel| {
            let _ = predict(m, &x.view(), &p);
        };
        let mut rng = crate::cluster::SplitMix64::new(9);
        let n = good.len();
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for cut in (0..n).step_by(n / 60 + 1).chain([n - 1]) {
            cases.push(good[..cut].to_vec());
        }
        for _ in 0..400 {
            let mut b = good.clone();
            let at = rng.below(n as u64) as usize;
            let v = match rng.below(4) {
                0 => 0xff,
                1 => 0x00,
                2 => b[at] ^ (1 << rng.below(8)),
                _ => rng.below(256) as u8,
            };
            if v == b[at] {
                continue;
            }
            b[at] = v;
            cases.push(b);
        }
        let mut mapped_ok = 0;
        for b in &cases {
            std::fs::write(&dpath, b).unwrap();
            assert!(XrModel::load(&dir, false).is_err());
            match XrModel::load(&dir, true) {
                Ok(m) => {
                    mapped_ok += 1;
                    try_predict(&m);
                    assert!(m.verify().is_err());
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
            let mut whole = bytes[..bytes.len() - good.len()].to_vec();
            whole.extend_from_slice(b);
            assert!(XrModel::from_bytes(&whole).is_err());
        }
        assert!(
            mapped_ok > 100,
            "most value corruptions pass the cheap checks"
        );
        // the bytes container: truncated anywhere
        for cut in (0..bytes.len()).step_by(bytes.len() / 50 + 1) {
            assert!(XrModel::from_bytes(&bytes[..cut]).is_err());
        }
        std::fs::write(&dpath, &good).unwrap();
        XrModel::load(&dir, false).unwrap();
        // manifest edits: digits changed one at a time; never a panic, and whatever loads
        // either predicts or reports an error
        let mpath = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&mpath).unwrap();
        let digits: Vec<usize> = text
            .char_indices()
            .filter(|c| c.1.is_ascii_digit())
            .map(|c| c.0)
            .collect();
        for (i, &at) in digits.iter().enumerate().step_by(digits.len() / 150 + 1) {
            let mut t = text.clone().into_bytes();
            t[at] = b'0' + ((t[at] - b'0' + 1 + (i % 9) as u8) % 10);
            std::fs::write(&mpath, &t).unwrap();
            for mmap in [false, true] {
                if let Ok(m) = XrModel::load(&dir, mmap) {
                    try_predict(&m);
                    let _ = m.verify();
                }
            }
        }
        // a buffer at an odd address still loads (copied into aligned memory)
        let mut odd = vec![0u8];
        odd.extend_from_slice(&bytes);
        let m = XrModel::from_bytes(&odd[1..]).unwrap();
        assert_eq!(
            predict(&m, &x.view(), &p).unwrap(),
            predict(&model, &x.view(), &p).unwrap()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A mapped load checks the whole structure: a corruption that passes the checksum (the
    /// manifest's crc fixed up) is rejected by a mapped load whenever a full load rejects it
    /// for its structure; what a mapped load accepts (corrupt weights) answers with valid ids
    /// and finite scores, and `verify` reports it.
    #[test]
    fn mapped_loads_check_structure_and_answer_validly() {
        let (_, _, model) = sample(11);
        let dir = tmpdir("mapped-structure");
        model.save(&dir).unwrap();
        let dpath = dir.join(DATA_FILE);
        let mpath = dir.join(MANIFEST_FILE);
        let good = std::fs::read(&dpath).unwrap();
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
        let x = random_queries(40, 30, 12, 8);
        let mut rng = crate::cluster::SplitMix64::new(3);
        let header = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        let (mut structural, mut accepted) = (0, 0);
        for t in 0..600 {
            let mut b = good.clone();
            let at = header + rng.below((b.len() - header) as u64) as usize;
            b[at] = match t % 3 {
                0 => b[at] ^ (1 << rng.below(8)),
                1 => 0xff,
                _ => rng.below(256) as u8,
            };
            if b == good {
                continue;
            }
            let mut m = manifest.clone();
            m["checksum"] = format!("crc32:{:08x}", store::crc32(&b)).into();
            std::fs::write(&dpath, &b).unwrap();
            std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
            let full = XrModel::load(&dir, false);
            let mapped = XrModel::load(&dir, true);
            match (&full, &mapped) {
                (Err(e), _) if !e.to_string().contains("weight") => {
                    structural += 1;
                    assert!(mapped.is_err(), "mapped load accepted: {e}");
                }
                (_, Ok(mm)) => {
                    accepted += 1;
                    assert_eq!(mm.verify().is_ok(), full.is_ok());
                    for pp in [PostProcessor::Hinge(3), PostProcessor::Noop] {
                        for beam_size in [1, 4, 1000] {
                            let p = PredictParams {
                                beam_size,
                                topk: 7,
                                post_processor: pp,
                                ..PredictParams::default()
                            };
                            let (ids, sc) = predict(mm, &x.view(), &p).unwrap();
                            for (&i, &s) in ids.iter().zip(&sc) {
                                assert!(i >= -1 && i < model.n_labels() as i64);
                                assert!(i == -1 || s.is_finite(), "{s}");
                            }
                        }
                    }
                }
                (Ok(_), Err(e)) => panic!("a mapped load rejected what a full load accepts: {e}"),
                _ => {}
            }
        }
        assert!(structural > 50 && accepted > 50, "{structural} {accepted}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Replacing a saved model in place never leaves the directory without a complete model:
    /// the array file of the new model gets a name the old manifest does not use.
    #[test]
    fn saving_over_a_model_alternates_array_files() {
        let (_, _, a) = sample(12);
        let (_, _, b) = sample(13);
        let dir = tmpdir("replace");
        let x = random_queries(20, 30, 12, 8);
        let p = PredictParams::default();
        a.save(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), b"keep").unwrap();
        for (i, m) in [&b, &a, &b].into_iter().enumerate() {
            let before = std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap();
            m.save(&dir).unwrap();
            let after = std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap();
            let (f0, f1) = (
                peek_data_file(&before).unwrap().0,
                peek_data_file(&after).unwrap().0,
            );
            assert_ne!(f0, f1, "save {i} reused the array file in use");
            assert!(!dir.join(&f0).exists(), "the old array file is removed");
            let back = XrModel::load(&dir, true).unwrap();
            assert_eq!(
                predict(&back, &x.view(), &p).unwrap(),
                predict(m, &x.view(), &p).unwrap()
            );
        }
        assert_eq!(std::fs::read(dir.join("notes.txt")).unwrap(), b"keep");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Structural corruption behind the cheap checks (pointers, columns, features, buckets)
    /// is caught by the search kernels as an error.
    #[test]
    fn kernels_report_corrupt_indices() {
        let (_, _, model) = sample(10);
        let x = random_queries(60, 30, 25, 11);
        let names = ["row_ptr", "cols", "row_feat", "bkt"];
        for name in names {
            for kernel in [
                crate::xr::infer::Kernel::Lookup,
                crate::xr::infer::Kernel::Scan,
                crate::xr::infer::Kernel::Merge,
            ] {
                let mut m = model.clone();
                let l = &mut m.layers[2];
                match name {
                    "row_ptr" => {
                        let mut v = l.row_ptr.to_vec();
                        for e in v.iter_mut().skip(1) {
                            *e = e.saturating_add(1 << 30);
                        }
                        l.row_ptr = v.into();
                    }
                    "cols" => {
                        l.cols = match &l.cols {
                            Cols::U8(c) => {
                                Cols::U8(c.iter().map(|_| 255).collect::<Vec<_>>().into())
                            }
                            Cols::U16(c) => {
                                Cols::U16(c.iter().map(|_| 65535).collect::<Vec<_>>().into())
                            }
                            Cols::U32(c) => {
                                Cols::U32(c.iter().map(|_| u32::MAX).collect::<Vec<_>>().into())
                            }
                        }
                    }
                    "row_feat" => {
                        l.row_feat = l
                            .row_feat
                            .iter()
                            .map(|f| f + 1000)
                            .collect::<Vec<_>>()
                            .into();
                    }
                    _ => {
                        l.bkt = l.bkt.iter().map(|b| b + 1000).collect::<Vec<_>>().into();
                    }
                }
                assert!(m.verify().is_err(), "{name}");
                let p = PredictParams {
                    beam_size: 8,
                    kernel,
                    ..PredictParams::default()
                };
                let r = predict(&m, &x.view(), &p);
                // row_feat shifted out of range only matters to the scan kernel; bucket
                // pointers only to the lookup kernel
                let must_fail = match name {
                    "row_feat" => kernel == crate::xr::infer::Kernel::Scan,
                    "bkt" => kernel == crate::xr::infer::Kernel::Lookup,
                    _ => true,
                };
                if must_fail {
                    let e = r.unwrap_err().to_string();
                    assert!(e.contains("corrupt"), "{e}");
                }
            }
        }
    }
}
