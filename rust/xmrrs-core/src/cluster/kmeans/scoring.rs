//! Scoring a node's members against its centroids (cosine or Euclidean), row by row through
//! SIMD kernels chosen once per chunk.

use rayon::prelude::*;

use super::centroids::{AlignedBuf, Centroids};
use super::colmajor::{score_block_dispatch, ColMajor};
use super::duplicates::NO_DUP;
use super::rows::{lane_stride, Rows};
use crate::simd::CACHE_BYTES;

/// What scoring a node's members needs besides the centroids.
pub(super) struct Scoring<'a, R: Rows> {
    pub(super) rows: &'a R,
    pub(super) norms: &'a [f32],
    pub(super) spherical: bool,
    pub(super) c: usize,
    pub(super) min_len: usize,
    pub(super) dup: Option<&'a [u32]>,
    pub(super) colmajor: Option<&'a ColMajor>,
}

impl<R: Rows> Scoring<'_, R> {
    /// Fills `scores` (`n x c`) from the centroid sums and their [`Centroids::factors`]
    /// (`counts`: cluster sizes, none for seeds): cosine for spherical, `x.mu - |mu|^2/2`
    /// for Euclidean (`mu` the mean). By columns when the node has a [`ColMajor`] copy, else
    /// row by row; a duplicate member gets its first copy's scores.
    pub(super) fn run(&self, cent: &Centroids, counts: Option<&[usize]>, scores: &mut [f32]) {
        let (c, cp, dup) = (self.c, cent.cp, self.dup);
        let (mult, offset) = cent.factors(self.spherical, counts);
        let wide = wide_simd();
        let is_copy = |k: usize| dup.is_some_and(|dp| dp[k] != NO_DUP && dp[k] != k as u32);
        let finish = |k: usize, out: &mut [f32]| {
            for (v, &f) in out.iter_mut().zip(&mult) {
                *v *= f;
            }
            if self.spherical {
                if self.norms[k] > 0.0 {
                    let inv = 1.0 / self.norms[k];
                    out.iter_mut().for_each(|v| *v *= inv);
                }
            } else {
                for (v, &o) in out.iter_mut().zip(&offset) {
                    *v -= o;
                }
            }
        };
        if let Some(cm) = self.colmajor {
            let per = cm.blocks.first().map_or(1, |b| b.len.max(1));
            scores
                .par_chunks_mut(per * c)
                .zip(&cm.blocks)
                .for_each(|(sc, blk)| {
                    let s = lane_stride(cp);
                    let mut buf = AlignedBuf::zeros(blk.len * s);
                    let buf = buf.as_mut_slice();
                    score_block_dispatch(blk, cent.t.as_slice(), cp, buf, wide);
                    for (i, (out, src)) in sc.chunks_mut(c).zip(buf.chunks(s)).enumerate() {
                        let k = blk.start + i;
                        if !is_copy(k) {
                            out.copy_from_slice(&src[..c]);
                            finish(k, out);
                        }
                    }
                });
        } else {
            let chunk = self.min_len.clamp(1, self.rows.len().max(1));
            scores
                .par_chunks_mut(chunk * c)
                .enumerate()
                .for_each(|(b, sc)| {
                    let k0 = b * chunk;
                    // every lane of a member, so the kernels store whole registers
                    let mut buf = vec![0f32; sc.len() / c * cp];
                    let t = cent.t.as_slice();
                    score_rows(self.rows, k0, t, (cp, c), &mut buf, is_copy, wide);
                    for (i, (out, src)) in sc.chunks_mut(c).zip(buf.chunks(cp)).enumerate() {
                        if !is_copy(k0 + i) {
                            out.copy_from_slice(&src[..c]);
                            finish(k0 + i, out);
                        }
                    }
                });
        }
        if let Some(dp) = dup {
            // a duplicate's first copy is an earlier member, already scored
            for (k, &f) in dp.iter().enumerate() {
                if f != NO_DUP && f != k as u32 {
                    scores.copy_within(f as usize * c..(f as usize + 1) * c, k * c);
                }
            }
        }
    }
}

/// Whether [`score_rows`] may use its AVX2 copy (checked once per call site).
#[inline]
fn wide_simd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[i * cp..(i + 1) * cp] = x_{k0 + i} . W` (all `cp` lanes, of which the first `c` are
/// scores) for the members of a chunk except those `skip` names (`W` interleaved with `cp`
/// lanes per column), through a copy compiled with AVX2 when `wide` (from [`wide_simd`]).
/// The kernel is chosen once per chunk; every variant performs the same multiplications and
/// additions in the same order (AVX2 only, no FMA contraction), so the scores are
/// bit-identical whichever runs.
#[inline]
fn score_rows<R: Rows, F: Fn(usize) -> bool>(
    rows: &R,
    k0: usize,
    wt: &[f32],
    (cp, c): (usize, usize),
    out: &mut [f32],
    skip: F,
    wide: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if wide {
            // SAFETY: `wide` comes from `wide_simd`, which checked that the CPU has AVX2.
            unsafe { score_rows_avx2(rows, k0, wt, (cp, c), out, skip) };
            return;
        }
    }
    let _ = wide;
    score_rows_plain(rows, k0, wt, (cp, c), out, skip);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn score_rows_avx2<R: Rows, F: Fn(usize) -> bool>(
    rows: &R,
    k0: usize,
    wt: &[f32],
    lanes: (usize, usize),
    out: &mut [f32],
    skip: F,
) {
    score_rows_plain(rows, k0, wt, lanes, out, skip);
}

#[inline(always)]
fn score_rows_plain<R: Rows, F: Fn(usize) -> bool>(
    rows: &R,
    k0: usize,
    wt: &[f32],
    (cp, c): (usize, usize),
    out: &mut [f32],
    skip: F,
) {
    let pf = wt.len().saturating_mul(4) > CACHE_BYTES;
    let members = out.chunks_mut(cp.max(1)).enumerate();
    macro_rules! fixed {
        ($($n:literal),*) => {
            match cp {
                $($n if c <= $n && pf => {
                    for (i, o) in members {
                        if !skip(k0 + i) {
                            rows.scores_n::<$n, true>(k0 + i, wt, o);
                        }
                    }
                })*
                $($n if c <= $n => {
                    for (i, o) in members {
                        if !skip(k0 + i) {
                            rows.scores_n::<$n, false>(k0 + i, wt, o);
                        }
                    }
                })*
                _ => {
                    for (i, o) in members {
                        if !skip(k0 + i) {
                            rows.scores_t(k0 + i, wt, cp, o);
                        }
                    }
                }
            }
        };
    }
    fixed!(1, 2, 4, 8, 16)
}
