//! Thread pools chosen by an sklearn-style `n_jobs`.
//!
//! Pools are cached per thread count and rebuilt in a child process after `fork`, so a
//! forked worker (multiprocessing, joblib's loky excepted) never waits on threads that do not
//! exist in it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::{Error, Result};

/// Resolves `n_jobs` to a thread count: `None` and `-1` mean every core, `k > 0` means `k`,
/// `-k` means `cores + 1 - k` (at least 1); `0` is an error.
pub fn resolve_n_jobs(n_jobs: Option<i64>) -> Result<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    match n_jobs {
        None => Ok(cores as usize),
        Some(0) => Err(Error::invalid(
            "n_jobs == 0 is not allowed; use None, -1 or a positive count",
        )),
        Some(k) if k > 0 => Ok(k as usize),
        Some(k) => Ok((cores + 1 + k).max(1) as usize),
    }
}

struct PoolCache {
    pid: u32,
    pools: HashMap<usize, Arc<rayon::ThreadPool>>,
}

fn cache() -> &'static Mutex<PoolCache> {
    static CACHE: OnceLock<Mutex<PoolCache>> = OnceLock::new();
    CACHE.get_or_init(|| {
        Mutex::new(PoolCache {
            pid: std::process::id(),
            pools: HashMap::new(),
        })
    })
}

/// Returns a shared pool with `threads` workers, building it on first use.
pub fn pool(threads: usize) -> Result<Arc<rayon::ThreadPool>> {
    let threads = threads.max(1);
    let mut guard = cache()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let pid = std::process::id();
    if guard.pid != pid {
        // After fork the parent's worker threads are gone: forget (and leak) the old pools.
        let old = std::mem::take(&mut guard.pools);
        std::mem::forget(old);
        guard.pid = pid;
    }
    if let Some(p) = guard.pools.get(&threads) {
        return Ok(Arc::clone(p));
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("xmrrs-{i}"))
        .build()
        .map_err(|e| Error::invalid(format!("cannot start {threads} threads: {e}")))?;
    let p = Arc::new(p);
    guard.pools.insert(threads, Arc::clone(&p));
    Ok(p)
}

/// Runs `f` inside the pool for `n_jobs`.
pub fn install<R: Send>(n_jobs: Option<i64>, f: impl FnOnce() -> R + Send) -> Result<R> {
    let p = pool(resolve_n_jobs(n_jobs)?)?;
    Ok(p.install(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_jobs_rules() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(resolve_n_jobs(None).unwrap(), cores);
        assert_eq!(resolve_n_jobs(Some(-1)).unwrap(), cores);
        assert_eq!(resolve_n_jobs(Some(3)).unwrap(), 3);
        assert_eq!(resolve_n_jobs(Some(-1000)).unwrap(), 1);
        assert!(resolve_n_jobs(Some(0)).is_err());
    }

    #[test]
    fn pool_runs_with_requested_threads() {
        let n = install(Some(2), rayon::current_num_threads).unwrap();
        assert_eq!(n, 2);
    }
}
