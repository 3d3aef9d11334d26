"""CI budget of the bad-input matrix (see ``badinput``): hypothesis, derandomized, in a
subprocess so that an abort is reported with the example that caused it."""

from __future__ import annotations

from pathlib import Path

import pytest

from .badinput import PROPERTIES, run_properties

MAX_EXAMPLES = {
    "estimator-fit": 120,
    "estimator-predict": 150,
    "sparse": 300,
    "indexing": 60,
    "datasets": 40,
}


@pytest.mark.parametrize("name", sorted(PROPERTIES))
def test_bad_inputs_fail_cleanly(name: str, tmp_path: Path) -> None:
    s = run_properties(MAX_EXAMPLES[name], seed=0, outdir=tmp_path, names=[name], timeout=240)
    assert not s.failures, s.describe()
    assert s.n_inputs > 0
