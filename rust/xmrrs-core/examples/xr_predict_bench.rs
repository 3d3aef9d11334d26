//! XR-Linear inference benchmark on a synthetic model the size of PECOS's debian/deps model.
//!
//! ```text
//! cargo run --release -p xmrrs-core --example xr_predict_bench -- [--what all|batch|latency|load|kernels]
//!     [--queries ../shared/data/debian/deps/test.txt] [--repeats 5] [--threads 2]
//! ```
//!
//! Model: 44,677 labels, 35,344 features, a balanced B=16 tree with leaves of about 100
//! labels; per-label non-zeros log-normal (median 50, skewed), drawn 70% from a per-leaf
//! "topic" pool and 30% from a global Zipf(1) over randomly permuted feature ids; internal
//! nodes denser (2000 to 17000 non-zeros). Queries: 12,645 rows of ~40 non-zeros (Zipf, half
//! from one leaf's topic), L2-normalised; or the rows of an XC-format file (`--queries`).
//! Load times use a 200k-label, 100k-feature model of the same construction.

use std::time::Instant;

use xmrrs_core::cluster::{fanout_schedule, ClusterTree, SplitMix64};
use xmrrs_core::sparse::{normalize_rows_l2, Csr};
use xmrrs_core::xr::infer::{predict, Kernel, PredictParams, Searcher};
use xmrrs_core::xr::model::{LayoutParams, XrModel};
use xmrrs_core::xr::{LayerWeights, PostProcessor};

struct Zipf {
    cdf: Vec<f64>,
    perm: Vec<u32>,
}

impl Zipf {
    fn new(d: usize, s: f64, rng: &mut SplitMix64) -> Self {
        let mut cdf = Vec::with_capacity(d);
        let mut acc = 0.0;
        for i in 0..d {
            acc += 1.0 / ((i + 1) as f64).powf(s);
            cdf.push(acc);
        }
        for c in cdf.iter_mut() {
            *c /= acc;
        }
        let mut perm: Vec<u32> = (0..d as u32).collect();
        for i in (1..d).rev() {
            perm.swap(i, rng.below(i as u64 + 1) as usize);
        }
        Zipf { cdf, perm }
    }
    fn sample(&self, rng: &mut SplitMix64) -> u32 {
        let u = rng.next_f64();
        let r = self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1);
        self.perm[r]
    }
}

fn normal(rng: &mut SplitMix64) -> f64 {
    let u1 = rng.next_f64().max(1e-12);
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn weight(rng: &mut SplitMix64) -> f32 {
    let m = 0.1 + 0.3 * normal(rng).abs();
    (if rng.below(3) == 0 { -m } else { m }) as f32
}

/// A balanced tree: fan-outs from `fanout_schedule`, labels in id order.
fn balanced_tree(n_labels: usize, b: usize, leaf: usize) -> ClusterTree {
    let fan = fanout_schedule(n_labels, b, leaf);
    let split = |n: usize, k: usize| -> Vec<u32> {
        let mut p = vec![0u32];
        for i in 0..k {
            p.push(((i + 1) * n / k) as u32);
        }
        p
    };
    let mut sizes = vec![1usize];
    for &f in &fan {
        sizes.push(sizes.last().unwrap() * f);
    }
    // level t has sizes[t] nodes; balanced: node i of level t owns an even share below
    let mut child_ptr = Vec::new();
    for t in 0..fan.len() {
        child_ptr.push(split(sizes[t + 1], sizes[t]));
    }
    let n_leaves = *sizes.last().unwrap();
    let leaf_ptr = split(n_labels, n_leaves);
    ClusterTree::from_parts(child_ptr, leaf_ptr, (0..n_labels as u32).collect()).unwrap()
}

struct Synth {
    tree: ClusterTree,
    layers: Vec<LayerWeights>,
    topics: Vec<Vec<u32>>,
    zipf: Zipf,
}

fn synth_model(n_labels: usize, d: usize, seed: u64) -> Synth {
    let mut rng = SplitMix64::new(seed);
    let tree = balanced_tree(n_labels, 16, 100);
    let zipf = Zipf::new(d, 1.0, &mut rng);
    let n_leaves = tree.n_leaves();
    let topics: Vec<Vec<u32>> = (0..n_leaves)
        .map(|_| {
            let mut t: Vec<u32> = (0..300).map(|_| zipf.sample(&mut rng)).collect();
            t.sort_unstable();
            t.dedup();
            t
        })
        .collect();
    let depth = tree.depth();
    let mut layers = Vec::new();
    for m in 0..=depth {
        let child_ptr: Vec<u32> = if m < depth {
            tree.child_ptr(m).unwrap().to_vec()
        } else {
            tree.leaf_ptr().to_vec()
        };
        let n = *child_ptr.last().unwrap() as usize;
        let mut trip: Vec<(u32, u32, f32)> = Vec::new();
        if m == depth {
            for leaf in 0..n_leaves {
                for c in child_ptr[leaf]..child_ptr[leaf + 1] {
                    let nnz = (50.0 * normal(&mut rng).exp()).round().clamp(5.0, 3000.0) as usize;
                    for _ in 0..nnz {
                        let f = if rng.below(10) < 7 {
                            let t = &topics[leaf];
                            t[rng.below(t.len() as u64) as usize]
                        } else {
                            zipf.sample(&mut rng)
                        };
                        trip.push((c, f, weight(&mut rng)));
                    }
                }
            }
        } else {
            // nodes of level m+1: denser the higher they are
            let labels_per_node = n_labels as f64 / n as f64;
            let nnz = ((60.0 * labels_per_node.sqrt()) as usize)
                .clamp(2000, 17000)
                .min(d / 2);
            for c in 0..n as u32 {
                for _ in 0..nnz {
                    trip.push((c, zipf.sample(&mut rng), weight(&mut rng)));
                }
            }
        }
        // duplicates summed by from_triplets; that is fine for a synthetic model
        let weights = Csr::from_triplets(n, d, &trip).unwrap();
        let bias = (0..n).map(|_| -(rng.next_f64() as f32)).collect();
        layers.push(LayerWeights {
            dense: Vec::new(),
            n_dense: 0,
            child_ptr,
            weights,
            bias,
        });
    }
    Synth {
        tree,
        layers,
        topics,
        zipf,
    }
}

fn synth_queries(s: &Synth, n: usize, d: usize, seed: u64) -> Csr {
    synth_queries_nnz(s, n, d, seed, 40.0)
}

fn synth_queries_nnz(s: &Synth, n: usize, d: usize, seed: u64, mean_nnz: f64) -> Csr {
    let mut rng = SplitMix64::new(seed);
    let mut trip = Vec::new();
    for i in 0..n as u32 {
        let leaf = rng.below(s.topics.len() as u64) as usize;
        let nnz = (mean_nnz * (0.5 * normal(&mut rng)).exp())
            .round()
            .clamp(3.0, 10.0 * mean_nnz) as usize;
        for _ in 0..nnz {
            let f = if rng.below(2) == 0 {
                let t = &s.topics[leaf];
                t[rng.below(t.len() as u64) as usize]
            } else {
                s.zipf.sample(&mut rng)
            };
            trip.push((i, f, rng.next_f64() as f32 + 0.1));
        }
    }
    let mut x = Csr::from_triplets(n, d, &trip).unwrap();
    normalize_rows_l2(&mut x);
    x
}

/// Writes a 1-D little-endian `.npy` file (`descr` like `<f4`).
fn write_npy(path: &std::path::Path, descr: &str, len: usize, bytes: &[u8]) {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({len},), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(bytes);
    std::fs::write(path, out).unwrap();
}

fn u64_bytes(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn i64_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write_csr(dir: &std::path::Path, name: &str, m: &Csr) {
    write_npy(
        &dir.join(format!("{name}.indptr.npy")),
        "<u8",
        m.indptr.len(),
        &u64_bytes(&m.indptr),
    );
    write_npy(
        &dir.join(format!("{name}.indices.npy")),
        "<u4",
        m.indices.len(),
        &u32_bytes(&m.indices),
    );
    write_npy(
        &dir.join(format!("{name}.data.npy")),
        "<f4",
        m.data.len(),
        &f32_bytes(&m.data),
    );
    std::fs::write(
        dir.join(format!("{name}.shape")),
        format!("{} {}", m.n_rows, m.n_cols),
    )
    .unwrap();
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU seconds (user + system) of this process so far, from /proc (10 ms resolution).
fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Median wall seconds and median CPU seconds of `reps` batch predictions.
fn time_batch(
    model: &XrModel,
    x: &Csr,
    p: &PredictParams,
    threads: usize,
    reps: usize,
) -> (f64, f64) {
    let pool = xmrrs_core::parallel::pool(threads).unwrap();
    let mut t = Vec::new();
    let mut c = Vec::new();
    for _ in 0..reps {
        let c0 = cpu_secs();
        let s = Instant::now();
        pool.install(|| predict(model, &x.view(), p).unwrap());
        t.push(s.elapsed().as_secs_f64());
        c.push(cpu_secs() - c0);
    }
    (median(&mut t), median(&mut c))
}

fn main() {
    let what = arg("--what").unwrap_or_else(|| "all".into());
    let reps: usize = arg("--repeats").and_then(|s| s.parse().ok()).unwrap_or(5);
    let threads: usize = arg("--threads").and_then(|s| s.parse().ok()).unwrap_or(2);
    let (n_labels, d) = (44_677, 35_344);
    println!(
        "simd: {}; load at start: {}",
        xmrrs_core::simd::level(),
        uptime()
    );
    let t = Instant::now();
    let s = synth_model(n_labels, d, 1);
    let gen_s = t.elapsed().as_secs_f64();
    let nnz: Vec<usize> = s.layers.iter().map(|l| l.weights.nnz()).collect();
    let t = Instant::now();
    let model = XrModel::new(&s.tree, s.layers.clone(), d).unwrap();
    println!(
        "model: {} labels, {} features, levels {:?}, nnz per layer {:?} (total {}), \
         {:.1} MB in layout; generated in {gen_s:.1} s, layout built in {:.2} s",
        n_labels,
        d,
        s.tree.n_nodes_per_level(),
        nnz,
        nnz.iter().sum::<usize>(),
        model.nbytes() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let x = match arg("--queries") {
        Some(path) => {
            let data = xmrrs_core::io::xc::read_file(
                std::path::Path::new(&path),
                &xmrrs_core::io::xc::ReadOptions {
                    header: true,
                    ..Default::default()
                },
            )
            .unwrap();
            println!("queries: {} rows of {path}", data.x.n_rows);
            data.x
        }
        None => synth_queries(&s, 12_645, d, 2),
    };
    println!(
        "queries: {} rows, {:.1} non-zeros per row",
        x.n_rows,
        x.nnz() as f64 / x.n_rows as f64
    );
    let base = PredictParams {
        beam_size: 10,
        topk: 10,
        post_processor: PostProcessor::Hinge(3),
        kernel: Kernel::Auto,
    };

    if let Some(dir) = arg("--export") {
        // the model's layers, the queries and our predictions, for a side-by-side run of
        // PECOS (examples/xr_predict_vs_pecos.py)
        let dir = std::path::Path::new(&dir);
        std::fs::create_dir_all(dir).unwrap();
        for (m, l) in s.layers.iter().enumerate() {
            write_csr(dir, &format!("layer{m}.w"), &l.weights);
            write_npy(
                &dir.join(format!("layer{m}.bias.npy")),
                "<f4",
                l.bias.len(),
                &f32_bytes(&l.bias),
            );
            write_npy(
                &dir.join(format!("layer{m}.child_ptr.npy")),
                "<u4",
                l.child_ptr.len(),
                &u32_bytes(&l.child_ptr),
            );
        }
        write_csr(dir, "x", &x);
        let pool = xmrrs_core::parallel::pool(threads).unwrap();
        let (ids, sc) = pool.install(|| predict(&model, &x.view(), &base).unwrap());
        write_npy(
            &dir.join("pred.ids.npy"),
            "<i8",
            ids.len(),
            &i64_bytes(&ids),
        );
        write_npy(
            &dir.join("pred.scores.npy"),
            "<f4",
            sc.len(),
            &f32_bytes(&sc),
        );
        std::fs::write(dir.join("n_layers"), s.layers.len().to_string()).unwrap();
        println!("exported to {}", dir.display());
    }

    if what == "all" || what == "batch" {
        for th in [threads, 1] {
            let (sec, cpu) = time_batch(&model, &x, &base, th, reps);
            println!(
                "batch: {} queries, top-10, beam 10, {th} thread(s): {sec:.3} s wall, {cpu:.2} s CPU \
                 (medians of {reps}; load {})",
                x.n_rows,
                uptime()
            );
        }
    }

    if what == "all" || what == "kernels" {
        for kernel in [Kernel::Auto, Kernel::Lookup, Kernel::Merge, Kernel::Scan] {
            let p = PredictParams { kernel, ..base };
            let (sec, cpu) = time_batch(&model, &x, &p, 1, reps);
            let mut lat = latencies(&model, &x, &p, 1000);
            println!(
                "kernel {kernel:?}: batch 1 thread {sec:.3} s wall {cpu:.2} s CPU; single query median {:.1} us \
                 (load {})",
                median(&mut lat) * 1e6,
                uptime()
            );
        }
        let layouts = [
            (
                "default (dense rows >= 65%, 2 rows/bucket, u16 cols)",
                LayoutParams::default(),
            ),
            (
                "no dense rows",
                LayoutParams {
                    dense_min_fill: 2.0,
                    ..LayoutParams::default()
                },
            ),
            (
                "dense rows >= 25%",
                LayoutParams {
                    dense_min_fill: 0.25,
                    ..LayoutParams::default()
                },
            ),
            (
                "1 row/bucket",
                LayoutParams {
                    rows_per_bucket: 1,
                    ..LayoutParams::default()
                },
            ),
            (
                "8 rows/bucket",
                LayoutParams {
                    rows_per_bucket: 8,
                    ..LayoutParams::default()
                },
            ),
            (
                "u32 cols",
                LayoutParams {
                    wide_cols: true,
                    ..LayoutParams::default()
                },
            ),
            (
                "no merged layers",
                LayoutParams {
                    merge_max_children: 0,
                    ..LayoutParams::default()
                },
            ),
            (
                "merge up to 65536 children",
                LayoutParams {
                    merge_max_children: 65536,
                    ..LayoutParams::default()
                },
            ),
        ];
        for (name, lp) in layouts {
            let m = XrModel::with_layout(&s.tree, &s.layers, d, &lp).unwrap();
            let (sec, cpu) = time_batch(&m, &x, &base, 1, reps);
            let mut lat = latencies(&m, &x, &base, 1000);
            println!(
                "layout {name}: {:.1} MB, batch 1 thread {sec:.3} s wall {cpu:.2} s CPU, single query median \
                 {:.1} us (load {})",
                m.nbytes() as f64 / 1e6,
                median(&mut lat) * 1e6,
                uptime()
            );
        }
    }

    if what == "layers" {
        // cumulative cost of the first m layers (partial models), 1 thread
        for m in 1..=s.layers.len() {
            let part = XrModel::new_partial(&s.tree, &s.layers[..m], d).unwrap();
            let (sec, cpu) = time_batch(&part, &x, &base, 1, reps);
            println!(
                "first {m} layer(s): {sec:.3} s wall, {cpu:.2} s CPU (load {})",
                uptime()
            );
        }
    }

    if what == "all" || what == "sweep" {
        // which kernel wins when: query density against this model's chunks
        for nnz in [5.0, 40.0, 160.0, 640.0, 2560.0] {
            let xq = synth_queries_nnz(&s, 2000, d, 5, nnz);
            let mut line = format!(
                "queries of {:.0} non-zeros (2000 rows), batch 1 thread CPU s / single query median us:",
                xq.nnz() as f64 / xq.n_rows as f64
            );
            for kernel in [Kernel::Auto, Kernel::Lookup, Kernel::Merge, Kernel::Scan] {
                let p = PredictParams { kernel, ..base };
                let (_, cpu) = time_batch(&model, &xq, &p, 1, reps.min(3));
                let mut lat = latencies(&model, &xq, &p, 300);
                line += &format!(" {kernel:?} {cpu:.2}/{:.0}", median(&mut lat) * 1e6);
            }
            println!("{line} (load {})", uptime());
        }
    }

    if what == "all" || what == "paths" {
        // chunk-major blocks vs one searcher per thread, by batch size (1 thread)
        let pool = xmrrs_core::parallel::pool(1).unwrap();
        for size in [1usize, 31, 256, 2048, x.n_rows] {
            let mut cpus = Vec::new();
            for _ in 0..reps.min(3) {
                let c0 = cpu_secs();
                let mut i = 0;
                while i < x.n_rows {
                    let rows: Vec<usize> = (i..(i + size).min(x.n_rows)).collect();
                    let sub = xmrrs_core::sparse::row_gather(&x.view(), &rows).unwrap();
                    pool.install(|| predict(&model, &sub.view(), &base).unwrap());
                    i += size;
                }
                cpus.push(cpu_secs() - c0);
            }
            println!(
                "batches of {size} rows: {:.2} s CPU for {} queries (load {})",
                median(&mut cpus),
                x.n_rows,
                uptime()
            );
        }
    }

    if what == "all" || what == "latency" {
        let mut lat = latencies(&model, &x, &base, 1000);
        let med = median(&mut lat);
        let p99 = pct(&mut lat, 0.99);
        println!(
            "single query (Searcher, 1 thread, no pool), 1000 queries: median {:.1} us, \
             p99 {:.1} us (load {})",
            med * 1e6,
            p99 * 1e6,
            uptime()
        );
    }

    if what == "big" {
        // merging small layers on a 200k-label model (levels 1/16/128/2000 nodes)
        let big = synth_model(200_000, 100_000, 3);
        let xb = synth_queries(&big, 5000, 100_000, 4);
        println!("200k model levels {:?}", big.tree.n_nodes_per_level());
        for merge in [0usize, 256, 4096] {
            let lp = LayoutParams {
                merge_max_children: merge,
                ..LayoutParams::default()
            };
            let m = XrModel::with_layout(&big.tree, &big.layers, 100_000, &lp).unwrap();
            for beam in [10usize, 50] {
                let p = PredictParams {
                    beam_size: beam,
                    ..base
                };
                let (_, cpu) = time_batch(&m, &xb, &p, 1, reps.min(3));
                let mut lat = latencies(&m, &xb, &p, 500);
                println!(
                    "merge <= {merge} children, beam {beam}: batch 5000 queries {cpu:.2} s CPU, \
                     single query median {:.0} us (load {})",
                    median(&mut lat) * 1e6,
                    uptime()
                );
            }
        }
    }

    if what == "all" || what == "load" {
        drop(model);
        let big = synth_model(200_000, 100_000, 3);
        let big_model = XrModel::new(&big.tree, big.layers.clone(), 100_000).unwrap();
        drop(big);
        let dir = std::env::temp_dir().join(format!("xr_bench_{}", std::process::id()));
        let t = Instant::now();
        big_model.save(&dir).unwrap();
        let save_s = t.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(dir.join(xmrrs_core::xr::model::DATA_FILE))
            .unwrap()
            .len();
        let mut tm = Vec::new();
        let mut tf = Vec::new();
        let mut tv = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            let m = XrModel::load(&dir, true).unwrap();
            tm.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            m.verify().unwrap();
            tv.push(t.elapsed().as_secs_f64());
            drop(m);
            let t = Instant::now();
            let m = XrModel::load(&dir, false).unwrap();
            tf.push(t.elapsed().as_secs_f64());
            drop(m);
        }
        let (mm, mf) = (median(&mut tm), median(&mut tf));
        println!(
            "load of a 200k-label model ({:.1} MB file, {} nnz; saved in {save_s:.2} s): \
             mmap {:.2} ms, in-memory with full check {:.1} ms ({:.0}x), verify() of the \
             mapped model {:.1} ms (medians of {reps}, warm page cache; load {})",
            bytes as f64 / 1e6,
            big_model.layer_nnz().iter().sum::<usize>(),
            mm * 1e3,
            mf * 1e3,
            mf / mm,
            median(&mut tv) * 1e3,
            uptime()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn latencies(model: &XrModel, x: &Csr, p: &PredictParams, n: usize) -> Vec<f64> {
    let mut s = Searcher::new();
    let (mut ids, mut sc) = (vec![0i64; p.topk], vec![0f32; p.topk]);
    // warm-up
    for i in 0..n.min(x.n_rows).min(100) {
        let (qi, qv) = x.view().row(i);
        s.search(model, qi, qv, p, &mut ids, &mut sc).unwrap();
    }
    let mut lat = Vec::with_capacity(n);
    for i in 0..n.min(x.n_rows) {
        let (qi, qv) = x.view().row(i);
        let t = Instant::now();
        s.search(model, qi, qv, p, &mut ids, &mut sc).unwrap();
        lat.push(t.elapsed().as_secs_f64());
    }
    lat
}
