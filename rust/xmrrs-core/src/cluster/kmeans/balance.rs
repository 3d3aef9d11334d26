//! Balanced assignment: members to clusters under per-cluster capacities, greedily by margin.

use rayon::prelude::*;

/// Greedy-by-margin assignment under per-cluster capacities `hi` (sum >= n); with
/// `fill_empty`, an empty cluster then takes the member with the largest gain from clusters
/// with more than one member.
pub(super) fn assign_capacity(
    scores: &[f32],
    n: usize,
    c: usize,
    hi: &[usize],
    fill_empty: bool,
    min_len: usize,
) -> Vec<u16> {
    let margin: Vec<f32> = scores
        .par_chunks(c)
        .with_min_len(min_len)
        .map(|s| {
            let (mut b1, mut b2) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
            for &v in s {
                if v > b1 {
                    b2 = b1;
                    b1 = v;
                } else if v > b2 {
                    b2 = v;
                }
            }
            b1 - b2
        })
        .collect();
    let mut order: Vec<u32> = (0..n as u32).collect();
    let cmp = |a: &u32, b: &u32| {
        margin[*b as usize]
            .total_cmp(&margin[*a as usize])
            .then(a.cmp(b))
    };
    if n >= 1 << 15 {
        order.par_sort_unstable_by(cmp);
    } else {
        order.sort_unstable_by(cmp);
    }
    let mut count = vec![0usize; c];
    let mut assign = vec![0u16; n];
    for &k in &order {
        let s = &scores[k as usize * c..(k as usize + 1) * c];
        let mut best = usize::MAX;
        for j in 0..c {
            if count[j] < hi[j] && (best == usize::MAX || s[j] > s[best]) {
                best = j;
            }
        }
        // sum(hi) >= n guarantees room somewhere
        let best = if best == usize::MAX { 0 } else { best };
        count[best] += 1;
        assign[k as usize] = best as u16;
    }
    if fill_empty {
        for j in 0..c {
            if count[j] > 0 {
                continue;
            }
            let mut pick: Option<(f32, usize)> = None;
            for k in 0..n {
                let a = assign[k] as usize;
                if count[a] <= 1 {
                    continue;
                }
                let gain = scores[k * c + j] - scores[k * c + a];
                if pick.is_none_or(|(g, _)| gain > g) {
                    pick = Some((gain, k));
                }
            }
            if let Some((_, k)) = pick {
                count[assign[k] as usize] -= 1;
                count[j] += 1;
                assign[k] = j as u16;
            }
        }
    }
    assign
}
