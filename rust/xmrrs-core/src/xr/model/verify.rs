//! Verification of a model: its structure (every index and pointer in range, as every load
//! checks) and its values (checksum, finite weights, non-zero counts), as [`XrModel::verify`] runs.

use rayon::prelude::*;

use super::layout::{bucket_ptr, Cols, Layer, LayerRef};
use super::xr_model::XrModel;
use crate::xr::kernel::{Col, LayerView};
use crate::xr::store;
use crate::{Error, Result};

impl XrModel {
    /// Checks everything a non-mmap load checks: the array file's checksum (for a loaded
    /// model), the structure (as every load does, see [`XrModel::load`]) and the values:
    /// weights finite, and as many non-zero weights per layer as the manifest says.
    pub fn verify(&self) -> Result<()> {
        if let Some((backing, expect)) = &self.source {
            let got = format!("crc32:{:08x}", store::crc32(backing.bytes()));
            if &got != expect {
                return Err(Error::invalid(format!(
                    "array file checksum {got} does not match the manifest's {expect}: the \
                     file is corrupt"
                )));
            }
        }
        self.verify_structure()?;
        self.verify_values()
    }

    /// Every structural invariant, in time linear in the index arrays: `labels` a
    /// permutation (the identity for a partial model); per layer the pointers, every row
    /// feature id (increasing, in range), row pointer, bucket index and column id consistent
    /// and in range; biases finite. Weights are not read.
    pub(super) fn verify_structure(&self) -> Result<()> {
        let n = self.n_labels;
        let mut seen = crate::alloc::try_vec(n, false, "the label check")?;
        for &l in self.labels.iter() {
            match seen.get_mut(l as usize) {
                Some(s) if !*s => *s = true,
                _ => {
                    return Err(Error::invalid(
                        "labels are not a permutation of 0..n_labels",
                    ))
                }
            }
        }
        if self.partial
            && self
                .labels
                .iter()
                .enumerate()
                .any(|(i, &l)| l as usize != i)
        {
            return Err(Error::invalid(
                "a partial model's labels must be the identity",
            ));
        }
        for (m, layer) in self.layers.iter().enumerate() {
            if (layer.n_dense != self.n_dense && layer.n_dense != 0)
                || Some(layer.dense_w.len()) != layer.n_children.checked_mul(layer.n_dense)
            {
                return Err(Error::invalid(format!(
                    "model data is corrupt: layer {m}: {} dense weights for {} children of {} \
                     dense features",
                    layer.dense_w.len(),
                    layer.n_children,
                    self.n_dense
                )));
            }
            let r = match layer.view() {
                LayerRef::U8(v) => verify_layer(&v, layer, self.n_features),
                LayerRef::U16(v) => verify_layer(&v, layer, self.n_features),
                LayerRef::U32(v) => verify_layer(&v, layer, self.n_features),
            };
            r.map_err(|e| Error::invalid(format!("model data is corrupt: layer {m}: {e}")))?;
        }
        Ok(())
    }

    /// The value checks of [`XrModel::verify`]: one pass over the weights.
    pub(super) fn verify_values(&self) -> Result<()> {
        for (m, layer) in self.layers.iter().enumerate() {
            let bad = |e: String| Error::invalid(format!("model data is corrupt: layer {m}: {e}"));
            if layer.vals.par_iter().any(|x| !x.is_finite()) {
                return Err(bad("non-finite weight".into()));
            }
            if layer
                .dense_w
                .par_iter()
                .any(|&h| !crate::half::is_finite(h))
            {
                return Err(bad("non-finite dense weight".into()));
            }
            let nnz = layer.vals.par_iter().filter(|&&x| x != 0.0).count();
            if nnz != layer.nnz {
                return Err(bad(format!(
                    "{nnz} non-zero weights, the manifest says {}",
                    layer.nnz
                )));
            }
        }
        Ok(())
    }
}

/// Checks the O(parents) arrays of a layer and sets `max_width`.
pub(super) fn check_small(l: &mut Layer) -> std::result::Result<(), String> {
    let cp = &l.child_ptr;
    if cp.first() != Some(&0) || cp.windows(2).any(|w| w[1] <= w[0]) {
        return Err("child_ptr must start at 0 and increase strictly".into());
    }
    if *cp.last().unwrap_or(&0) as usize != l.n_children {
        return Err("child_ptr does not end at the number of children".into());
    }
    l.max_width = cp
        .windows(2)
        .map(|w| (w[1] - w[0]) as usize)
        .max()
        .unwrap_or(0);
    let chunk_width = if l.whole { l.n_children } else { l.max_width };
    if matches!(l.cols, Cols::U8(_)) && chunk_width > 1 << 8 {
        return Err("u8 columns with more than 256 children per parent".into());
    }
    if matches!(l.cols, Cols::U16(_)) && chunk_width > 1 << 16 {
        return Err("u16 columns with more than 65536 children per parent".into());
    }
    let check = |p: &[u64], total: usize, what: &str| -> std::result::Result<(), String> {
        if p.first() != Some(&0)
            || p.windows(2).any(|w| w[1] < w[0])
            || *p.last().unwrap_or(&0) != total as u64
        {
            return Err(format!("{what} is not a pointer from 0 to {total}"));
        }
        Ok(())
    };
    check(&l.chunk_rows, l.row_feat.len(), "chunk_rows")?;
    check(&l.chunk_ents, l.vals.len(), "chunk_ents")?;
    check(&l.chunk_bkts, l.bkt.len(), "chunk_bkts")?;
    if l.chunk_bkts.windows(2).any(|w| w[1] == w[0]) {
        return Err("every chunk needs at least one bucket pointer".into());
    }
    if l.chunk_shift.iter().any(|&s| s > 31) {
        return Err("bucket shift above 31".into());
    }
    Ok(())
}

fn verify_layer<C: Col>(
    v: &LayerView<'_, C>,
    l: &Layer,
    n_features: usize,
) -> std::result::Result<(), String> {
    crate::sparse::check_finite(&l.bias, "bias").map_err(|e| e.to_string())?;
    (0..v.n_chunks())
        .into_par_iter()
        .try_for_each(|j| -> std::result::Result<(), String> {
            let ch = v.chunk(j).map_err(|_| format!("chunk {j}: bad pointers"))?;
            let w = ch.width();
            let err = |what: &str| format!("chunk {j}: {what}");
            if ch.feat.windows(2).any(|p| p[1] <= p[0]) {
                return Err(err("row feature ids are not increasing"));
            }
            if ch.feat.last().is_some_and(|&f| f as usize >= n_features) {
                return Err(err("feature id out of range"));
            }
            if ch.ptr.first() != Some(&0)
                || ch.ptr.windows(2).any(|p| p[1] <= p[0])
                || *ch.ptr.last().unwrap_or(&0) as usize != ch.vals.len()
            {
                return Err(err("bad row pointer"));
            }
            if bucket_ptr(ch.feat, ch.shift as u8) != ch.bkt {
                return Err(err("bucket index does not match the rows"));
            }
            for r in 0..ch.feat.len() {
                let (s, e) = (ch.ptr[r] as usize, ch.ptr[r + 1] as usize);
                let cols = &ch.cols[s..e];
                if e - s == w {
                    if cols.iter().enumerate().any(|(k, c)| c.idx() != k) {
                        return Err(err("dense row with wrong columns"));
                    }
                } else if cols.windows(2).any(|p| p[1].idx() <= p[0].idx())
                    || cols.last().is_some_and(|c| c.idx() >= w)
                {
                    return Err(err("bad column ids"));
                }
            }
            Ok(())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xr::infer::{predict, PredictParams};
    use crate::xr::model::format::{DATA_FILE, MANIFEST_FILE};
    use crate::xr::model::layout::{direct_index, LayoutParams};
    use crate::xr::model::testutil::{sample, tmpdir};
    use crate::xr::testutil::random_queries;
    use crate::xr::PostProcessor;

    /// A mapped load checks the whole structure: a corruption that passes the checksum (the
    /// manifest's crc fixed up) is rejected by a mapped load whenever a full load rejects it
    /// for its structure; what a mapped load accepts (corrupt weights) answers with valid ids
    /// and finite scores, and `verify` reports it.
    #[test]
    fn mapped_loads_check_structure_and_answer_validly() {
        let (_, _, model) = sample(11);
        let dir = tmpdir("mapped-structure");
        model.save(&dir).unwrap();
        let dpath = dir.join(DATA_FILE);
        let mpath = dir.join(MANIFEST_FILE);
        let good = std::fs::read(&dpath).unwrap();
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
        let x = random_queries(40, 30, 12, 8);
        let mut rng = crate::cluster::SplitMix64::new(3);
        let header = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        let (mut structural, mut accepted) = (0, 0);
        for t in 0..600 {
            let mut b = good.clone();
            let at = header + rng.below((b.len() - header) as u64) as usize;
            b[at] = match t % 3 {
                0 => b[at] ^ (1 << rng.below(8)),
                1 => 0xff,
                _ => rng.below(256) as u8,
            };
            if b == good {
                continue;
            }
            let mut m = manifest.clone();
            m["checksum"] = format!("crc32:{:08x}", store::crc32(&b)).into();
            std::fs::write(&dpath, &b).unwrap();
            std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
            let full = XrModel::load(&dir, false);
            let mapped = XrModel::load(&dir, true);
            match (&full, &mapped) {
                (Err(e), _) if !e.to_string().contains("weight") => {
                    structural += 1;
                    assert!(mapped.is_err(), "mapped load accepted: {e}");
                }
                (_, Ok(mm)) => {
                    accepted += 1;
                    assert_eq!(mm.verify().is_ok(), full.is_ok());
                    for pp in [PostProcessor::Hinge(3), PostProcessor::Noop] {
                        for beam_size in [1, 4, 1000] {
                            let p = PredictParams {
                                beam_size,
                                topk: 7,
                                post_processor: pp,
                                ..PredictParams::default()
                            };
                            let (ids, sc) = predict(mm, &x.view(), &p).unwrap();
                            for (&i, &s) in ids.iter().zip(&sc) {
                                assert!(i >= -1 && i < model.n_labels() as i64);
                                assert!(i == -1 || s.is_finite(), "{s}");
                            }
                        }
                    }
                }
                (Ok(_), Err(e)) => panic!("a mapped load rejected what a full load accepts: {e}"),
                _ => {}
            }
        }
        assert!(structural > 50 && accepted > 50, "{structural} {accepted}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Structural corruption behind the cheap checks (pointers, columns, features, buckets)
    /// is caught by the search kernels as an error.
    #[test]
    fn kernels_report_corrupt_indices() {
        let (_, _, model) = sample(10);
        let x = random_queries(60, 30, 25, 11);
        let names = ["row_ptr", "cols", "row_feat", "bkt"];
        // with and without the feature-indexed pointer, rebuilt from the damaged arrays as a
        // load builds it
        for (name, direct) in names.into_iter().flat_map(|n| [(n, true), (n, false)]) {
            for kernel in [
                crate::xr::infer::Kernel::Lookup,
                crate::xr::infer::Kernel::Scan,
                crate::xr::infer::Kernel::Merge,
            ] {
                let mut m = model.clone();
                let l = &mut m.layers[2];
                match name {
                    "row_ptr" => {
                        let mut v = l.row_ptr.to_vec();
                        for e in v.iter_mut().skip(1) {
                            *e = e.saturating_add(1 << 30);
                        }
                        l.row_ptr = v.into();
                    }
                    "cols" => {
                        l.cols = match &l.cols {
                            Cols::U8(c) => {
                                Cols::U8(c.iter().map(|_| 255).collect::<Vec<_>>().into())
                            }
                            Cols::U16(c) => {
                                Cols::U16(c.iter().map(|_| 65535).collect::<Vec<_>>().into())
                            }
                            Cols::U32(c) => {
                                Cols::U32(c.iter().map(|_| u32::MAX).collect::<Vec<_>>().into())
                            }
                        }
                    }
                    "row_feat" => {
                        l.row_feat = l
                            .row_feat
                            .iter()
                            .map(|f| f + 1000)
                            .collect::<Vec<_>>()
                            .into();
                    }
                    _ => {
                        l.bkt = l.bkt.iter().map(|b| b + 1000).collect::<Vec<_>>().into();
                    }
                }
                let l = &mut m.layers[2];
                l.direct = if direct {
                    direct_index(l, &LayoutParams::default())
                } else {
                    None
                };
                if direct && name == "cols" {
                    assert!(
                        l.direct.is_some(),
                        "the damaged layer keeps its direct pointer"
                    );
                }
                let has_direct = l.direct.is_some();
                assert!(m.verify().is_err(), "{name}");
                let p = PredictParams {
                    beam_size: 8,
                    kernel,
                    ..PredictParams::default()
                };
                let r = predict(&m, &x.view(), &p);
                // row_feat shifted out of range only matters to the scan kernel; bucket
                // pointers only to the lookup kernel
                let must_fail = match name {
                    "row_feat" => kernel == crate::xr::infer::Kernel::Scan,
                    "bkt" => kernel == crate::xr::infer::Kernel::Lookup && !has_direct,
                    _ => true,
                };
                if must_fail {
                    let e = r.unwrap_err().to_string();
                    assert!(e.contains("corrupt"), "{e}");
                }
            }
        }
    }
}
