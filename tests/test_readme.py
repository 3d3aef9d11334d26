"""Every Python snippet of the README runs as written, in order, in one namespace."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)


def test_the_readme_has_python_snippets() -> None:
    assert len(_python_blocks()) >= 4


def test_readme_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # snippets write model directories into the working directory
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for i, block in enumerate(_python_blocks()):
        try:
            exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        except Exception as e:  # pragma: no cover - the message says which block failed
            raise AssertionError(f"README python block {i} failed: {e!r}\n{block}") from e
    out = capsys.readouterr().out
    assert "P@1" in out  # the ranking report was printed
    assert os.path.isdir(tmp_path / "model")
