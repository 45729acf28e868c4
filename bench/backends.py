"""Backend benchmark: prefork's own epoll reactor against uvloop and the
standard-library asyncio loop, the same server otherwise, driven by wrk.

The code lives in ``prefork_bench/backends/`` so that installed users have it
as ``prefork-bench backends``; this script runs the same thing from a checkout:

    python bench/backends.py [--workers 2] [--duration 5] [--idle 15000] ...

``python bench/backends.py --help`` lists the options; the package's docstring
(``prefork_bench/backends/__init__.py``) says what is measured and how.
"""

import sys

from prefork_bench.backends.cli import main

if __name__ == "__main__":
    sys.exit(main())
