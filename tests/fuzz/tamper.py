"""Tamper suite for model directories of ``XRLinearClassifier``.

Each trial copies a small saved model (``xmrrs-model.json`` + ``estimator-*/xr_model.json``
+ ``estimator-*/xr_model.safetensors``), corrupts one file of it, loads it with
``mmap=False`` and ``mmap=True`` and predicts on fixed rows. Every trial must end, in each
mode, in a clean exception (``ValueError``, ``OSError``, ``MemoryError``) at load or predict,
or in valid answers: ids in ``[-1, n_labels)`` with ``-1`` only as right padding (score
``-inf``), no repeated id in a row, finite scores for real ids, best first, right shapes. A
``RuntimeError`` "internal error", any other exception type, a crash or a hang is a failure.

Corruptions: truncation, bit flips, overwritten byte ranges of any file; JSON fields of
either manifest rewritten with odd values (huge, negative, fractional, wrong types, missing,
other strings); arrays of the safetensors file overwritten (special values, shuffles,
copies of other arrays), resized (file rebuilt, manifest offsets fixed up, sometimes the
layer sizes too), with the manifest's crc32 fixed up so that the corruption passes the
checksum; estimator files swapped between trees.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "xmrrs-model.json"
XR_JSON = "xr_model.json"
XR_DATA = "xr_model.safetensors"
DTYPES = {"U8": "<u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "F32": "<f4"}

ODD_NUMBERS: list[Any] = [
    0, 1, -1, 2, 3, 255, 256, 65536, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63,
    2**64 - 1, 2**64, 10**12, -(10**12), 1.5, -0.0, 1e308, "7", "", None, True, False, [], {},
    [1, 2],
]  # fmt: skip
ODD_STRINGS = [
    "", "U8", "U16", "U32", "U64", "F32", "F16", "I32", "bogus", ".", "..", "../" + XR_DATA,
    XR_JSON, XR_DATA, "/etc/passwd", "crc32:00000000", "crc32:zz", "l3-hinge", "sigmoid",
    "noop", "range", "str", "int", "xmrrs.xr_model", "xmrrs.XRLinearClassifier", "\u0000",
    "é" * 3,
]  # fmt: skip


# ---------------------------------------------------------------------------------------
# base models and data


def build_base(workdir: Path) -> list[dict[str, Any]]:
    """Trains and saves the base models (deterministic); returns their descriptions."""
    from xmrrs import XRLinearClassifier
    from xmrrs.datasets import make_xmc

    specs = [
        ("a", (300, 200, 40), {"n_estimators": 3, "branching": 4, "max_leaf_size": 4}),
        ("b", (400, 300, 600), {"n_estimators": 2, "branching": 2, "max_leaf_size": 300}),
        ("c", (200, 150, 30), {"n_estimators": 1, "branching": 100, "top_k": 5}),
    ]
    out = []
    for name, (ns, nf, nl), kw in specs:
        X, Y = make_xmc(ns, nf, nl, random_state=3)
        clf = XRLinearClassifier(n_jobs=1, random_state=0, **kw).fit(X[:-16], Y[:-16])
        d = workdir / f"base-{name}"
        if d.exists():
            shutil.rmtree(d)
        clf.save(d)
        Xt = X[-16:]
        out.append({"dir": d, "X": Xt, "Y": Y[-16:], "n_labels": nl, "n_features": nf})
    return out


# ---------------------------------------------------------------------------------------
# safetensors editing


def read_st(path: Path) -> tuple[dict[str, Any], bytes, int]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    return header, raw, 8 + n


def write_st(path: Path, arrays: list[tuple[str, str, bytes]]) -> dict[str, tuple[int, int]]:
    """Writes (name, dtype, bytes) in the given order; returns name -> (abs offset, len)."""
    header: dict[str, Any] = {}
    off = 0
    for name, dt, b in arrays:
        size = np.dtype(DTYPES[dt]).itemsize
        header[name] = {"dtype": dt, "shape": [len(b) // size], "data_offsets": [off, off + len(b)]}
        off += len(b)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    start = 8 + len(hb)
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + b"".join(b for _, _, b in arrays))
    placed = {}
    for name, dt, b in arrays:
        size = np.dtype(DTYPES[dt]).itemsize
        placed[name] = (start + header[name]["data_offsets"][0], len(b) // size)
    return placed


def st_arrays(path: Path) -> list[tuple[str, str, bytes]]:
    header, raw, start = read_st(path)
    items = [(k, v) for k, v in header.items() if k != "__metadata__"]
    items.sort(key=lambda kv: kv[1]["data_offsets"][0])
    return [
        (k, v["dtype"], raw[start + v["data_offsets"][0] : start + v["data_offsets"][1]])
        for k, v in items
    ]


def fix_manifest(est_dir: Path, placed: dict[str, tuple[int, int]] | None = None) -> None:
    """Makes ``xr_model.json`` agree with the array file: size, crc32 and (given ``placed``)
    the array table."""
    mpath = est_dir / XR_JSON
    man = json.loads(mpath.read_text())
    data = (est_dir / XR_DATA).read_bytes()
    man["data_bytes"] = len(data)
    man["checksum"] = f"crc32:{zlib.crc32(data) & 0xFFFFFFFF:08x}"
    if placed is not None:
        arrays = {}
        for name, (off, n) in placed.items():
            old = man["arrays"].get(name, {})
            dt = old.get("dtype", "U32")
            arrays[name] = {
                "dtype": dt,
                "shape": [n],
                "offset": off,
                "nbytes": n * np.dtype(DTYPES.get(dt, "<u4")).itemsize,
            }
        man["arrays"] = arrays
    mpath.write_text(json.dumps(man, indent=1))


# ---------------------------------------------------------------------------------------
# corruptions


def _json_paths(v: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(v, dict):
        for k, x in v.items():
            out += _json_paths(x, (*prefix, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _json_paths(x, (*prefix, i))
    return out


def _odd_value(rng: random.Random, old: Any) -> Any:
    r = rng.random()
    if isinstance(old, bool):
        return rng.choice([not old, 0, 1, "true", None])
    if isinstance(old, int) and r < 0.5:
        return rng.choice([old + 1, old - 1, old * 2, old // 2, -old, old + 2**32, old * 1000])
    if isinstance(old, str) and r < 0.5:
        return rng.choice([*ODD_STRINGS, old + "x", old[:-1], old.upper()])
    if isinstance(old, list) and r < 0.5 and old:
        return rng.choice([old[:-1], [*old, old[-1]], old[::-1], [], old * 2])
    return rng.choice(ODD_NUMBERS + ODD_STRINGS[:6])


def tamper_json(rng: random.Random, path: Path, desc: list[str]) -> None:
    text = path.read_text()
    v = json.loads(text)
    paths = _json_paths(v)
    p = rng.choice(paths)
    parent = v
    for key in p[:-1]:
        parent = parent[key]
    op = rng.random()
    if op < 0.1 and isinstance(parent, dict):
        del parent[p[-1]]
        desc.append(f"{path.name}: delete {list(p)}")
    elif op < 0.15 and isinstance(parent, dict):
        parent["unknown_" + str(p[-1])] = _odd_value(rng, None)
        desc.append(f"{path.name}: add a key beside {list(p)}")
    else:
        new = _odd_value(rng, parent[p[-1]])
        parent[p[-1]] = new
        desc.append(f"{path.name}: set {list(p)} = {json.dumps(new)[:80]}")
    out = json.dumps(v, indent=1)
    if rng.random() < 0.05:
        out = out.replace("1", "NaN", 1)
        desc.append(f"{path.name}: a NaN token")
    path.write_text(out)


def tamper_bytes(rng: random.Random, path: Path, desc: list[str]) -> None:
    b = bytearray(path.read_bytes())
    op = rng.randrange(5)
    n = len(b)
    if op == 0:
        cut = rng.choice([0, 1, 7, 8, 9, n // 2, n - 8, n - 1, rng.randrange(n + 1)])
        del b[max(0, min(cut, n)) :]
        desc.append(f"{path.name}: truncate to {len(b)} bytes")
    elif op == 1:
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(n)
            b[i] ^= 1 << rng.randrange(8)
        desc.append(f"{path.name}: bit flips")
    elif op == 2:
        i = rng.randrange(n)
        k = rng.randint(1, 64)
        fill = rng.choice([b"\x00", b"\xff", b" ", bytes([rng.randrange(256)])])
        b[i : i + k] = fill * len(b[i : i + k])
        desc.append(f"{path.name}: overwrite {k} bytes at {i} with {fill!r}")
    elif op == 3:
        i = rng.randrange(n + 1)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        desc.append(f"{path.name}: insert bytes at {i}")
    else:
        # header length prefix of a safetensors file, or the first bytes of a JSON file
        v = rng.choice([0, 1, 7, 2**32, 2**63, 2**64 - 1, n, n - 8, n + 8])
        b[0:8] = struct.pack("<Q", v)
        desc.append(f"{path.name}: first 8 bytes = u64 {v}")
    path.write_bytes(bytes(b))


def _special(rng: random.Random, dt: str, n_hint: int) -> Any:
    if dt == "F32":
        return rng.choice([math.nan, math.inf, -math.inf, 3e38, -3e38, 1e-45, -0.0, 0.0, 1e30])
    big = {"U8": 255, "U16": 65535, "U32": 2**32 - 1, "U64": 2**64 - 1}[dt]
    v = rng.choice([0, 1, n_hint - 1, n_hint, n_hint + 1, big, big // 2 + 1, big - 1, 31, 32])
    return max(v, 0) & big


def tamper_array(rng: random.Random, est: Path, desc: list[str]) -> None:
    arrays = st_arrays(est / XR_DATA)
    man = json.loads((est / XR_JSON).read_text())
    i = rng.randrange(len(arrays))
    name, dt, raw = arrays[i]
    a = np.frombuffer(raw, dtype=DTYPES[dt]).copy()
    n_hint = max(int(man.get("n_labels", 1)), 1)
    op = rng.randrange(9)
    resized = False
    if op <= 2 and a.size:  # special values in a few places
        for _ in range(rng.choice([1, 1, 2, 5])):
            a[rng.randrange(a.size)] = _special(rng, dt, n_hint if rng.random() < 0.5 else a.size)
        what = "special values"
    elif op == 3 and a.size:
        rng.shuffle(a_list := a.tolist())
        a = np.asarray(a_list, dtype=DTYPES[dt])
        what = "shuffled"
    elif op == 4 and a.size:
        a = a[::-1].copy()
        what = "reversed"
    elif op == 5:
        a[:] = _special(rng, dt, n_hint)
        what = f"filled with {a[:1].tolist()}"
    elif op == 6:  # another array's bytes of the same dtype (and length if possible)
        same = [x for x in arrays if x[1] == dt and x[0] != name]
        if not same:
            return tamper_array(rng, est, desc)
        other = rng.choice(same)
        b = np.frombuffer(other[2], dtype=DTYPES[dt])
        m = min(a.size, b.size)
        a[:m] = b[:m]
        what = f"first {m} values copied from {other[0]}"
    elif op == 7 and a.size:  # a random window of random bytes
        raw_b = bytearray(a.tobytes())
        j = rng.randrange(len(raw_b))
        for t in range(j, min(len(raw_b), j + rng.randint(1, 16))):
            raw_b[t] = rng.randrange(256)
        a = np.frombuffer(bytes(raw_b), dtype=DTYPES[dt]).copy()
        what = "random bytes"
    else:  # resize: rebuild the file, fix the table (and maybe the layer sizes)
        new_n = rng.choice([0, 1, max(a.size - 1, 0), a.size + 1, a.size * 2, a.size + 8])
        if new_n <= a.size:
            a = a[:new_n].copy()
        else:
            extra = np.full(new_n - a.size, _special(rng, dt, n_hint), dtype=DTYPES[dt])
            a = np.concatenate([a, extra])
        what = f"resized to {new_n}"
        resized = True
    arrays[i] = (name, dt, a.tobytes())
    placed = write_st(est / XR_DATA, arrays)
    fix = rng.random() < 0.8
    desc.append(f"{est.name}/{XR_DATA}: array {name} ({dt}[{len(raw) // a.itemsize}]) {what}")
    if resized:
        fix_manifest(est, placed)
        if rng.random() < 0.6:
            _fix_layer_sizes(est, name, a.size, desc)
            fix_manifest(est, placed)
        desc.append("manifest array table and crc32 fixed up")
    elif fix:
        fix_manifest(est)
        desc.append("crc32 fixed up")


def _fix_layer_sizes(est: Path, name: str, n: int, desc: list[str]) -> None:
    man = json.loads((est / XR_JSON).read_text())
    if name == "labels":
        man["n_labels"] = n
        desc.append(f"n_labels = {n}")
    elif name.startswith("layer"):
        m, _, field = name[5:].partition(".")
        key = {
            "row_feat": "n_rows",
            "vals": "n_entries",
            "cols": "n_entries",
            "bkt": "n_buckets",
            "bias": "n_children",
        }.get(field)
        if key is None:
            return
        man["layers"][int(m)][key] = n
        desc.append(f"layers[{m}].{key} = {n}")
    (est / XR_JSON).write_text(json.dumps(man, indent=1))


def tamper_swap(rng: random.Random, model: Path, ests: list[Path], desc: list[str]) -> None:
    op = rng.randrange(5)
    man_path = model / MANIFEST
    man = json.loads(man_path.read_text())
    if op == 0 and len(ests) > 1:  # swap whole estimators: still a valid model
        man["estimators"] = man["estimators"][::-1]
        man_path.write_text(json.dumps(man))
        desc.append("estimator order reversed")
    elif op == 1:
        names = man["estimators"]
        man["estimators"] = rng.choice(
            [
                names * 2,
                names[:1],
                names[1:],
                [*names, "estimator-9"],
                ["."],
                ["../x"],
                [names[0] + "/.."],
            ]
        )
        man_path.write_text(json.dumps(man))
        desc.append(f"estimators = {man['estimators']}")
    elif len(ests) > 1:
        a, b = rng.sample(ests, 2)
        f = XR_DATA if op in (2, 3) else XR_JSON
        shutil.copyfile(b / f, a / f)
        desc.append(f"{a.name}/{f} replaced by {b.name}'s")
        if op == 3:
            fix_manifest(a, {n: (o, c) for n, (o, c) in _placed(a).items()})
            desc.append("manifest array table and crc32 fixed up")
    else:
        tamper_bytes(rng, rng.choice(ests) / XR_DATA, desc)


def _placed(est: Path) -> dict[str, tuple[int, int]]:
    header, _, start = read_st(est / XR_DATA)
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        size = np.dtype(DTYPES.get(v["dtype"], "<u1")).itemsize
        out[k] = (
            start + v["data_offsets"][0],
            (v["data_offsets"][1] - v["data_offsets"][0]) // size,
        )
    return out


def make_case(
    seed: int, base: int, bases: list[dict[str, Any]], dest: Path
) -> tuple[dict[str, Any], list[str]]:
    """Copies a base model to ``dest`` and corrupts it as ``seed`` says."""
    rng = random.Random(base * 1_000_003 + seed)
    b = bases[rng.randrange(len(bases))]
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(b["dir"], dest)
    ests = [dest / e for e in json.loads((dest / MANIFEST).read_text())["estimators"]]
    desc = [f"base model {b['dir'].name}"]
    r = rng.random()
    if r < 0.12:
        tamper_json(rng, dest / MANIFEST, desc)
    elif r < 0.16:
        tamper_bytes(rng, dest / MANIFEST, desc)
    elif r < 0.40:
        est = rng.choice(ests)
        tamper_json(rng, est / XR_JSON, desc)
        if rng.random() < 0.3:
            fix_manifest(est)
            desc.append("crc32 fixed up")
        desc[-1 if desc[-1] != "crc32 fixed up" else -2] = (
            f"{est.name}/" + desc[-1 if desc[-1] != "crc32 fixed up" else -2]
        )
    elif r < 0.45:
        tamper_bytes(rng, rng.choice(ests) / XR_JSON, desc)
    elif r < 0.85:
        tamper_array(rng, rng.choice(ests), desc)
    elif r < 0.94:
        est = rng.choice(ests)
        tamper_bytes(rng, est / XR_DATA, desc)
        if rng.random() < 0.5:
            fix_manifest(est)
            desc.append("data_bytes and crc32 fixed up")
    else:
        tamper_swap(rng, dest, ests, desc)
    return b, desc


# ---------------------------------------------------------------------------------------
# checks


def check_topk(ids: Any, scores: Any, n: int, k: int, n_labels: int) -> str | None:
    """Why the answer is invalid, or None."""
    ids = np.asarray(ids)
    scores = np.asarray(scores)
    # documented: (n_samples, min(k, n_labels))
    want = (n, min(k, n_labels))
    if ids.shape != want or scores.shape != want:
        return f"shapes {ids.shape} {scores.shape}, expected {want}"
    if ids.dtype.kind != "i":
        return f"ids dtype {ids.dtype}"
    if scores.dtype != np.float32:
        return f"scores dtype {scores.dtype}"
    if ids.size == 0:
        return None
    if ids.min() < -1 or ids.max() >= n_labels:
        return f"ids out of [-1, {n_labels}): min {ids.min()} max {ids.max()}"
    real = ids >= 0
    holes = (real[:, 1:] & ~real[:, :-1]).any(axis=1)
    if holes.any():
        return f"-1 is not only right padding: {ids[holes][0].tolist()}"
    if not np.isfinite(scores[real]).all():
        bad = scores[real][~np.isfinite(scores[real])][:3]
        return f"non-finite scores for real ids: {bad.tolist()}"
    if not (scores[~real] == -np.inf).all():
        return f"padding scores are not -inf: {scores[~real][:3].tolist()}"
    for row_ids, row_sc, rr in zip(ids, scores, real, strict=True):
        r = row_ids[rr]
        if len(np.unique(r)) != len(r):
            return f"repeated ids in a row: {r.tolist()}"
        s = row_sc[rr]
        if (np.diff(s) > 0).any():
            return f"scores not best first: {s.tolist()}"
    return None


CLEAN = (ValueError, OSError, MemoryError)


def classify(e: BaseException) -> str | None:
    """None for a clean exception, else the failure category."""
    if isinstance(e, RuntimeError) and "internal error" in str(e):
        return "internal-error"
    if isinstance(e, CLEAN):
        return None
    return f"unexpected-{type(e).__name__}"


class Runner:
    def __init__(self, cfg: dict[str, Any]) -> None:
        import warnings

        warnings.simplefilter("ignore")
        from xmrrs import XRLinearClassifier

        self.cls = XRLinearClassifier
        self.base = int(cfg.get("base", 0))
        self.tmp = Path(tempfile.mkdtemp(prefix="xmrrs-tamper-", dir=_tmp_root()))
        self.bases = build_base(self.tmp)
        self.modes = cfg.get("modes", [False, True])

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self, seed: int) -> tuple[str, Any]:
        dest = self.tmp / "case"
        b, desc = make_case(seed, self.base, self.bases, dest)
        loaded = 0
        for mmap in self.modes:
            try:
                est = self.cls.load(dest, mmap=mmap)
            except Exception as e:
                cat = classify(e)
                if cat:
                    return cat, f"load(mmap={mmap}): {type(e).__name__}: {e} | {'; '.join(desc)}"
                continue
            loaded += 1
            bad = self.predict(est, b)
            if bad:
                return bad[0], f"mmap={mmap}: {bad[1]} | {'; '.join(desc)}"
            del est
        return ("accepted" if loaded else "rejected"), None

    def predict(self, est: Any, b: dict[str, Any]) -> tuple[str, str] | None:
        X = b["X"]
        n_labels = len(est.classes_)
        calls: list[tuple[Any, int | None, int | None]] = [
            (X, None, None),
            (X[:1], 1, None),
            (X, n_labels + 3, 1),
            (X[2:3], 5, 64),
        ]
        for x, k, beam in calls:
            what = f"predict_topk(X[{x.shape[0]} rows], k={k}, beam_size={beam})"
            try:
                ids, scores = est.predict_topk(x, k, beam_size=beam)
            except Exception as e:
                cat = classify(e)
                if cat:
                    return cat, f"{what}: {type(e).__name__}: {e}"
                return None  # a clean refusal: the model is unusable, fine
            kk = est.top_k if k is None else k
            why = check_topk(ids, scores, x.shape[0], kk, n_labels)
            if why:
                return "invalid-answer", f"{what}: {why}"
        try:
            P = est.predict(X)
        except Exception as e:
            cat = classify(e)
            return (cat, f"predict: {type(e).__name__}: {e}") if cat else None
        if P.shape != (X.shape[0], n_labels):
            return "invalid-answer", f"predict shape {P.shape}"
        return None


def _tmp_root() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


_BASES: dict[str, list[dict[str, Any]]] = {}


def save_case(seed: int, cfg: dict[str, Any], dest: Path, failure: dict[str, Any]) -> str:
    """Writes the corrupted model of ``seed`` to ``dest/model`` and ``dest/case.json``;
    returns the description of the corruption."""
    if "bases" not in _BASES:
        root = Path(tempfile.mkdtemp(prefix="xmrrs-tamper-base-"))
        _BASES["bases"] = build_base(root)
    b, desc = make_case(seed, int(cfg.get("base", 0)), _BASES["bases"], dest / "model")
    i = _BASES["bases"].index(b)
    repro = (
        "from xmrrs import XRLinearClassifier\n"
        "from xmrrs.datasets import make_xmc\n"
        f"# rows: tests.fuzz.tamper.build_base(...)[{i}]['X'] (the last 16 rows of "
        "make_xmc(..., random_state=3))\n"
        f"m = XRLinearClassifier.load({str(dest / 'model')!r}, mmap=True)\n"
    )
    (dest / "case.json").write_text(
        json.dumps({"seed": seed, "tamper": desc, "failure": failure, "repro": repro}, indent=1)
    )
    return "; ".join(desc)
