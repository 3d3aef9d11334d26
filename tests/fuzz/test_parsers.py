"""CI budget of the parser fuzzer (see ``parsers``): seeded, in worker subprocesses."""

from __future__ import annotations

from pathlib import Path

from ._driver import Campaign

N_INPUTS = 30_000


def test_parsers_agree_with_the_reference(tmp_path: Path) -> None:
    c = Campaign(
        "parsers",
        {"base": 0, "checkpoint_every": 500, "public": 0.05},
        outdir=tmp_path,
        chunk=N_INPUTS // 2,
        seed_cost=0.01,
        per_seed_timeout=20.0,
        jobs=2,
    )
    s = c.run(0, N_INPUTS)
    assert s.n_inputs == N_INPUTS, s.describe()
    assert not s.failures, s.describe()
    assert s.counts["accepted"] > N_INPUTS // 10 and s.counts["rejected"] > N_INPUTS // 10


def test_reference_reader_examples() -> None:
    from .parsers import RefError, reference

    n, nf, xp, xi, xv, nl, yp, yi = reference(b"3 5 4\n0,2 1:0.5 3:1.5\n 0:2\n3\n", True)
    assert (n, nf, nl) == (3, 5, 4)
    assert (xp, xi, xv, yp, yi) == (
        [0, 2, 3, 3],
        [1, 3, 0],
        [0.5, 1.5, 2.0],
        [0, 2, 2, 3],
        [0, 2, 3],
    )
    for text, line in [
        (b"1 5 4\n0 1:0.5 1:2\n", 2),
        (b"3 5 4\n0 1:0.5\n1 2:1\n", 4),
        (b"1 5\n", 1),
    ]:
        try:
            reference(text, True)
        except RefError as e:
            assert e.line == line
        else:
            raise AssertionError(text)
    # 1-based unless a 0 is seen; comments and blank lines skipped
    assert reference(b"1 1:1 3:2\n\n# c\n0,1 2:1\n", False)[1:5] == (
        3,
        [0, 2, 3],
        [0, 2, 1],
        [1.0, 2.0, 1.0],
    )
