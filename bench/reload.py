"""Reload benchmark: does prefork drop requests while it reloads, loses
workers, or spreads connections unevenly?  Driven by wrk.

The code lives in ``prefork_bench/reload/`` so that installed users have it as
``prefork-bench reload``; this script runs the same thing from a checkout:

    python bench/reload.py [--workers 2] [--duration 20] [--reloads 20] [--kills 5] ...

``python bench/reload.py --help`` lists the options; the package's docstring
(``prefork_bench/reload/__init__.py``) says what is measured and how.
"""

import sys

from prefork_bench.reload.cli import main

if __name__ == "__main__":
    sys.exit(main())
