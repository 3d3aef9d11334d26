//! The per-(query, chunk) scoring kernels of beam search.
//!
//! A chunk holds the weights of the children of one parent, row-major over features: the
//! sorted feature ids that have a non-zero in the block (`feat`), a row pointer (`ptr`) and
//! `(local column, value)` entries. A row whose entry count equals the chunk width is dense
//! (columns `0..width` in order) and is accumulated with one SIMD axpy; other rows scatter
//! their entries. A bucket index (`bkt`, `shift`) maps `feature >> shift` to the range of
//! rows whose ids fall in that bucket, so one query feature is found with two loads and a
//! short scan.
//!
//! Three ways to find the rows a query touches, all visiting matched rows in increasing
//! feature order (so each child's sum is accumulated in the same order and the results are
//! bit-identical whichever runs):
//! - [`Kernel::Lookup`]: per query feature, the bucket index, or the feature-indexed pointer
//!   of a one-chunk layer where one is kept (`direct`: the feature's entries, or its row
//!   beside a dense copy, in two adjacent loads);
//! - [`Kernel::Merge`]: a galloping merge of the sorted query and row ids (PECOS's default);
//! - [`Kernel::Scan`]: every row of the chunk reads the query from a dense scatter.
//!
//! Every value read from the model that is used as an index is checked first: a corrupt
//! (memory-mapped) model makes the kernels return `Err(Corrupt)`, never read out of bounds.

use bytemuck::Pod;

use crate::simd;
use crate::xr::PostProcessor;

/// How a query finds the rows of a chunk (see the module docs). All give identical results;
/// [`Kernel::Auto`] picks per (query, chunk) by a cost estimate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernel {
    /// Per (query, chunk): [`Kernel::Scan`] when the chunk has few rows relative to the
    /// query's non-zeros, else [`Kernel::Lookup`].
    #[default]
    Auto,
    /// Bucket-index lookup of every query feature.
    Lookup,
    /// Galloping merge of the query's and the chunk's sorted feature ids.
    Merge,
    /// Every chunk row reads a dense scatter of the query.
    Scan,
}

/// `Auto` scans a chunk when `rows <= SCAN_RATIO * query_nnz`.
pub(crate) const SCAN_RATIO: usize = 4;

/// The model data is inconsistent (only possible for an unverified memory-mapped model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt;

/// A local column id type (`u16` when every chunk has at most 65536 children).
pub(crate) trait Col: Pod + Send + Sync {
    fn idx(self) -> usize;
}
impl Col for u8 {
    #[inline(always)]
    fn idx(self) -> usize {
        self as usize
    }
}
impl Col for u16 {
    #[inline(always)]
    fn idx(self) -> usize {
        self as usize
    }
}
impl Col for u32 {
    #[inline(always)]
    fn idx(self) -> usize {
        self as usize
    }
}

/// Borrowed arrays of one layer.
#[derive(Clone, Copy)]
pub(crate) struct LayerView<'a, C> {
    pub child_ptr: &'a [u32],
    /// One chunk holds every child (small layers), rather than one chunk per parent.
    pub whole: bool,
    pub bias: &'a [f32],
    pub chunk_rows: &'a [u64],
    pub chunk_ents: &'a [u64],
    pub chunk_bkts: &'a [u64],
    pub chunk_shift: &'a [u8],
    pub row_feat: &'a [u32],
    pub row_ptr: &'a [u32],
    pub bkt: &'a [u32],
    pub cols: &'a [C],
    pub vals: &'a [f32],
    /// Dense row-major copy of the only chunk's rows, when the layer has one chunk.
    pub dense: Option<&'a [f32]>,
    /// Feature-indexed pointer of the only chunk, when the layer has one chunk.
    pub direct: Option<&'a [u32]>,
    /// The dense feature block's weights, `n_children x nd` binary16 bits (empty when
    /// `nd == 0`); child `c`'s values are its widened bits times `2^du[c]`.
    pub dw: &'a [u16],
    pub du: &'a [i8],
    pub nd: usize,
}

/// Borrowed arrays of one chunk.
pub(crate) struct Chunk<'a, C> {
    pub feat: &'a [u32],
    /// `feat.len() + 1` entry offsets.
    pub ptr: &'a [u32],
    /// `n_buckets + 1` row offsets (at least one entry).
    pub bkt: &'a [u32],
    pub shift: u32,
    pub cols: &'a [C],
    pub vals: &'a [f32],
    pub bias: &'a [f32],
    /// Dense row-major copy of the rows (`feat.len()` x width), if kept.
    pub dense: Option<&'a [f32]>,
    /// Feature-indexed pointer, if kept: rows `direct[f]..direct[f + 1]` (one or none) are
    /// feature `f`'s when `dense` is kept, else entries `direct[f]..direct[f + 1]` are.
    pub direct: Option<&'a [u32]>,
    /// The dense feature block's weights of the chunk's children (`width x nd`, binary16
    /// bits, child `c`'s values its widened bits times `2^du[c]`).
    pub dw: &'a [u16],
    pub du: &'a [i8],
    pub nd: usize,
    /// First child (node id in the layer).
    pub c0: usize,
}

#[inline]
fn range(ptr: &[u64], j: usize) -> Option<std::ops::Range<usize>> {
    let a = usize::try_from(*ptr.get(j)?).ok()?;
    let b = usize::try_from(*ptr.get(j + 1)?).ok()?;
    (a <= b).then_some(a..b)
}

impl<'a, C: Col> LayerView<'a, C> {
    /// Number of chunks.
    #[inline]
    pub fn n_chunks(&self) -> usize {
        self.chunk_shift.len()
    }

    /// The children of parent `p` (node ids of the layer).
    #[inline]
    pub fn children(&self, p: usize) -> Result<std::ops::Range<usize>, Corrupt> {
        let a = *self.child_ptr.get(p).ok_or(Corrupt)? as usize;
        let b = *self.child_ptr.get(p + 1).ok_or(Corrupt)? as usize;
        (a <= b).then_some(a..b).ok_or(Corrupt)
    }

    /// Chunk `j`.
    #[inline]
    pub fn chunk(&self, j: usize) -> Result<Chunk<'a, C>, Corrupt> {
        let (c0, c1) = if self.whole {
            if j != 0 {
                return Err(Corrupt);
            }
            (0, *self.child_ptr.last().ok_or(Corrupt)? as usize)
        } else {
            let r = self.children(j)?;
            (r.start, r.end)
        };
        let rows = range(self.chunk_rows, j).ok_or(Corrupt)?;
        let ents = range(self.chunk_ents, j).ok_or(Corrupt)?;
        let bkts = range(self.chunk_bkts, j).ok_or(Corrupt)?;
        let ptr = self
            .row_ptr
            .get(rows.start + j..rows.end + j + 1)
            .ok_or(Corrupt)?;
        let bkt = self.bkt.get(bkts).ok_or(Corrupt)?;
        if bkt.is_empty() {
            return Err(Corrupt);
        }
        Ok(Chunk {
            feat: self.row_feat.get(rows).ok_or(Corrupt)?,
            ptr,
            bkt,
            shift: u32::from(*self.chunk_shift.get(j).ok_or(Corrupt)?).min(31),
            cols: self.cols.get(ents.clone()).ok_or(Corrupt)?,
            vals: self.vals.get(ents).ok_or(Corrupt)?,
            bias: self.bias.get(c0..c1).ok_or(Corrupt)?,
            dense: if self.n_chunks() == 1 {
                self.dense
            } else {
                None
            },
            direct: if self.n_chunks() == 1 {
                self.direct
            } else {
                None
            },
            dw: self.dw.get(c0 * self.nd..c1 * self.nd).ok_or(Corrupt)?,
            du: if self.nd > 0 {
                self.du.get(c0..c1).ok_or(Corrupt)?
            } else {
                &[]
            },
            nd: self.nd,
            c0,
        })
    }
}

impl<C: Col> Chunk<'_, C> {
    /// Number of children.
    #[inline]
    pub fn width(&self) -> usize {
        self.bias.len()
    }

    /// `acc += xv * row r`. `r < feat.len()`.
    #[inline(always)]
    fn add_row(&self, r: usize, xv: f32, acc: &mut [f32]) -> Result<(), Corrupt> {
        if let Some(d) = self.dense {
            let w = acc.len();
            simd::axpy(xv, d.get(r * w..(r + 1) * w).ok_or(Corrupt)?, acc);
            return Ok(());
        }
        self.add_entries(self.ptr[r] as usize, self.ptr[r + 1] as usize, xv, acc)
    }

    /// `acc += xv * entries s..e` (one row's).
    #[inline(always)]
    fn add_entries(&self, s: usize, e: usize, xv: f32, acc: &mut [f32]) -> Result<(), Corrupt> {
        let (Some(cols), Some(vals)) = (self.cols.get(s..e), self.vals.get(s..e)) else {
            return Err(Corrupt);
        };
        if vals.len() == acc.len() {
            simd::axpy(xv, vals, acc);
        } else {
            let mut ok = true;
            for (c, v) in cols.iter().zip(vals) {
                match acc.get_mut(c.idx()) {
                    Some(a) => *a += xv * *v,
                    None => ok = false,
                }
            }
            if !ok {
                return Err(Corrupt);
            }
        }
        Ok(())
    }

    /// Bucket-index lookup of each (sorted) query feature (the direct pointer when kept).
    pub fn lookup(&self, qi: &[u32], qv: &[f32], acc: &mut [f32]) -> Result<(), Corrupt> {
        if let Some(p) = self.direct {
            return self.lookup_direct(p, qi, qv, acc);
        }
        let nb = self.bkt.len() - 1;
        let n = self.feat.len();
        for (&f, &xv) in qi.iter().zip(qv) {
            let b = (f >> self.shift) as usize;
            if b >= nb {
                break; // the query is sorted: every later feature is beyond the last bucket
            }
            let lo = self.bkt[b] as usize;
            let hi = self.bkt[b + 1] as usize;
            if lo > hi || hi > n {
                return Err(Corrupt);
            }
            for r in lo..hi {
                let g = self.feat[r];
                if g >= f {
                    if g == f && xv != 0.0 {
                        self.add_row(r, xv, acc)?;
                    }
                    break;
                }
            }
        }
        Ok(())
    }

    /// Lookup through the feature-indexed pointer `p` (see [`Chunk::direct`]).
    fn lookup_direct(
        &self,
        p: &[u32],
        qi: &[u32],
        qv: &[f32],
        acc: &mut [f32],
    ) -> Result<(), Corrupt> {
        let n = p.len().saturating_sub(1);
        for (&f, &xv) in qi.iter().zip(qv) {
            let f = f as usize;
            if f >= n {
                break; // the query is sorted: every later feature is beyond the last row
            }
            let (s, e) = (p[f] as usize, p[f + 1] as usize);
            if s < e && xv != 0.0 {
                if self.dense.is_some() {
                    if s >= self.feat.len() {
                        return Err(Corrupt);
                    }
                    self.add_row(s, xv, acc)?;
                } else {
                    self.add_entries(s, e, xv, acc)?;
                }
            }
        }
        Ok(())
    }

    /// Galloping merge of the query's and the chunk's sorted feature ids.
    pub fn merge(&self, qi: &[u32], qv: &[f32], acc: &mut [f32]) -> Result<(), Corrupt> {
        let feat = self.feat;
        let n = feat.len();
        let mut lo = 0usize;
        for (&f, &xv) in qi.iter().zip(qv) {
            // gallop: find a window [lo, hi) that contains the first row id >= f
            let mut step = 1usize;
            let mut hi = lo;
            while hi < n && feat[hi] < f {
                lo = hi + 1;
                hi += step;
                step *= 2;
            }
            let hi = hi.min(n);
            lo += feat[lo..hi].partition_point(|&g| g < f);
            if lo >= n {
                break;
            }
            if feat[lo] == f {
                if xv != 0.0 {
                    self.add_row(lo, xv, acc)?;
                }
                lo += 1;
            }
        }
        Ok(())
    }

    /// Every row reads the dense query `xd` (length `n_features`).
    pub fn scan(&self, xd: &[f32], acc: &mut [f32]) -> Result<(), Corrupt> {
        for (r, &f) in self.feat.iter().enumerate() {
            let xv = *xd.get(f as usize).ok_or(Corrupt)?;
            if xv != 0.0 {
                self.add_row(r, xv, acc)?;
            }
        }
        Ok(())
    }

    /// Whether `Auto` scans this chunk for a query with `q` non-zeros.
    #[inline]
    pub fn prefers_scan(&self, q: usize) -> bool {
        self.feat.len() <= SCAN_RATIO * q
    }
}

/// Whether a child's path score never exceeds its parent's (transform <= 1 for the
/// multiplicative post-processors, <= 0 for the additive ones): then a beam node whose path
/// score is below the current `k`-th best cannot contribute.
#[inline]
pub(crate) fn child_bounded_by_parent(pp: PostProcessor) -> bool {
    !matches!(pp, PostProcessor::Noop)
}

/// A margin below which a child of a parent with path score `ps` surely scores strictly
/// less than `thr` (so its transform need not be computed); `-inf` when no such bound is
/// safe. The bound inverts the post-processor in f64 and keeps a slack far above the f32
/// rounding of `transform` and `combine`; near the flat ends of the transforms, where a
/// small score error means a large margin error, it gives up (returns `-inf`).
pub(crate) fn margin_floor(pp: PostProcessor, ps: f32, thr: f32) -> f32 {
    const NO: f32 = f32::NEG_INFINITY;
    if !ps.is_finite() || !thr.is_finite() {
        return NO;
    }
    let (ps, thr) = (f64::from(ps), f64::from(thr));
    let logit = |r: f64| (r / (1.0 - r)).ln();
    let m = match pp {
        PostProcessor::Noop => return thr as f32, // the score is the margin itself
        PostProcessor::Sigmoid => {
            let r = thr / ps;
            if !(ps > 0.0 && r > 1e-30 && r < 1.0 - 1e-3) {
                return NO;
            }
            logit(r) - 1e-2
        }
        PostProcessor::LogSigmoid => {
            let r = (thr - ps).exp();
            if !(r > 1e-30 && r < 1.0 - 1e-3) {
                return NO;
            }
            logit(r) - 1e-2 * (1.0 + ps.abs() + thr.abs())
        }
        PostProcessor::Hinge(p) => {
            let r = thr / ps;
            let l = -r.ln();
            if !(ps > 0.0 && r > 0.0 && l >= 1e-3) || p == 0 {
                return NO;
            }
            1.0 - l.powf(1.0 / f64::from(p)) - 1e-2
        }
        PostProcessor::LogHinge(p) => {
            let d = ps - thr;
            if d.is_nan() || d < 1e-3 * (1.0 + ps.abs()) || p == 0 {
                return NO;
            }
            1.0 - d.powf(1.0 / f64::from(p)) - 1e-2 * (1.0 + ps.abs() + thr.abs())
        }
    };
    if m.is_finite() {
        m as f32
    } else {
        NO
    }
}

/// Path scores of children with margins `m`: `out[c] = combine(ps, transform(m[c]))`, the
/// post-processor matched once outside the loop; `f(c, score)` receives each.
#[inline]
pub(crate) fn for_each_score(pp: PostProcessor, ps: f32, m: &[f32], mut f: impl FnMut(usize, f32)) {
    macro_rules! go {
        ($pp:expr) => {{
            let pp = $pp;
            for (c, &x) in m.iter().enumerate() {
                f(c, pp.combine(ps, pp.transform(x)));
            }
        }};
    }
    match pp {
        PostProcessor::Noop => go!(PostProcessor::Noop),
        PostProcessor::Sigmoid => go!(PostProcessor::Sigmoid),
        PostProcessor::LogSigmoid => go!(PostProcessor::LogSigmoid),
        PostProcessor::Hinge(1) => go!(PostProcessor::Hinge(1)),
        PostProcessor::Hinge(2) => go!(PostProcessor::Hinge(2)),
        PostProcessor::Hinge(3) => go!(PostProcessor::Hinge(3)),
        PostProcessor::Hinge(4) => go!(PostProcessor::Hinge(4)),
        PostProcessor::LogHinge(1) => go!(PostProcessor::LogHinge(1)),
        PostProcessor::LogHinge(2) => go!(PostProcessor::LogHinge(2)),
        PostProcessor::LogHinge(3) => go!(PostProcessor::LogHinge(3)),
        PostProcessor::LogHinge(4) => go!(PostProcessor::LogHinge(4)),
        other => go!(other),
    }
}

/// The margins `w·x + b` of every child of a chunk for one query (see [`finite_margin`]), into `out`
/// (`out.len() == chunk.width()`). `xd` is the dense scatter of the query when the caller
/// has one; `qd` is the query's dense feature block (its length the model's `n_dense`, empty
/// without one), whose dot product with each child's dense weights is added.
#[inline]
pub(crate) fn margins<C: Col>(
    chunk: &Chunk<'_, C>,
    kernel: Kernel,
    qi: &[u32],
    qv: &[f32],
    xd: Option<&[f32]>,
    qd: &[f32],
    out: &mut [f32],
) -> Result<(), Corrupt> {
    out.fill(0.0);
    match (kernel, xd) {
        (Kernel::Scan, Some(xd)) => chunk.scan(xd, out)?,
        (Kernel::Auto, Some(xd)) if chunk.prefers_scan(qi.len()) => chunk.scan(xd, out)?,
        (Kernel::Merge, _) => chunk.merge(qi, qv, out)?,
        _ => chunk.lookup(qi, qv, out)?,
    }
    if chunk.nd > 0 {
        if qd.len() != chunk.nd
            || chunk.dw.len() != out.len() * chunk.nd
            || chunk.du.len() != out.len()
        {
            return Err(Corrupt);
        }
        crate::simd::dots_add_half(chunk.dw, qd, chunk.du, out);
    }
    for (o, &b) in out.iter_mut().zip(chunk.bias) {
        *o = finite_margin(*o + b);
    }
    Ok(())
}

/// `m` clamped to the finite floats, NaN to the lowest: a model whose weights were corrupted
/// in a mapped file (weights are only checked by `XrModel::verify`) or an overflowing dot
/// product can change rankings but never yields a NaN or infinite score. Identity on every
/// finite margin.
#[inline(always)]
pub(crate) fn finite_margin(m: f32) -> f32 {
    if m.is_nan() {
        f32::MIN
    } else {
        m.clamp(f32::MIN, f32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::SplitMix64;

    /// A child whose margin is below `margin_floor` always scores strictly below the
    /// threshold; probed densely just under the floor, where rounding could bite.
    #[test]
    fn margin_floor_is_safe() {
        let mut rng = SplitMix64::new(5);
        let pps = [
            PostProcessor::Noop,
            PostProcessor::Sigmoid,
            PostProcessor::LogSigmoid,
            PostProcessor::Hinge(1),
            PostProcessor::Hinge(2),
            PostProcessor::Hinge(3),
            PostProcessor::Hinge(4),
            PostProcessor::LogHinge(1),
            PostProcessor::LogHinge(3),
            PostProcessor::LogHinge(4),
        ];
        let mut pruned = 0usize;
        for pp in pps {
            for _ in 0..20_000 {
                // path scores and thresholds in the ranges each post-processor produces
                let u = rng.next_f64() as f32;
                let v = rng.next_f64() as f32;
                let (ps, thr) = match pp {
                    PostProcessor::Sigmoid | PostProcessor::Hinge(_) => {
                        let ps = u.powi(1 + (rng.below(6) as i32));
                        (ps, ps * v.powf(rng.next_f64() as f32 * 4.0))
                    }
                    PostProcessor::Noop => (u * 4.0 - 2.0, v * 4.0 - 2.0),
                    _ => {
                        let ps = -u * 30.0;
                        (ps, ps - v * 10.0)
                    }
                };
                let floor = margin_floor(pp, ps, thr);
                if !floor.is_finite() {
                    continue;
                }
                pruned += 1;
                let mut m = floor;
                for step in 0..40 {
                    // the next float below m
                    m = if m > 0.0 {
                        f32::from_bits(m.to_bits() - 1)
                    } else if m == 0.0 {
                        -f32::from_bits(1)
                    } else {
                        f32::from_bits(m.to_bits() + 1)
                    };
                    let mm = if step < 20 {
                        m
                    } else {
                        floor - (step as f32) * 0.37
                    };
                    if mm >= floor {
                        continue;
                    }
                    let s = pp.combine(ps, pp.transform(mm));
                    assert!(
                        s < thr,
                        "{pp:?} ps {ps} thr {thr} floor {floor} m {mm} -> {s}"
                    );
                }
            }
        }
        assert!(pruned > 50_000, "the bound is usually available ({pruned})");
    }
}
