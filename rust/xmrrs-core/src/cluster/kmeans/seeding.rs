//! k-means++ seeding, on a sample of the node's members.

use rayon::prelude::*;

use super::duplicates::NO_DUP;
use super::rows::Rows;
use crate::cluster::rng::SplitMix64;

/// k-means++ seeding runs on at most `max(SEED_SAMPLE_PER_CLUSTER * c, SEED_SAMPLE_MIN)`
/// members, drawn without replacement from the node's stream.
pub(super) const SEED_SAMPLE_PER_CLUSTER: usize = 64;
pub(super) const SEED_SAMPLE_MIN: usize = 2048;

/// `m < n` distinct positions of `0..n`, drawn uniformly (partial Fisher-Yates on `rng`),
/// in increasing order.
pub(super) fn sample_positions(n: usize, m: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut pos: Vec<usize> = (0..n).collect();
    for i in 0..m {
        let j = i + rng.below((n - i) as u64) as usize;
        pos.swap(i, j);
    }
    pos.truncate(m);
    pos.sort_unstable();
    pos
}

/// The members of every column of sparse rows (an inverted index), each column's members in
/// increasing position.
struct Inverted {
    ptr: Vec<usize>,
    member: Vec<u32>,
    value: Vec<f32>,
}

impl Inverted {
    /// `None` for dense rows. Members that copy an earlier one (`dup`) are left out.
    fn build<R: Rows>(rows: &R, dup: Option<&[u32]>) -> Option<Self> {
        let (n, d) = (rows.len(), rows.dim());
        let skip = |k: usize| dup.is_some_and(|dp| dp[k] != NO_DUP && dp[k] != k as u32);
        let mut ptr = vec![0usize; d + 1];
        for k in (0..n).filter(|&k| !skip(k)) {
            for &j in rows.sparse_row(k)?.0 {
                ptr[j as usize + 1] += 1;
            }
        }
        for j in 0..d {
            ptr[j + 1] += ptr[j];
        }
        let mut next = ptr.clone();
        let mut member = vec![0u32; ptr[d]];
        let mut value = vec![0f32; ptr[d]];
        for k in (0..n).filter(|&k| !skip(k)) {
            let (ri, rv) = rows.sparse_row(k)?;
            for (&j, &v) in ri.iter().zip(rv) {
                let p = &mut next[j as usize];
                member[*p] = k as u32;
                value[*p] = v;
                *p += 1;
            }
        }
        Some(Inverted { ptr, member, value })
    }
}

/// k-means++ seeding: `c` distinct member positions.
pub(super) fn kmeanspp<R: Rows>(
    rows: &R,
    dup: Option<&[u32]>,
    c: usize,
    norms: &[f32],
    spherical: bool,
    min_len: usize,
    rng: &mut SplitMix64,
) -> Vec<usize> {
    let n = rows.len();
    let d = rows.dim();
    let mut chosen = vec![false; n];
    let first = rng.below(n as u64) as usize;
    let mut seeds = vec![first];
    chosen[first] = true;
    let mut dist = vec![f32::INFINITY; n];
    let mut score = vec![0f32; n];
    // sparse rows: a round visits only the members sharing a column with the newest seed,
    // and of identical members only the first (the others copy its score)
    let inverted = Inverted::build(rows, dup);
    let mut center = if inverted.is_some() {
        Vec::new()
    } else {
        vec![0f32; d]
    };
    while seeds.len() < c {
        let last = *seeds.last().unwrap_or(&first);
        let cn = norms[last];
        match (&inverted, rows.sparse_row(last)) {
            (Some(ix), Some((ri, rv))) => {
                // per member, the products are added in column order, as the dense gather
                // below does (whose other terms are zeros), so the scores are the same
                score.fill(0.0);
                for (&j, &w) in ri.iter().zip(rv) {
                    let span = ix.ptr[j as usize]..ix.ptr[j as usize + 1];
                    for (&k, &v) in ix.member[span.clone()].iter().zip(&ix.value[span]) {
                        score[k as usize] += v * w;
                    }
                }
                if let Some(dp) = dup {
                    for (k, &f) in dp.iter().enumerate() {
                        if f != NO_DUP && f != k as u32 {
                            score[k] = score[f as usize];
                        }
                    }
                }
            }
            _ => {
                center.fill(0.0);
                rows.add_to(last, 0..d, 1.0, &mut center);
                // `center` as a 1-column interleaved matrix is `center` itself
                score
                    .par_iter_mut()
                    .with_min_len(min_len)
                    .enumerate()
                    .for_each(|(k, s)| {
                        let mut o = [0f32];
                        rows.scores_t(k, &center, 1, &mut o);
                        *s = o[0];
                    });
            }
        }
        dist.par_iter_mut()
            .with_min_len(min_len)
            .enumerate()
            .for_each(|(k, dk)| {
                let e = if spherical {
                    let denom = norms[k] * cn;
                    let cos = if denom > 0.0 { score[k] / denom } else { 0.0 };
                    (2.0 - 2.0 * cos).max(0.0)
                } else {
                    (norms[k] * norms[k] - 2.0 * score[k] + cn * cn).max(0.0)
                };
                if e < *dk {
                    *dk = e;
                }
            });
        let total: f64 = dist
            .iter()
            .zip(&chosen)
            .filter(|(_, &ch)| !ch)
            .map(|(&v, _)| f64::from(v))
            .sum();
        let next = if total > 0.0 && total.is_finite() {
            let target = rng.next_f64() * total;
            let mut acc = 0f64;
            let mut pick = None;
            let mut last_ok = None;
            for k in 0..n {
                if chosen[k] || dist[k] <= 0.0 {
                    continue;
                }
                last_ok = Some(k);
                acc += f64::from(dist[k]);
                if acc > target {
                    pick = Some(k);
                    break;
                }
            }
            pick.or(last_ok)
        } else {
            None
        };
        let next = match next {
            Some(k) => k,
            None => {
                // every remaining member coincides with a seed: take a random unchosen one
                let free = n - seeds.len();
                let r = rng.below(free as u64) as usize;
                (0..n).filter(|&k| !chosen[k]).nth(r).unwrap_or(0)
            }
        };
        chosen[next] = true;
        seeds.push(next);
    }
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_sample_is_distinct_sorted_and_reproducible() {
        let mut r1 = SplitMix64::new(9);
        let mut r2 = SplitMix64::new(9);
        let a = sample_positions(5000, 2048, &mut r1);
        assert_eq!(a, sample_positions(5000, 2048, &mut r2));
        assert_eq!(a.len(), 2048);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && *a.last().unwrap() < 5000);
    }
}
