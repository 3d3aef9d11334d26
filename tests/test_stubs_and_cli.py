"""The .pyi stub matches the compiled module; the command line runs and reports errors."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import xmrrs
from xmrrs import _xmrrs
from xmrrs.cli import main

STUB = Path(xmrrs.__file__).with_name("_xmrrs.pyi")


def test_stub_lists_exactly_the_compiled_functions() -> None:
    tree = ast.parse(STUB.read_text())
    stubbed = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    compiled = {n for n in dir(_xmrrs) if callable(getattr(_xmrrs, n)) and not n.startswith("__")}
    assert stubbed == compiled


def test_version() -> None:
    assert xmrrs.__version__ == _xmrrs.__version__
    assert xmrrs.__version__.count(".") == 2


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
