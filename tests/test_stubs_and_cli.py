"""The .pyi stub matches the compiled module; the command line runs and reports errors."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import xmrrs
from xmrrs import _xmrrs
from xmrrs.cli import main

STUB = Path(xmrrs.__file__).with_name("_xmrrs.pyi")


def test_stub_lists_exactly_the_compiled_functions() -> None:
    tree = ast.parse(STUB.read_text())
    stubbed = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    compiled = {n for n in dir(_xmrrs) if callable(getattr(_xmrrs, n)) and not n.startswith("__")}
    assert stubbed == compiled
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        members = {m.name for m in cls.body if isinstance(m, ast.FunctionDef)}
        public = {m for m in dir(getattr(_xmrrs, cls.name)) if not m.startswith("_")}
        assert members == public, cls.name


def test_version() -> None:
    assert xmrrs.__version__ == _xmrrs.__version__
    assert xmrrs.__version__.count(".") == 2


def test_cli_version() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "xmrrs", "--version"], capture_output=True, text=True, check=True
    )
    assert r.stdout.strip() == f"xmrrs {xmrrs.__version__}"


def test_demo_runs_and_prints_metrics(capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(["demo", "--n-samples", "2000", "--n-features", "3000", "--n-labels", "300"])
    out = capsys.readouterr().out
    assert code == 0
    for key in ("P@1", "P@3", "P@5", "train:", "predict"):
        assert key in out


def test_python_dash_m_and_exit_codes() -> None:
    r = subprocess.run([sys.executable, "-m", "xmrrs", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "demo" in r.stdout
    r = subprocess.run([sys.executable, "-m", "xmrrs", "nope"], capture_output=True, text=True)
    assert r.returncode == 2


def _xc_split(tmp_path: Path) -> tuple[Path, Path]:
    from xmrrs.datasets import dump_xc, make_xmc

    X, Y = make_xmc(1200, 2000, 150, random_state=0)
    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    dump_xc(train, X[:1000], Y[:1000])
    dump_xc(test, X[1000:], Y[1000:])
    return train, test


def test_train_predict_evaluate_round_trip(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from xmrrs import XRLinearClassifier
    from xmrrs.datasets import load_xc

    train, test = _xc_split(tmp_path)
    model, pred = tmp_path / "model", tmp_path / "pred.txt"
    assert main(["train", str(train), "-m", str(model), "--max-leaf-size", "20", "-n", "1"]) == 0
    assert "training" in capsys.readouterr().err
    assert main(["predict", str(test), "-m", str(model), "-o", str(pred), "-k", "5", "-q"]) == 0
    assert capsys.readouterr().err == ""
    lines = pred.read_text().splitlines()
    assert len(lines) == 200 and all(len(line.split()) == 5 for line in lines)
    clf = XRLinearClassifier.load(model)
    X, _ = load_xc(test)
    ids, scores = clf.predict_topk(X, k=5)
    first = [tok.split(":") for tok in lines[0].split()]
    assert [int(j) for j, _ in first] == list(ids[0])
    np.testing.assert_allclose([float(s) for _, s in first], scores[0], rtol=1e-5)
    assert main(["evaluate", str(test), "-p", str(pred), "-k", "5", "--json", "-q"]) == 0
    from_file = capsys.readouterr().out
    assert main(["evaluate", str(test), "-m", str(model), "-k", "5", "--json", "-q"]) == 0
    from_model = capsys.readouterr().out
    import json

    a, b = json.loads(from_file), json.loads(from_model)
    assert a == b and 0 < a["P@1"] <= 1
    assert main(["predict", str(test), "-m", str(model), "-o", str(tmp_path / "p.npz"), "-q"]) == 0


def test_cli_errors_have_exit_code_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    train, _ = _xc_split(tmp_path)
    assert main(["train", str(tmp_path / "missing.txt"), "-m", str(tmp_path / "m")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["train", str(train), "-m", str(tmp_path / "m"), "--Cp", "-1", "-q"]) == 2
    assert "Cp" in capsys.readouterr().err
    assert main(["predict", str(train), "-m", str(tmp_path / "none"), "-o", "x.txt", "-q"]) == 2
    bad = tmp_path / "bad.txt"
    bad.write_text("2 3 4\n0 1:0.5\n1 7:0.5\n")
    assert main(["train", str(bad), "-m", str(tmp_path / "m"), "-q"]) == 2
    assert "line 3" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["train", str(train), "-m", str(tmp_path / "m"), "--branching", "2,x"])
    assert e.value.code == 2
    assert "comma list" in capsys.readouterr().err
    assert main(["train", str(train), "-m", str(tmp_path / "m2"), "--branching", "2,3", "-q"]) == 0


def test_train_help_explains_the_hyper_parameters() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "xmrrs", "train", "--help"], capture_output=True, text=True
    )
    assert r.returncode == 0
    for flag in ("--branching", "--max-leaf-size", "--negatives", "--threshold", "--beam-size"):
        assert flag in r.stdout
    assert "Exit codes" in r.stdout
