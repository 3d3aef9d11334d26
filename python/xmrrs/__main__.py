"""``python -m xmrrs`` and the ``xmrrs`` console script: the command line.

This module imports nothing heavy, so that an interrupt (Ctrl-C) at any moment, even while
:mod:`xmrrs.cli` imports numpy, scipy and scikit-learn, exits with code 130 and one line on
stderr instead of a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn

__all__ = ["run"]

_MESSAGE = "xmrrs: interrupted"
_reported = False


def _exit_interrupted(signum: int, frame: object) -> None:
    """SIGINT handler while reporting and shutting down: exit 130 at once, no traceback."""
    if not _reported:
        os.write(2, f"{_MESSAGE}\n".encode())
    os._exit(130)


def run() -> NoReturn:
    """Run the command line and exit with its code (130 when interrupted)."""
    global _reported
    try:
        from xmrrs.cli import main

        code = main()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, _exit_interrupted)
        print(_MESSAGE, file=sys.stderr, flush=True)
        code = 130
    _reported = code == 130
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_interrupted)
    sys.exit(code)


if __name__ == "__main__":
    run()
