"""``python -m prefork_bench``: the same as ``prefork-bench``."""

import sys

from .loadgen import main

sys.exit(main())
