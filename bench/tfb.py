"""TechEmpower-style benchmark: prefork against uvicorn on the six TechEmpower
test types, with SQLite and with PostgreSQL, driven by wrk.

The code lives in ``prefork_bench/tfb/`` so that installed users have it as
``prefork-bench tfb``; this script runs the same thing from a checkout:

    python bench/tfb.py [--workers 2] [--duration 10] [--tests ...] [--backends ...] ...

``python bench/tfb.py --help`` lists the options; the package's docstring
(``prefork_bench/tfb/__init__.py``) says what is measured and how.
"""

import sys

from prefork_bench.tfb.cli import main

if __name__ == "__main__":
    sys.exit(main())
