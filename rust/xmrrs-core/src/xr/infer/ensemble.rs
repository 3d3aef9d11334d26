//! Ensembles: the predictions of several models over the same labels, averaged.
//!
//! Each model returns its best `max(topk, beam_size)` labels per row; a label's ensemble
//! score is the mean over models of its score in each model's list. A model that did not
//! return the label contributes `0` for the multiplicative post-processors (`sigmoid`,
//! `l{p}-hinge`, whose scores lie in `[0, 1]`: 0 is their floor), and for the others
//! (`noop` and the log forms, unbounded below) the lowest score that model returned for the
//! row (an upper bound of the label's true score there). Then the `topk` best are kept,
//! ties to the lower label id. Batches go through [`predict_ensemble_hybrid`]; one query
//! through an [`EnsembleSearcher`] on the caller's thread, with the same answer.

use rayon::prelude::*;

use super::{check_out, output, predict_hybrid, select, write_hits, PredictParams, Searcher};
use crate::dense::DenseView;
use crate::sparse::CsrView;
use crate::xr::model::XrModel;
use crate::xr::PostProcessor;
use crate::{Error, Result};

/// Buffers of one row's combination: `(label, model, score)` entries, each model's score
/// for absent labels, candidates.
#[derive(Default)]
struct Combine {
    all: Vec<(u32, usize, f32)>,
    absent: Vec<f32>,
    cand: Vec<(f32, u32)>,
}

impl Combine {
    /// Writes the `ids.len()` best labels of the ensemble into `ids` / `scores`, from each
    /// model's list of `(ids, scores)` (padded with negative ids).
    fn row<'a>(
        &mut self,
        lists: impl Iterator<Item = (&'a [i64], &'a [f32])>,
        floor_zero: bool,
        ids: &mut [i64],
        scores: &mut [f32],
    ) {
        let (all, absent, cand) = (&mut self.all, &mut self.absent, &mut self.cand);
        all.clear();
        absent.clear();
        for (mi, (pi, ps)) in lists.enumerate() {
            let mut low = f32::INFINITY;
            for (&id, &s) in pi.iter().zip(ps) {
                if id >= 0 {
                    all.push((id as u32, mi, s));
                    low = low.min(s);
                }
            }
            absent.push(if floor_zero || !low.is_finite() {
                0.0
            } else {
                low
            });
        }
        let nm = absent.len();
        all.sort_unstable_by_key(|e| (e.0, e.1));
        cand.clear();
        let mut s = 0;
        while s < all.len() {
            let label = all[s].0;
            let mut e = s;
            // models in order: sum present scores and absent floors in model order
            let mut sum = 0.0f32;
            for (mi, &floor) in absent.iter().enumerate() {
                if e < all.len() && all[e].0 == label && all[e].1 == mi {
                    sum += all[e].2;
                    e += 1;
                } else {
                    sum += floor;
                }
            }
            cand.push((sum / nm as f32, label));
            s = e;
        }
        select(cand, ids.len(), true);
        write_hits(cand, ids, scores);
    }
}

/// The checks of an ensemble call, and the parameters of each model's search: `params`
/// with the beam capped by the first model's label count and `topk = max(topk, beam)`.
fn each_params(models: &[&XrModel], params: &PredictParams) -> Result<(PredictParams, bool)> {
    params.validate()?;
    let Some(first) = models.first() else {
        return Err(Error::invalid("predict_ensemble needs at least one model"));
    };
    for (i, m) in models.iter().enumerate() {
        if m.n_features() != first.n_features() || m.n_labels() != first.n_labels() {
            return Err(Error::shape(format!(
                "model {i} has {} features and {} labels, model 0 has {} and {}",
                m.n_features(),
                m.n_labels(),
                first.n_features(),
                first.n_labels()
            )));
        }
    }
    let params = params.capped(first);
    let each = PredictParams {
        topk: params.topk.max(params.beam_size),
        ..params
    };
    let floor_zero = matches!(
        params.post_processor,
        PostProcessor::Sigmoid | PostProcessor::Hinge(_)
    );
    Ok((each, floor_zero))
}

/// Averages the predictions of several models over the same labels and features (see the
/// module docs).
pub fn predict_ensemble(
    models: &[&XrModel],
    x: &CsrView<'_>,
    params: &PredictParams,
) -> Result<(Vec<i64>, Vec<f32>)> {
    predict_ensemble_hybrid(models, x, None, params)
}

/// [`predict_ensemble`] of rows with a dense block `xd` beside `x` (see [`predict_hybrid`]).
pub fn predict_ensemble_hybrid(
    models: &[&XrModel],
    x: &CsrView<'_>,
    xd: Option<&DenseView<'_>>,
    params: &PredictParams,
) -> Result<(Vec<i64>, Vec<f32>)> {
    let (each, floor_zero) = each_params(models, params)?;
    let kk = each.topk;
    let preds: Vec<(Vec<i64>, Vec<f32>)> = models
        .iter()
        .map(|m| predict_hybrid(m, x, xd, &each))
        .collect::<Result<_>>()?;
    let k = params.topk;
    let (mut ids, mut scores) = output(x.n_rows(), k)?;
    ids.par_chunks_mut(k)
        .zip(scores.par_chunks_mut(k))
        .enumerate()
        .for_each_init(Combine::default, |c, (i, (oi, os))| {
            let lists = preds
                .iter()
                .map(|(pi, ps)| (&pi[i * kk..(i + 1) * kk], &ps[i * kk..(i + 1) * kk]));
            c.row(lists, floor_zero, oi, os);
        });
    Ok((ids, scores))
}

/// Reusable scratch for one query at a time against an ensemble, on the caller's thread
/// (no thread pool): the answer of [`predict_ensemble_hybrid`] for that row.
#[derive(Default)]
pub struct EnsembleSearcher {
    searcher: Searcher,
    ids: Vec<i64>,
    scores: Vec<f32>,
    combine: Combine,
}

impl EnsembleSearcher {
    /// Empty scratch (buffers grow on first use, then are reused).
    pub fn new() -> Self {
        Self::default()
    }

    /// Searches one query (sorted, unique feature `indices`, their `values`, and the dense
    /// block `dense`, empty for sparse-only models) in every model and writes the ensemble's
    /// `params.topk` best labels and scores into `ids` and `scores` (each of exactly that
    /// length), padded with `-1` / `-inf`.
    #[allow(clippy::too_many_arguments)]
    pub fn search_hybrid(
        &mut self,
        models: &[&XrModel],
        indices: &[u32],
        values: &[f32],
        dense: &[f32],
        params: &PredictParams,
        ids: &mut [i64],
        scores: &mut [f32],
    ) -> Result<()> {
        let (each, floor_zero) = each_params(models, params)?;
        check_out(ids, scores, params.topk)?;
        let kk = each.topk;
        let len = models.len() * kk;
        self.ids.clear();
        self.ids.resize(len, -1);
        self.scores.clear();
        self.scores.resize(len, f32::NEG_INFINITY);
        for ((m, oi), os) in models
            .iter()
            .zip(self.ids.chunks_exact_mut(kk))
            .zip(self.scores.chunks_exact_mut(kk))
        {
            self.searcher
                .search_hybrid(m, indices, values, dense, &each, oi, os)?;
        }
        let lists = self.ids.chunks_exact(kk).zip(self.scores.chunks_exact(kk));
        self.combine.row(lists, floor_zero, ids, scores);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparse::Csr;
    use crate::xr::infer::{predict, Kernel};
    use crate::xr::testutil::*;

    #[test]
    fn ensembles_average_scores() {
        let (tree, d) = (random_tree(&[2, 5], 60, 31), 25);
        let layers = random_layers(&tree, tree.depth() + 1, d, 31);
        let a = XrModel::new(&tree, layers.clone(), d).unwrap();
        let layers_b = random_layers(&tree, tree.depth() + 1, d, 99);
        let b = XrModel::new(&tree, layers_b.clone(), d).unwrap();
        let x = random_queries(40, d, 10, 32);
        for pp in [PostProcessor::Hinge(3), PostProcessor::LogHinge(3)] {
            let p = PredictParams {
                beam_size: 100,
                topk: 5,
                post_processor: pp,
                kernel: Kernel::Auto,
            };
            // each model contributes its max(topk, beam) best; use a partial list to see floors
            let p = PredictParams { topk: 5, ..p };
            // one model: the ensemble is the model
            assert_eq!(
                predict_ensemble(&[&a], &x.view(), &p).unwrap(),
                predict(&a, &x.view(), &p).unwrap()
            );
            // the same model twice: same ids, same scores
            assert_eq!(
                predict_ensemble(&[&a, &a], &x.view(), &p).unwrap(),
                predict(&a, &x.view(), &p).unwrap()
            );
            // two models, each contributing its own max(topk, beam) list
            for beam in [2, 100] {
                let p = PredictParams {
                    beam_size: beam,
                    ..p
                };
                let kk = p.topk.max(beam);
                let each = PredictParams { topk: kk, ..p };
                let (ia, sa) = predict(&a, &x.view(), &each).unwrap();
                let (ib, sb) = predict(&b, &x.view(), &each).unwrap();
                let (ids, sc) = predict_ensemble(&[&a, &b], &x.view(), &p).unwrap();
                for i in 0..x.n_rows {
                    let list = |ids: &[i64], sc: &[f32]| -> Vec<(i64, f32)> {
                        (i * kk..(i + 1) * kk)
                            .filter(|&t| ids[t] >= 0)
                            .map(|t| (ids[t], sc[t]))
                            .collect()
                    };
                    let (la, lb) = (list(&ia, &sa), list(&ib, &sb));
                    let floor = |l: &[(i64, f32)]| {
                        if matches!(pp, PostProcessor::Hinge(_)) {
                            0.0
                        } else {
                            l.iter().map(|e| e.1).fold(f32::INFINITY, f32::min)
                        }
                    };
                    let (fa, fb) = (floor(&la), floor(&lb));
                    let mut mean = vec![f32::NEG_INFINITY; tree.n_labels()];
                    for &(l, _) in la.iter().chain(&lb) {
                        let va = la.iter().find(|e| e.0 == l).map_or(fa, |e| e.1);
                        let vb = lb.iter().find(|e| e.0 == l).map_or(fb, |e| e.1);
                        mean[l as usize] = (va + vb) / 2.0;
                    }
                    if beam == 2 {
                        assert!(
                            la.iter().any(|e| !lb.iter().any(|f| f.0 == e.0)),
                            "lists differ"
                        );
                    }
                    let (ei, es) = topk_of(&mean, 5);
                    assert_eq!(&ids[i * 5..i * 5 + 5], &ei[..]);
                    assert_eq!(&sc[i * 5..i * 5 + 5], &es[..]);
                }
            }
        }
        let other = XrModel::new(
            &random_tree(&[2], 10, 1),
            random_layers(&random_tree(&[2], 10, 1), 2, d, 1),
            d,
        )
        .unwrap();
        assert!(predict_ensemble(&[&a, &other], &x.view(), &PredictParams::default()).is_err());
        assert!(predict_ensemble(&[], &x.view(), &PredictParams::default()).is_err());
    }

    #[test]
    fn one_query_equals_its_row_of_the_batch() {
        let (tree, d) = (random_tree(&[3, 8], 50, 5), 30);
        let models: Vec<XrModel> = (0..3)
            .map(|s| XrModel::new(&tree, random_layers(&tree, tree.depth() + 1, d, s), d).unwrap())
            .collect();
        let refs: Vec<&XrModel> = models.iter().collect();
        // more rows than SMALL_BATCH: the batch takes its blocked path
        let x = random_queries(45, d, 8, 7);
        let mut t = Vec::new();
        for i in 0..10 {
            let (qi, qv) = x.view().row(i);
            t.extend(qi.iter().zip(qv).map(|(&j, &v)| (i as u32, j, v)));
        }
        let head = Csr::from_triplets(10, d, &t).unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let mut es = EnsembleSearcher::new();
        for pp in [
            PostProcessor::Hinge(3),
            PostProcessor::Noop,
            PostProcessor::LogSigmoid,
        ] {
            for (beam, topk) in [(1, 1), (3, 5), (10, 4), (500, 60)] {
                let p = PredictParams {
                    beam_size: beam,
                    topk,
                    post_processor: pp,
                    kernel: Kernel::Auto,
                };
                for nm in 1..=3 {
                    let (ids, sc) = predict_ensemble(&refs[..nm], &x.view(), &p).unwrap();
                    // a batch under SMALL_BATCH rows (each model searched row by row) agrees too
                    let (si, ss) = predict_ensemble(&refs[..nm], &head.view(), &p).unwrap();
                    assert_eq!(&ids[..si.len()], &si[..]);
                    assert_eq!(bits(&sc[..ss.len()]), bits(&ss));
                    for i in 0..x.n_rows {
                        let (qi, qv) = x.view().row(i);
                        let (mut oi, mut os) = (vec![0i64; topk], vec![0f32; topk]);
                        es.search_hybrid(&refs[..nm], qi, qv, &[], &p, &mut oi, &mut os)
                            .unwrap();
                        assert_eq!(&ids[i * topk..(i + 1) * topk], &oi[..]);
                        let same = sc[i * topk..(i + 1) * topk]
                            .iter()
                            .zip(&os)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "row {i}: {:?} vs {os:?}",
                            &sc[i * topk..(i + 1) * topk]
                        );
                    }
                }
            }
        }
        let (mut oi, mut os) = (vec![0i64; 3], vec![0f32; 3]);
        let p = PredictParams {
            topk: 4,
            ..PredictParams::default()
        };
        assert!(es
            .search_hybrid(&refs, &[1], &[1.0], &[], &p, &mut oi, &mut os)
            .is_err());
        assert!(es
            .search_hybrid(&[], &[1], &[1.0], &[], &p, &mut oi, &mut os)
            .is_err());
    }
}
