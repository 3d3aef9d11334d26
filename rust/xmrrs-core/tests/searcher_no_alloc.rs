//! The real-time path: once warm, `Searcher::search` allocates nothing and starts no
//! threads (a counting global allocator and the process's thread count are watched).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use xmrrs_core::cluster::ClusterTree;
use xmrrs_core::sparse::Csr;
use xmrrs_core::xr::infer::{Kernel, PredictParams, Searcher};
use xmrrs_core::xr::model::{LayoutParams, XrModel};
use xmrrs_core::xr::{LayerWeights, PostProcessor};

struct Counting;

thread_local! {
    /// Allocations made by this thread (the test harness allocates on other threads).
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

fn allocs() -> usize {
    ALLOCS.with(|c| c.get())
}

// SAFETY: forwards every call to the system allocator unchanged; only counts allocations.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn lcg(s: &mut u64) -> u64 {
    *s = s
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *s >> 33
}

fn model(d: usize, merge: usize) -> XrModel {
    // root -> 5 nodes -> 60 labels
    let tree = ClusterTree::from_parts(
        vec![vec![0, 5]],
        vec![0, 10, 22, 30, 45, 60],
        (0..60).rev().collect(),
    )
    .unwrap();
    let mut s = 7u64;
    let mut layer = |child_ptr: Vec<u32>| {
        let n = *child_ptr.last().unwrap() as usize;
        let mut trip = Vec::new();
        for c in 0..n as u32 {
            for _ in 0..lcg(&mut s) % 20 {
                let f = (lcg(&mut s) % d as u64) as u32;
                trip.push((c, f, (lcg(&mut s) % 1000) as f32 / 500.0 - 1.0));
            }
        }
        LayerWeights {
            dense: Vec::new(),
            n_dense: 0,
            child_ptr,
            weights: Csr::from_triplets(n, d, &trip).unwrap(),
            bias: (0..n).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect(),
        }
    };
    let layers = vec![layer(vec![0, 5]), layer(tree.leaf_ptr().to_vec())];
    let lp = LayoutParams {
        merge_max_children: merge,
        ..LayoutParams::default()
    };
    XrModel::with_layout(&tree, &layers, d, &lp).unwrap()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

#[test]
fn warm_searcher_allocates_nothing_and_spawns_no_threads() {
    let d = 50;
    for (merge, kernel, pp) in [
        (0, Kernel::Auto, PostProcessor::Hinge(3)),
        (4096, Kernel::Scan, PostProcessor::Sigmoid),
        (0, Kernel::Merge, PostProcessor::Noop),
    ] {
        let m = model(d, merge);
        let params = PredictParams {
            beam_size: 3,
            topk: 7,
            post_processor: pp,
            kernel,
        };
        let queries: Vec<(Vec<u32>, Vec<f32>)> = (0..50u32)
            .map(|q| {
                let idx: Vec<u32> = (0..d as u32).filter(|f| (f * 7 + q * 3) % 5 == 0).collect();
                let val = idx.iter().map(|&f| 1.0 / (1.0 + f as f32)).collect();
                (idx, val)
            })
            .collect();
        let mut s = Searcher::new();
        let (mut ids, mut sc) = (vec![0i64; 7], vec![0f32; 7]);
        for (qi, qv) in &queries {
            s.search(&m, qi, qv, &params, &mut ids, &mut sc).unwrap();
        }
        let t0 = threads();
        let a0 = allocs();
        for _ in 0..3 {
            for (qi, qv) in &queries {
                let n = s.search(&m, qi, qv, &params, &mut ids, &mut sc).unwrap();
                assert!(n >= 1);
            }
        }
        assert_eq!(allocs(), a0, "allocations in a warm search");
        assert_eq!(threads(), t0, "threads started by a search");
    }
}
