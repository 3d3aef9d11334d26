//! Times the lock-step group solver on random data:
//! `cargo run --release -p xmrrs-core --example solver_bench -- ROWS FEATURES NNZ LANES [REPS]`
//! (prints time, lane visits and pass counts of the last three repetitions).
use std::time::Instant;

use xmrrs_core::cluster::SplitMix64;
use xmrrs_core::sparse::{normalize_rows_l2, Csr};
use xmrrs_core::xr::solver::{FeatureMap, GroupSolver, LocalCsr};
use xmrrs_core::xr::SolverParams;

fn main() -> xmrrs_core::Result<()> {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let (n, d, nnz, lanes) = (
        *a.first().unwrap_or(&50000),
        *a.get(1).unwrap_or(&35000),
        *a.get(2).unwrap_or(&42),
        *a.get(3).unwrap_or(&8),
    );
    let reps = *a.get(4).unwrap_or(&3);
    let mut rng = SplitMix64::new(1);
    let mut trip = Vec::new();
    let mut lab = Vec::new();
    for i in 0..n {
        let l = rng.below(lanes as u64) as usize;
        lab.push(l);
        for _ in 0..nnz {
            // features correlated with the label, the rest Zipf-like
            let j = if rng.next_f64() < 0.3 {
                (l * 97 + rng.below(50) as usize) % d
            } else {
                // Zipf-like: log-uniform rank
                ((d as f64).powf(rng.next_f64()) as usize).saturating_sub(1) % d
            };
            trip.push((i as u32, j as u32, 1.0f32));
        }
    }
    let mut x = Csr::from_triplets(n, d, &trip)?;
    normalize_rows_l2(&mut x);
    let rows: Vec<u32> = (0..n as u32).collect();
    let local = LocalCsr::gather(&x.view(), &rows, &mut FeatureMap::new(d))?;
    let params = SolverParams::default();
    let mut gs = GroupSolver::new();
    for rep in 0..reps {
        gs.reset(n, lanes, true, 1.0, 1.0);
        for (i, &l) in lab.iter().enumerate() {
            gs.set(i, l, true, 1.0);
        }
        let t = Instant::now();
        let info = gs.solve(&local, &params, 7)?;
        let s = t.elapsed().as_secs_f64();
        let visits: u64 = info.iter().map(|i| i.visits).sum();
        let iters: Vec<u32> = info.iter().take(lanes).map(|i| i.iters).collect();
        if rep + 3 < reps {
            continue;
        }
        println!(
            "rep {rep}: {s:.3} s, lane visits {visits}, {:.1} ns per lane-visit, {:.2} ns per lane-visit-nnz, passes {iters:?}",
            s * 1e9 / visits as f64,
            s * 1e9 / visits as f64 / x.nnz() as f64 * n as f64
        );
    }
    Ok(())
}
