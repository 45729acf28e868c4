"""HTTP benchmark: prefork against nginx and uvicorn, driven by wrk.

The code lives in ``prefork_bench/httpbench.py`` so that installed users have it as
``prefork-bench http``; this script runs the same thing from a checkout:

    python bench/http.py [--workers 2] [--duration 5] [--rounds 3] ...

``python bench/http.py --help`` lists the options; the module's docstring
says what is measured and how.
"""

import sys

from prefork_bench.httpbench import main

if __name__ == "__main__":
    sys.exit(main())
