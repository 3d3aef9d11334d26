//! Scoring by columns: a node's rows copied column by column in blocks of members, for nodes
//! whose centroid table would not stay in cache.

use rayon::prelude::*;

use super::duplicates::NO_DUP;
use super::rows::Rows;

/// A node's rows stored column by column, in blocks of members, for scoring by columns
/// ([`score_block`]): block `b` covers members `starts[b]..starts[b + 1]` and lists, for each
/// column any of them uses (increasing), their positions and values (increasing position).
/// Duplicates (see [`local_duplicates`](super::duplicates::local_duplicates)) are left out: their
/// scores are copied.
pub(super) struct ColMajor {
    pub(super) blocks: Vec<ColBlock>,
}

pub(super) struct ColBlock {
    pub(super) start: usize,
    pub(super) len: usize,
    pub(super) cols: Vec<u32>,
    pub(super) ptr: Vec<u32>,
    pub(super) member: Vec<u32>,
    pub(super) value: Vec<f32>,
}

/// Bytes of per-block scores ([`ColMajor`]) meant to stay in a core's cache.
const COL_BLOCK_BYTES: usize = 256 << 10;
/// A node is scored by columns when its sums exceed [`CACHE_BYTES`](crate::simd::CACHE_BYTES), it
/// has fewer members than `1 / COL_MEMBER_RATIO` of its columns and at most `COL_MAX_NNZ` stored
/// values (the copy costs 8 bytes per value).
const COL_MEMBER_RATIO: usize = 2;
const COL_MAX_NNZ: usize = 1 << 24;

impl ColMajor {
    /// `None` when the rows are dense, or the node is too large or has too few columns.
    /// `lanes`: floats of scores per member (sizes the blocks).
    pub(super) fn build<R: Rows>(
        rows: &R,
        dup: Option<&[u32]>,
        lanes: usize,
        par: bool,
    ) -> Option<Self> {
        Self::build_blocks(
            rows,
            dup,
            (COL_BLOCK_BYTES / (4 * lanes.max(1))).max(1),
            par,
        )
    }

    /// [`ColMajor::build`] with `per` members per block.
    fn build_blocks<R: Rows>(rows: &R, dup: Option<&[u32]>, per: usize, par: bool) -> Option<Self> {
        let (n, d) = (rows.len(), rows.dim());
        if n == 0 || n.saturating_mul(COL_MEMBER_RATIO) > d || d > u32::MAX as usize {
            return None;
        }
        rows.sparse_row(0)?;
        let keep = |k: usize| dup.is_none_or(|dp| dp[k] == NO_DUP || dp[k] == k as u32);
        let nnz: usize = (0..n)
            .filter(|&k| keep(k))
            .map(|k| rows.sparse_row(k).map_or(0, |r| r.0.len()))
            .sum();
        if nnz > COL_MAX_NNZ {
            return None;
        }
        let build = |b: usize| -> ColBlock {
            let (start, end) = (b * per, ((b + 1) * per).min(n));
            let mut count = vec![0u32; d];
            let mut total = 0usize;
            for k in (start..end).filter(|&k| keep(k)) {
                let (ri, _) = rows.sparse_row(k).unwrap_or((&[], &[]));
                for &j in ri {
                    count[j as usize] += 1;
                }
                total += ri.len();
            }
            let mut cols = Vec::new();
            let mut ptr = vec![0u32];
            // `count[j]` becomes the next free slot of column j
            for (j, cnt) in count.iter_mut().enumerate() {
                if *cnt > 0 {
                    let at = *ptr.last().unwrap_or(&0);
                    cols.push(j as u32);
                    ptr.push(at + *cnt);
                    *cnt = at;
                }
            }
            let mut member = vec![0u32; total];
            let mut value = vec![0f32; total];
            for k in (start..end).filter(|&k| keep(k)) {
                let (ri, rv) = rows.sparse_row(k).unwrap_or((&[], &[]));
                for (&j, &v) in ri.iter().zip(rv) {
                    let slot = &mut count[j as usize];
                    member[*slot as usize] = (k - start) as u32;
                    value[*slot as usize] = v;
                    *slot += 1;
                }
            }
            ColBlock {
                start,
                len: end - start,
                cols,
                ptr,
                member,
                value,
            }
        };
        let nb = n.div_ceil(per);
        let blocks = if par {
            (0..nb).into_par_iter().map(build).collect()
        } else {
            (0..nb).map(build).collect()
        };
        Some(ColMajor { blocks })
    }
}

/// Scores of a [`ColBlock`]'s members, `out[i * S..i * S + N] = x_{start + i} . W` (`W`
/// interleaved with `N` lanes per column; `out` has `S >= N` lanes per member, a power of two
/// so that a member's lanes fill whole registers and lines, the extra ones computed with zero
/// weights), visiting the columns in increasing order: per member the same products added in
/// the same order as `sparse_scores` (in `rows.rs`).
#[inline(always)]
fn score_block<const N: usize, const S: usize>(blk: &ColBlock, wt: &[f32], out: &mut [f32]) {
    for (ci, &j) in blk.cols.iter().enumerate() {
        let j = j as usize * N;
        let Some(w) = wt.get(j..j + N) else {
            continue;
        };
        let w: [f32; S] = std::array::from_fn(|l| if l < N { w[l] } else { 0.0 });
        let span = blk.ptr[ci] as usize..blk.ptr[ci + 1] as usize;
        for (&k, &v) in blk.member[span.clone()].iter().zip(&blk.value[span]) {
            let k = k as usize * S;
            if let Some(o) = out.get_mut(k..k + S) {
                for l in 0..S {
                    o[l] += v * w[l];
                }
            }
        }
    }
}

/// [`score_block`] for the lane stride `cp` (`out` with
/// [`lane_stride`](super::rows::lane_stride)`(cp)` lanes per member), through a copy compiled with
/// AVX2 when `wide` (same operations, same order).
pub(super) fn score_block_dispatch(
    blk: &ColBlock,
    wt: &[f32],
    cp: usize,
    out: &mut [f32],
    wide: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if wide {
            // SAFETY: `wide` comes from `wide_simd`, which checked that the CPU has AVX2.
            unsafe { score_block_avx2(blk, wt, cp, out) };
            return;
        }
    }
    let _ = wide;
    score_block_plain(blk, wt, cp, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn score_block_avx2(blk: &ColBlock, wt: &[f32], cp: usize, out: &mut [f32]) {
    score_block_plain(blk, wt, cp, out);
}

#[inline(always)]
fn score_block_plain(blk: &ColBlock, wt: &[f32], cp: usize, out: &mut [f32]) {
    macro_rules! fixed {
        ($($n:literal => $s:literal),*) => {
            match cp {
                $($n => score_block::<$n, $s>(blk, wt, out),)*
                _ => score_block_any(blk, wt, cp, out),
            }
        };
    }
    fixed!(1 => 1, 2 => 2, 3 => 4, 4 => 4, 5 => 8, 6 => 8, 7 => 8, 8 => 8, 9 => 16, 10 => 16,
        11 => 16, 12 => 16, 13 => 16, 14 => 16, 15 => 16, 16 => 16)
}

/// [`score_block`] for any stride.
fn score_block_any(blk: &ColBlock, wt: &[f32], cp: usize, out: &mut [f32]) {
    for (ci, &j) in blk.cols.iter().enumerate() {
        let w = &wt[j as usize * cp..(j as usize + 1) * cp];
        for p in blk.ptr[ci] as usize..blk.ptr[ci + 1] as usize {
            let k = blk.member[p] as usize * cp;
            let v = blk.value[p];
            for (o, &wl) in out[k..k + cp].iter_mut().zip(w) {
                *o += v * wl;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::kmeans::centroids::Centroids;
    use crate::cluster::kmeans::duplicates::{duplicate_groups, local_duplicates};
    use crate::cluster::kmeans::params::ZView;
    use crate::cluster::kmeans::rows::SparseRows;
    use crate::cluster::kmeans::scoring::Scoring;
    use crate::cluster::kmeans::testutil::random_sparse;

    #[test]
    fn column_scoring_and_duplicates_give_the_row_scores() {
        let z = random_sparse(700, 3000, 30, 4, 7);
        let members: Vec<u32> = (0..700).step_by(2).chain((1..700).step_by(6)).collect();
        let mut members = members;
        members.sort_unstable();
        let g = duplicate_groups(&ZView::Sparse(z.view()));
        let dup = local_duplicates(&g, &members);
        assert!(dup.is_some());
        let rows = SparseRows {
            z: z.view(),
            members: Some(&members),
        };
        let n = rows.len();
        let norms: Vec<f32> = (0..n)
            .map(|k| {
                let (_, rv) = rows.sparse_row(k).unwrap();
                (rv.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() as f32).sqrt()
            })
            .collect();
        for (c, spherical) in [(13, true), (5, false), (2, true), (20, true)] {
            let mut cent = Centroids::new(c, 3000, true);
            let ops: Vec<Vec<(u32, bool)>> = (0..c)
                .map(|j| {
                    (0..n as u32)
                        .filter(|k| *k as usize % c == j)
                        .map(|k| (k, true))
                        .collect()
                })
                .collect();
            cent.recompute(&rows, &ops, false);
            // the column-scoring layout: c lanes, no padding (same sums)
            let mut tight = Centroids::new(c, 3000, false);
            tight.recompute(&rows, &ops, true);
            assert_eq!(tight.cp, c);
            assert_eq!(cent.ss, tight.ss);
            let counts: Vec<usize> = ops.iter().map(|o| o.len()).collect();
            assert!(ColMajor::build(&rows, dup.as_deref(), c, true).is_some());
            let cm = ColMajor::build_blocks(&rows, dup.as_deref(), 50, true).unwrap();
            assert_eq!(cm.blocks.len(), n.div_ceil(50));
            let run = |cent: &Centroids, dup: Option<&[u32]>, colmajor: Option<&ColMajor>| {
                let mut scores = vec![0f32; n * c];
                Scoring {
                    rows: &rows,
                    norms: &norms,
                    spherical,
                    c,
                    min_len: 16,
                    dup,
                    colmajor,
                }
                .run(cent, Some(&counts), &mut scores);
                scores
            };
            let by_rows = run(&cent, None, None);
            assert_eq!(by_rows, run(&cent, dup.as_deref(), None));
            assert_eq!(by_rows, run(&tight, dup.as_deref(), None));
            assert_eq!(by_rows, run(&cent, dup.as_deref(), Some(&cm)));
            assert_eq!(by_rows, run(&tight, dup.as_deref(), Some(&cm)));
            assert!(by_rows.iter().any(|&v| v != 0.0));
        }
    }
}
