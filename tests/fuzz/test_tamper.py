"""CI budget of the model tamper suite (see ``tamper``): seeded, in worker subprocesses."""

from __future__ import annotations

from pathlib import Path

from ._driver import Campaign

N_TRIALS = 1200


def test_tampered_models_fail_cleanly_or_answer_validly(tmp_path: Path) -> None:
    c = Campaign(
        "tamper",
        {"base": 0, "checkpoint_every": 1},
        outdir=tmp_path,
        chunk=N_TRIALS // 2,
        seed_cost=1.0,
        per_seed_timeout=60.0,
        jobs=2,
    )
    s = c.run(0, N_TRIALS)
    assert s.n_inputs == N_TRIALS, s.describe()
    assert not s.failures, s.describe()
