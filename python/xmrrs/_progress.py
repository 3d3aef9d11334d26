"""Progress on stderr for long stages (tqdm bars), silent when asked."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Progress:
    """Step timings and progress bars on stderr; ``quiet`` silences both.

    Lines are written through ``tqdm.write``, so they never glue onto a bar.
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def write(self, line: str) -> None:
        """One line on stderr (above any active bar)."""
        if not self.quiet:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Time the block and report ``what: N s`` when it ends."""
        t0 = time.perf_counter()
        yield
        self.write(f"{what}: {time.perf_counter() - t0:.2f} s")

    def bar(self, total: int, desc: str, unit: str) -> Any:
        """A tqdm bar of ``total`` ``unit`` (disabled when quiet)."""
        from tqdm import tqdm

        return tqdm(
            total=total,
            desc=desc,
            unit=unit,
            file=sys.stderr,
            disable=self.quiet,
            mininterval=0.5,
            dynamic_ncols=True,
        )
