"""ASGI benchmark: prefork against uvicorn, granian and hypercorn on the same app,
driven by wrk, in interleaved rounds.

The code lives in ``prefork_bench/asgi/`` so that installed users have it as
``prefork-bench asgi``; this script runs the same thing from a checkout:

    python bench/asgi.py [--rounds 3] [--duration 5] [--servers prefork,uvicorn]
                         [--scenarios a-hello,b-fastapi] [--json FILE] ...

``python bench/asgi.py --help`` lists the options; the package's docstring
(``prefork_bench/asgi/__init__.py``) says what is measured and how.
"""

import sys

from prefork_bench.asgi.cli import main

if __name__ == "__main__":
    sys.exit(main())
