"""The command line as a user meets it: cheap checks first, progress, every parameter."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from xmrrs.cli import main
from xmrrs.datasets import dump_xc, make_xmc


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "train.txt"
    X, Y = make_xmc(600, 500, 60, random_state=3)
    dump_xc(path, X, Y)
    return path


def test_bad_parameters_fail_before_the_data_is_read(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    missing = str(tmp_path / "no-such-file.txt")
    for bad in (["--branching", "1"], ["--Cp", "0"], ["--max-leaf-size", "0"]):
        assert main(["train", missing, "-m", str(tmp_path / "m"), *bad]) == 2
        err = capsys.readouterr().err
        assert "no-such-file" not in err, err  # the parameter, not the file, is reported
    assert main(["train", missing, "-m", str(tmp_path / "m")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_an_unwritable_output_fails_before_the_model_is_loaded(
    tmp_path: Path, data: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "missing-dir" / "pred.txt"
    assert main(["predict", str(data), "-m", str(tmp_path / "no-model"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing-dir" in err and "no-model" not in err, err


def test_every_estimator_parameter_is_reachable_and_progress_is_shown(
    tmp_path: Path,
    data: Path,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    from xmrrs import XRLinearClassifier
    from xmrrs.cli import _TRAIN_PARAMS

    # an object; -n; -q; only for HybridMatrix input, which the command line does not read
    not_on_the_cli = {"indexer", "n_jobs", "verbose", "dense_in_ranker", "dense_in_tree"}
    assert set(XRLinearClassifier().get_params()) - not_on_the_cli == set(_TRAIN_PARAMS)
    m = tmp_path / "m"
    args = ["train", str(data), "-m", str(m), "--representation", "pii", "--no-normalize"]
    assert main([*args, "--n-estimators", "1", "--top-max-samples", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "fit:" in err and "trained on" in err, err  # the stage bar and the summary
    params = json.loads((m / "xmrrs-model.json").read_text())["params"]
    assert params["representation"] == "pii" and params["normalize"] is False
    assert params["top_max_samples"] == 0.5
    out = tmp_path / "pred.txt"
    assert main(["predict", str(data), "-m", str(m), "-o", str(out), "-q"]) == 0
    assert capsys.readouterr().err == ""  # -q: nothing on stderr
    assert main(["predict", str(data), "-m", str(m), "-o", str(out)]) == 0
    assert "predicting" in capsys.readouterr().err


def test_help_shows_each_default_once(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: pifa)" in text  # defaults are shown...
    assert not re.search(r"\(default[^()]*\) \(default:", text)  # ...once
    assert "(default: None)" not in text and "(default: False)" not in text


def test_raw_text_files_train_a_text_model_that_prints_label_names(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import random

    rng = random.Random(1)
    words = {"games": "play puzzle level", "audio": "music sound codec", "net": "http proxy dns"}
    rows = []
    for _ in range(200):
        tags = rng.sample(sorted(words), 2)
        text = " ".join(rng.choice(words[t].split()) for t in tags for _ in range(4))
        rows.append({"text": text, "tags": tags})
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    m = tmp_path / "m"
    assert main(["train", str(train), "--label-field", "tags", "-m", str(m), "-q"]) == 0
    out = tmp_path / "pred.txt"
    assert main(["predict", str(train), "-m", str(m), "-o", str(out), "-k", "2", "-q"]) == 0
    first = out.read_text().splitlines()[0].split()
    assert {tok.rsplit(":", 1)[0] for tok in first} == set(rows[0]["tags"])
    assert main(["evaluate", str(train), "--label-field", "tags", "-m", str(m), "-k", "1"]) == 0
    p1 = float(capsys.readouterr().out.split()[1])
    assert p1 > 0.9
    tsv = tmp_path / "t.tsv"
    tsv.write_text("".join(f"{r['text']}\t{','.join(r['tags'])}\n" for r in rows))
    assert main(["train", str(tsv), "-m", str(tmp_path / "m2"), "-q"]) == 0
