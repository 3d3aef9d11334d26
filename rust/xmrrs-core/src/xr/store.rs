//! Array storage for models: owned vectors or slices of one shared byte buffer (a read-only
//! memory map, or an 8-byte-aligned heap copy of a file), and the safetensors file that holds
//! them on disk.
//!
//! A [`Buf<T>`] dereferences to `&[T]` whatever its backing, so the search code is the same
//! for a freshly built, a loaded and a memory-mapped model. Shared buffers are checked for
//! bounds and alignment when they are created; element types are plain data
//! ([`bytemuck::Pod`]: every bit pattern is a valid value), so a corrupt file can hold wrong
//! numbers but never makes a slice unsound. Memory-mapped files must not be modified while
//! mapped (the usual caveat of memory maps: the model is saved by writing a new file and
//! renaming it over the old one, which leaves existing maps intact).

use std::io::Write;
use std::marker::PhantomData;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use bytemuck::Pod;

use crate::{Error, Result};

/// The byte buffer behind shared arrays.
#[derive(Debug)]
pub(crate) enum Backing {
    /// A heap copy, stored as `u64` words so that it is 8-byte aligned; the `usize` is the
    /// length in bytes.
    Heap(Vec<u64>, usize),
    /// A read-only memory map of a file.
    Map(memmap2::Mmap),
}

impl Backing {
    /// The bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Backing::Heap(words, len) => {
                let all: &[u8] = bytemuck::cast_slice(words);
                &all[..*len]
            }
            Backing::Map(m) => m,
        }
    }

    /// Copies `bytes` into an aligned heap buffer.
    pub(crate) fn copy_from(bytes: &[u8]) -> Backing {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Backing::Heap(words, bytes.len())
    }

    /// Reads a whole regular file of `expect` bytes into an aligned heap buffer; a file of
    /// another size is an error before anything is allocated.
    pub(crate) fn read_file(path: &Path, expect: u64) -> Result<Backing> {
        use std::io::Read;
        let io = |e| io_err(path, e);
        let mut f = open_regular(path)?;
        let len = checked_size(&f, path, expect)?;
        let mut words = crate::alloc::try_vec(len.div_ceil(8), 0u64, "a model array file")?;
        f.read_exact(&mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len])
            .map_err(io)?;
        Ok(Backing::Heap(words, len))
    }

    /// Maps a whole regular file of `expect` bytes read-only.
    pub(crate) fn map_file(path: &Path, expect: u64) -> Result<Backing> {
        let f = open_regular(path)?;
        checked_size(&f, path, expect)?;
        // SAFETY: the map is read-only, and the element types read through it are plain data
        // (any bit pattern is valid), so concurrent changes by another process cannot break
        // memory safety of the slices beyond what the memmap2 documentation states; the
        // model files are replaced by rename, never rewritten in place, by this library.
        let m = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| io_err(path, e))?;
        Ok(Backing::Map(m))
    }
}

/// The length of `f` as a `usize` when it is `expect` bytes, else an error.
fn checked_size(f: &std::fs::File, path: &Path, expect: u64) -> Result<usize> {
    let len = f.metadata().map_err(|e| io_err(path, e))?.len();
    if len != expect {
        return Err(Error::invalid(format!(
            "{}: {len} bytes, the manifest says {expect} (truncated or replaced?)",
            path.display()
        )));
    }
    usize::try_from(len).map_err(|_| Error::invalid(format!("{}: file too large", path.display())))
}

/// Opens `path` for reading if it is a regular file (following links). A FIFO, a device or a
/// directory is an error at once: the file is opened without blocking (a FIFO without a
/// writer would block an ordinary open forever) and checked before anything is read.
pub(crate) fn open_regular(path: &Path) -> Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let f = opts.open(path).map_err(|e| io_err(path, e))?;
    if !f.metadata().map_err(|e| io_err(path, e))?.is_file() {
        return Err(Error::invalid(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    Ok(f)
}

/// Reads a regular text file of at most `max` bytes (manifests).
pub(crate) fn read_text(path: &Path, max: u64) -> Result<String> {
    use std::io::Read;
    let f = open_regular(path)?;
    let len = f.metadata().map_err(|e| io_err(path, e))?.len();
    if len > max {
        return Err(Error::invalid(format!(
            "{}: {len} bytes, more than a manifest can hold ({max})",
            path.display()
        )));
    }
    let mut text = String::new();
    f.take(max)
        .read_to_string(&mut text)
        .map_err(|e| io_err(path, e))?;
    Ok(text)
}

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// An array that is either owned or a slice of a shared (heap or memory-mapped) buffer.
///
/// Dereferences to `&[T]`. Cloning a shared array only clones a reference count.
pub enum Buf<T> {
    /// An owned vector.
    Owned(Vec<T>),
    /// `len` elements at byte `offset` of a shared buffer (bounds and alignment checked when
    /// the array was created).
    Shared {
        backing: Arc<Backing>,
        offset: usize,
        len: usize,
        _t: PhantomData<T>,
    },
}

impl<T: Pod> Buf<T> {
    /// A slice of `backing`, after checking bounds and alignment.
    pub(crate) fn shared(backing: &Arc<Backing>, offset: usize, len: usize) -> Result<Self> {
        let size = std::mem::size_of::<T>();
        let bytes = backing.bytes();
        let end = len
            .checked_mul(size)
            .and_then(|n| n.checked_add(offset))
            .ok_or_else(|| Error::invalid("array size overflows"))?;
        let Some(slice) = bytes.get(offset..end) else {
            return Err(Error::invalid(format!(
                "array at bytes {offset}..{end} lies outside the {}-byte buffer",
                bytes.len()
            )));
        };
        if bytemuck::try_cast_slice::<u8, T>(slice).is_err() {
            return Err(Error::invalid(format!(
                "array at byte {offset} is not aligned for its {size}-byte elements"
            )));
        }
        Ok(Buf::Shared {
            backing: Arc::clone(backing),
            offset,
            len,
            _t: PhantomData,
        })
    }
}

impl<T: Pod> Deref for Buf<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        match self {
            Buf::Owned(v) => v,
            Buf::Shared {
                backing,
                offset,
                len,
                ..
            } => {
                let size = std::mem::size_of::<T>();
                // Checked in `Buf::shared`; the fallback (an empty slice) cannot happen, and
                // would only make the kernels report corruption, never read out of bounds.
                backing
                    .bytes()
                    .get(*offset..*offset + *len * size)
                    .and_then(|b| bytemuck::try_cast_slice(b).ok())
                    .unwrap_or(&[])
            }
        }
    }
}

impl<T: Pod> Clone for Buf<T> {
    fn clone(&self) -> Self {
        match self {
            Buf::Owned(v) => Buf::Owned(v.clone()),
            Buf::Shared {
                backing,
                offset,
                len,
                ..
            } => Buf::Shared {
                backing: Arc::clone(backing),
                offset: *offset,
                len: *len,
                _t: PhantomData,
            },
        }
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for Buf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Buf::Owned(_) => "owned",
            Buf::Shared { .. } => "shared",
        };
        write!(f, "Buf<{kind}, len {}>", self.len())
    }
}

impl<T> From<Vec<T>> for Buf<T> {
    fn from(v: Vec<T>) -> Self {
        Buf::Owned(v)
    }
}

/// The element types the model stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dtype {
    I8,
    U8,
    U16,
    U32,
    U64,
    F16,
    F32,
}

impl Dtype {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Dtype::I8 => "I8",
            Dtype::U8 => "U8",
            Dtype::U16 => "U16",
            Dtype::U32 => "U32",
            Dtype::U64 => "U64",
            Dtype::F16 => "F16",
            Dtype::F32 => "F32",
        }
    }
    pub(crate) fn size(self) -> usize {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::F16 => 2,
            Dtype::U32 | Dtype::F32 => 4,
            Dtype::U64 => 8,
        }
    }
    pub(crate) fn of_safetensors(d: safetensors::Dtype) -> Option<Dtype> {
        match d {
            safetensors::Dtype::I8 => Some(Dtype::I8),
            safetensors::Dtype::U8 => Some(Dtype::U8),
            safetensors::Dtype::U16 => Some(Dtype::U16),
            safetensors::Dtype::U32 => Some(Dtype::U32),
            safetensors::Dtype::U64 => Some(Dtype::U64),
            safetensors::Dtype::F16 => Some(Dtype::F16),
            safetensors::Dtype::F32 => Some(Dtype::F32),
            _ => None,
        }
    }
}

/// One array to write: a name, its dtype and its little-endian bytes.
pub(crate) struct ArrayOut<'a> {
    pub name: String,
    pub dtype: Dtype,
    pub bytes: &'a [u8],
}

/// Where one array landed in a written file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Placed {
    pub name: String,
    pub dtype: Dtype,
    pub len: usize,
    /// Byte offset from the start of the file.
    pub offset: usize,
}

/// A writer that keeps a running CRC-32 and byte count.
struct Crc<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    n: u64,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.hasher.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `arrays` as one safetensors file: the header, then the arrays ordered by
/// decreasing element size (then name), so that every array starts at a multiple of its
/// element size from the 8-aligned data start (the format allows no padding between
/// arrays). Returns the placements, the total length and the CRC-32 of the whole file.
pub(crate) fn write_safetensors<W: Write>(
    w: W,
    arrays: &mut [ArrayOut<'_>],
) -> std::io::Result<(Vec<Placed>, u64, u32)> {
    arrays.sort_by(|a, b| {
        b.dtype
            .size()
            .cmp(&a.dtype.size())
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    let mut rel = Vec::with_capacity(arrays.len());
    for a in arrays.iter() {
        let len = a.bytes.len() / a.dtype.size();
        header.insert(
            a.name.clone(),
            serde_json::json!({
                "dtype": a.dtype.name(),
                "shape": [len],
                "data_offsets": [off, off + a.bytes.len()],
            }),
        );
        rel.push((a.name.clone(), a.dtype, len, off));
        off += a.bytes.len();
    }
    let mut hbytes =
        serde_json::to_vec(&serde_json::Value::Object(header)).map_err(std::io::Error::other)?;
    hbytes.resize(hbytes.len().next_multiple_of(8), b' ');
    let data_start = 8 + hbytes.len();
    let mut cw = Crc {
        inner: w,
        hasher: crc32fast::Hasher::new(),
        n: 0,
    };
    cw.write_all(&(hbytes.len() as u64).to_le_bytes())?;
    cw.write_all(&hbytes)?;
    for a in arrays.iter() {
        cw.write_all(a.bytes)?;
    }
    cw.flush()?;
    let placed = rel
        .into_iter()
        .map(|(name, dtype, len, o)| Placed {
            name,
            dtype,
            len,
            offset: data_start + o,
        })
        .collect();
    Ok((placed, cw.n, cw.hasher.finalize()))
}

/// Reads the header of a safetensors buffer: each array's name, dtype, length (flat) and
/// absolute byte offset. Errors on anything the safetensors crate rejects (truncation,
/// overlapping or out-of-range offsets, bad JSON) and on dtypes this library never writes.
pub(crate) fn read_safetensors_header(bytes: &[u8]) -> Result<Vec<Placed>> {
    let (n, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::invalid(format!("array file is not valid safetensors: {e}")))?;
    let data_start = 8 + n;
    let mut out = Vec::new();
    for (name, info) in meta.tensors() {
        let dtype = Dtype::of_safetensors(info.dtype).ok_or_else(|| {
            Error::invalid(format!("array {name}: unsupported dtype {}", info.dtype))
        })?;
        let len = info
            .shape
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .ok_or_else(|| Error::invalid(format!("array {name}: shape overflows")))?;
        out.push(Placed {
            name,
            dtype,
            len,
            offset: data_start + info.data_offsets.0,
        });
    }
    out.sort_by_key(|p| p.offset);
    Ok(out)
}

/// CRC-32 (IEEE) of a byte buffer.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}

/// Syncs the directory holding `path`, so that a rename into it survives a power loss (a
/// no-op where directories cannot be opened as files).
fn sync_parent(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Writes `path` atomically: `fill` writes a temporary file beside it, which is synced and
/// renamed over `path`, and the directory is synced.
pub(crate) fn write_atomic<R>(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> std::io::Result<R>,
) -> Result<R> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let f = std::fs::File::create(&tmp)?;
        let r = {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, &f);
            let r = fill(&mut w)?;
            w.flush()?;
            r
        };
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_parent(path)?;
        Ok(r)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_buffers_check_bounds_and_alignment() {
        let words: Vec<u64> = vec![1, 2, 3];
        let b = Arc::new(Backing::copy_from(bytemuck::cast_slice(&words)));
        let a: Buf<u32> = Buf::shared(&b, 8, 4).unwrap();
        assert_eq!(&*a, &[2, 0, 3, 0]);
        assert!(Buf::<u32>::shared(&b, 2, 1).is_err()); // misaligned
        assert!(Buf::<u32>::shared(&b, 16, 3).is_err()); // out of bounds
        assert!(Buf::<u64>::shared(&b, usize::MAX - 3, 2).is_err()); // overflow
        let c = a.clone();
        assert_eq!(&*c, &*a);
    }

    #[test]
    fn safetensors_written_are_aligned_and_readable() {
        let a16: Vec<u16> = vec![1, 2, 3];
        let a64: Vec<u64> = vec![7, 8];
        let af: Vec<f32> = vec![0.5];
        let mut arrays = vec![
            ArrayOut {
                name: "x16".into(),
                dtype: Dtype::U16,
                bytes: bytemuck::cast_slice(&a16),
            },
            ArrayOut {
                name: "f".into(),
                dtype: Dtype::F32,
                bytes: bytemuck::cast_slice(&af),
            },
            ArrayOut {
                name: "x64".into(),
                dtype: Dtype::U64,
                bytes: bytemuck::cast_slice(&a64),
            },
        ];
        let mut buf = Vec::new();
        let (placed, n, crc) = write_safetensors(&mut buf, &mut arrays).unwrap();
        assert_eq!(n as usize, buf.len());
        assert_eq!(crc, crc32(&buf));
        let back = read_safetensors_header(&buf).unwrap();
        let mut p2 = placed.clone();
        p2.sort_by_key(|p| p.offset);
        assert_eq!(back, p2);
        for p in &placed {
            assert_eq!(p.offset % p.dtype.size(), 0, "{p:?}");
        }
        let backing = Arc::new(Backing::copy_from(&buf));
        let x64 = placed.iter().find(|p| p.name == "x64").unwrap();
        let v: Buf<u64> = Buf::shared(&backing, x64.offset, x64.len).unwrap();
        assert_eq!(&*v, &[7, 8]);
        // truncation is an error, never a panic
        for cut in [0, 7, 8, 20, buf.len() - 1] {
            assert!(read_safetensors_header(&buf[..cut]).is_err());
        }
    }
}
