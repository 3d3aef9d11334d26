//! XR-Linear end to end on XC-format files: PIFA + hierarchical k-means + training +
//! beam-search prediction, with the time of each phase and the peak RSS.
//!
//! `cargo run --release -p xmrrs-core --example xr_train -- DATA_DIR [threads] [options]`
//!
//! `DATA_DIR` holds `train.txt` and `test.txt`. Options (PECOS's defaults otherwise):
//! `--neg tfn|man|tfn+man`, `--loss l2|l1|lr`, `--beam 10` (prediction, and `man` unless
//! `--man-beam` is given), `--man-beam B`, `--max-leaf 100` (k-means leaf size), `--threshold 0.1`,
//! `--max-iter 100`, `--tol 0.1`, `--seed 0`, `--tree FILE` (use this tree instead of
//! building one: one line per level, top first, each the space-separated parent id of every
//! node of that level, the last line the leaf of every label; see
//! `ClusterTree::from_assignments`).
use std::path::Path;
use std::time::Instant;

use xmrrs_core::cluster::{hierarchical_kmeans, ClusterTree, KMeansParams, ZView};
use xmrrs_core::io::xc::{read_file, ReadOptions};
use xmrrs_core::sparse::{self, Csr};
use xmrrs_core::xr::train::{predict_beam, train_layers_with_stats, TrainParams};
use xmrrs_core::xr::{Loss, Negatives, PostProcessor};
use xmrrs_core::{parallel, Error, Result};

/// CPU seconds (user + system) of the process so far, from /proc/self/stat (10 ms ticks).
fn cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |p| p.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |k: usize| f.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Gives every all-zero row the direction of the mean of the other rows, keeping at most the
/// average row length of its largest entries (the rule of `xmrrs.indexing`).
fn fill_empty(z: &mut Csr) {
    let empty: Vec<usize> = (0..z.n_rows)
        .filter(|&i| z.indptr[i] == z.indptr[i + 1])
        .collect();
    if empty.is_empty() || empty.len() == z.n_rows {
        return;
    }
    let mut mean = vec![0f64; z.n_cols];
    for (&j, &v) in z.indices.iter().zip(&z.data) {
        mean[j as usize] += f64::from(v);
    }
    let mut nz: Vec<usize> = (0..z.n_cols).filter(|&j| mean[j] != 0.0).collect();
    let keep = z.nnz().div_ceil(z.n_rows - empty.len()).max(1);
    if nz.len() > keep {
        nz.sort_by(|&a, &b| mean[b].partial_cmp(&mean[a]).unwrap().then(a.cmp(&b)));
        nz.truncate(keep);
        nz.sort_unstable();
    }
    let norm = nz.iter().map(|&j| mean[j] * mean[j]).sum::<f64>().sqrt();
    if norm == 0.0 {
        return;
    }
    let fill: Vec<(u32, f32)> = nz
        .iter()
        .map(|&j| (j as u32, (mean[j] / norm) as f32))
        .collect();
    let mut out = Csr::zeros(z.n_rows, z.n_cols);
    out.indptr.clear();
    out.indptr.push(0);
    for i in 0..z.n_rows {
        let (ri, rv) = z.view().row(i);
        if ri.is_empty() {
            out.indices.extend(fill.iter().map(|e| e.0));
            out.data.extend(fill.iter().map(|e| e.1));
        } else {
            out.indices.extend_from_slice(ri);
            out.data.extend_from_slice(rv);
        }
        out.indptr.push(out.indices.len() as u64);
    }
    *z = out;
}

/// P@1, P@3, P@5 (a row without true labels scores 0).
fn precision(pred: &Csr, truth: &Csr) -> [f64; 3] {
    let mut out = [0f64; 3];
    let mut buf: Vec<(f32, u32)> = Vec::new();
    for i in 0..pred.n_rows {
        let (pi, pv) = pred.view().row(i);
        buf.clear();
        buf.extend(pv.iter().copied().zip(pi.iter().copied()));
        buf.sort_by(|a, b| sparse::by_score_desc(*a, *b));
        let (ti, _) = truth.view().row(i);
        for (o, k) in out.iter_mut().zip([1usize, 3, 5]) {
            let hits = buf
                .iter()
                .take(k)
                .filter(|e| ti.binary_search(&e.1).is_ok())
                .count();
            *o += hits as f64 / k as f64;
        }
    }
    out.map(|v| v / pred.n_rows.max(1) as f64)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "../shared/data/debian/deps".into());
    let threads: i64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let mut params = TrainParams::default();
    let mut beam = 10usize;
    params.man_beam_size = 0;
    let mut tree_file: Option<String> = None;
    let mut max_leaf_size = 100usize;
    let mut i = 3;
    while i + 1 < args.len() {
        let v = &args[i + 1];
        let bad = || Error::invalid(format!("bad value {v:?} for {}", args[i]));
        match args[i].as_str() {
            "--neg" => {
                params.negatives = Negatives {
                    tfn: v.contains("tfn"),
                    man: v.contains("man"),
                }
            }
            "--loss" => {
                params.solver.loss = match v.as_str() {
                    "l2" => Loss::SquaredHinge,
                    "l1" => Loss::Hinge,
                    "lr" => Loss::Logistic,
                    _ => return Err(bad()),
                }
            }
            "--beam" => beam = v.parse().map_err(|_| bad())?,
            "--man-beam" => params.man_beam_size = v.parse().map_err(|_| bad())?,
            "--threshold" => params.solver.threshold = v.parse().map_err(|_| bad())?,
            "--max-iter" => params.solver.max_iter = v.parse().map_err(|_| bad())?,
            "--tol" => params.solver.tol = v.parse().map_err(|_| bad())?,
            "--seed" => params.seed = v.parse().map_err(|_| bad())?,
            "--tree" => tree_file = Some(v.clone()),
            "--max-leaf" => max_leaf_size = v.parse().map_err(|_| bad())?,
            _ => return Err(Error::invalid(format!("unknown option {}", args[i]))),
        }
        i += 2;
    }
    if params.man_beam_size == 0 {
        params.man_beam_size = beam;
    }
    let opts = ReadOptions {
        header: true,
        ..Default::default()
    };
    let t = Instant::now();
    let train = read_file(&Path::new(&dir).join("train.txt"), &opts)?;
    let test = read_file(&Path::new(&dir).join("test.txt"), &opts)?;
    println!(
        "data {dir}: train {} x {} (nnz {}), {} labels; test {} rows; parse {:.2} s",
        train.x.n_rows,
        train.x.n_cols,
        train.x.nnz(),
        train.y.n_cols,
        test.x.n_rows,
        t.elapsed().as_secs_f64()
    );
    let (mut x, y) = (train.x, train.y);
    let mut xt = test.x;
    sparse::normalize_rows_l2(&mut x);
    sparse::normalize_rows_l2(&mut xt);

    parallel::install(Some(threads), || -> Result<()> {
        let t_all = Instant::now();
        let c_all = cpu_s();
        // PIFA: rows of Y L2-normalised, Z = Y^T X, rows of Z normalised, empty rows filled.
        let t = Instant::now();
        let mut yn = y.clone();
        sparse::normalize_rows_l2(&mut yn);
        let yt = sparse::transpose(&yn.view())?;
        drop(yn);
        let mut z = sparse::spgemm(&yt.view(), &x.view())?;
        drop(yt);
        sparse::normalize_rows_l2(&mut z);
        fill_empty(&mut z);
        let t_pifa = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let kp = KMeansParams {
            branching: 16,
            max_leaf_size,
            spherical: true,
            balanced: true,
            max_iter: 20,
            tol: 0.01,
            seed: 0,
            n_init: None,
            fanouts: None,
        };
        let tree = match &tree_file {
            None => hierarchical_kmeans(ZView::Sparse(z.view()), &kp)?,
            Some(f) => {
                let text = std::fs::read_to_string(f).map_err(|e| Error::Io {
                    path: f.clone(),
                    source: e,
                })?;
                let levels: Vec<Vec<u32>> = text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| {
                        l.split_whitespace()
                            .filter_map(|t| t.parse().ok())
                            .collect()
                    })
                    .collect();
                ClusterTree::from_assignments(&levels)?
            }
        };
        drop(z);
        let t_tree = t.elapsed().as_secs_f64();
        println!(
            "tree: nodes per level {:?}, {} labels",
            tree.n_nodes_per_level(),
            tree.n_labels()
        );
        let t = Instant::now();
        let c_train = cpu_s();
        let (layers, stats) = train_layers_with_stats(&x.view(), &y.view(), &tree, &params, None)?;
        let t_train = t.elapsed().as_secs_f64();
        let t_total = t_all.elapsed().as_secs_f64();
        let c_now = cpu_s();
        let (c_train, c_total) = (c_now - c_train, c_now - c_all);
        for (m, s) in stats.iter().enumerate() {
            println!(
                "  layer {m}: {} problems, {} instances, {:.2} passes/problem, {:.2} visits/instance, {} unconverged, \
                 {} weights, {:.3} thread-s, matching {:.3} s",
                s.n_problems,
                s.n_instances,
                s.n_passes as f64 / s.n_problems.max(1) as f64,
                s.n_visits as f64 / s.n_instances.max(1) as f64,
                s.n_unconverged,
                s.nnz,
                s.task_seconds,
                s.matching_seconds
            );
        }
        let nnz: usize = layers.iter().map(|l| l.weights.nnz()).sum();
        // FNV-1a over every layer's arrays: equal across thread counts (determinism check)
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut eat = |v: u64| {
            h ^= v;
            h = h.wrapping_mul(0x0100_0000_01b3);
        };
        for l in &layers {
            l.weights.indptr.iter().for_each(|&v| eat(v));
            l.weights.indices.iter().for_each(|&v| eat(u64::from(v)));
            l.weights
                .data
                .iter()
                .for_each(|&v| eat(u64::from(v.to_bits())));
            l.bias.iter().for_each(|&v| eat(u64::from(v.to_bits())));
        }
        let rss_train = peak_rss_mb();
        let t = Instant::now();
        let pred = predict_beam(
            &xt.view(),
            &layers,
            &tree,
            beam,
            10,
            PostProcessor::Hinge(3),
        )?;
        let t_pred = t.elapsed().as_secs_f64();
        let p = precision(&pred, &test.y);
        println!(
            "threads {threads} neg {} loss {:?}: pifa {t_pifa:.3} s, tree {t_tree:.3} s, \
             train {t_train:.3} s (cpu {c_train:.2} s), index+train {t_total:.3} s (cpu {c_total:.2} s), \
             predict {t_pred:.3} s",
            match (params.negatives.tfn, params.negatives.man) {
                (true, true) => "tfn+man",
                (false, true) => "man",
                _ => "tfn",
            },
            params.solver.loss
        );
        println!(
            "P@1 {:.4} P@3 {:.4} P@5 {:.4}; weights {nnz} (checksum {h:016x}); peak RSS after training {rss_train:.0} MB, \
             at the end {:.0} MB",
            p[0],
            p[1],
            p[2],
            peak_rss_mb()
        );
        Ok(())
    })?
}
