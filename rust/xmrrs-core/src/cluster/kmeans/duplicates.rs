//! Identical label rows: found once for the whole tree, so that copies share their first copy's
//! scores and never count as moves.

use rayon::prelude::*;

use super::params::ZView;

/// Marks a member without an earlier identical member in its node.
pub(super) const NO_DUP: u32 = u32::MAX;

/// A fast hasher for `u32` keys (multiplicative; the keys are label ids).
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = (u64::from(i) ^ 0x5851_F42D_4C95_7F2D).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// For every label whose row has an identical copy (same columns and the same value bits),
/// the smallest label with that row; `NO_DUP` for the others.
pub(super) fn duplicate_groups(z: &ZView<'_>) -> Vec<u32> {
    let n = z.n_rows();
    let row_bits = |l: usize| -> (&[u32], &[f32]) {
        match z {
            ZView::Sparse(v) => v.row(l),
            ZView::Dense { data, dim, .. } => (&[], &data[l * dim..(l + 1) * dim]),
        }
    };
    let hashes: Vec<u64> = (0..n)
        .into_par_iter()
        .with_min_len(1024)
        .map(|l| {
            let (ri, rv) = row_bits(l);
            // (column, value bits) words, alternately into two independent lanes
            let word = |p: usize| {
                let j = ri.get(p).map_or(p as u64, |&j| u64::from(j));
                (j << 32) | u64::from(rv[p].to_bits())
            };
            let step = |h: u64, x: u64| (h ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
            let (mut a, mut b) = (
                crate::cluster::rng::mix64(rv.len() as u64),
                0x243F_6A88_85A3_08D3,
            );
            let pairs = rv.len() / 2;
            for p in 0..pairs {
                a = step(a, word(2 * p));
                b = step(b, word(2 * p + 1));
            }
            if rv.len() % 2 == 1 {
                a = step(a, word(rv.len() - 1));
            }
            crate::cluster::rng::mix64(a ^ b.rotate_left(17))
        })
        .collect();
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.par_sort_unstable_by_key(|&l| (hashes[l as usize], l));
    let same = |a: u32, b: u32| {
        let ((ai, av), (bi, bv)) = (row_bits(a as usize), row_bits(b as usize));
        ai == bi
            && av.len() == bv.len()
            && av.iter().zip(bv).all(|(x, y)| x.to_bits() == y.to_bits())
    };
    // the start of each run of equal hashes (in `order`, whose runs list ids increasing)
    let mut run_of = vec![0u32; n];
    for i in 1..n {
        let same_hash = hashes[order[i] as usize] == hashes[order[i - 1] as usize];
        run_of[i] = if same_hash { run_of[i - 1] } else { i as u32 };
    }
    // most rows of a run equal its first row: check those in parallel
    let equal_first: Vec<bool> = (0..n)
        .into_par_iter()
        .with_min_len(1024)
        .map(|i| {
            let r = run_of[i] as usize;
            r != i && same(order[r], order[i])
        })
        .collect();
    let mut group = vec![NO_DUP; n];
    let mut i = 0;
    while i < n {
        let mut e = i + 1;
        while e < n && run_of[e] as usize == i {
            e += 1;
        }
        if e - i > 1 {
            // each label joins the first earlier label with an equal row
            let mut firsts: Vec<u32> = vec![order[i]];
            for p in i + 1..e {
                let l = order[p];
                let f = if equal_first[p] {
                    Some(order[i])
                } else {
                    firsts.iter().copied().find(|&f| same(f, l))
                };
                match f {
                    Some(f) => {
                        group[l as usize] = f;
                        group[f as usize] = f;
                    }
                    None => firsts.push(l),
                }
            }
        }
        i = e;
    }
    group
}

/// For each member of a node (`seg`, label ids) whose row has a copy among the members, the
/// position of the first such member (itself for the first); `NO_DUP` for the others.
/// `None` when no two members are identical.
pub(super) fn local_duplicates(groups: &[u32], seg: &[u32]) -> Option<Vec<u32>> {
    if groups.is_empty() {
        return None;
    }
    let mut first: std::collections::HashMap<u32, u32, std::hash::BuildHasherDefault<IdHasher>> =
        Default::default();
    let mut dup = vec![NO_DUP; seg.len()];
    let mut any = false;
    for (k, &l) in seg.iter().enumerate() {
        let g = groups[l as usize];
        if g == NO_DUP {
            continue;
        }
        let f = *first.entry(g).or_insert(k as u32);
        dup[k] = f;
        any |= f != k as u32;
    }
    any.then_some(dup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparse::Csr;

    #[test]
    fn duplicate_rows_are_grouped_by_first_copy() {
        // rows 0 and 2 and 4 equal, 1 and 3 equal, 5 differs from 0 only by a value bit
        let trip = [
            (0, 1, 0.5f32),
            (0, 3, 0.25),
            (1, 0, 1.0),
            (2, 1, 0.5),
            (2, 3, 0.25),
            (3, 0, 1.0),
            (4, 1, 0.5),
            (4, 3, 0.25),
            (5, 1, 0.5),
            (5, 3, f32::from_bits(0.25f32.to_bits() + 1)),
            (6, 2, 1.0),
        ];
        let z = Csr::from_triplets(7, 4, &trip).unwrap();
        let g = duplicate_groups(&ZView::Sparse(z.view()));
        assert_eq!(g, vec![0, 1, 0, 1, 0, NO_DUP, NO_DUP]);
        // a node holding labels 2, 3, 4, 5, 6 and 1: positions of the first copies
        let d = local_duplicates(&g, &[1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(d, vec![0, 1, 0, 1, NO_DUP, NO_DUP]);
        assert!(local_duplicates(&g, &[0, 1, 5]).is_none());
        let data = [1.0f32, 2.0, 1.0, 2.0, 1.0, 3.0];
        let dense = ZView::Dense {
            data: &data,
            n_rows: 3,
            dim: 2,
        };
        assert_eq!(duplicate_groups(&dense), vec![0, 0, NO_DUP]);
    }
}
