//! Fallible allocation for buffers whose size comes from input: a shape, `k`, a beam width,
//! a label count, a file. A failed allocation becomes [`Error::Memory`] (a Python
//! `MemoryError`) instead of aborting the process, as `vec![v; n]` would.
//!
//! This catches what the allocator refuses (an address-space limit, a size no allocator can
//! serve). Where the operating system overcommits memory it may grant a request and kill the
//! process later when the pages are touched; no library can turn that into an exception.

use crate::{Error, Result};

fn refused<T>(n: usize, what: &str) -> Error {
    let bytes = (n as u128) * (std::mem::size_of::<T>() as u128);
    Error::Memory(format!(
        "cannot allocate {what}: {n} elements ({:.1} GiB)",
        bytes as f64 / f64::from(1u32 << 30)
    ))
}

/// An empty vector with room for `n` elements.
pub fn try_with_capacity<T>(n: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| refused::<T>(n, what))?;
    Ok(v)
}

/// `vec![value; n]`, or [`Error::Memory`] when the allocation fails.
pub fn try_vec<T: Clone>(n: usize, value: T, what: &str) -> Result<Vec<T>> {
    let mut v = try_with_capacity(n, what)?;
    v.resize(n, value);
    Ok(v)
}

/// `a * b`, or [`Error::Memory`] when the product overflows `usize` (a buffer of that many
/// elements can never be allocated).
pub fn checked_len(a: usize, b: usize, what: &str) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| {
        Error::Memory(format!(
            "cannot allocate {what}: {a} x {b} elements overflow the address space"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_sizes_are_errors_not_aborts() {
        assert!(matches!(
            try_vec(usize::MAX / 2, 0u64, "x"),
            Err(Error::Memory(_))
        ));
        assert!(matches!(
            try_with_capacity::<u32>(isize::MAX as usize, "x"),
            Err(Error::Memory(_))
        ));
        assert!(matches!(
            checked_len(usize::MAX, 2, "x"),
            Err(Error::Memory(_))
        ));
        assert_eq!(try_vec(3, 7u8, "x").unwrap(), vec![7, 7, 7]);
        assert_eq!(checked_len(3, 4, "x").unwrap(), 12);
    }
}
