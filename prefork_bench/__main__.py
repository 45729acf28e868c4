"""``python -m prefork_bench``: the same as ``prefork-bench``."""

import sys

from .cli import main

sys.exit(main())
