//! Structural and numeric checks, and conversions from wider index types.

use rayon::prelude::*;

use crate::{Error, Result};

pub(crate) fn check_structure(
    n_rows: usize,
    n_cols: usize,
    indptr: &[u64],
    indices: &[u32],
    data: &[f32],
) -> Result<()> {
    if n_cols > u32::MAX as usize {
        return Err(Error::invalid(format!(
            "{n_cols} columns exceed the u32 index range"
        )));
    }
    if indptr.len() != n_rows + 1 {
        return Err(Error::shape(format!(
            "indptr has {} entries, expected n_rows + 1 = {}",
            indptr.len(),
            n_rows + 1
        )));
    }
    if indices.len() != data.len() {
        return Err(Error::shape(format!(
            "indices has {} entries but data has {}",
            indices.len(),
            data.len()
        )));
    }
    if indptr[0] != 0 {
        return Err(Error::invalid(format!(
            "indptr[0] must be 0, got {}",
            indptr[0]
        )));
    }
    if indptr[n_rows] != indices.len() as u64 {
        return Err(Error::invalid(format!(
            "indptr[-1] = {} but there are {} stored entries",
            indptr[n_rows],
            indices.len()
        )));
    }
    if let Some(i) = indptr.windows(2).position(|w| w[0] > w[1]) {
        return Err(Error::invalid(format!(
            "indptr is not monotone: indptr[{}] = {} > indptr[{}] = {}",
            i,
            indptr[i],
            i + 1,
            indptr[i + 1]
        )));
    }
    let n = n_cols as u32;
    if let Some(p) = indices
        .par_iter()
        .with_min_len(1 << 16)
        .position_any(|&j| j >= n)
    {
        let p = first_bad(indices, |&j| j >= n).unwrap_or(p);
        let row = indptr.partition_point(|&s| s <= p as u64) - 1;
        return Err(Error::invalid(format!(
            "column index {} in row {} is out of range for {} columns",
            indices[p], row, n_cols
        )));
    }
    Ok(())
}

/// Errors unless every value is finite (no NaN, no infinity).
pub fn check_finite(data: &[f32], what: &str) -> Result<()> {
    if data
        .par_iter()
        .with_min_len(1 << 16)
        .any(|v| !v.is_finite())
    {
        let p = first_bad(data, |v| !v.is_finite()).unwrap_or(0);
        return Err(Error::invalid(format!(
            "{what} contains a non-finite value ({}) at stored entry {p}",
            data[p]
        )));
    }
    Ok(())
}

/// Converts an indptr of signed 64-bit or 32-bit integers, checking it is non-negative.
pub fn convert_indptr<T: Copy + Into<i64> + Sync>(indptr: &[T]) -> Result<Vec<u64>> {
    indptr
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let v: i64 = v.into();
            u64::try_from(v).map_err(|_| Error::invalid(format!("indptr[{i}] = {v} is negative")))
        })
        .collect()
}

/// Converts int64 indices to u32, checking `0 <= j < n_cols`.
pub fn convert_indices_i64(indices: &[i64], n_cols: usize) -> Result<Vec<u32>> {
    let bad = |&j: &i64| j < 0 || j as u64 >= n_cols as u64;
    if let Some(p) = first_bad(indices, bad) {
        return Err(Error::invalid(format!(
            "column index {} at stored entry {p} is out of range for {n_cols} columns",
            indices[p]
        )));
    }
    Ok(indices
        .par_iter()
        .with_min_len(1 << 16)
        .map(|&j| j as u32)
        .collect())
}

fn first_bad<T: Sync>(xs: &[T], bad: impl Fn(&T) -> bool + Sync + Send) -> Option<usize> {
    xs.par_iter().with_min_len(1 << 16).position_first(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_errors_are_reported() {
        assert!(check_structure(1, 2, &[0, 1], &[1], &[1.0]).is_ok());
        assert!(check_structure(2, 2, &[0, 1], &[1], &[1.0]).is_err());
        assert!(check_structure(1, 2, &[1, 1], &[1], &[1.0]).is_err());
        assert!(check_structure(1, 2, &[0, 2], &[1], &[1.0]).is_err());
        let e = check_structure(2, 2, &[0, 1, 2], &[1, 5], &[1.0, 1.0]).unwrap_err();
        assert!(e.to_string().contains("row 1"), "{e}");
        assert!(check_structure(2, 2, &[0, 2, 1], &[1, 0], &[1.0, 1.0]).is_err());
        assert!(check_structure(0, 0, &[0], &[], &[]).is_ok());
    }

    #[test]
    fn conversions_check_ranges() {
        assert_eq!(convert_indptr(&[0i32, 2, 3]).unwrap(), vec![0, 2, 3]);
        assert!(convert_indptr(&[0i64, -2]).is_err());
        assert_eq!(convert_indices_i64(&[0, 4], 5).unwrap(), vec![0, 4]);
        assert!(convert_indices_i64(&[0, 5], 5).is_err());
        assert!(convert_indices_i64(&[-1], 5).is_err());
        assert!(check_finite(&[1.0, f32::NAN], "X").is_err());
        assert!(check_finite(&[1.0, 2.0], "X").is_ok());
    }
}
