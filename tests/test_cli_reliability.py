"""The command line: Ctrl-C at any moment exits 130 in one line; bad ``-k`` and ``-o`` values
are refused before any work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from xmrrs import XRLinearClassifier
from xmrrs.cli import main
from xmrrs.datasets import dump_xc, make_xmc
from xmrrs.modelfile import MANIFEST

ROOT = Path(__file__).resolve().parents[1]

# Sends SIGINT to itself when the module named in argv[1] is first imported, then runs the
# command line the way `python -m xmrrs` (argv[2] == "module") or the console script does.
CHILD = r"""
import builtins, os, runpy, signal, sys

target, how = sys.argv[1], sys.argv[2]
del sys.argv[1:3]
# as from a terminal: a parent that ignores SIGINT (a background job of a shell script) would
# pass that on, and Python then leaves Ctrl-C ignored
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv[0] = "xmrrs"
real = builtins.__import__


def hooked(name, globals=None, locals=None, fromlist=(), level=0):
    if name == target and level == 0:
        builtins.__import__ = real
        os.kill(os.getpid(), signal.SIGINT)
    return real(name, globals, locals, fromlist, level)


builtins.__import__ = hooked
if how == "module":
    runpy.run_module("xmrrs", run_name="__main__", alter_sys=True)
else:
    from xmrrs.__main__ import run

    run()
"""


@pytest.mark.parametrize("how", ["module", "script"])
@pytest.mark.parametrize("target", ["xmrrs.cli", "numpy", "scipy.sparse", "sklearn.base"])
def test_ctrl_c_during_start_up_exits_130_in_one_line(
    tmp_path: Path, target: str, how: str
) -> None:
    args = ["predict", str(tmp_path / "data.txt"), "-m", str(tmp_path / "m"), "-o", "p.txt"]
    r = subprocess.run(
        [sys.executable, "-c", CHILD, target, how, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert (r.returncode, r.stderr) == (130, "xmrrs: interrupted\n")
    assert r.stdout == ""


def test_the_console_script_is_the_interrupt_safe_entry_point() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    entry = re.search(r"^xmrrs = \"([\w.]+):(\w+)\"$", text, re.MULTILINE)
    assert entry is not None and entry.groups() == ("xmrrs.__main__", "run")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    """A data file, .npz features and labels, and a model directory."""
    d = tmp_path_factory.mktemp("cli")
    X, Y = make_xmc(400, 600, 40, random_state=0)
    data = d / "data.txt"
    dump_xc(data, X, Y)
    sp.save_npz(d / "X.npz", X)
    sp.save_npz(d / "Y.npz", Y)
    XRLinearClassifier(n_jobs=1, max_leaf_size=8, n_estimators=1).fit(X, Y).save(d / "model")
    return data, d / "X.npz", d / "Y.npz", d / "model"


@pytest.mark.parametrize("k", ["0", "-1", "x", "2.5"])
def test_k_must_be_a_positive_integer(
    files: tuple, k: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, _, model = files
    missing = str(model.parent / "missing.txt")  # usage errors come before reading anything
    for argv in (
        ["predict", missing, "-m", str(model), "-o", "out.txt", "-k", k],
        ["evaluate", missing, "-m", str(model), "-k", k],
        ["predict", missing, "-m", str(model), "-o", "out.txt", "-b", k],
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert "positive integer" in capsys.readouterr().err


def test_a_huge_k_is_capped_at_the_number_of_labels(
    files: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _, _, model = files
    out = tmp_path / "p.txt"
    k = str(10**12)
    assert main(["predict", str(data), "-m", str(model), "-o", str(out), "-k", k, "-q"]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 400 and max(len(line.split()) for line in lines) <= 40
    assert main(["evaluate", str(data), "-m", str(model), "-k", k, "--json", "-q"]) == 0
    assert '"P@40"' in capsys.readouterr().out


def _snapshot(*paths: Path) -> dict[Path, bytes]:
    out = {}
    for p in paths:
        for f in [p] if p.is_file() else sorted(p.rglob("*")):
            if f.is_file():
                out[f] = f.read_bytes()
    return out


def test_predict_refuses_to_write_over_its_inputs_before_any_work(
    files: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, Xnpz, Ynpz, model = files
    before = _snapshot(data, Xnpz, Ynpz, model)
    est = next(p for p in model.iterdir() if p.is_dir())
    (tmp_path / "link.txt").symlink_to(data)
    os.link(data, tmp_path / "hard.txt")
    (tmp_path / "sub").mkdir()
    cases = [
        ([str(data)], data),
        ([str(tmp_path / "link.txt")], data),
        ([str(tmp_path / "hard.txt")], data),
        ([str(tmp_path / "sub" / ".." / "hard.txt")], data),
        ([str(model)], data),
        ([str(model / MANIFEST)], data),
        ([str(est / "xr_model.safetensors")], data),
        ([str(model / "new.txt")], data),  # inside the model directory, even a new file
        ([str(Xnpz)], Xnpz),
        ([str(Ynpz)], Xnpz),
    ]
    for output, inp in cases:
        extra = ["--labels", str(Ynpz)] if inp == Xnpz else []
        argv = ["predict", str(inp), *extra, "-m", str(model), "-o", *output, "-q"]
        assert main(argv) == 2, output
        assert "refusing to overwrite" in capsys.readouterr().err, output
    # refused before the model is loaded: a missing model is not what is reported
    assert main(["predict", str(data), "-m", str(tmp_path / "none"), "-o", str(data), "-q"]) == 2
    assert "data file" in capsys.readouterr().err
    assert _snapshot(data, Xnpz, Ynpz, model) == before
    assert not (model / "new.txt").exists()
    out = tmp_path / "ok.npz"
    assert main(["predict", str(data), "-m", str(model), "-o", str(out), "-k", "3", "-q"]) == 0
    assert sp.load_npz(out).shape == (400, 40)
    assert np.all(np.diff(sp.load_npz(out).indptr) <= 3)


def test_train_refuses_a_model_path_it_could_not_save_to_before_training(
    files: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = files[0]
    before = data.read_bytes()
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "keep.txt").write_text("x")
    for target, named in ((data, "not a directory"), (tmp_path / "dir", "keep.txt")):
        assert main(["train", str(data), "-m", str(target), "-n", "1"]) == 2
        err = capsys.readouterr().err
        assert named in err and "reading" not in err and "training" not in err
    assert data.read_bytes() == before
    assert (tmp_path / "dir" / "keep.txt").read_text() == "x"
