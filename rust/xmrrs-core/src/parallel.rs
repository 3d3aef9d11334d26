//! Thread pools chosen by an sklearn-style `n_jobs`.
//!
//! Pools are cached per thread count, at most [`MAX_POOLS`] of them (the least recently used
//! is dropped, and its threads exit once no call uses it), and rebuilt in a child process
//! after `fork`, so a forked worker (multiprocessing, joblib's loky excepted) never waits on
//! threads that do not exist in it.

use std::sync::{Arc, Mutex, OnceLock};

use crate::{Error, Result};

/// Most threads one pool gets, whatever `n_jobs` asks (results do not depend on it).
pub const MAX_THREADS: usize = 1024;

/// Resolves `n_jobs` to a thread count: `None` and `-1` mean every core, `k > 0` means `k`
/// (at most [`MAX_THREADS`]), `-k` means `cores + 1 - k` (at least 1); `0` is an error.
pub fn resolve_n_jobs(n_jobs: Option<i64>) -> Result<usize> {
    match n_jobs {
        None => Ok(cores() as usize),
        Some(0) => Err(Error::invalid(
            "n_jobs == 0 is not allowed; use None, -1 or a positive count",
        )),
        Some(k) if k > 0 => Ok(usize::try_from(k).map_or(MAX_THREADS, |k| k.min(MAX_THREADS))),
        Some(k) => Ok(cores().saturating_add(1).saturating_add(k).max(1) as usize),
    }
}

/// The cores available to the process, read once (asking the system reads cgroup files,
/// tens of microseconds: a one-row query's whole time).
fn cores() -> i64 {
    static CORES: OnceLock<i64> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()) as i64)
}

/// Most pools kept alive at once (distinct `n_jobs` values in use).
pub const MAX_POOLS: usize = 4;

struct PoolCache {
    pid: u32,
    /// `(threads, pool)`, most recently used last.
    pools: Vec<(usize, Arc<rayon::ThreadPool>)>,
}

fn cache() -> &'static Mutex<PoolCache> {
    static CACHE: OnceLock<Mutex<PoolCache>> = OnceLock::new();
    CACHE.get_or_init(|| {
        Mutex::new(PoolCache {
            pid: std::process::id(),
            pools: Vec::new(),
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
    if let Some(i) = guard.pools.iter().position(|(t, _)| *t == threads) {
        let entry = guard.pools.remove(i);
        let p = Arc::clone(&entry.1);
        guard.pools.push(entry);
        return Ok(p);
    }
    if guard.pools.len() >= MAX_POOLS {
        guard.pools.remove(0);
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("xmrrs-{i}"))
        .build()
        .map_err(|e| Error::invalid(format!("cannot start {threads} threads: {e}")))?;
    let p = Arc::new(p);
    guard.pools.push((threads, Arc::clone(&p)));
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
        assert_eq!(resolve_n_jobs(Some(i64::MIN)).unwrap(), 1);
        assert_eq!(resolve_n_jobs(Some(i64::MAX)).unwrap(), MAX_THREADS);
        assert!(resolve_n_jobs(Some(0)).is_err());
    }

    #[test]
    fn at_most_max_pools_are_kept() {
        for t in 1..=MAX_POOLS + 3 {
            assert_eq!(
                install(Some(t as i64), rayon::current_num_threads).unwrap(),
                t
            );
        }
        let kept: Vec<usize> = cache().lock().unwrap().pools.iter().map(|p| p.0).collect();
        assert!(kept.len() <= MAX_POOLS, "{kept:?}");
        assert!(kept.contains(&(MAX_POOLS + 3)), "{kept:?}");
    }

    #[test]
    fn pool_runs_with_requested_threads() {
        let n = install(Some(2), rayon::current_num_threads).unwrap();
        assert_eq!(n, 2);
    }
}
