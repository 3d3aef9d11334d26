//! The model's files: the manifest, the array file, and [`XrModel::save`],
//! [`XrModel::load`], [`XrModel::to_bytes`] and [`XrModel::from_bytes`].
//!
//! [`XrModel::save`] writes a directory with two files, each atomically (temporary file,
//! fsync, rename; the array file first, under a name the current manifest does not use, so
//! that replacing a model is crash-safe):
//! - `xr_model.json`, the manifest: format name and version, shapes, per-layer sizes, the
//!   dtype, length and byte offset of every array, the CRC-32 of the array file, and
//!   free-form string metadata;
//! - `xr_model.safetensors`, every array in one [safetensors](https://github.com/huggingface/safetensors)
//!   file (readable from numpy with `safetensors.numpy.load_file`), arrays ordered by
//!   decreasing element size so each is aligned for its dtype when the file is mapped.
//!
//! [`XrModel::load`] either reads the array file into memory and checks everything
//! (checksum and full structure), or maps it read-only and checks only the manifest, sizes,
//! offsets and the small per-chunk pointer arrays (O(parents), not O(weights)): the search
//! kernels check each index they read from the file and report corruption as an error.
//! [`XrModel::verify`] runs the full check on a mapped model (see `verify.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::layout::{Cols, Layer, LayoutParams};
use super::verify::check_small;
use super::xr_model::XrModel;
use crate::xr::store::{self, ArrayOut, Backing, Buf, Dtype, Placed};
use crate::{Error, Result};

/// Name of the manifest file in a model directory.
pub const MANIFEST_FILE: &str = "xr_model.json";
/// Name of the array file in a model directory.
pub const DATA_FILE: &str = "xr_model.safetensors";
/// The array file's name while replacing a model whose array file is [`DATA_FILE`].
pub const ALT_DATA_FILE: &str = "xr_model.1.safetensors";
/// The `format` field of the manifest.
pub const FORMAT_NAME: &str = "xmrrs.xr_model";
/// The newest manifest version this build writes and reads: 2 adds the dense feature block
/// (`n_dense`, float32 arrays `layer{m}.dense_w`); 3 stores those weights as float16, each
/// child's row times its own power of two (int8 arrays `layer{m}.dense_unscale`). A model without a dense block is written
/// as version 1, which older builds read; they refuse a newer version rather than misread
/// it. Version 2 files still load (their dense weights are narrowed on load).
pub const FORMAT_VERSION: u32 = 3;
/// Largest manifest file that [`XrModel::load`] reads (a real one is a few KiB).
const MAX_MANIFEST_BYTES: u64 = 64 << 20;
const BYTES_MAGIC: &[u8; 8] = b"XMRRSXR\0";

impl XrModel {
    fn arrays<'a>(&'a self) -> Vec<ArrayOut<'a>> {
        let mut out = vec![ArrayOut {
            name: "labels".into(),
            dtype: Dtype::U32,
            bytes: bytemuck::cast_slice(&self.labels),
        }];
        for (m, l) in self.layers.iter().enumerate() {
            let mut push = |name: &str, dtype: Dtype, bytes: &'a [u8]| {
                out.push(ArrayOut {
                    name: format!("layer{m}.{name}"),
                    dtype,
                    bytes,
                })
            };
            push("child_ptr", Dtype::U32, bytemuck::cast_slice(&l.child_ptr));
            push("bias", Dtype::F32, bytemuck::cast_slice(&l.bias));
            push(
                "chunk_rows",
                Dtype::U64,
                bytemuck::cast_slice(&l.chunk_rows),
            );
            push(
                "chunk_ents",
                Dtype::U64,
                bytemuck::cast_slice(&l.chunk_ents),
            );
            push(
                "chunk_bkts",
                Dtype::U64,
                bytemuck::cast_slice(&l.chunk_bkts),
            );
            push("chunk_shift", Dtype::U8, &l.chunk_shift);
            push("row_feat", Dtype::U32, bytemuck::cast_slice(&l.row_feat));
            push("row_ptr", Dtype::U32, bytemuck::cast_slice(&l.row_ptr));
            push("bkt", Dtype::U32, bytemuck::cast_slice(&l.bkt));
            match &l.cols {
                Cols::U8(c) => push("cols", Dtype::U8, c),
                Cols::U16(c) => push("cols", Dtype::U16, bytemuck::cast_slice(c)),
                Cols::U32(c) => push("cols", Dtype::U32, bytemuck::cast_slice(c)),
            }
            push("vals", Dtype::F32, bytemuck::cast_slice(&l.vals));
            if l.n_dense > 0 {
                push("dense_w", Dtype::F16, bytemuck::cast_slice(&l.dense_w));
                push(
                    "dense_unscale",
                    Dtype::I8,
                    bytemuck::cast_slice(&l.dense_unscale),
                );
            }
        }
        out
    }

    fn manifest(&self, data_file: &str, placed: &[Placed], data_bytes: u64, crc: u32) -> Manifest {
        Manifest {
            format: FORMAT_NAME.into(),
            version: if self.n_dense > 0 { FORMAT_VERSION } else { 1 },
            n_features: self.n_features as u64,
            n_dense: self.n_dense as u64,
            n_labels: self.n_labels as u64,
            partial: self.partial,
            layers: self
                .layers
                .iter()
                .map(|l| LayerMeta {
                    n_parents: l.n_parents as u64,
                    n_children: l.n_children as u64,
                    n_chunks: l.chunk_shift.len() as u64,
                    n_rows: l.row_feat.len() as u64,
                    n_entries: l.n_entries() as u64,
                    n_buckets: l.bkt.len() as u64,
                    nnz: l.nnz as u64,
                    n_dense: l.n_dense as u64,
                    col_dtype: match l.cols {
                        Cols::U8(_) => "U8".into(),
                        Cols::U16(_) => "U16".into(),
                        Cols::U32(_) => "U32".into(),
                    },
                })
                .collect(),
            data_file: data_file.into(),
            data_bytes,
            checksum: format!("crc32:{crc:08x}"),
            arrays: placed
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        ArrayMeta {
                            dtype: p.dtype.name().into(),
                            shape: vec![p.len as u64],
                            offset: p.offset as u64,
                            nbytes: (p.len * p.dtype.size()) as u64,
                        },
                    )
                })
                .collect(),
            metadata: self.metadata.clone(),
        }
    }

    /// Saves the model into directory `dir` (created if missing), crash-safely: the array
    /// file is written under a name that the manifest in `dir` (if any) does not use
    /// ([`DATA_FILE`], or [`ALT_DATA_FILE`] when that one is in use), then the manifest
    /// replaces the old one by an atomic rename (the commit point), and only then is the old
    /// array file removed. Each file is written to a temporary file, synced and renamed, and
    /// the directory is synced, so at every instant `dir` holds the complete old model or the
    /// complete new one. Files other than the manifest and the array files are not touched.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| store::io_err(dir, e))?;
        let current = store::read_text(&dir.join(MANIFEST_FILE), MAX_MANIFEST_BYTES)
            .ok()
            .and_then(|t| peek_data_file(&t).ok())
            .map(|(f, _)| f);
        let data_file = if current.as_deref() == Some(DATA_FILE) {
            ALT_DATA_FILE
        } else {
            DATA_FILE
        };
        let mut arrays = self.arrays();
        let (placed, n, crc) = store::write_atomic(&dir.join(data_file), |w| {
            store::write_safetensors(w, &mut arrays)
        })?;
        let manifest = self.manifest(data_file, &placed, n, crc);
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::invalid(format!("cannot encode the manifest: {e}")))?;
        store::write_atomic(&dir.join(MANIFEST_FILE), |w| {
            std::io::Write::write_all(w, &text)
        })?;
        // the other array name is ours and no longer named by the manifest (an interrupted
        // earlier save may have left it too)
        let other = if data_file == DATA_FILE {
            ALT_DATA_FILE
        } else {
            DATA_FILE
        };
        match std::fs::remove_file(dir.join(other)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(store::io_err(&dir.join(other), e))
            }
            _ => Ok(()),
        }
    }

    /// The manifest and the array file in one buffer (for pickling): an 8-byte magic, the
    /// manifest length (u64 little-endian), the manifest, zero padding to a multiple of 8,
    /// then the array file.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut arrays = self.arrays();
        let mut data = Vec::new();
        let (placed, n, crc) = store::write_safetensors(&mut data, &mut arrays)
            .map_err(|e| Error::invalid(format!("cannot serialise the model: {e}")))?;
        let manifest = serde_json::to_vec(&self.manifest(DATA_FILE, &placed, n, crc))
            .map_err(|e| Error::invalid(format!("cannot encode the manifest: {e}")))?;
        let pad = manifest.len().next_multiple_of(8) - manifest.len();
        let mut out = Vec::with_capacity(16 + manifest.len() + pad + data.len());
        out.extend_from_slice(BYTES_MAGIC);
        out.extend_from_slice(&(manifest.len() as u64).to_le_bytes());
        out.extend_from_slice(&manifest);
        out.resize(out.len() + pad, 0);
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Rebuilds a model from [`XrModel::to_bytes`]'s output (copied, fully verified).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |what: &str| Error::invalid(format!("not an xmrrs XR model buffer: {what}"));
        if bytes.len() < 16 || &bytes[..8] != BYTES_MAGIC {
            return Err(bad("wrong magic bytes"));
        }
        let mlen = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| bad("short"))?);
        let mlen = usize::try_from(mlen).map_err(|_| bad("manifest length"))?;
        let mend = mlen
            .checked_add(16)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| bad("truncated manifest"))?;
        let manifest = std::str::from_utf8(&bytes[16..mend]).map_err(|_| bad("manifest"))?;
        let dstart = mlen.next_multiple_of(8) + 16;
        let data = bytes.get(dstart..).ok_or_else(|| bad("truncated data"))?;
        let backing = Arc::new(Backing::copy_from(data));
        Self::from_parts(manifest, backing, true, false)
    }

    /// Loads a model saved by [`XrModel::save`].
    ///
    /// With `mmap == false` the array file is read into memory and fully checked (checksum
    /// and structure). With `mmap == true` it is mapped read-only and only the manifest,
    /// array sizes and offsets and the per-chunk pointer arrays are checked; call
    /// [`XrModel::verify`] for the full check. Either way a corrupt or truncated model gives
    /// an error, at load or at search time, never a crash.
    pub fn load(dir: impl AsRef<Path>, mmap: bool) -> Result<Self> {
        let dir = dir.as_ref();
        let mpath = dir.join(MANIFEST_FILE);
        let text = store::read_text(&mpath, MAX_MANIFEST_BYTES)?;
        let (data_file, data_bytes) = peek_data_file(&text)?;
        let dpath = dir.join(data_file);
        let backing = if mmap {
            Backing::map_file(&dpath, data_bytes)?
        } else {
            Backing::read_file(&dpath, data_bytes)?
        };
        Self::from_parts(&text, Arc::new(backing), !mmap, mmap)
    }

    fn from_parts(
        manifest: &str,
        backing: Arc<Backing>,
        full_check: bool,
        mapped: bool,
    ) -> Result<Self> {
        if cfg!(target_endian = "big") {
            return Err(Error::invalid(
                "model files are little-endian; big-endian hosts are not supported",
            ));
        }
        let man = parse_manifest(manifest)?;
        let bytes = backing.bytes();
        if bytes.len() as u64 != man.data_bytes {
            return Err(Error::invalid(format!(
                "array file has {} bytes, the manifest says {} (truncated or replaced?)",
                bytes.len(),
                man.data_bytes
            )));
        }
        if full_check {
            let got = format!("crc32:{:08x}", store::crc32(bytes));
            if got != man.checksum {
                return Err(Error::invalid(format!(
                    "array file checksum {got} does not match the manifest's {}: the file \
                     is corrupt",
                    man.checksum
                )));
            }
        }
        let placed = store::read_safetensors_header(bytes)?;
        let mut by_name: BTreeMap<&str, &Placed> = BTreeMap::new();
        for p in &placed {
            by_name.insert(p.name.as_str(), p);
        }
        if by_name.len() != man.arrays.len() {
            return Err(Error::invalid(format!(
                "array file holds {} arrays, the manifest lists {}",
                by_name.len(),
                man.arrays.len()
            )));
        }
        for (name, a) in &man.arrays {
            let p = by_name.get(name.as_str()).ok_or_else(|| {
                Error::invalid(format!("array {name} is in the manifest but not the file"))
            })?;
            if a.dtype != p.dtype.name()
                || a.shape != [p.len as u64]
                || a.offset != p.offset as u64
                || a.nbytes != (p.len * p.dtype.size()) as u64
            {
                return Err(Error::invalid(format!(
                    "array {name}: the manifest and the array file disagree"
                )));
            }
        }
        let get = |name: &str, dtype: Dtype, len: u64| -> Result<&Placed> {
            let p = by_name
                .get(name)
                .ok_or_else(|| Error::invalid(format!("array {name} is missing")))?;
            if p.dtype != dtype || p.len as u64 != len {
                return Err(Error::invalid(format!(
                    "array {name}: expected {} x {len}, found {} x {}",
                    dtype.name(),
                    p.dtype.name(),
                    p.len
                )));
            }
            Ok(p)
        };
        fn buf<T: bytemuck::Pod>(b: &Arc<Backing>, p: &Placed) -> Result<Buf<T>> {
            Buf::shared(b, p.offset, p.len)
        }
        let n_features = usize::try_from(man.n_features)
            .ok()
            .filter(|&d| d >= 1 && d <= u32::MAX as usize)
            .ok_or_else(|| Error::invalid("n_features out of range"))?;
        if man.layers.is_empty() {
            return Err(Error::invalid("the model has no layers"));
        }
        let labels: Buf<u32> = buf(&backing, get("labels", Dtype::U32, man.n_labels)?)?;
        let mut layers = Vec::with_capacity(man.layers.len());
        let mut n_above = 1u64;
        for (m, lm) in man.layers.iter().enumerate() {
            if lm.n_parents != n_above {
                return Err(Error::invalid(format!(
                    "layer {m} has {} parents but the level above has {n_above} nodes",
                    lm.n_parents
                )));
            }
            n_above = lm.n_children;
            let np = lm.n_parents;
            let nc = lm.n_chunks;
            if nc != np && nc != 1 {
                return Err(Error::invalid(format!(
                    "layer {m} has {nc} chunks; expected 1 or one per parent ({np})"
                )));
            }
            let name = |s: &str| format!("layer{m}.{s}");
            let child_ptr: Buf<u32> = buf(&backing, get(&name("child_ptr"), Dtype::U32, np + 1)?)?;
            let bias = buf(&backing, get(&name("bias"), Dtype::F32, lm.n_children)?)?;
            let chunk_rows: Buf<u64> =
                buf(&backing, get(&name("chunk_rows"), Dtype::U64, nc + 1)?)?;
            let chunk_ents: Buf<u64> =
                buf(&backing, get(&name("chunk_ents"), Dtype::U64, nc + 1)?)?;
            let chunk_bkts: Buf<u64> =
                buf(&backing, get(&name("chunk_bkts"), Dtype::U64, nc + 1)?)?;
            let chunk_shift: Buf<u8> = buf(&backing, get(&name("chunk_shift"), Dtype::U8, nc)?)?;
            let row_feat = buf(&backing, get(&name("row_feat"), Dtype::U32, lm.n_rows)?)?;
            let row_ptr = buf(&backing, get(&name("row_ptr"), Dtype::U32, lm.n_rows + nc)?)?;
            let bkt = buf(&backing, get(&name("bkt"), Dtype::U32, lm.n_buckets)?)?;
            let cols = match lm.col_dtype.as_str() {
                "U8" => Cols::U8(buf(&backing, get(&name("cols"), Dtype::U8, lm.n_entries)?)?),
                "U16" => Cols::U16(buf(
                    &backing,
                    get(&name("cols"), Dtype::U16, lm.n_entries)?,
                )?),
                "U32" => Cols::U32(buf(
                    &backing,
                    get(&name("cols"), Dtype::U32, lm.n_entries)?,
                )?),
                other => {
                    return Err(Error::invalid(format!(
                        "layer {m}: unknown column dtype {other}"
                    )))
                }
            };
            let vals = buf(&backing, get(&name("vals"), Dtype::F32, lm.n_entries)?)?;
            if lm.n_dense != man.n_dense && lm.n_dense != 0 {
                return Err(Error::invalid(format!(
                    "layer {m} has {} dense features, the model {}",
                    lm.n_dense, man.n_dense
                )));
            }
            let (dense_w, dense_unscale): (Buf<u16>, Buf<i8>) = if lm.n_dense > 0 {
                let len = lm.n_children.checked_mul(lm.n_dense).ok_or_else(|| {
                    Error::invalid(format!("layer {m}: dense weights size overflows"))
                })?;
                if man.version >= 3 {
                    let w = buf(&backing, get(&name("dense_w"), Dtype::F16, len)?)?;
                    let k: Buf<i8> = buf(
                        &backing,
                        get(&name("dense_unscale"), Dtype::I8, lm.n_children)?,
                    )?;
                    if let Some(bad) = k.iter().find(|k| !crate::half::UNSCALE_LOG2.contains(k)) {
                        return Err(Error::invalid(format!(
                            "layer {m}: a dense weight scale of 2^{bad} is out of range: the \
                             file is corrupt"
                        )));
                    }
                    (w, k)
                } else {
                    // version 2: float32 weights, narrowed as training output is
                    let w: Buf<f32> = buf(&backing, get(&name("dense_w"), Dtype::F32, len)?)?;
                    let h = crate::half::HalfRows::pack(&w, as_usize_u64(lm.n_dense)?);
                    (h.bits.into(), h.unscale_log2.into())
                }
            } else {
                (Vec::new().into(), Vec::new().into())
            };
            let as_usize = |v: u64| usize::try_from(v).map_err(|_| Error::invalid("size overflow"));
            let mut layer = Layer {
                n_parents: as_usize(np)?,
                n_children: as_usize(lm.n_children)?,
                whole: nc == 1 && np > 1,
                max_width: 0,
                nnz: as_usize(lm.nnz)?,
                child_ptr,
                bias,
                chunk_rows,
                chunk_ents,
                chunk_bkts,
                chunk_shift,
                row_feat,
                row_ptr,
                bkt,
                cols,
                vals,
                dense: None,
                direct: None,
                dense_w,
                dense_unscale,
                n_dense: as_usize(lm.n_dense)?,
            };
            check_small(&mut layer).map_err(|e| Error::invalid(format!("layer {m}: {e}")))?;
            layer.derive_in_memory(&LayoutParams::default());
            layers.push(layer);
        }
        if n_above != man.n_labels {
            return Err(Error::invalid(format!(
                "the last layer has {n_above} children but the model {} labels",
                man.n_labels
            )));
        }
        let model = XrModel {
            n_features,
            n_dense: as_usize_u64(man.n_dense)?,
            n_labels: as_usize_u64(man.n_labels)?,
            partial: man.partial,
            layers,
            labels,
            metadata: man.metadata,
            mapped,
            source: Some((Arc::clone(&backing), man.checksum)),
        };
        model.verify_structure()?;
        if full_check {
            model.verify_values()?;
        }
        Ok(model)
    }
}

fn as_usize_u64(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::invalid("size overflow"))
}

// ---------------------------------------------------------------------------------------
// manifest

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    n_features: u64,
    /// Width of the dense feature block (version 2; 0 when absent).
    #[serde(default)]
    n_dense: u64,
    n_labels: u64,
    partial: bool,
    layers: Vec<LayerMeta>,
    data_file: String,
    data_bytes: u64,
    checksum: String,
    arrays: BTreeMap<String, ArrayMeta>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct LayerMeta {
    n_parents: u64,
    n_children: u64,
    /// `n_parents` (one chunk per parent) or 1 (one chunk for the whole layer).
    n_chunks: u64,
    n_rows: u64,
    n_entries: u64,
    n_buckets: u64,
    nnz: u64,
    col_dtype: String,
    /// Dense weights per child: the model's `n_dense` or 0 (version 2).
    #[serde(default)]
    n_dense: u64,
}

#[derive(Serialize, Deserialize)]
struct ArrayMeta {
    dtype: String,
    shape: Vec<u64>,
    offset: u64,
    nbytes: u64,
}

fn check_format(v: &serde_json::Value) -> Result<()> {
    let format = v.get("format").and_then(|f| f.as_str());
    if format != Some(FORMAT_NAME) {
        return Err(Error::invalid(format!(
            "not an xmrrs XR model manifest (format {:?}, expected {FORMAT_NAME:?})",
            format.unwrap_or("missing")
        )));
    }
    match v.get("version").and_then(|f| f.as_u64()) {
        Some(x) if (1..=u64::from(FORMAT_VERSION)).contains(&x) => Ok(()),
        Some(x) => Err(Error::invalid(format!(
            "model format version {x} is not supported by this build (it reads version \
             {FORMAT_VERSION}); upgrade xmrrs or re-save the model"
        ))),
        None => Err(Error::invalid("the manifest has no format version")),
    }
}

fn parse_manifest(text: &str) -> Result<Manifest> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid(format!("the model manifest is not valid JSON: {e}")))?;
    check_format(&v)?;
    serde_json::from_value(v)
        .map_err(|e| Error::invalid(format!("the model manifest is malformed: {e}")))
}

/// The manifest's array file name (a plain name inside the model directory) and size.
fn peek_data_file(text: &str) -> Result<(String, u64)> {
    let man = parse_manifest(text)?;
    let f = man.data_file;
    if f.is_empty() || f.contains(['/', '\\']) || f == "." || f == ".." {
        return Err(Error::invalid(format!(
            "bad data_file {f:?} in the manifest"
        )));
    }
    Ok((f, man.data_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparse::Csr;
    use crate::xr::infer::{predict, PredictParams};
    use crate::xr::model::testutil::{bits, sample, tmpdir};
    use crate::xr::testutil::{random_layers, random_queries, random_tree};
    use crate::xr::LayerWeights;

    #[test]
    fn owned_mapped_and_bytes_give_identical_predictions() {
        let (_, _, mut model) = sample(3);
        model
            .metadata_mut()
            .insert("post_processor".into(), "l3-hinge".into());
        let dir = tmpdir("roundtrip");
        model.save(&dir).unwrap();
        let loaded = XrModel::load(&dir, false).unwrap();
        let mapped = XrModel::load(&dir, true).unwrap();
        let from_bytes = XrModel::from_bytes(&model.to_bytes().unwrap()).unwrap();
        assert!(mapped.is_mapped() && !loaded.is_mapped());
        mapped.verify().unwrap();
        let x = random_queries(80, 30, 10, 4);
        let p = PredictParams {
            beam_size: 3,
            topk: 6,
            ..PredictParams::default()
        };
        let want = predict(&model, &x.view(), &p).unwrap();
        for m in [&loaded, &mapped, &from_bytes] {
            assert_eq!(
                m.metadata().get("post_processor").map(String::as_str),
                Some("l3-hinge")
            );
            assert_eq!(m.layer_nnz(), model.layer_nnz());
            assert_eq!(m.nbytes(), model.nbytes());
            let got = predict(m, &x.view(), &p).unwrap();
            assert_eq!(got.0, want.0);
            assert_eq!(bits(&got.1), bits(&want.1));
            for l in 0..3 {
                assert_eq!(m.layer_weights(l).unwrap(), model.layer_weights(l).unwrap());
            }
        }
        // saving again over a mapped model keeps the map valid (rename, not rewrite)
        let (_, _, other) = sample(4);
        other.save(&dir).unwrap();
        let got = predict(&mapped, &x.view(), &p).unwrap();
        assert_eq!(got.0, want.0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn partial_models_and_u8_u16_u32_columns_round_trip() {
        for n_labels in [200, 3_000, 70_000] {
            let tree = random_tree(&[2], n_labels, 5);
            // the widest leaf picks the column type: <= 256 u8, <= 65536 u16, else u32
            let width = tree
                .leaf_ptr()
                .windows(2)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap();
            let layers = random_layers(&tree, 2, 10, 5);
            let model = XrModel::new(&tree, layers.clone(), 10).unwrap();
            let want = match width {
                0..=256 => "U8",
                257..=65536 => "U16",
                _ => "U32",
            };
            let got = match model.layers[1].cols {
                Cols::U8(_) => "U8",
                Cols::U16(_) => "U16",
                Cols::U32(_) => "U32",
            };
            assert_eq!(got, want, "leaf width {width}");
            let back = XrModel::from_bytes(&model.to_bytes().unwrap()).unwrap();
            let x = random_queries(40, 10, 5, 6);
            let p = PredictParams::default();
            assert_eq!(
                predict(&model, &x.view(), &p).unwrap(),
                predict(&back, &x.view(), &p).unwrap()
            );
        }
        let tree = random_tree(&[2], 70_000, 5);
        let layers = random_layers(&tree, 2, 10, 5);
        let part = XrModel::new_partial(&tree, &layers[..1], 10).unwrap();
        let back = XrModel::from_bytes(&part.to_bytes().unwrap()).unwrap();
        assert!(back.is_partial());
        assert_eq!(back.labels(), &[0, 1]);
    }

    /// A three-layer model with a dense block of 5 beside 30 sparse features, its layers.
    fn dense_model() -> (XrModel, Vec<LayerWeights>) {
        let (d, k) = (30, 5);
        let tree = random_tree(&[3, 9], 40, 8);
        let mut layers = random_layers(&tree, 3, d, 8);
        let mut s = 5u32;
        for l in &mut layers {
            l.n_dense = k;
            l.dense = (0..l.bias.len() * k)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    (s % 2001) as f32 / 700.0 - 1.4
                })
                .collect();
        }
        (XrModel::new(&tree, layers.clone(), d).unwrap(), layers)
    }

    /// 60 queries for [`dense_model`]: sparse rows and their dense block.
    fn dense_queries() -> (Csr, Vec<f32>) {
        let xd = (0..60 * 5)
            .map(|i| ((i * 7919) % 13) as f32 / 13.0)
            .collect();
        (random_queries(60, 30, 8, 3), xd)
    }

    /// A version 2 model (float32 dense weights, written before version 3 stored them in
    /// half precision) still loads, owned and mapped, and answers exactly as the same
    /// weights saved today: its dense weights are narrowed on load as at training.
    #[test]
    fn version_2_dense_models_still_load() {
        let k = 5;
        let (model, layers) = dense_model();
        // the version 2 files: the float32 weights, and a manifest saying version 2
        let mut arrays = model.arrays();
        arrays.retain(|a| !a.name.ends_with(".dense_unscale"));
        for a in arrays.iter_mut() {
            if let Some(m) = a.name.strip_suffix(".dense_w") {
                let m: usize = m.trim_start_matches("layer").parse().unwrap();
                a.dtype = Dtype::F32;
                a.bytes = bytemuck::cast_slice(&layers[m].dense);
            }
        }
        let mut data = Vec::new();
        let (placed, n, crc) = store::write_safetensors(&mut data, &mut arrays).unwrap();
        let mut man = serde_json::to_value(model.manifest(DATA_FILE, &placed, n, crc)).unwrap();
        man["version"] = 2.into();
        let dir = tmpdir("version2");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(DATA_FILE), &data).unwrap();
        std::fs::write(dir.join(MANIFEST_FILE), man.to_string()).unwrap();
        let (x, xd) = dense_queries();
        let xd = crate::dense::DenseView::new(60, k, &xd).unwrap();
        let p = PredictParams {
            beam_size: 4,
            topk: 6,
            ..Default::default()
        };
        let want = crate::xr::infer::predict_hybrid(&model, &x.view(), Some(&xd), &p).unwrap();
        for mmap in [false, true] {
            let old = XrModel::load(&dir, mmap).unwrap();
            old.verify().unwrap();
            let got = crate::xr::infer::predict_hybrid(&old, &x.view(), Some(&xd), &p).unwrap();
            assert_eq!((&got.0, bits(&got.1)), (&want.0, bits(&want.1)));
            for m in 0..3 {
                assert_eq!(
                    old.layer_weights(m).unwrap(),
                    model.layer_weights(m).unwrap()
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Damaged half-precision weights: a scale out of range is refused at load (mapped: by
    /// its range; read: by the checksum); weights
    /// flipped to infinity or NaN are refused by the full load (checksum) and by `verify`,
    /// and a mapped model searched without `verify` still answers with finite scores.
    #[test]
    fn damaged_half_precision_weights_are_caught() {
        let (model, _) = dense_model();
        let dir = tmpdir("half");
        model.save(&dir).unwrap();
        let dpath = dir.join(DATA_FILE);
        let raw = std::fs::read(&dpath).unwrap();
        let placed = store::read_safetensors_header(&raw).unwrap();
        let sc = placed
            .iter()
            .find(|p| p.name == "layer1.dense_unscale")
            .unwrap();
        for bad in [127u8, 0x80] {
            let mut data = raw.clone();
            data[sc.offset + sc.len - 1] = bad;
            std::fs::write(&dpath, &data).unwrap();
            let e = XrModel::load(&dir, false).unwrap_err().to_string();
            assert!(e.contains("checksum"), "{e}");
            let e = XrModel::load(&dir, true).unwrap_err().to_string();
            assert!(e.contains("scale") && e.contains("corrupt"), "{e}");
        }
        let w = placed.iter().find(|p| p.name == "layer2.dense_w").unwrap();
        let (x, xd) = dense_queries();
        let xd = crate::dense::DenseView::new(60, 5, &xd).unwrap();
        let p = PredictParams {
            beam_size: 4,
            topk: 6,
            ..Default::default()
        };
        for bad in [0x7c00u16, 0xfc00, 0x7e00] {
            let mut data = raw.clone();
            for t in 0..w.len {
                let at = w.offset + 2 * t;
                data[at..at + 2].copy_from_slice(&bad.to_le_bytes());
            }
            std::fs::write(&dpath, &data).unwrap();
            let e = XrModel::load(&dir, false).unwrap_err().to_string();
            assert!(e.contains("checksum"), "{e}");
            let mapped = XrModel::load(&dir, true).unwrap();
            let e = mapped.verify().unwrap_err().to_string();
            assert!(e.contains("corrupt"), "{e}");
            let (ids, scores) =
                crate::xr::infer::predict_hybrid(&mapped, &x.view(), Some(&xd), &p).unwrap();
            assert_eq!(ids.len(), scores.len());
            assert!(scores.iter().all(|s| s.is_finite()), "{bad:#x}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn wrong_version_and_format_are_clear_errors() {
        let (_, _, model) = sample(6);
        let dir = tmpdir("version");
        model.save(&dir).unwrap();
        let mpath = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&mpath).unwrap();
        let v4 = text.replace("\"version\": 1", "\"version\": 4");
        assert_ne!(v4, text);
        std::fs::write(&mpath, &v4).unwrap();
        for mmap in [false, true] {
            let e = XrModel::load(&dir, mmap).unwrap_err().to_string();
            assert!(e.contains("version 4"), "{e}");
        }
        std::fs::write(&mpath, text.replace(FORMAT_NAME, "pecos")).unwrap();
        let e = XrModel::load(&dir, true).unwrap_err().to_string();
        assert!(e.contains("not an xmrrs XR model"), "{e}");
        std::fs::write(&mpath, "{").unwrap();
        assert!(XrModel::load(&dir, true).is_err());
        std::fs::remove_file(&mpath).unwrap();
        assert!(XrModel::load(&dir, true).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every truncation and many single-byte corruptions of the array file: loading and
    /// predicting give `Ok` or `Err`, never a panic; a non-mmap load, `verify` and
    /// `from_bytes` reject every change.
    #[test]
    fn corrupt_and_truncated_files_never_panic() {
        let (_, _, model) = sample(7);
        let dir = tmpdir("corrupt");
        model.save(&dir).unwrap();
        let dpath = dir.join(DATA_FILE);
        let good = std::fs::read(&dpath).unwrap();
        let bytes = model.to_bytes().unwrap();
        let x = random_queries(40, 30, 12, 8);
        let p = PredictParams {
            beam_size: 4,
            ..PredictParams::default()
        };
        let try_predict = |m: &XrModel| {
            let _ = predict(m, &x.view(), &p);
        };
        let mut rng = crate::cluster::SplitMix64::new(9);
        let n = good.len();
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for cut in (0..n).step_by(n / 60 + 1).chain([n - 1]) {
            cases.push(good[..cut].to_vec());
        }
        for _ in 0..400 {
            let mut b = good.clone();
            let at = rng.below(n as u64) as usize;
            let v = match rng.below(4) {
                0 => 0xff,
                1 => 0x00,
                2 => b[at] ^ (1 << rng.below(8)),
                _ => rng.below(256) as u8,
            };
            if v == b[at] {
                continue;
            }
            b[at] = v;
            cases.push(b);
        }
        let mut mapped_ok = 0;
        for b in &cases {
            std::fs::write(&dpath, b).unwrap();
            assert!(XrModel::load(&dir, false).is_err());
            match XrModel::load(&dir, true) {
                Ok(m) => {
                    mapped_ok += 1;
                    try_predict(&m);
                    assert!(m.verify().is_err());
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
            let mut whole = bytes[..bytes.len() - good.len()].to_vec();
            whole.extend_from_slice(b);
            assert!(XrModel::from_bytes(&whole).is_err());
        }
        assert!(
            mapped_ok > 100,
            "most value corruptions pass the cheap checks"
        );
        // the bytes container: truncated anywhere
        for cut in (0..bytes.len()).step_by(bytes.len() / 50 + 1) {
            assert!(XrModel::from_bytes(&bytes[..cut]).is_err());
        }
        std::fs::write(&dpath, &good).unwrap();
        XrModel::load(&dir, false).unwrap();
        // manifest edits: digits changed one at a time; never a panic, and whatever loads
        // either predicts or reports an error
        let mpath = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&mpath).unwrap();
        let digits: Vec<usize> = text
            .char_indices()
            .filter(|c| c.1.is_ascii_digit())
            .map(|c| c.0)
            .collect();
        for (i, &at) in digits.iter().enumerate().step_by(digits.len() / 150 + 1) {
            let mut t = text.clone().into_bytes();
            t[at] = b'0' + ((t[at] - b'0' + 1 + (i % 9) as u8) % 10);
            std::fs::write(&mpath, &t).unwrap();
            for mmap in [false, true] {
                if let Ok(m) = XrModel::load(&dir, mmap) {
                    try_predict(&m);
                    let _ = m.verify();
                }
            }
        }
        // a buffer at an odd address still loads (copied into aligned memory)
        let mut odd = vec![0u8];
        odd.extend_from_slice(&bytes);
        let m = XrModel::from_bytes(&odd[1..]).unwrap();
        assert_eq!(
            predict(&m, &x.view(), &p).unwrap(),
            predict(&model, &x.view(), &p).unwrap()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Replacing a saved model in place never leaves the directory without a complete model:
    /// the array file of the new model gets a name the old manifest does not use.
    #[test]
    fn saving_over_a_model_alternates_array_files() {
        let (_, _, a) = sample(12);
        let (_, _, b) = sample(13);
        let dir = tmpdir("replace");
        let x = random_queries(20, 30, 12, 8);
        let p = PredictParams::default();
        a.save(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), b"keep").unwrap();
        for (i, m) in [&b, &a, &b].into_iter().enumerate() {
            let before = std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap();
            m.save(&dir).unwrap();
            let after = std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap();
            let (f0, f1) = (
                peek_data_file(&before).unwrap().0,
                peek_data_file(&after).unwrap().0,
            );
            assert_ne!(f0, f1, "save {i} reused the array file in use");
            assert!(!dir.join(&f0).exists(), "the old array file is removed");
            let back = XrModel::load(&dir, true).unwrap();
            assert_eq!(
                predict(&back, &x.view(), &p).unwrap(),
                predict(m, &x.view(), &p).unwrap()
            );
        }
        assert_eq!(std::fs::read(dir.join("notes.txt")).unwrap(), b"keep");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
