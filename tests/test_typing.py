"""The shipped type information works for users: ``mypy --strict`` on a small user script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from xmrrs import XRLinearClassifier
from xmrrs.datasets import make_xmc
from xmrrs.indexing import ClusterTree
from xmrrs.metrics import ndcg_at_k, precision_at_k


def train(n: int) -> tuple[XRLinearClassifier, sp.csr_matrix, sp.csr_matrix]:
    X, Y = make_xmc(n, 500, 40, random_state=0)
    clf = XRLinearClassifier(branching=4, max_leaf_size=10, n_jobs=1)
    return clf.fit(X, Y), X, Y


def evaluate(clf: XRLinearClassifier, X: sp.csr_matrix, Y: sp.csr_matrix) -> float:
    ids, scores = clf.predict_topk(X, k=5, beam_size=4)
    tree: ClusterTree = clf.tree_
    assert tree.n_labels == Y.shape[1]
    best: np.ndarray = scores[:, 0]
    assert best.shape == (X.shape[0],)
    return precision_at_k(Y, ids, k=1) + 0.0 * ndcg_at_k(Y, ids, k=5)


clf, X, Y = train(300)
print(evaluate(clf, X, Y))
"""


@pytest.mark.skipif(
    shutil.which("mypy") is None and not Path(sys.prefix, "bin", "mypy").exists(),
    reason="mypy is not installed (it comes with the dev extra)",
)
def test_mypy_strict_accepts_a_user_script(tmp_path: Path) -> None:
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT)
    out = subprocess.run(
        # scipy ships no type stubs, so a user needs --ignore-missing-imports for it
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--ignore-missing-imports",
            "--no-incremental",
            str(script),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert 0.0 < float(run.stdout.strip().splitlines()[-1]) <= 1.0
