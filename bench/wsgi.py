"""WSGI benchmark: prefork against gunicorn (gthread, sync) and granian on the same
app (raw WSGI, Flask, Django) and under 1,000 slowloris connections, driven by wrk,
in interleaved rounds.

The code lives in ``prefork_bench/wsgi/`` (over ``prefork_bench/asgi/``) so that
installed users have it as ``prefork-bench wsgi``; this script runs the same thing
from a checkout:

    python bench/wsgi.py [--rounds 3] [--duration 5] [--servers prefork,granian]
                         [--scenarios a-hello,d-slowloris] [--json FILE] ...

``python bench/wsgi.py --help`` lists the options; the package's docstring
(``prefork_bench/wsgi/__init__.py``) says what is measured and how.
"""

import sys

from prefork_bench.wsgi.cli import main

if __name__ == "__main__":
    sys.exit(main())
