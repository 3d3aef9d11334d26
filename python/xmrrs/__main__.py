"""``python -m xmrrs``: the command line."""

import sys

from xmrrs.cli import main

sys.exit(main())
