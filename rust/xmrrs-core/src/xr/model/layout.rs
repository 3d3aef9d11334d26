//! The inference layout of a layer: chunks (one per parent, or one for a small layer),
//! feature buckets, sparse or dense rows, and the optional dense copy; built from
//! [`LayerWeights`] with [`LayoutParams`].
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
//! A one-chunk layer also gets, in memory, a feature-indexed pointer when it takes at most
//! [`LayoutParams::direct_max_bytes`] (one `u32` per feature id up to the layer's last): the
//! entries of feature `f`'s row (or, beside a dense copy, the row itself) are found with two
//! adjacent loads instead of a bucket scan. Built at construction and at load from the
//! stored arrays (an inconsistent mapped file gets none); the same rows are visited in the
//! same order, so answers are bit-identical. Top-10 of a test set, one thread, 2 trees
//! (`/tmp` loop of `predict_topk`, best of many calls): rcv1-subset1 17.3 -> 13.1-13.4 ms,
//! bibtex 27.0 -> 22.0, stackex-cs 15.9 -> 13.8, debian/tags 87.6 -> 75.6-77.5,
//! debian/deps 541-551 -> 520-524, delicious unchanged (40.5-42.0 against 40.6-41.1).

use rayon::prelude::*;

use crate::xr::kernel::{Col, LayerView};
use crate::xr::store::Buf;
use crate::xr::LayerWeights;
use crate::{Error, Result};

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
    /// A one-chunk layer also gets a feature-indexed pointer (in memory only) when it takes
    /// at most this many bytes: a query feature then finds its row's entries (or, beside a
    /// dense copy, its row) with two adjacent loads instead of a bucket scan (0 disables).
    pub direct_max_bytes: usize,
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
            direct_max_bytes: 1 << 20,
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
    /// Feature-indexed pointer of a one-chunk layer, to entries or (beside a dense copy) to
    /// rows (see [`direct_index`]); in memory only.
    pub direct: Option<Vec<u32>>,
    /// Weights of the dense feature block, `n_children x n_dense` row-major (empty when
    /// `n_dense == 0`), as binary16 bits, each child's row scaled by its own power of two
    /// (half the bytes to store); stored in the files as `layer{m}.dense_w`.
    pub dense_w: Buf<u16>,
    /// Per child, `log2` of the factor that turns its widened `dense_w` row into the
    /// weights (in [`crate::half::UNSCALE_LOG2`]); `layer{m}.dense_unscale` in the files.
    pub dense_unscale: Buf<i8>,
    pub n_dense: usize,
}

/// A borrowed layer with its column type resolved.
pub(crate) enum LayerRef<'a> {
    U8(LayerView<'a, u8>),
    U16(LayerView<'a, u16>),
    U32(LayerView<'a, u32>),
}

impl Layer {
    /// Builds the arrays kept in memory only, from the stored ones: the dense copy, then
    /// the feature-indexed pointer (which indexes rows when there is a dense copy).
    pub(super) fn derive_in_memory(&mut self, lp: &LayoutParams) {
        self.dense = dense_copy(self, lp);
        self.direct = direct_index(self, lp);
    }

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
            direct: self.direct.as_deref(),
            dw: &self.dense_w,
            du: &self.dense_unscale,
            nd: self.n_dense,
        }
    }

    pub(crate) fn view(&self) -> LayerRef<'_> {
        match &self.cols {
            Cols::U8(c) => LayerRef::U8(self.view_with(c)),
            Cols::U16(c) => LayerRef::U16(self.view_with(c)),
            Cols::U32(c) => LayerRef::U32(self.view_with(c)),
        }
    }

    pub(super) fn n_entries(&self) -> usize {
        self.vals.len()
    }

    pub(super) fn nbytes(&self) -> usize {
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
            + 2 * self.dense_w.len()
            + self.dense_unscale.len()
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
pub(super) fn bucket_ptr(feat: &[u32], shift: u8) -> Vec<u32> {
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

pub(super) fn build_layer(lw: &LayerWeights, lp: &LayoutParams) -> Result<Layer> {
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
    let half = crate::half::HalfRows::pack(&lw.dense, lw.n_dense);
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
        direct: None,
        dense_w: half.bits.into(),
        dense_unscale: half.unscale_log2.into(),
        n_dense: lw.n_dense,
    };
    layer.derive_in_memory(lp);
    Ok(layer)
}

/// The feature-indexed pointer of a one-chunk layer (see [`LayoutParams::direct_max_bytes`]),
/// for `f` up to the last row's feature: with a dense copy, rows `p[f]..p[f + 1]` (one or
/// none) are feature `f`'s; without one, entries `p[f]..p[f + 1]` are its row's (empty when
/// the layer has no row for `f`). `None` when the layer has several chunks, the pointer would
/// be too large, or the arrays are inconsistent (a corrupt mapped file: the kernels then
/// report it).
pub(super) fn direct_index(l: &Layer, lp: &LayoutParams) -> Option<Vec<u32>> {
    if l.chunk_shift.len() != 1 {
        return None;
    }
    let rows = l.row_feat.len();
    let last = *l.row_feat.last()? as usize;
    if (last + 2).checked_mul(4)? > lp.direct_max_bytes {
        return None;
    }
    let ptr = l.row_ptr.get(..rows + 1)?;
    let n_ents = u32::try_from(l.vals.len()).ok()?;
    let by_row = l.dense.is_some();
    let mut p = Vec::with_capacity(last + 2);
    let mut prev_end = 0u32;
    for (r, &f) in l.row_feat.iter().enumerate() {
        let (s, e) = (ptr[r], ptr[r + 1]);
        // rows in increasing feature order, contiguous entries within the chunk
        if (f as usize) < p.len() || f as usize > last || s != prev_end || e < s || e > n_ents {
            return None;
        }
        p.resize(f as usize + 1, if by_row { r as u32 } else { s });
        prev_end = e;
    }
    p.push(if by_row { rows as u32 } else { prev_end });
    Some(p)
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
