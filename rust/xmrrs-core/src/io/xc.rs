//! The Extreme Classification Repository text format and LIBSVM multilabel text.
//!
//! XC: a header line `n_samples n_features n_labels`, then one line per sample:
//! `l1,l2,... f:v f:v ...` with 0-based ids. A sample without labels starts with a space.
//! LIBSVM multilabel: the same lines without the header; feature ids may be 1-based.
//!
//! Parsing is parallel over chunks of lines. Every error names the 1-based line number.
//! Within a line, labels are sorted and de-duplicated; features are sorted, and a repeated
//! feature id is an error. Values must be finite.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use rayon::prelude::*;

use crate::sparse::{balanced_ranges, Csr, CsrView};
use crate::{Error, Result};

/// How to read a file.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions {
    /// The first line is the `n_samples n_features n_labels` header (XC format).
    pub header: bool,
    /// Feature ids are 0-based (`Some(true)`), 1-based (`Some(false)`) or, when `None`,
    /// 1-based unless some feature id is 0 (as scikit-learn's svmlight loader decides).
    /// Ignored with a header: XC files are 0-based.
    pub zero_based: Option<bool>,
    /// Number of features when there is no header (default: largest id + 1).
    pub n_features: Option<usize>,
    /// Number of labels when there is no header (default: largest id + 1).
    pub n_labels: Option<usize>,
}

/// Features `x` (f32 values) and label indicators `y` (values 1.0), both canonical CSR.
#[derive(Clone, Debug, PartialEq)]
pub struct XcData {
    /// Feature matrix, `(n_samples, n_features)`.
    pub x: Csr,
    /// Label indicator matrix, `(n_samples, n_labels)`.
    pub y: Csr,
}

/// Reads a file (memory-mapped) in the XC or LIBSVM format.
pub fn read_file(path: &Path, opts: &ReadOptions) -> Result<XcData> {
    let name = path.display().to_string();
    let io_err = |source| Error::Io {
        path: name.clone(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    if len == 0 {
        return parse(&[], &name, opts);
    }
    // SAFETY: the map is read-only and private to this call; a file truncated by another
    // process while we read it is outside what we can guard against (as for any mmap reader).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
    parse(&map, &name, opts)
}

struct Chunk {
    rows: usize,
    /// Line of each row, counted from the chunk's first line (blank lines may be skipped).
    row_line: Vec<u32>,
    x_len: Vec<u64>,
    x_idx: Vec<u64>,
    x_val: Vec<f32>,
    y_len: Vec<u64>,
    y_idx: Vec<u64>,
    min_feat: u64,
}

/// A failure inside a chunk: byte offset of the line start, and the message.
struct ChunkError(usize, String);

/// Parses a whole file's bytes; `name` is used in error messages.
pub fn parse(bytes: &[u8], name: &str, opts: &ReadOptions) -> Result<XcData> {
    let err = |line: usize, msg: String| Error::Parse {
        path: name.to_string(),
        line,
        msg,
    };
    let (header, body_start) = if opts.header {
        let end = memchr::memchr(b'\n', bytes).map_or(bytes.len(), |p| p + 1);
        let text = std::str::from_utf8(&bytes[..end]).unwrap_or("");
        let nums: Vec<Option<usize>> = text
            .split_ascii_whitespace()
            .map(|t| t.parse().ok())
            .collect();
        match nums.as_slice() {
            [Some(n), Some(d), Some(l)] => (Some((*n, *d, *l)), end),
            _ => {
                return Err(err(
                    1,
                    format!(
                        "header must be 'n_samples n_features n_labels', got {:?}",
                        text.trim_end()
                    ),
                ))
            }
        }
    } else {
        (None, 0)
    };
    let body = &bytes[body_start..];
    let first_line = usize::from(opts.header) + 1;
    let line_of = |offset: usize| first_line + memchr::memchr_iter(b'\n', &body[..offset]).count();

    // Cut the body at line boundaries into about 8 pieces per thread.
    let parts = (rayon::current_num_threads() * 8).max(1);
    let mut cuts = vec![0usize];
    for p in 1..parts {
        let guess = body.len() * p / parts;
        let at = if guess == 0 {
            0
        } else {
            memchr::memchr(b'\n', &body[guess - 1..]).map_or(body.len(), |q| guess + q)
        };
        if at > *cuts.last().unwrap_or(&0) && at < body.len() {
            cuts.push(at);
        }
    }
    cuts.push(body.len());
    let skip_blank = !opts.header;
    let chunks: Vec<std::result::Result<Chunk, ChunkError>> = cuts
        .windows(2)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|w| parse_chunk(body, w[0], w[1], skip_blank))
        .collect();
    let mut parsed = Vec::with_capacity(chunks.len());
    for c in chunks {
        match c {
            Ok(c) => parsed.push(c),
            Err(ChunkError(off, msg)) => return Err(err(line_of(off), msg)),
        }
    }
    let n: usize = parsed.iter().map(|c| c.rows).sum();
    let min_feat = parsed.iter().map(|c| c.min_feat).min().unwrap_or(u64::MAX);
    let shift = match (header, opts.zero_based) {
        (Some(_), _) | (None, Some(true)) => 0,
        (None, Some(false)) => 1,
        (None, None) => u64::from(min_feat != 0 && min_feat != u64::MAX),
    };
    if shift == 1 && min_feat == 0 {
        return Err(Error::invalid(format!(
            "{name}: feature id 0 found but the file was declared 1-based (zero_based=False)"
        )));
    }
    let max_feat = parsed.iter().flat_map(|c| c.x_idx.iter()).copied().max();
    let max_label = parsed.iter().flat_map(|c| c.y_idx.iter()).copied().max();
    let (n_features, n_labels) = match header {
        Some((hn, hd, hl)) => {
            if n != hn {
                let line = first_line + n.min(hn);
                let msg = if n < hn {
                    format!("file is truncated: the header declares {hn} samples but only {n} lines follow")
                } else {
                    format!("more lines than the {hn} samples the header declares")
                };
                return Err(err(line, msg));
            }
            (hd, hl)
        }
        None => (
            opts.n_features
                .unwrap_or_else(|| max_feat.map_or(0, |m| (m + 1 - shift) as usize)),
            opts.n_labels
                .unwrap_or_else(|| max_label.map_or(0, |m| m as usize + 1)),
        ),
    };
    // Range checks, reported with the line of the first offender.
    for (features, limit, sh) in [(true, n_features, shift), (false, n_labels, 0)] {
        if let Some((ci, row, id)) = first_out_of_range(&parsed, features, limit, sh) {
            let start = cuts[ci];
            let line = line_of(start) + parsed[ci].row_line[row] as usize;
            let what = if features { "feature" } else { "label" };
            return Err(err(
                line,
                format!("{what} id {id} is out of range for {limit} {what}s"),
            ));
        }
    }
    if n_features > u32::MAX as usize || n_labels > u32::MAX as usize {
        return Err(Error::invalid(format!(
            "{name}: dimensions exceed the u32 index range"
        )));
    }
    let x = assemble(
        n,
        n_features,
        &parsed,
        |c| (&c.x_len, &c.x_idx, Some(&c.x_val)),
        shift,
    );
    let y = assemble(n, n_labels, &parsed, |c| (&c.y_len, &c.y_idx, None), 0);
    Ok(XcData { x, y })
}

/// The first id at or above `limit` (after subtracting `shift`): (chunk, row in chunk, id).
fn first_out_of_range(
    parsed: &[Chunk],
    features: bool,
    limit: usize,
    shift: u64,
) -> Option<(usize, usize, u64)> {
    for (ci, c) in parsed.iter().enumerate() {
        let (lens, ids) = if features {
            (&c.x_len, &c.x_idx)
        } else {
            (&c.y_len, &c.y_idx)
        };
        if let Some(p) = ids.iter().position(|&v| v - shift >= limit as u64) {
            let mut acc = 0u64;
            let row = lens
                .iter()
                .position(|&l| {
                    acc += l;
                    acc > p as u64
                })
                .unwrap_or(0);
            return Some((ci, row, ids[p] - shift));
        }
    }
    None
}

fn assemble(
    n: usize,
    m: usize,
    parsed: &[Chunk],
    sel: impl Fn(&Chunk) -> (&Vec<u64>, &Vec<u64>, Option<&Vec<f32>>),
    shift: u64,
) -> Csr {
    let nnz: usize = parsed.iter().map(|c| sel(c).1.len()).sum();
    let mut indptr = Vec::with_capacity(n + 1);
    indptr.push(0u64);
    let mut acc = 0u64;
    let mut indices = Vec::with_capacity(nnz);
    let mut data = Vec::with_capacity(nnz);
    for c in parsed {
        let (lens, ids, vals) = sel(c);
        for &l in lens {
            acc += l;
            indptr.push(acc);
        }
        indices.extend(ids.iter().map(|&v| (v - shift) as u32));
        match vals {
            Some(v) => data.extend_from_slice(v),
            None => data.resize(indices.len(), 1.0),
        }
    }
    Csr {
        n_rows: n,
        n_cols: m,
        indptr,
        indices,
        data,
    }
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\r'
}

fn parse_uint(tok: &[u8]) -> Option<u64> {
    if tok.is_empty() || tok.len() > 19 {
        return None;
    }
    let mut v = 0u64;
    for &b in tok {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u64::from(d);
    }
    Some(v)
}

fn show(tok: &[u8]) -> String {
    String::from_utf8_lossy(&tok[..tok.len().min(40)]).into_owned()
}

fn parse_chunk(
    body: &[u8],
    start: usize,
    end: usize,
    skip_blank: bool,
) -> std::result::Result<Chunk, ChunkError> {
    let mut c = Chunk {
        rows: 0,
        row_line: vec![],
        x_len: vec![],
        x_idx: vec![],
        x_val: vec![],
        y_len: vec![],
        y_idx: vec![],
        min_feat: u64::MAX,
    };
    let mut pairs: Vec<(u64, f32)> = Vec::new();
    let mut pos = start;
    let mut line_no = 0u32;
    while pos < end {
        line_no += 1;
        let line_end = memchr::memchr(b'\n', &body[pos..end]).map_or(end, |q| pos + q);
        let mut line = &body[pos..line_end];
        let line_start = pos;
        pos = line_end + 1;
        let fail = |msg: String| ChunkError(line_start, msg);
        if skip_blank {
            if let Some(h) = memchr::memchr(b'#', line) {
                line = &line[..h];
            }
            if line.iter().all(|&b| is_space(b)) {
                continue;
            }
        }
        // Label field: the first token, unless the line starts with white space or the first
        // token is a feature pair (has ':' and no ',').
        let mut i = 0;
        let y0 = c.y_idx.len();
        if !line.is_empty() && !is_space(line[0]) {
            let tok_end = line.iter().position(|&b| is_space(b)).unwrap_or(line.len());
            let tok = &line[..tok_end];
            let is_feature = tok.contains(&b':') && !tok.contains(&b',');
            if !is_feature {
                for item in tok.split(|&b| b == b',') {
                    match parse_uint(item) {
                        Some(l) => c.y_idx.push(l),
                        None => {
                            return Err(fail(format!(
                                "malformed label list {:?} (expected comma-separated non-negative integers)",
                                show(tok)
                            )))
                        }
                    }
                }
                i = tok_end;
            }
        }
        let labels = &mut c.y_idx[y0..];
        if labels.windows(2).any(|w| w[0] >= w[1]) {
            labels.sort_unstable();
            let mut kept = y0;
            for r in y0..c.y_idx.len() {
                if r == y0 || c.y_idx[r] != c.y_idx[kept - 1] {
                    c.y_idx[kept] = c.y_idx[r];
                    kept += 1;
                }
            }
            c.y_idx.truncate(kept);
        }
        c.y_len.push((c.y_idx.len() - y0) as u64);
        // Feature pairs.
        let x0 = c.x_idx.len();
        let mut sorted = true;
        loop {
            while i < line.len() && is_space(line[i]) {
                i += 1;
            }
            if i >= line.len() {
                break;
            }
            let tok_end = line[i..]
                .iter()
                .position(|&b| is_space(b))
                .map_or(line.len(), |q| i + q);
            let tok = &line[i..tok_end];
            i = tok_end;
            let colon = tok.iter().position(|&b| b == b':');
            let bad = || format!("malformed feature {:?} (expected index:value)", show(tok));
            let Some(colon) = colon else {
                return Err(fail(bad()));
            };
            let Some(f) = parse_uint(&tok[..colon]) else {
                return Err(fail(bad()));
            };
            let v: f32 = match std::str::from_utf8(&tok[colon + 1..])
                .ok()
                .and_then(|s| s.parse().ok())
            {
                Some(v) => v,
                None => return Err(fail(bad())),
            };
            if !v.is_finite() {
                return Err(fail(format!("feature {f} has a non-finite value {v}")));
            }
            if let Some(&prev) = c.x_idx[x0..].last() {
                sorted &= prev < f;
            }
            c.min_feat = c.min_feat.min(f);
            c.x_idx.push(f);
            c.x_val.push(v);
        }
        if !sorted {
            pairs.clear();
            pairs.extend(
                c.x_idx[x0..]
                    .iter()
                    .copied()
                    .zip(c.x_val[x0..].iter().copied()),
            );
            pairs.sort_by_key(|p| p.0);
            if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(fail(format!("feature id {} appears twice", w[0].0)));
            }
            for (t, (f, v)) in pairs.iter().enumerate() {
                c.x_idx[x0 + t] = *f;
                c.x_val[x0 + t] = *v;
            }
        }
        c.x_len.push((c.x_idx.len() - x0) as u64);
        c.row_line.push(line_no - 1);
        c.rows += 1;
    }
    Ok(c)
}

/// Writes `x` and `y` (same number of rows) in the XC format (with `header`) or LIBSVM
/// multilabel (without; ids stay 0-based). Values are written in their shortest exact form,
/// so reading the file back gives the same f32 values. The file appears atomically: it is
/// written under a temporary name and renamed.
pub fn write_file(path: &Path, x: &CsrView<'_>, y: &CsrView<'_>, header: bool) -> Result<()> {
    if x.n_rows() != y.n_rows() {
        return Err(Error::shape(format!(
            "X has {} rows but Y has {}",
            x.n_rows(),
            y.n_rows()
        )));
    }
    let name = path.display().to_string();
    let ranges = balanced_ranges(x.indptr(), rayon::current_num_threads() * 4);
    let pieces: Vec<Vec<u8>> = ranges
        .into_par_iter()
        .map(|r| {
            let mut out = Vec::new();
            for i in r {
                let (li, _) = y.row(i);
                for (t, l) in li.iter().enumerate() {
                    if t > 0 {
                        out.push(b',');
                    }
                    let _ = write!(out, "{l}");
                }
                let (fi, fv) = x.row(i);
                for (f, v) in fi.iter().zip(fv) {
                    let _ = write!(out, " {f}:{v}");
                }
                out.push(b'\n');
            }
            out
        })
        .collect();
    let tmp = path.with_extension("xmrrs-tmp");
    let io_err = |source| Error::Io {
        path: name.clone(),
        source,
    };
    let mut f = std::io::BufWriter::new(File::create(&tmp).map_err(io_err)?);
    if header {
        writeln!(f, "{} {} {}", x.n_rows(), x.n_cols(), y.n_cols()).map_err(io_err)?;
    }
    for p in &pieces {
        f.write_all(p).map_err(io_err)?;
    }
    f.into_inner()
        .map_err(|e| io_err(e.into_error()))?
        .sync_all()
        .map_err(io_err)?;
    std::fs::rename(&tmp, path).map_err(io_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xc(text: &str) -> Result<XcData> {
        parse(
            text.as_bytes(),
            "t.txt",
            &ReadOptions {
                header: true,
                ..Default::default()
            },
        )
    }

    #[test]
    fn parses_rows_with_and_without_labels() {
        let d = xc("3 5 4\n0,2 1:0.5 3:1.5\n 0:2\n3\n").unwrap();
        assert_eq!(d.x.indptr, vec![0, 2, 3, 3]);
        assert_eq!(d.x.indices, vec![1, 3, 0]);
        assert_eq!(d.x.data, vec![0.5, 1.5, 2.0]);
        assert_eq!(d.y.indptr, vec![0, 2, 2, 3]);
        assert_eq!(d.y.indices, vec![0, 2, 3]);
        assert_eq!((d.x.n_cols, d.y.n_cols), (5, 4));
    }

    #[test]
    fn sorts_features_and_labels() {
        let d = xc("1 5 4\n2,0,2 3:1 1:2\n").unwrap();
        assert_eq!(d.y.indices, vec![0, 2]);
        assert_eq!(d.x.indices, vec![1, 3]);
        assert_eq!(d.x.data, vec![2.0, 1.0]);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("2 5 4\n0 1:0.5\n1 2:x\n", 3, "malformed feature"),
            ("2 5 4\n0 1:0.5\n1 7:1\n", 3, "feature id 7 is out of range"),
            ("2 5 4\n0 1:0.5\n9 1:1\n", 3, "label id 9"),
            ("3 5 4\n0 1:0.5\n1 2:1\n", 4, "truncated"),
            ("1 5 4\n0 1:0.5\n1 2:1\n", 3, "more lines"),
            ("1 5\n0 1:0.5\n", 1, "header"),
            ("1 5 4\n0,,1 1:0.5\n", 2, "malformed label"),
            ("1 5 4\n0 1:0.5 1:2\n", 2, "twice"),
            ("1 5 4\n0 1:nan\n", 2, "non-finite"),
            ("1 5 4\n0 1\n", 2, "malformed feature"),
        ];
        for (text, line, msg) in cases {
            match xc(text) {
                Err(Error::Parse {
                    line: l, msg: m, ..
                }) => {
                    assert_eq!(l, line, "{text:?}: {m}");
                    assert!(m.contains(msg), "{text:?}: {m}");
                }
                other => panic!("{text:?}: expected a parse error, got {other:?}"),
            }
        }
    }

    #[test]
    fn range_errors_count_skipped_lines() {
        let opts = ReadOptions {
            n_features: Some(3),
            ..Default::default()
        };
        match parse(b"1 1:1\n\n# c\n0 5:1\n", "t", &opts) {
            Err(Error::Parse { line, .. }) => assert_eq!(line, 4),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn libsvm_zero_based_auto() {
        let one = ReadOptions::default();
        let d = parse(b"1 1:1 3:2\n\n# comment\n0,1 2:1\n", "t", &one).unwrap();
        assert_eq!(d.x.indices, vec![0, 2, 1]);
        assert_eq!(d.x.n_cols, 3);
        assert_eq!(d.y.n_cols, 2);
        let d = parse(b"1 0:1 3:2\n", "t", &one).unwrap();
        assert_eq!(d.x.indices, vec![0, 3]);
    }

    #[test]
    fn roundtrip_through_a_file() {
        let dir = std::env::temp_dir().join(format!("xmrrs-xc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.txt");
        let d = xc("4 6 3\n0,2 1:0.1 3:1e-7\n \n2 5:123456.79\n 0:3.25\n").unwrap();
        write_file(&p, &d.x.view(), &d.y.view(), true).unwrap();
        let back = read_file(
            &p,
            &ReadOptions {
                header: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(back, d);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn many_chunks_same_result() {
        let mut text = String::from("2000 50 20\n");
        for i in 0..2000 {
            text.push_str(&format!(
                "{},{} {}:{} {}:0.5\n",
                i % 20,
                (i * 7) % 20,
                i % 25,
                i,
                25 + i % 25
            ));
        }
        let a = crate::parallel::install(Some(1), || xc(&text))
            .unwrap()
            .unwrap();
        let b = crate::parallel::install(Some(4), || xc(&text))
            .unwrap()
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.x.n_rows, 2000);
    }
}
