"""Mutation fuzzer of the XC / LIBSVM text parsers against a pure-Python reference reader.

The grammar (``rust/xmrrs-core/src/io/xc.rs``, ``xmrrs.datasets``):

- XC (``load_xc``): the first line (up to and including the first ``\\n``) must be UTF-8 and
  split, on ASCII white space (space, tab, LF, FF, CR; not VT), into exactly three unsigned
  integers (``+`` allowed, no overflow of u64) ``n_samples n_features n_labels``. Every
  following line is a sample, blank lines included; ``#`` is not special; ids are 0-based.
  The number of sample lines must equal ``n_samples`` (a final ``\\n`` ends the last line; it
  does not start a new one).
- LIBSVM (``load_libsvm``): no header; ``#`` starts a comment; lines that are blank after
  that (only space, tab, CR) are skipped. Feature ids are 1-based unless ``zero_based`` is
  true, or ``"auto"`` and some feature id is 0. Sizes default to the largest id + 1.
- A line: if it does not start with space/tab/CR, its first token (up to space/tab/CR) is
  the label list unless it has a ``:`` and no ``,`` (then it is a feature). Labels are
  comma-separated runs of 1..19 ASCII digits; they are sorted and de-duplicated. Features are
  ``id:value`` tokens separated by runs of space/tab/CR: ``id`` 1..19 ASCII digits, ``value`` a
  Rust ``f32`` literal (``[+-]`` then ``inf``/``infinity``/``nan`` any case, or digits with an
  optional point and exponent) that must be finite after rounding to f32; features are sorted
  and a repeated id is an error.
- Errors, in order: the first malformed line (in file order); a feature id 0 with
  ``zero_based=False`` (no line); the sample count against the header (the line after the
  last sample, or the first extra line); the first line with a feature id out of range, then
  the first with a label id out of range; sizes above the u32 range (no line).

Every input either makes both readers reject it (xmrrs with ``ValueError`` naming the same
line) or both accept it with equal ``X`` and ``Y`` (shapes, pointers, ids; values equal up to
one float32 ulp, the double rounding of the reference).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import struct
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

SPACE = frozenset(b" \t\r")
_LABEL = re.compile(rb"[0-9]{1,19}")
_FLOAT = re.compile(
    rb"[+-]?(?:inf|infinity|nan|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?)", re.IGNORECASE
)
_HDR_WS = re.compile(rb"[ \t\n\x0c\r]+")
_HDR_NUM = re.compile(rb"\+?[0-9]+")
_SP_RUN = re.compile(rb"[ \t\r]+")
_SP_ONE = re.compile(rb"[ \t\r]")
_LINE_RE = re.compile(r": line (\d+): ")
U64 = 2**64
U32_MAX = 2**32 - 1
# the smallest magnitude that rounds to infinity in f32: 2**128 - 2**103 (a tie goes to even,
# which is 2**128)
F32_OVERFLOW = 2.0**128 - 2.0**103
F32_MAX = 2.0**128 - 2.0**104


class RefError(Exception):
    """The reference reader rejects the input; ``line`` is 1-based or None."""

    def __init__(self, line: int | None, msg: str) -> None:
        super().__init__(msg)
        self.line = line


def to_f32(tok: bytes) -> float | None:
    """The f32 value of a Rust float literal as a Python float, or None if not finite."""
    d = float(tok)
    if d != d:
        return None
    a = abs(d)
    if a > F32_OVERFLOW:
        return None
    if a == F32_OVERFLOW:
        # decide exactly: the double may have rounded up onto the threshold
        if Decimal(tok.decode()).copy_abs() >= Decimal(F32_OVERFLOW):
            return None
        return math.copysign(F32_MAX, d)
    return struct.unpack("<f", struct.pack("<f", d))[0]


Parsed = tuple[int, int, list[int], list[int], list[float], int, list[int], list[int]]


def reference(
    data: bytes,
    header: bool,
    zero_based: bool | None = None,
    n_features: int | None = None,
    n_labels: int | None = None,
) -> Parsed:
    """Parses ``data``; returns (n, n_features, x_indptr, x_indices, x_data, n_labels,
    y_indptr, y_indices) or raises RefError."""
    hn = hd = hl = 0
    if header:
        nl = data.find(b"\n")
        end = len(data) if nl < 0 else nl + 1
        head = data[:end]
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            raise RefError(1, "header is not UTF-8") from None
        toks = [t for t in _HDR_WS.split(head) if t]
        if len(toks) != 3 or not all(_HDR_NUM.fullmatch(t) for t in toks):
            raise RefError(1, "bad header")
        hn, hd, hl = (int(t) for t in toks)
        if max(hn, hd, hl) >= U64:
            raise RefError(1, "header number overflows")
        body = data[end:]
        first = 2
    else:
        body = data
        first = 1
    lines = body.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    rows: list[tuple[int, list[int], list[tuple[int, float]]]] = []
    for i, line in enumerate(lines):
        ln = first + i
        if not header:
            h = line.find(b"#")
            if h >= 0:
                line = line[:h]
            if not line.strip(b" \t\r"):
                continue
        labels: list[int] = []
        pos = 0
        if line and line[0] not in SPACE:
            m = _SP_ONE.search(line)
            tend = m.start() if m else len(line)
            tok = line[:tend]
            if not (b":" in tok and b"," not in tok):
                for item in tok.split(b","):
                    if not _LABEL.fullmatch(item):
                        raise RefError(ln, f"malformed label list {tok!r}")
                    labels.append(int(item))
                pos = tend
        feats: list[tuple[int, float]] = []
        for tok in _SP_RUN.split(line[pos:]):
            if not tok:
                continue
            c = tok.find(b":")
            if c < 0:
                raise RefError(ln, f"malformed feature {tok!r}")
            idx, val = tok[:c], tok[c + 1 :]
            if not _LABEL.fullmatch(idx) or not _FLOAT.fullmatch(val):
                raise RefError(ln, f"malformed feature {tok!r}")
            v = to_f32(val)
            if v is None:
                raise RefError(ln, f"non-finite value {tok!r}")
            feats.append((int(idx), v))
        if len({f for f, _ in feats}) != len(feats):
            raise RefError(ln, "repeated feature id")
        feats.sort()
        rows.append((ln, sorted(set(labels)), feats))
    all_feats = [f for r in rows for f, _ in r[2]]
    min_feat = min(all_feats) if all_feats else None
    if header or zero_based is True:
        shift = 0
    elif zero_based is False:
        shift = 1
    else:
        shift = int(min_feat is not None and min_feat != 0)
    if shift == 1 and min_feat == 0:
        raise RefError(None, "feature id 0 in a 1-based file")
    n = len(rows)
    if header:
        if n != hn:
            raise RefError(first + min(n, hn), "sample count differs from the header")
        nf, nl = hd, hl
    else:
        nf = (
            n_features
            if n_features is not None
            else (max(all_feats) + 1 - shift if all_feats else 0)
        )
        all_labels = [lab for r in rows for lab in r[1]]
        nl = n_labels if n_labels is not None else (max(all_labels) + 1 if all_labels else 0)
    for ln, _, feats in rows:
        if feats and feats[-1][0] - shift >= nf:
            raise RefError(ln, "feature id out of range")
    for ln, labs, _ in rows:
        if labs and labs[-1] >= nl:
            raise RefError(ln, "label id out of range")
    if nf > U32_MAX or nl > U32_MAX:
        raise RefError(None, "dimensions exceed u32")
    xp, xi, xv, yp, yi = [0], [], [], [0], []
    for _, labs, feats in rows:
        xi.extend(f - shift for f, _ in feats)
        xv.extend(v for _, v in feats)
        xp.append(len(xi))
        yi.extend(labs)
        yp.append(len(yi))
    return n, nf, xp, xi, xv, nl, yp, yi


# ---------------------------------------------------------------------------------------
# inputs

VALUES = [
    b"1", b"0.5", b"-0.25", b"2", b"0", b"-0", b"1e-3", b"3.5E2", b".5", b"5.", b"+2",
    b"-1.5e+3", b"0.1", b"123456.79", b"1e38", b"-3e38", b"1e-40", b"1e-46", b"7e-45",
    b"0.333333343267", b"16777217", b"3.4028234e38",
]  # fmt: skip
TOKENS = [
    b" ", b"  ", b"\t", b"\r", b"\n", b"\r\n", b":", b",", b"#", b"-", b"+", b".", b"e", b"E",
    b"0", b"1", b"9", b"\x00", b"\xff", b"\xc3\xa9", b"\xe2\x80\x83", b"\xc2\xa0", b"\x0b",
    b"\x0c", b"nan", b"NaN", b"inf", b"-inf", b"+Infinity", b"infinit", b"1e39", b"-1e39",
    b"3.4028235e38", b"3.4028236e38", b"340282356779733661637539395458142568448",
    b"340282356779733661637539395458142568447", b"1e-46", b"1e-39", b"1e999999999999",
    b"99999999999999999999", b"9999999999999999999", b"18446744073709551615",
    b"18446744073709551616", b"4294967295", b"4294967296", b"2147483648", b"-1", b"+1",
    b"0x10", b"1_0", b"1:1", b"0:0", b"2,3", b",", b",,", b"4294967295:1", b"1:1:1",
    b"00000000000000000001", b"1.", b"e5", b"1e", b"1e+", b".", b"+", b"-0:1",
]  # fmt: skip
NUMBERS = [
    b"0", b"1", b"2", b"-1", b"+3", b"10", b"4294967295", b"4294967296", b"2147483647",
    b"1000000000000", b"9999999999999999999", b"18446744073709551615", b"18446744073709551616",
    b"99999999999999999999", b"007", b"1.0", b"",
]  # fmt: skip


def gen_valid(rng: random.Random) -> tuple[bytes, dict[str, Any]]:
    """A well-formed file (most of the time) and how to read it."""
    header = rng.random() < 0.5
    n = rng.choice([0, 1, 1, 2, 3, 3, 4, 5, 6, 8, 12, 20, 40])
    nf = rng.choice([1, 2, 3, 5, 10, 30, 100, 1000, 70000])
    nl = rng.choice([1, 2, 3, 5, 10, 25, 300])
    one_based = not header and rng.random() < 0.4
    eol = b"\r\n" if rng.random() < 0.15 else b"\n"
    seps = [b" "] if rng.random() < 0.7 else [b" ", b"\t", b"  ", b" \t"]
    out: list[bytes] = []
    if header:
        h = b"%d %d %d" % (n, nf, nl)
        if rng.random() < 0.2:
            h = rng.choice([b" ", b"\t", b""]) + h.replace(b" ", rng.choice(seps)) + b" "
        out.append(h)
    for _ in range(n):
        if not header and rng.random() < 0.1:
            out.append(rng.choice([b"", b"   ", b"# a comment", b"\t# x 1:2", b"\r"]))
        k = rng.choice([0, 1, 1, 2, 3, 5])
        labs = [rng.randrange(nl) for _ in range(k)]
        if rng.random() < 0.5:
            labs.sort()
        m = min(nf, rng.choice([0, 1, 2, 3, 4, 6, 10]))
        feats = rng.sample(range(nf), m)
        if rng.random() < 0.6:
            feats.sort()
        parts = []
        for f in feats:
            v = rng.choice(VALUES) if rng.random() < 0.7 else repr(rng.uniform(-9, 9)).encode()
            parts.append(b"%d:%s" % (f + one_based, v))
        line = b",".join(b"%d" % x for x in labs)
        body = b"".join(rng.choice(seps) + p for p in parts)
        if not labs:
            line = body if (parts and rng.random() < 0.3) else rng.choice(seps) + body.lstrip()
        else:
            line += body
        if rng.random() < 0.1:
            line += rng.choice(seps)
        if not header and rng.random() < 0.1:
            line += b" # trailing comment 1:2"
        out.append(line)
    data = eol.join(out)
    if out and rng.random() < 0.85:
        data += eol
    opts: dict[str, Any] = {"header": header}
    if not header:
        opts["zero_based"] = rng.choice([None, None, True, False])
        if rng.random() < 0.3:
            opts["n_features"] = rng.choice([0, 1, nf - 1, nf, nf + 1, nf + 5])
        if rng.random() < 0.3:
            opts["n_labels"] = rng.choice([0, 1, nl - 1, nl, nl + 3])
    return data, opts


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    op = rng.randrange(13)
    if op == 0 and b:  # bit flip
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    elif op == 1 and b:  # byte set
        b[rng.randrange(len(b))] = rng.choice(b" \t\r\n:,#-+.e0\x00\xff\x0b\x0c\x80")
    elif op == 2:  # token insertion
        i = rng.randrange(len(b) + 1)
        b[i:i] = rng.choice(TOKENS)
    elif op == 3 and b:  # deletion
        i = rng.randrange(len(b))
        del b[i : i + rng.randint(1, 8)]
    elif op == 4 and b:  # truncation
        del b[rng.randrange(len(b)) :]
    elif op in (5, 6):  # replace a number
        ms = list(re.finditer(rb"[0-9]+(?:\.[0-9]*)?(?:e[+-]?[0-9]+)?", bytes(b)))
        if ms:
            m = rng.choice(ms)
            b[m.start() : m.end()] = rng.choice(NUMBERS if op == 5 else TOKENS)
    elif op == 7:  # line endings
        b = bytearray(bytes(b).replace(b"\n", rng.choice([b"\r\n", b"\r", b"\n\n", b"\n \n"])))
    elif op in (8, 9, 10):  # line-level: duplicate, delete, swap, blank
        lines = bytes(b).split(b"\n")
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        if op == 8:
            lines.insert(i, lines[j])
        elif op == 9 and len(lines) > 1:
            del lines[i]
        else:
            lines[i], lines[j] = lines[j], rng.choice([lines[i], b"", b" ", b"\t", b"#"])
        b = bytearray(b"\n".join(lines))
    elif op == 11:  # duplicate a token inside a line
        toks = list(re.finditer(rb"[^ \t\r\n]+", bytes(b)))
        if toks:
            m = rng.choice(toks)
            b[m.end() : m.end()] = b" " + m.group()
    elif op == 12 and b:  # random bytes
        i = rng.randrange(len(b) + 1)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
    return bytes(b)


FAMILY = 8  # mutants per generated file (generation costs as much as a parse)


def make_input(
    seed: int, base: int, cache: dict[int, tuple[bytes, dict[str, Any]]] | None = None
) -> tuple[bytes, dict[str, Any]]:
    """The input of ``seed``: the valid file of its family (``seed // FAMILY``), mutated by
    a stream of its own (the first of a family is left as it is)."""
    fam = seed // FAMILY
    if cache is not None and fam in cache:
        data, opts = cache[fam]
    else:
        data, opts = gen_valid(random.Random(base * 1_000_003 + fam))
        if cache is not None:
            cache.clear()
            cache[fam] = (data, opts)
    opts = dict(opts)
    rng = random.Random((base * 1_000_003 + seed) * 7 + 1)
    r = rng.random()
    n_mut = 0 if seed % FAMILY == 0 else 1 if r < 0.5 else rng.randint(2, 6)
    for _ in range(n_mut):
        data = mutate(rng, data)
    opts["n_jobs"] = rng.choice([None, None, None, 1])
    return data, opts


# ---------------------------------------------------------------------------------------
# the trial


def _ulp_equal(a: list[float], b: list[float]) -> bool:
    if a == b:
        return True
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x != y:
            ux = struct.unpack("<i", struct.pack("<f", x))[0]
            uy = struct.unpack("<i", struct.pack("<f", y))[0]
            if abs(ux - uy) > 1 or math.copysign(1, x) != math.copysign(1, y):
                return False
    return True


class Runner:
    """Runs one parser input per seed; ``cfg``: ``base`` (the campaign seed), ``public``
    (fraction of inputs read through ``load_xc``/``load_libsvm`` rather than the raw call)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from xmrrs import _xmrrs, datasets

        self.raw = _xmrrs.read_xc
        self.datasets = datasets
        self.base = int(cfg.get("base", 0))
        self.public = float(cfg.get("public", 0.05))
        self.dir = tempfile.mkdtemp(prefix="xmrrs-fuzz-", dir=_tmp_root())
        self.path = os.path.join(self.dir, "input.txt")
        self.cache: dict[int, tuple[bytes, dict[str, Any]]] = {}

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    def read(self, opts: dict[str, Any], public: bool) -> Parsed:
        p, nj = self.path, opts.get("n_jobs")
        zb, nf, nl = opts.get("zero_based"), opts.get("n_features"), opts.get("n_labels")
        if public:
            if opts["header"]:
                X, Y = self.datasets.load_xc(p, n_jobs=nj)
            else:
                X, Y = self.datasets.load_libsvm(
                    p,
                    zero_based="auto" if zb is None else zb,
                    n_features=nf,
                    n_labels=nl,
                    n_jobs=nj,
                )
            assert X.format == "csr" and Y.format == "csr"
            assert X.dtype.name == "float32" and Y.dtype.name == "float32"
            x = (X.shape[0], X.shape[1], X.indptr, X.indices, X.data)
            y = (Y.shape[0], Y.shape[1], Y.indptr, Y.indices, Y.data)
        else:
            x, y = self.raw(p, opts["header"], zb, nf, nl, nj)
        if x[0] != y[0]:
            raise AssertionError(f"X has {x[0]} rows, Y {y[0]}")
        if y[4].size and not (y[4] == 1).all():
            raise AssertionError("Y values are not all 1")
        return (
            x[0],
            x[1],
            x[2].tolist(),
            x[3].tolist(),
            x[4].tolist(),
            y[1],
            y[2].tolist(),
            y[3].tolist(),
        )

    def run(self, seed: int) -> tuple[str, Any]:
        data, opts = make_input(seed, self.base, self.cache)
        public = (seed * 2654435761 % 1000) < self.public * 1000
        return self.check(data, opts, public)

    def check(self, data: bytes, opts: dict[str, Any], public: bool = False) -> tuple[str, Any]:
        with open(self.path, "wb") as f:
            f.write(data)
        try:
            ref: Parsed | RefError = reference(
                data, opts["header"], opts.get("zero_based"), opts.get("n_features"),
                opts.get("n_labels"),
            )  # fmt: skip
        except RefError as e:
            ref = e
        try:
            got: Parsed | BaseException = self.read(opts, public)
        except ValueError as e:
            got = e
        except Exception as e:
            internal = isinstance(e, RuntimeError) and "internal error" in str(e)
            cat = "internal-error" if internal else "unexpected-exception"
            return cat, f"{type(e).__name__}: {e} | input {data[:300]!r} opts {opts}"
        if isinstance(ref, RefError):
            if not isinstance(got, ValueError):
                return "mismatch", (
                    f"xmrrs accepted, the reference rejects ({ref} at line {ref.line}) | "
                    f"input {data[:300]!r} opts {opts}"
                )
            m = _LINE_RE.search(str(got))
            line = int(m.group(1)) if m else None
            if line != ref.line:
                return "error-line", (
                    f"xmrrs: {got}; reference: line {ref.line}: {ref} | input {data[:300]!r} "
                    f"opts {opts}"
                )
            return "rejected", None
        if isinstance(got, ValueError):
            return (
                "mismatch",
                f"xmrrs rejects ({got}), the reference accepts | input {data[:300]!r} opts {opts}",
            )
        if got[:4] != ref[:4] or got[5:] != ref[5:] or not _ulp_equal(got[4], ref[4]):
            return "mismatch", (
                f"different results: xmrrs {_short(got)} reference {_short(ref)} | input "
                f"{data[:300]!r} opts {opts}"
            )
        return "accepted", None


def _short(p: Parsed) -> str:
    return repr(tuple(v[:20] if isinstance(v, list) else v for v in p))


def _tmp_root() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def save_case(seed: int, cfg: dict[str, Any], dest: Path, failure: dict[str, Any]) -> str:
    """Writes the input of ``seed`` (``input.txt``) and how it is read (``case.json``)."""
    data, opts = make_input(seed, int(cfg.get("base", 0)))
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "input.txt").write_bytes(data)
    reader = "load_xc(path)" if opts["header"] else (
        "load_libsvm(path, zero_based={!r}, n_features={!r}, n_labels={!r})".format(
            "auto" if opts.get("zero_based") is None else opts["zero_based"],
            opts.get("n_features"), opts.get("n_labels"),
        )
    )  # fmt: skip
    (dest / "case.json").write_text(
        json.dumps({"seed": seed, "opts": opts, "reader": reader, "failure": failure}, indent=1)
    )
    return f"input {data[:200]!r} read by {reader}"
