"""`python -m sdscratch ...`: the `sdscratch` command (sdscratch/cli.py) without the console script."""

import sys

from .cli import main

sys.exit(main())
