//! Multithreaded sparse kernels. Each runs on the current rayon pool (see
//! [`crate::parallel::install`]) and gives the same result whatever the thread count.

use std::ops::Range;

use rayon::prelude::*;

use super::{check_finite, Csr, CsrView};
use crate::alloc::{checked_len, try_vec};
use crate::{simd, Error, Result};

/// Splits `0..prefix.len()-1` into at most `parts` contiguous ranges of about equal weight,
/// where item `i` weighs `prefix[i+1] - prefix[i]` (plus one, so empty items still count).
pub fn balanced_ranges(prefix: &[u64], parts: usize) -> Vec<Range<usize>> {
    let n = prefix.len().saturating_sub(1);
    if n == 0 {
        return vec![];
    }
    let parts = parts.clamp(1, n);
    let total = prefix[n] - prefix[0] + n as u64;
    let mut out = Vec::with_capacity(parts);
    let mut start = 0usize;
    for p in 1..=parts {
        let end = if p == parts {
            n
        } else {
            let target = prefix[0] + total * p as u64 / parts as u64;
            // first i with prefix[i] + i >= target
            let (mut lo, mut hi) = (start, n);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if prefix[mid] + mid as u64 >= target {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            lo.max(start)
        };
        if end > start {
            out.push(start..end);
            start = end;
        }
    }
    if start < n {
        out.push(start..n);
    }
    out
}

pub(crate) fn default_parts(n: usize) -> usize {
    (rayon::current_num_threads() * 4).min(n.max(1))
}

/// Output of one block of rows: entries and the length of each row.
#[derive(Default)]
struct Block {
    row_len: Vec<u64>,
    indices: Vec<u32>,
    data: Vec<f32>,
}

/// Builds a CSR matrix block by block: `fill(range, &mut block)` appends the rows of `range`
/// in order. Blocks run in parallel and are concatenated in order.
pub(crate) fn build_rows<F>(n_rows: usize, n_cols: usize, ranges: Vec<Range<usize>>, fill: F) -> Csr
where
    F: Fn(Range<usize>, &mut Vec<u64>, &mut Vec<u32>, &mut Vec<f32>) + Sync,
{
    let blocks: Vec<Block> = ranges
        .into_par_iter()
        .map(|r| {
            let mut b = Block::default();
            fill(r, &mut b.row_len, &mut b.indices, &mut b.data);
            b
        })
        .collect();
    concat_blocks(n_rows, n_cols, blocks)
}

/// [`build_rows`] with a fallible `fill` (the first error is returned).
pub(crate) fn try_build_rows<F>(
    n_rows: usize,
    n_cols: usize,
    ranges: Vec<Range<usize>>,
    fill: F,
) -> Result<Csr>
where
    F: Fn(Range<usize>, &mut Vec<u64>, &mut Vec<u32>, &mut Vec<f32>) -> Result<()> + Sync,
{
    let blocks: Vec<Block> = ranges
        .into_par_iter()
        .map(|r| {
            let mut b = Block::default();
            fill(r, &mut b.row_len, &mut b.indices, &mut b.data)?;
            Ok(b)
        })
        .collect::<Result<_>>()?;
    Ok(concat_blocks(n_rows, n_cols, blocks))
}

fn concat_blocks(n_rows: usize, n_cols: usize, blocks: Vec<Block>) -> Csr {
    let nnz: usize = blocks.iter().map(|b| b.indices.len()).sum();
    let mut indptr = Vec::with_capacity(n_rows + 1);
    let mut indices = Vec::with_capacity(nnz);
    let mut data = Vec::with_capacity(nnz);
    indptr.push(0u64);
    let mut acc = 0u64;
    for b in blocks {
        for l in b.row_len {
            acc += l;
            indptr.push(acc);
        }
        indices.extend_from_slice(&b.indices);
        data.extend_from_slice(&b.data);
    }
    debug_assert_eq!(indptr.len(), n_rows + 1);
    Csr {
        n_rows,
        n_cols,
        indptr,
        indices,
        data,
    }
}

/// Sorts each row by column and sums duplicates (explicit zeros are kept).
pub fn canonicalize(a: &CsrView<'_>) -> Csr {
    let ranges = balanced_ranges(a.indptr(), default_parts(a.n_rows()));
    build_rows(a.n_rows(), a.n_cols(), ranges, |r, lens, idx, val| {
        let mut pairs: Vec<(u32, f32)> = Vec::new();
        for i in r {
            let (ri, rv) = a.row(i);
            let before = idx.len();
            if ri.windows(2).all(|w| w[0] < w[1]) {
                idx.extend_from_slice(ri);
                val.extend_from_slice(rv);
            } else {
                pairs.clear();
                pairs.extend(ri.iter().copied().zip(rv.iter().copied()));
                pairs.sort_by_key(|p| p.0); // stable: duplicates summed in stored order
                for &(j, v) in &pairs {
                    if idx.len() > before && *idx.last().unwrap_or(&u32::MAX) == j {
                        *val.last_mut().expect("non-empty") += v;
                    } else {
                        idx.push(j);
                        val.push(v);
                    }
                }
            }
            lens.push((idx.len() - before) as u64);
        }
    })
}

/// A raw pointer that may be shared between threads that write to disjoint positions.
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
// SAFETY: only used for writes to provably disjoint positions (see `transpose`).
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

/// The transpose `A^T` in CSR form (equivalently, `A` in CSC form). Rows of the result are
/// sorted whenever... always: entries of each output row come in increasing source-row order.
/// Its row pointer has `A.n_cols + 1` entries: [`Error::Memory`] when they cannot be allocated.
pub fn transpose(a: &CsrView<'_>) -> Result<Csr> {
    let (n, m, nnz) = (a.n_rows(), a.n_cols(), a.nnz());
    let threads = rayon::current_num_threads();
    let parts = if nnz < (1 << 15) {
        1
    } else {
        threads.min((nnz / m.max(1)).max(1))
    };
    let ranges = if n == 0 {
        vec![]
    } else {
        balanced_ranges(a.indptr(), parts)
    };
    // Per-part column counts, turned into per-part write cursors.
    let mut cursors: Vec<Vec<u64>> = ranges
        .par_iter()
        .map(|r| {
            let mut c = try_vec(m, 0u64, "the column counts of a transpose")?;
            let span = a.indptr()[r.start] as usize..a.indptr()[r.end] as usize;
            for &j in &a.indices()[span] {
                c[j as usize] += 1;
            }
            Ok(c)
        })
        .collect::<Result<_>>()?;
    let mut indptr = try_vec(m + 1, 0u64, "the row pointer of a transpose")?;
    let mut acc = 0u64;
    for j in 0..m {
        indptr[j] = acc;
        for c in cursors.iter_mut() {
            let cnt = c[j];
            c[j] = acc;
            acc += cnt;
        }
    }
    indptr[m] = acc;
    let mut indices = try_vec(nnz, 0u32, "the indices of a transpose")?;
    let mut data = try_vec(nnz, 0f32, "the values of a transpose")?;
    let (pi, pd) = (
        SharedMut(indices.as_mut_ptr()),
        SharedMut(data.as_mut_ptr()),
    );
    ranges
        .par_iter()
        .zip(cursors.par_iter_mut())
        .for_each(move |(r, cur)| {
            let (pi, pd) = (pi, pd);
            for i in r.clone() {
                let (ri, rv) = a.row(i);
                for (&j, &v) in ri.iter().zip(rv) {
                    let p = cur[j as usize] as usize;
                    cur[j as usize] += 1;
                    // SAFETY: `p` lies in column j's slot range reserved for this part alone
                    // (cursors were laid out as disjoint per-part sub-ranges), and p < nnz.
                    unsafe {
                        *pi.0.add(p) = i as u32;
                        *pd.0.add(p) = v;
                    }
                }
            }
        });
    Ok(Csr {
        n_rows: m,
        n_cols: n,
        indptr,
        indices,
        data,
    })
}

/// Scales each row to unit L2 norm in place; all-zero rows are left as they are.
pub fn normalize_rows_l2(a: &mut Csr) {
    let ranges = balanced_ranges(&a.indptr, default_parts(a.n_rows));
    let indptr = &a.indptr;
    let mut rest: &mut [f32] = &mut a.data;
    let mut pieces = Vec::with_capacity(ranges.len());
    for r in &ranges {
        let len = (indptr[r.end] - indptr[r.start]) as usize;
        let (head, tail) = rest.split_at_mut(len);
        pieces.push((r.clone(), head));
        rest = tail;
    }
    pieces.into_par_iter().for_each(|(r, vals)| {
        let base = indptr[r.start] as usize;
        for i in r {
            normalize_l2(&mut vals[indptr[i] as usize - base..indptr[i + 1] as usize - base]);
        }
    });
}

/// Whether every row of `a` already has unit L2 norm (squared norm within `1e-5` of 1, in
/// f64) or stores no non-zero value: [`normalize_rows_l2`] would then change values by a
/// rounding error at most, and a copy can be spared.
pub fn rows_are_unit_l2(a: &CsrView<'_>) -> bool {
    (0..a.n_rows()).into_par_iter().all(|i| {
        let ss = squared_norm(a.row(i).1);
        ss == 0.0 || (ss - 1.0).abs() <= 1e-5
    })
}

/// Sum of squares, accumulated in f64.
fn squared_norm(row: &[f32]) -> f64 {
    row.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
}

/// Scales `row` to unit L2 norm (sum of squares in f64; an all-zero row is left as is).
/// [`normalize_rows_l2`] applies it to every row, so both give the same bits. A norm too
/// small for a normal f32 (values around 1e-38 and below) would be rounded to a few bits
/// of precision there, so such a row is divided in f64.
pub fn normalize_l2(row: &mut [f32]) {
    let ss = squared_norm(row);
    if ss > 0.0 {
        let norm = ss.sqrt();
        if norm >= f64::from(f32::MIN_POSITIVE) {
            let norm = norm as f32;
            for v in row.iter_mut() {
                *v /= norm;
            }
        } else {
            for v in row.iter_mut() {
                *v = (f64::from(*v) / norm) as f32;
            }
        }
    }
}

/// `a` with every row that stores no entry set to the sparse row `(cols, vals)`, in one
/// allocation of the result (`cols` strictly increasing and `< n_cols`; other rows copied).
pub fn fill_empty_rows(a: &CsrView<'_>, cols: &[u32], vals: &[f32]) -> Result<Csr> {
    if cols.len() != vals.len() {
        return Err(Error::shape(format!(
            "fill row has {} columns but {} values",
            cols.len(),
            vals.len()
        )));
    }
    if cols.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::invalid(
            "fill row columns must be strictly increasing",
        ));
    }
    if cols.last().is_some_and(|&c| c as usize >= a.n_cols()) {
        return Err(Error::invalid("fill row column out of range"));
    }
    check_finite(vals, "fill row")?;
    let n_empty = (0..a.n_rows())
        .filter(|&i| a.row_range(i).is_empty())
        .count();
    let nnz = a.nnz() + n_empty * cols.len();
    let mut indptr = Vec::with_capacity(a.n_rows() + 1);
    let mut indices = Vec::with_capacity(nnz);
    let mut data = Vec::with_capacity(nnz);
    indptr.push(0u64);
    for i in 0..a.n_rows() {
        let (c, v) = a.row(i);
        if c.is_empty() {
            indices.extend_from_slice(cols);
            data.extend_from_slice(vals);
        } else {
            indices.extend_from_slice(c);
            data.extend_from_slice(v);
        }
        indptr.push(indices.len() as u64);
    }
    Ok(Csr {
        n_rows: a.n_rows(),
        n_cols: a.n_cols(),
        indptr,
        indices,
        data,
    })
}

/// Sparse x sparse product `A B` (Gustavson, parallel over rows of `A`, balanced by work).
/// Within a row, products are summed in the order scipy uses; exact zeros are dropped.
pub fn spgemm(a: &CsrView<'_>, b: &CsrView<'_>) -> Result<Csr> {
    if a.n_cols() != b.n_rows() {
        return Err(Error::shape(format!(
            "cannot multiply ({}, {}) by ({}, {})",
            a.n_rows(),
            a.n_cols(),
            b.n_rows(),
            b.n_cols()
        )));
    }
    let work: Vec<u64> = (0..a.n_rows())
        .into_par_iter()
        .with_min_len(1024)
        .map(|i| {
            a.row(i)
                .0
                .iter()
                .map(|&k| b.indptr()[k as usize + 1] - b.indptr()[k as usize])
                .sum()
        })
        .collect();
    let mut prefix = Vec::with_capacity(work.len() + 1);
    prefix.push(0u64);
    for w in &work {
        prefix.push(prefix.last().copied().unwrap_or(0) + w);
    }
    let m = b.n_cols();
    let ranges = balanced_ranges(&prefix, default_parts(a.n_rows()));
    try_build_rows(a.n_rows(), m, ranges, |r, lens, idx, val| {
        let mut acc = try_vec(m, 0f32, "the accumulator of a sparse product")?;
        let mut mark = try_vec(m, usize::MAX, "the accumulator of a sparse product")?;
        let mut touched: Vec<u32> = Vec::new();
        for i in r {
            touched.clear();
            let (ai, av) = a.row(i);
            for (&k, &x) in ai.iter().zip(av) {
                let (bi, bv) = b.row(k as usize);
                for (&j, &y) in bi.iter().zip(bv) {
                    let j = j as usize;
                    if mark[j] != i {
                        mark[j] = i;
                        acc[j] = x * y;
                        touched.push(j as u32);
                    } else {
                        acc[j] += x * y;
                    }
                }
            }
            let before = idx.len();
            if touched.len() * 8 > m {
                for j in 0..m {
                    if mark[j] == i && acc[j] != 0.0 {
                        idx.push(j as u32);
                        val.push(acc[j]);
                    }
                }
            } else {
                touched.sort(); // stable sort merges the sorted runs that rows of B leave
                for &j in &touched {
                    let v = acc[j as usize];
                    if v != 0.0 {
                        idx.push(j);
                        val.push(v);
                    }
                }
            }
            lens.push((idx.len() - before) as u64);
        }
        Ok(())
    })
}

/// Sparse x dense product `A B` with `B` row-major `(A.n_cols, k)`; returns row-major
/// `(A.n_rows, k)`.
pub fn csr_dense(a: &CsrView<'_>, b: &[f32], k: usize) -> Result<Vec<f32>> {
    if b.len() != a.n_cols() * k {
        return Err(Error::shape(format!(
            "dense operand has {} values, expected {} x {}",
            b.len(),
            a.n_cols(),
            k
        )));
    }
    let mut out = try_vec(
        checked_len(a.n_rows(), k, "a dense product")?,
        0f32,
        "a dense product",
    )?;
    if k == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(k)
        .with_min_len(64)
        .enumerate()
        .for_each(|(i, o)| {
            let (ri, rv) = a.row(i);
            for (&j, &v) in ri.iter().zip(rv) {
                let j = j as usize;
                simd::axpy(v, &b[j * k..(j + 1) * k], o);
            }
        });
    Ok(out)
}

/// Row-wise sparse dot against a dense block: `A W^T` with `W` row-major `(m, A.n_cols)`;
/// returns row-major `(A.n_rows, m)`.
pub fn csr_dot_dense_rows(a: &CsrView<'_>, w: &[f32], m: usize) -> Result<Vec<f32>> {
    let d = a.n_cols();
    if w.len() != m * d {
        return Err(Error::shape(format!(
            "dense block has {} values, expected {m} x {d}",
            w.len()
        )));
    }
    let mut out = try_vec(
        checked_len(a.n_rows(), m, "a dense product")?,
        0f32,
        "a dense product",
    )?;
    if m == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(m)
        .with_min_len(16)
        .enumerate()
        .for_each(|(i, o)| {
            let (ri, rv) = a.row(i);
            for (r, slot) in o.iter_mut().enumerate() {
                let wr = &w[r * d..(r + 1) * d];
                let mut s = [0f32; 4];
                let mut ci = ri.chunks_exact(4);
                let mut cv = rv.chunks_exact(4);
                for (jj, vv) in (&mut ci).zip(&mut cv) {
                    for l in 0..4 {
                        s[l] += vv[l] * wr[jj[l] as usize];
                    }
                }
                for (&j, &v) in ci.remainder().iter().zip(cv.remainder()) {
                    s[0] += v * wr[j as usize];
                }
                *slot = (s[0] + s[2]) + (s[1] + s[3]);
            }
        });
    Ok(out)
}

/// Rows `rows` of `A` (repeats allowed), in that order.
pub fn row_gather(a: &CsrView<'_>, rows: &[usize]) -> Result<Csr> {
    if let Some(&bad) = rows.iter().find(|&&r| r >= a.n_rows()) {
        return Err(Error::invalid(format!(
            "row index {bad} is out of range for {} rows",
            a.n_rows()
        )));
    }
    let mut prefix = Vec::with_capacity(rows.len() + 1);
    prefix.push(0u64);
    for &r in rows {
        prefix.push(prefix.last().copied().unwrap_or(0) + a.row_range(r).len() as u64);
    }
    let ranges = balanced_ranges(&prefix, default_parts(rows.len()));
    Ok(build_rows(
        rows.len(),
        a.n_cols(),
        ranges,
        |r, lens, idx, val| {
            for &src in &rows[r] {
                let (ri, rv) = a.row(src);
                idx.extend_from_slice(ri);
                val.extend_from_slice(rv);
                lens.push(ri.len() as u64);
            }
        },
    ))
}

/// Columns `cols` of `A` (repeats allowed), in that order: output column `t` is input column
/// `cols[t]`. Output rows are canonical when the input rows are.
pub fn col_gather(a: &CsrView<'_>, cols: &[u32]) -> Result<Csr> {
    let m = a.n_cols();
    if let Some(&bad) = cols.iter().find(|&&c| c as usize >= m) {
        return Err(Error::invalid(format!(
            "column index {bad} is out of range for {m} columns"
        )));
    }
    if cols.len() > u32::MAX as usize {
        return Err(Error::invalid("too many columns requested"));
    }
    // start[c]..start[c+1] lists the output positions of input column c, increasing.
    let mut start = try_vec(m + 1, 0u32, "the column map of a gather")?;
    for &c in cols {
        start[c as usize + 1] += 1;
    }
    for c in 0..m {
        start[c + 1] += start[c];
    }
    let mut next = start.clone();
    let mut newpos = vec![0u32; cols.len()];
    for (t, &c) in cols.iter().enumerate() {
        newpos[next[c as usize] as usize] = t as u32;
        next[c as usize] += 1;
    }
    let ordered = cols.windows(2).all(|w| w[0] < w[1]);
    let ranges = balanced_ranges(a.indptr(), default_parts(a.n_rows()));
    Ok(build_rows(
        a.n_rows(),
        cols.len(),
        ranges,
        |r, lens, idx, val| {
            let mut pairs: Vec<(u32, f32)> = Vec::new();
            for i in r {
                let (ri, rv) = a.row(i);
                let before = idx.len();
                if ordered {
                    for (&j, &v) in ri.iter().zip(rv) {
                        let s = start[j as usize] as usize;
                        if start[j as usize + 1] as usize > s {
                            idx.push(newpos[s]);
                            val.push(v);
                        }
                    }
                } else {
                    pairs.clear();
                    for (&j, &v) in ri.iter().zip(rv) {
                        for &t in
                            &newpos[start[j as usize] as usize..start[j as usize + 1] as usize]
                        {
                            pairs.push((t, v));
                        }
                    }
                    pairs.sort_by_key(|p| p.0);
                    for &(t, v) in &pairs {
                        idx.push(t);
                        val.push(v);
                    }
                }
                lens.push((idx.len() - before) as u64);
            }
        },
    ))
}

/// Orders `(score, id)` pairs best first: higher score, then lower id. Scores compare
/// numerically (`-0.0 == 0.0`); NaN (never present in validated input) ties with everything.
#[inline]
pub fn by_score_desc(x: (f32, u32), y: (f32, u32)) -> std::cmp::Ordering {
    y.0.partial_cmp(&x.0)
        .unwrap_or(std::cmp::Ordering::Equal)
        .then(x.1.cmp(&y.1))
}

/// Per-row top-k of a score matrix, best first: ids (`-1` padding) and scores (`-inf`
/// padding), each row-major `(n_rows, k)`. Ties go to the lower column index. The caller
/// caps `k` (at most `n_cols` entries can be stored per row); [`Error::Memory`] when the
/// output cannot be allocated.
pub fn topk(a: &CsrView<'_>, k: usize) -> Result<(Vec<i64>, Vec<f32>)> {
    let n = a.n_rows();
    let len = checked_len(n, k, "the top-k output")?;
    let mut ids = try_vec(len, -1i64, "the top-k ids")?;
    let mut scores = try_vec(len, f32::NEG_INFINITY, "the top-k scores")?;
    if k == 0 {
        return Ok((ids, scores));
    }
    ids.par_chunks_mut(k)
        .zip(scores.par_chunks_mut(k))
        .enumerate()
        .with_min_len(64)
        .for_each_init(Vec::new, |buf: &mut Vec<(f32, u32)>, (i, (oid, osc))| {
            let (ri, rv) = a.row(i);
            buf.clear();
            buf.extend(rv.iter().copied().zip(ri.iter().copied()));
            let better = |x: &(f32, u32), y: &(f32, u32)| by_score_desc(*x, *y);
            if buf.len() > k {
                buf.select_nth_unstable_by(k - 1, better);
                buf.truncate(k);
            }
            buf.sort_unstable_by(better);
            for (t, &(s, j)) in buf.iter().enumerate() {
                oid[t] = i64::from(j);
                osc[t] = s;
            }
        });
    Ok((ids, scores))
}

/// Keeps the `k` largest entries of each row (ties to the lower column); rows stay sorted by
/// column.
pub fn topk_csr(a: &CsrView<'_>, k: usize) -> Csr {
    let ranges = balanced_ranges(a.indptr(), default_parts(a.n_rows()));
    build_rows(a.n_rows(), a.n_cols(), ranges, |r, lens, idx, val| {
        let mut buf: Vec<(f32, u32)> = Vec::new();
        for i in r {
            let (ri, rv) = a.row(i);
            if ri.len() <= k {
                idx.extend_from_slice(ri);
                val.extend_from_slice(rv);
                lens.push(ri.len() as u64);
                continue;
            }
            buf.clear();
            buf.extend(rv.iter().copied().zip(ri.iter().copied()));
            if k > 0 {
                buf.select_nth_unstable_by(k - 1, |x, y| by_score_desc(*x, *y));
            }
            buf.truncate(k);
            buf.sort_unstable_by_key(|p| p.1);
            for &(s, j) in buf.iter() {
                idx.push(j);
                val.push(s);
            }
            lens.push(k as u64);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::install;

    /// Rows whose norm is below the normal f32 range (subnormal values) still come out at
    /// unit norm: an f32 norm there keeps only a few bits (1e-45 twice gave [1, 1]).
    #[test]
    fn normalize_l2_is_accurate_for_tiny_rows() {
        for v in [1e-45f32, 1e-42, 3e-41, 1e-39, 1e-38, 1e-30, 0.5] {
            let mut row = [v, v];
            normalize_l2(&mut row);
            for x in row {
                assert!(
                    (x - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6,
                    "{v}: {row:?}"
                );
            }
        }
        let mut row = [1e-44f32, -3e-44, 0.0];
        normalize_l2(&mut row);
        let exact = [1.0f64, -3.0, 0.0].map(|x| x / 10f64.sqrt());
        for (x, e) in row.iter().zip(exact) {
            assert!((f64::from(*x) - e).abs() < 1e-6, "{row:?}");
        }
    }

    #[test]
    fn fill_empty_rows_replaces_only_empty_rows() {
        let a = Csr::new(
            4,
            5,
            vec![0, 0, 2, 2, 3],
            vec![1, 3, 4],
            vec![1.0, 2.0, 3.0],
        )
        .unwrap();
        let f = fill_empty_rows(&a.view(), &[0, 2], &[0.5, 0.25]).unwrap();
        assert_eq!(f.indptr, vec![0, 2, 4, 6, 7]);
        assert_eq!(f.indices, vec![0, 2, 1, 3, 0, 2, 4]);
        assert_eq!(f.data, vec![0.5, 0.25, 1.0, 2.0, 0.5, 0.25, 3.0]);
        assert!(fill_empty_rows(&a.view(), &[2, 0], &[1.0, 1.0]).is_err());
        assert!(fill_empty_rows(&a.view(), &[5], &[1.0]).is_err());
        assert!(fill_empty_rows(&a.view(), &[1], &[f32::NAN]).is_err());
        assert!(fill_empty_rows(&a.view(), &[1], &[]).is_err());
    }

    /// A small deterministic pseudo-random sparse matrix (may contain duplicates if `dups`).
    fn random_csr(n: usize, m: usize, density: f64, seed: u64, dups: bool) -> Csr {
        let mut s = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut indptr = vec![0u64];
        let mut indices = vec![];
        let mut data = vec![];
        for _ in 0..n {
            let mut row: Vec<u32> = (0..m as u32)
                .filter(|_| (next() % 1000) as f64 / 1000.0 < density)
                .collect();
            if dups && !row.is_empty() && next() % 3 == 0 {
                row.push(row[0]);
                row.reverse();
            }
            for j in row {
                indices.push(j);
                data.push(((next() % 200) as f32 - 100.0) / 16.0);
            }
            indptr.push(indices.len() as u64);
        }
        Csr::new(n, m, indptr, indices, data).unwrap()
    }

    fn dense_mul(a: &Csr, b: &Csr) -> Vec<f32> {
        let (ad, bd) = (a.to_dense(), b.to_dense());
        let (n, k, m) = (a.n_rows, a.n_cols, b.n_cols);
        let mut out = vec![0f32; n * m];
        for i in 0..n {
            for t in 0..k {
                for j in 0..m {
                    out[i * m + j] += ad[i * k + t] * bd[t * m + j];
                }
            }
        }
        out
    }

    #[test]
    fn balanced_ranges_cover_everything() {
        let prefix = [0u64, 5, 5, 5, 100, 101];
        for parts in 1..8 {
            let r = balanced_ranges(&prefix, parts);
            assert_eq!(r.first().unwrap().start, 0);
            assert_eq!(r.last().unwrap().end, 5);
            for w in r.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
        }
        assert!(balanced_ranges(&[0], 4).is_empty());
    }

    #[test]
    fn transpose_roundtrip_and_thread_independence() {
        for (n, m, d) in [(0, 3, 0.5), (3, 0, 0.5), (40, 30, 0.2), (500, 70, 0.3)] {
            let a = random_csr(n, m, d, 7, false);
            let t1 = install(Some(1), || transpose(&a.view())).unwrap().unwrap();
            let t3 = install(Some(3), || transpose(&a.view())).unwrap().unwrap();
            assert_eq!(t1, t3);
            assert_eq!((t1.n_rows, t1.n_cols), (m, n));
            let back = transpose(&t1.view()).unwrap();
            assert_eq!(back, a);
        }
    }

    #[test]
    fn canonicalize_sums_duplicates() {
        let a = Csr::new(2, 4, vec![0, 3, 4], vec![3, 1, 3], vec![1.0, 2.0, 4.0, 5.0]);
        assert!(a.is_err()); // indices/data lengths differ
        let a = Csr::new(
            2,
            4,
            vec![0, 3, 4],
            vec![3, 1, 3, 0],
            vec![1.0, 2.0, 4.0, 5.0],
        )
        .unwrap();
        assert!(!a.view().is_canonical());
        let c = a.view().canonicalize();
        assert_eq!(c.indptr, vec![0, 2, 3]);
        assert_eq!(c.indices, vec![1, 3, 0]);
        assert_eq!(c.data, vec![2.0, 5.0, 5.0]);
        assert!(c.view().is_canonical());
        let r = random_csr(50, 20, 0.3, 3, true);
        assert_eq!(r.view().canonicalize().to_dense(), r.to_dense());
    }

    #[test]
    fn spgemm_matches_dense() {
        let a = random_csr(37, 23, 0.2, 1, false);
        let b = random_csr(23, 41, 0.25, 2, false);
        let c = install(Some(2), || spgemm(&a.view(), &b.view()))
            .unwrap()
            .unwrap();
        assert!(c.view().is_canonical());
        let want = dense_mul(&a, &b);
        for (x, y) in c.to_dense().iter().zip(&want) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        assert!(spgemm(&b.view(), &b.view()).is_err());
    }

    #[test]
    fn csr_dense_and_dot_rows() {
        let a = random_csr(20, 9, 0.4, 4, false);
        let k = 5;
        let b: Vec<f32> = (0..9 * k).map(|t| (t as f32 * 0.37).sin()).collect();
        let out = csr_dense(&a.view(), &b, k).unwrap();
        let ad = a.to_dense();
        for i in 0..20 {
            for j in 0..k {
                let want: f32 = (0..9).map(|t| ad[i * 9 + t] * b[t * k + j]).sum();
                assert!((out[i * k + j] - want).abs() < 1e-4);
            }
        }
        // W is (k, 9): reuse b transposed
        let mut w = vec![0f32; k * 9];
        for t in 0..9 {
            for j in 0..k {
                w[j * 9 + t] = b[t * k + j];
            }
        }
        let out2 = csr_dot_dense_rows(&a.view(), &w, k).unwrap();
        for (x, y) in out.iter().zip(&out2) {
            assert!((x - y).abs() < 1e-4);
        }
        assert!(csr_dense(&a.view(), &b[1..], k).is_err());
    }

    #[test]
    fn gathers() {
        let a = random_csr(10, 8, 0.5, 5, false);
        let g = row_gather(&a.view(), &[3, 3, 0, 9]).unwrap();
        let ad = a.to_dense();
        let gd = g.to_dense();
        for (t, &src) in [3usize, 3, 0, 9].iter().enumerate() {
            assert_eq!(&gd[t * 8..(t + 1) * 8], &ad[src * 8..(src + 1) * 8]);
        }
        assert!(row_gather(&a.view(), &[10]).is_err());
        for cols in [vec![1u32, 4, 7], vec![7, 1, 1, 0]] {
            let c = col_gather(&a.view(), &cols).unwrap();
            assert!(c.view().is_canonical() || cols.windows(2).any(|w| w[0] == w[1]));
            let cd = c.to_dense();
            for i in 0..10 {
                for (t, &src) in cols.iter().enumerate() {
                    assert_eq!(cd[i * cols.len() + t], ad[i * 8 + src as usize]);
                }
            }
        }
        assert!(col_gather(&a.view(), &[8]).is_err());
    }

    #[test]
    fn topk_orders_and_pads() {
        let a = Csr::new(
            3,
            5,
            vec![0, 4, 4, 6],
            vec![0, 1, 2, 4, 1, 3],
            vec![0.5, 2.0, 0.5, 1.0, -1.0, -2.0],
        )
        .unwrap();
        let (ids, sc) = topk(&a.view(), 3).unwrap();
        assert_eq!(ids, vec![1, 4, 0, -1, -1, -1, 1, 3, -1]);
        assert_eq!(&sc[..3], &[2.0, 1.0, 0.5]);
        assert_eq!(sc[3], f32::NEG_INFINITY);
        let t = topk_csr(&a.view(), 2);
        assert_eq!(t.indptr, vec![0, 2, 2, 4]);
        assert_eq!(t.indices, vec![1, 4, 1, 3]);
    }

    #[test]
    fn normalize() {
        let mut a = random_csr(30, 10, 0.3, 9, false);
        normalize_rows_l2(&mut a);
        for i in 0..30 {
            let (_, v) = a.view().row(i);
            let s: f32 = v.iter().map(|x| x * x).sum();
            assert!(v.is_empty() || v.iter().all(|&x| x == 0.0) || (s - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn unit_rows_are_recognised() {
        let mut a = random_csr(30, 10, 0.3, 9, false);
        assert!(!install(Some(2), || rows_are_unit_l2(&a.view())).unwrap());
        normalize_rows_l2(&mut a);
        assert!(install(Some(2), || rows_are_unit_l2(&a.view())).unwrap());
        // one row off by 1% is enough to say no
        let i = (0..30).find(|&i| a.indptr[i + 1] > a.indptr[i]).unwrap();
        a.data[a.indptr[i] as usize] *= 1.01;
        assert!(!install(Some(2), || rows_are_unit_l2(&a.view())).unwrap());
    }
}
