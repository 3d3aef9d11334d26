"""On-demand robustness run with a large budget (the same as ``python -m tests.fuzz``).

python benches/fuzz.py --parsers 1000000 --tamper 20000 --badinput 2000 --seed 0
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzz.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
