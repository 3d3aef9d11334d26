"""Runs fuzz trials in worker subprocesses, so that an abort, a segfault or a hang is caught.

A worker (``python -m tests.fuzz._worker``) runs the trials of a range of seeds and prints
one line per event on stdout:

- ``C <next seed> <counts json>``: a checkpoint (every seed before ``next`` is done);
- ``F <failure json>``: a trial broke the promise (wrong answer, invalid answer, RuntimeError
  "internal error", unexpected exception type...);
- ``S <counts json>``: the range is done.

If a worker dies or times out, the parent replays the unfinished seeds after the last
checkpoint one by one, each in a fresh subprocess with its own timeout, to name the culprit
seed; it then resumes the rest of the range in a new worker. Every failing case is written to
``outdir`` by the kind's ``save_case`` (the inputs are regenerated from the seed).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("parsers", "tamper")
# outcome names: the good ones, then the failures
GOOD = ("accepted", "rejected")


@dataclass
class Summary:
    kind: str
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_inputs(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        bad = {k: v for k, v in self.counts.items() if k not in GOOD}
        rate = self.n_inputs / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"{self.kind}: {self.n_inputs} inputs in {self.seconds:.1f} s ({rate:.0f}/s): "
            f"accepted {self.counts['accepted']}, clean rejections {self.counts['rejected']}, "
            f"failures {dict(sorted(bad.items())) or 0}"
        ]
        for f in self.failures[:30]:
            lines.append(f"  FAIL {failure_line(f)}")
        if len(self.failures) > 30:
            lines.append(f"  ... and {len(self.failures) - 30} more")
        return "\n".join(lines)


def failure_line(f: dict[str, Any]) -> str:
    case = f" [{f['case']}]" if f.get("case") else ""
    return f"{f['kind']} seed {f['seed']}: {f['category']}: {str(f.get('detail'))[:400]}{case}"


def _worker_cmd(kind: str, start: int, count: int, cfg: dict[str, Any]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.fuzz._worker",
        kind,
        str(start),
        str(count),
        json.dumps(cfg),
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), str(ROOT / "python"), env.get("PYTHONPATH", "")) if p
    )
    env.setdefault("PYTHONFAULTHANDLER", "1")
    env["PYTHONWARNINGS"] = "ignore"
    return env


def _run_worker(
    kind: str, start: int, count: int, cfg: dict[str, Any], timeout: float
) -> tuple[int, int | None, Counter[str], list[dict[str, Any]], str, bool]:
    """One worker over ``[start, start + count)``.

    Returns (next seed done up to, returncode or None if timed out, counts, failures, stderr
    tail, finished).
    """
    proc = subprocess.Popen(
        _worker_cmd(kind, start, count, cfg),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
    done = start
    counts: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []
    finished = False
    for raw in out.decode("utf-8", "replace").splitlines():
        tag, _, rest = raw.partition(" ")
        if tag == "C":
            nxt, _, cj = rest.partition(" ")
            done = int(nxt)
            counts = Counter(json.loads(cj))
        elif tag == "F":
            failures.append(json.loads(rest))
        elif tag == "S":
            counts = Counter(json.loads(rest))
            done = start + count
            finished = True
    rc = None if timed_out else proc.returncode
    if rc not in (0, None):
        finished = False
    # failures reported after the last checkpoint are replayed; keep those before it
    failures = [f for f in failures if f["seed"] < done]
    return done, rc, counts, failures, err.decode("utf-8", "replace")[-2000:], finished


_KEYS = ("memory allocation", "panicked", "Fatal Python error", "fatal runtime", "overflow")


def _gist(err: str) -> str:
    """The telling lines of a dead worker's stderr: Rust's abort or panic message and the
    innermost Python frames of faulthandler's traceback."""
    lines = err.splitlines()
    keep = [ln.strip() for ln in lines if any(k in ln for k in _KEYS)]
    frames = [ln.strip() for ln in lines if ln.strip().startswith('File "')]
    return " / ".join(keep[:3] + frames[:4])[:900] or err[-400:]


def _death(rc: int | None, err: str) -> tuple[str, str]:
    if rc is None:
        return "hang", f"timed out; stderr: {_gist(err)}"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = str(-rc)
        return "crash", f"killed by {name}: {_gist(err)}"
    return "crash", f"worker exited with status {rc}: {_gist(err)}"


class Campaign:
    """Runs ``count`` seeds of ``kind`` from ``start`` in ``jobs`` parallel workers."""

    def __init__(
        self,
        kind: str,
        cfg: dict[str, Any],
        *,
        outdir: Path | None = None,
        chunk: int = 2000,
        per_seed_timeout: float = 30.0,
        seed_cost: float = 0.01,
        jobs: int = 2,
        progress: bool = False,
    ) -> None:
        self.kind = kind
        self.cfg = cfg
        self.outdir = outdir
        self.chunk = chunk
        self.per_seed_timeout = per_seed_timeout
        self.seed_cost = seed_cost
        self.jobs = jobs
        self.progress = progress
        self.lock = threading.Lock()
        self.summary = Summary(kind)
        self.t0 = 0.0
        self.total = 0

    def _save(self, f: dict[str, Any]) -> None:
        if self.outdir is None:
            return
        mod = importlib.import_module(f"tests.fuzz.{self.kind}")
        dest = self.outdir / f"{self.kind}-seed{f['seed']}"
        try:
            what = mod.save_case(f["seed"], self.cfg, dest, f)
            f["case"] = str(dest)
            if what and what not in str(f.get("detail")):
                f["detail"] = f"{f.get('detail')} | {what}"
        except Exception as e:
            f["case"] = f"(could not save: {e!r})"

    def _record(self, counts: Counter[str], failures: list[dict[str, Any]]) -> None:
        for f in failures:
            self._save(f)
        with self.lock:
            self.summary.counts.update(counts)
            self.summary.failures.extend(failures)
            if self.progress:
                n = self.summary.n_inputs
                dt = time.perf_counter() - self.t0
                bad = len(self.summary.failures)
                print(
                    f"[{self.kind}] {n}/{self.total} inputs, {dt:.0f} s, {n / max(dt, 1e-9):.0f}/s,"
                    f" {bad} failures",
                    file=sys.stderr,
                    flush=True,
                )
                for f in failures:
                    print(f"[{self.kind}] FAIL {failure_line(f)}", file=sys.stderr, flush=True)

    def _range(self, start: int, count: int) -> None:
        end = start + count
        pos = start
        while pos < end:
            n = min(self.chunk, end - pos)
            # generous: start-up, then a pessimistic cost per seed on a busy machine
            timeout = max(30.0 + n * self.seed_cost, self.per_seed_timeout)
            done, rc, counts, fails, err, finished = _run_worker(
                self.kind, pos, n, self.cfg, timeout
            )
            self._record(counts, fails)
            if finished:
                pos += n
                continue
            # the worker died or hung somewhere in [done, pos + n): replay one by one
            for s in range(done, pos + n):
                _, rc2, c2, f2, err2, fin2 = _run_worker(
                    self.kind, s, 1, self.cfg, self.per_seed_timeout
                )
                if fin2:
                    self._record(c2, f2)
                    continue
                category, detail = _death(rc2, err2)
                fail = {"kind": self.kind, "seed": s, "category": category, "detail": detail}
                self._record(Counter({category: 1}), [fail])
                # the culprit is found; let a new worker run the rest of the range
                pos = s + 1
                break
            else:
                # no single seed reproduces it: report the range as flaky
                category, detail = _death(rc, err)
                fail = {
                    "kind": self.kind,
                    "seed": done,
                    "category": f"flaky-{category}",
                    "detail": f"seeds {done}..{pos + n - 1} together: {detail}",
                }
                self._record(Counter(), [fail])
                pos += n

    def run(self, start: int, count: int) -> Summary:
        self.t0 = time.perf_counter()
        self.total = count
        if self.outdir is not None:
            self.outdir.mkdir(parents=True, exist_ok=True)
        jobs = max(1, min(self.jobs, count))
        step = -(-count // jobs)
        ranges = [(start + i * step, min(step, count - i * step)) for i in range(jobs)]
        ranges = [r for r in ranges if r[1] > 0]
        with ThreadPoolExecutor(len(ranges)) as ex:
            for fut in [ex.submit(self._range, s, c) for s, c in ranges]:
                fut.result()
        self.summary.seconds = time.perf_counter() - self.t0
        self.summary.failures.sort(key=lambda f: f["seed"])
        return self.summary
