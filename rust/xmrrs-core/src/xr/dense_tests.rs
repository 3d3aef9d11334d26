//! The dense feature block end to end: training on a sparse block plus a dense block
//! reaches the same optimum as training on the same columns passed as one CSR matrix, and
//! the model searches, saves, maps and reloads the dense weights.

use crate::cluster::{ClusterTree, SplitMix64};
use crate::dense::DenseView;
use crate::parallel;
use crate::sparse::{Csr, CsrView};
use crate::xr::infer::{predict, predict_ensemble_hybrid, predict_hybrid, PredictParams, Searcher};
use crate::xr::model::XrModel;
use crate::xr::testutil::random_tree;
use crate::xr::train::{train_hybrid_with_stats, train_layers, TrainParams};
use crate::xr::{LayerWeights, Loss, Negatives};

/// `n` rows: a sparse block over `d` features and a dense block of `k` columns, both
/// informative about `n_labels` labels; and the same rows as one CSR matrix `[xs, xd]`.
fn data(n: usize, d: usize, k: usize, n_labels: usize, seed: u64) -> (Csr, Vec<f32>, Csr, Csr) {
    let mut rng = SplitMix64::new(seed);
    let centers: Vec<f32> = (0..n_labels * k)
        .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
        .collect();
    let (mut xt, mut yt, mut dense) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let l = rng.below(n_labels as u64) as usize;
        yt.push((i as u32, l as u32, 1.0));
        if rng.below(3) == 0 {
            yt.push((i as u32, ((l + 1) % n_labels) as u32, 1.0));
        }
        for _ in 0..3 {
            xt.push((i as u32, ((l * 5 + rng.below(4) as usize) % d) as u32, 0.4));
        }
        xt.push((i as u32, rng.below(d as u64) as u32, 0.3));
        for j in 0..k {
            dense.push(0.3 * centers[l * k + j] + 0.2 * (rng.next_f64() as f32 - 0.5));
        }
    }
    let xs = Csr::from_triplets(n, d, &xt).unwrap();
    let y = Csr::from_triplets(n, n_labels, &yt).unwrap();
    let mut all = xt.clone();
    for i in 0..n {
        for j in 0..k {
            all.push((i as u32, (d + j) as u32, dense[i * k + j]));
        }
    }
    let joined = Csr::from_triplets(n, d + k, &all).unwrap();
    (xs, dense, y, joined)
}

fn tight(negatives: Negatives, loss: Loss) -> TrainParams {
    let mut p = TrainParams::default();
    p.solver.loss = loss;
    p.solver.tol = 1e-5;
    p.solver.max_iter = 20_000;
    p.solver.threshold = 0.0;
    p.negatives = negatives;
    p
}

fn tree() -> ClusterTree {
    random_tree(&[3, 7], 20, 5)
}

/// The hybrid's sparse weights and dense weights equal the CSR route's weights on the
/// same columns (both solved to a tight tolerance: the same optimum, up to the half
/// precision of the solvers' copy of the dense rows), for both loss families and both
/// negative samplers.
#[test]
fn hybrid_training_reaches_the_csr_routes_optimum() {
    let (n, d, k) = (240, 40, 6);
    let (xs, dense, y, joined) = data(n, d, k, 20, 3);
    let xd = DenseView::new(n, k, &dense).unwrap();
    let tree = tree();
    let man = Negatives {
        tfn: true,
        man: true,
    };
    let tfn = Negatives {
        tfn: true,
        man: false,
    };
    for (negatives, loss) in [
        (tfn, Loss::SquaredHinge),
        (tfn, Loss::Logistic),
        (man, Loss::SquaredHinge),
    ] {
        let p = tight(negatives, loss);
        let (hy, _) =
            train_hybrid_with_stats(&xs.view(), Some(&xd), &y.view(), &tree, &p, None).unwrap();
        let csr = train_layers(&joined.view(), &y.view(), &tree, &p, None).unwrap();
        let mut worst = 0f32;
        for (h, c) in hy.iter().zip(&csr) {
            h.validate().unwrap();
            assert_eq!((h.n_dense, h.weights.n_cols), (k, d));
            assert_eq!(h.dense.len(), h.n_children() * k);
            for r in 0..h.n_children() {
                let mut full = vec![0f32; d + k];
                let (ci, cv) = c.weights.view().row(r);
                for (&j, &v) in ci.iter().zip(cv) {
                    full[j as usize] = v;
                }
                let mut mine = vec![0f32; d + k];
                let (hi, hv) = h.weights.view().row(r);
                for (&j, &v) in hi.iter().zip(hv) {
                    mine[j as usize] = v;
                }
                mine[d..].copy_from_slice(h.dense_row(r));
                for (a, b) in mine.iter().zip(&full) {
                    worst = worst.max((a - b).abs());
                }
                worst = worst.max((h.bias[r] - c.bias[r]).abs());
            }
        }
        assert!(
            worst < 1e-3,
            "{negatives:?} {loss:?}: weights differ by {worst}"
        );
    }
}

/// The same seed gives bit-identical hybrid layers at 1 and 3 threads.
#[test]
fn hybrid_training_is_deterministic_across_threads() {
    let (n, d, k) = (300, 50, 5);
    let (xs, dense, y, _) = data(n, d, k, 20, 8);
    let xd = DenseView::new(n, k, &dense).unwrap();
    let tree = tree();
    let run = |threads: i64| {
        parallel::install(Some(threads), || {
            train_hybrid_with_stats(
                &xs.view(),
                Some(&xd),
                &y.view(),
                &tree,
                &TrainParams::default(),
                None,
            )
            .unwrap()
            .0
        })
        .unwrap()
    };
    let bits = |l: &[LayerWeights]| -> Vec<Vec<u32>> {
        l.iter()
            .map(|w| {
                w.dense
                    .iter()
                    .chain(&w.weights.data)
                    .chain(&w.bias)
                    .map(|v| v.to_bits())
                    .collect()
            })
            .collect()
    };
    assert_eq!(bits(&run(1)), bits(&run(3)));
}

/// Beam search over a hybrid model ranks as an exhaustive scoring of its weights would at
/// a full beam, the one-query searcher agrees with the batch path, a saved, mapped or
/// byte-copied model predicts bit-identically, and the CSR route's model (same optimum)
/// gives the same top labels.
#[test]
fn hybrid_models_search_save_and_map() {
    let (n, d, k) = (260, 40, 6);
    let (xs, dense, y, joined) = data(n, d, k, 20, 11);
    let xd = DenseView::new(n, k, &dense).unwrap();
    let tree = tree();
    let p = tight(
        Negatives {
            tfn: true,
            man: false,
        },
        Loss::SquaredHinge,
    );
    let (layers, _) =
        train_hybrid_with_stats(&xs.view(), Some(&xd), &y.view(), &tree, &p, None).unwrap();
    let model = XrModel::new(&tree, layers.clone(), d).unwrap();
    assert_eq!(model.n_dense(), k);
    let pp = PredictParams {
        beam_size: 20,
        topk: 5,
        ..Default::default()
    };
    let (ids, scores) = predict_hybrid(&model, &xs.view(), Some(&xd), &pp).unwrap();
    // one query at a time
    let mut s = Searcher::new();
    let (mut qi, mut qs) = (vec![0i64; 5], vec![0f32; 5]);
    for i in 0..n {
        let (ri, rv) = xs.view().row(i);
        s.search_hybrid(&model, ri, rv, xd.row(i), &pp, &mut qi, &mut qs)
            .unwrap();
        assert_eq!(&qi[..], &ids[i * 5..i * 5 + 5], "row {i}");
        assert_eq!(&qs[..], &scores[i * 5..i * 5 + 5], "row {i}");
    }
    // the weights' own scores: exhaustive over the tree with the same post-processor
    let csr_layers = train_layers(&joined.view(), &y.view(), &tree, &p, None).unwrap();
    let csr_model = XrModel::new(&tree, csr_layers, d + k).unwrap();
    let (cids, _) = predict(&csr_model, &joined.view(), &pp).unwrap();
    let agree = ids
        .chunks(5)
        .zip(cids.chunks(5))
        .filter(|(a, b)| a[0] == b[0])
        .count();
    assert!(agree * 100 >= n * 97, "top-1 agrees on {agree} of {n} rows");
    // files
    let dir = std::env::temp_dir().join(format!("xmrrs-dense-{}", std::process::id()));
    model.save(&dir).unwrap();
    for mmap in [false, true] {
        let m = XrModel::load(&dir, mmap).unwrap();
        m.verify().unwrap();
        assert_eq!(m.n_dense(), k);
        let (i2, s2) = predict_hybrid(&m, &xs.view(), Some(&xd), &pp).unwrap();
        assert_eq!((&i2, &s2), (&ids, &scores));
        let lw = m.layer_weights(1).unwrap();
        assert_eq!(lw, model.layer_weights(1).unwrap());
        assert_eq!(
            (&lw.weights, &lw.bias),
            (&layers[1].weights, &layers[1].bias)
        );
        // the dense weights are stored in half precision (under a power-of-two scale)
        let top = layers[1].dense.iter().fold(0f32, |t, v| t.max(v.abs()));
        for (a, b) in lw.dense.iter().zip(&layers[1].dense) {
            assert!((a - b).abs() <= b.abs() * 4.9e-4 + top * 1e-7, "{a} {b}");
        }
    }
    let text = std::fs::read_to_string(dir.join("xr_model.json")).unwrap();
    assert!(text.contains("\"version\": 3") && text.contains("dense_w"));
    let _ = std::fs::remove_dir_all(&dir);
    let b = XrModel::from_bytes(&model.to_bytes().unwrap()).unwrap();
    let (i3, _) = predict_hybrid(&b, &xs.view(), Some(&xd), &pp).unwrap();
    assert_eq!(i3, ids);
    // ensembles take the dense block too
    let (ie, _) = predict_ensemble_hybrid(&[&model, &model], &xs.view(), Some(&xd), &pp).unwrap();
    assert_eq!(ie, ids);
}

/// Inputs that do not fit the model are clear errors.
#[test]
fn hybrid_inputs_are_checked() {
    let (n, d, k) = (120, 30, 4);
    let (xs, dense, y, _) = data(n, d, k, 20, 2);
    let xd = DenseView::new(n, k, &dense).unwrap();
    let tree = tree();
    let p = TrainParams::default();
    let short = DenseView::new(n - 1, k, &dense[..(n - 1) * k]).unwrap();
    let e = train_hybrid_with_stats(&xs.view(), Some(&short), &y.view(), &tree, &p, None);
    assert!(e.unwrap_err().to_string().contains("rows"));
    let mut bad = dense.clone();
    bad[7] = f32::NAN;
    let nan = DenseView::new(n, k, &bad).unwrap();
    assert!(train_hybrid_with_stats(&xs.view(), Some(&nan), &y.view(), &tree, &p, None).is_err());
    let (layers, _) =
        train_hybrid_with_stats(&xs.view(), Some(&xd), &y.view(), &tree, &p, None).unwrap();
    let model = XrModel::new(&tree, layers.clone(), d).unwrap();
    let pp = PredictParams::default();
    let msg = |r: crate::Result<(Vec<i64>, Vec<f32>)>| r.unwrap_err().to_string();
    assert!(msg(predict(&model, &xs.view(), &pp)).contains("dense block of 4"));
    let narrow = DenseView::new(n, k - 1, &dense[..n * (k - 1)]).unwrap();
    assert!(msg(predict_hybrid(&model, &xs.view(), Some(&narrow), &pp)).contains("dense"));
    assert!(predict_hybrid(&model, &xs.view(), Some(&nan), &pp).is_err());
    let few = CsrView::new(n - 1, d, &xs.indptr[..n], &xs.indices, &xs.data);
    if let Ok(few) = few {
        assert!(predict_hybrid(&model, &few, Some(&xd), &pp).is_err());
    }
    let mut s = Searcher::new();
    let (mut qi, mut qs) = (vec![0i64; pp.topk], vec![0f32; pp.topk]);
    let (ri, rv) = xs.view().row(0);
    assert!(s
        .search_hybrid(&model, ri, rv, &[0.0; 3], &pp, &mut qi, &mut qs)
        .is_err());
    assert!(s
        .search_hybrid(&model, ri, rv, &[f32::INFINITY; 4], &pp, &mut qi, &mut qs)
        .is_err());
    // layers whose dense widths disagree do not make a model (0 = "no dense part" does)
    let mut mixed = layers.clone();
    let nc = mixed[1].n_children();
    mixed[1].dense.truncate(nc * (k - 1));
    mixed[1].n_dense = k - 1;
    assert!(XrModel::new(&tree, mixed, d).is_err());
    let mut without = layers;
    without[1].dense.clear();
    without[1].n_dense = 0;
    assert_eq!(XrModel::new(&tree, without, d).unwrap().n_dense(), k);
}

/// `dense_in_ranker: false` trains the label layer on the sparse block alone: it has no
/// dense weights and equals that layer trained on the sparse block (same seeds), the upper
/// layers keep theirs, and the model saves, maps and searches with the dense block.
#[test]
fn the_ranker_can_leave_the_dense_block_out() {
    let (n, d, k) = (260, 40, 6);
    let (xs, dense, y, _) = data(n, d, k, 20, 13);
    let xd = DenseView::new(n, k, &dense).unwrap();
    let tree = tree();
    let p = TrainParams {
        dense_in_ranker: false,
        ..TrainParams::default()
    };
    let (layers, _) =
        train_hybrid_with_stats(&xs.view(), Some(&xd), &y.view(), &tree, &p, None).unwrap();
    let last = layers.len() - 1;
    assert!(layers[..last].iter().all(|l| l.n_dense == k));
    assert_eq!((layers[last].n_dense, layers[last].dense.len()), (0, 0));
    let sparse = train_layers(&xs.view(), &y.view(), &tree, &p, None).unwrap();
    assert_eq!(layers[last].weights, sparse[last].weights);
    assert_eq!(layers[last].bias, sparse[last].bias);
    let model = XrModel::new(&tree, layers.clone(), d).unwrap();
    assert_eq!(model.n_dense(), k);
    let pp = PredictParams::default();
    let (ids, scores) = predict_hybrid(&model, &xs.view(), Some(&xd), &pp).unwrap();
    let dir = std::env::temp_dir().join(format!("xmrrs-dense-ranker-{}", std::process::id()));
    model.save(&dir).unwrap();
    for mmap in [false, true] {
        let m = XrModel::load(&dir, mmap).unwrap();
        m.verify().unwrap();
        assert_eq!(m.layer_weights(last).unwrap(), layers[last]);
        let got = predict_hybrid(&m, &xs.view(), Some(&xd), &pp).unwrap();
        assert_eq!(got, (ids.clone(), scores.clone()));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
