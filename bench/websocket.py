"""WebSocket broadcast benchmark: N subscribers of one channel, a message every
S seconds; prefork's pubsub route against uvicorn + websockets and the
websockets library's own server on the same broadcast app.

The code lives in ``prefork_bench/websocket/`` so that installed users have it
as ``prefork-bench websocket``; this script runs the same thing from a checkout:

    python bench/websocket.py [--servers prefork,uvicorn,websockets] [--clients 10000]
                              [--workers 1] [--messages 10] [--every 1] [--json FILE] ...
"""

import sys

from prefork_bench.websocket.cli import main

if __name__ == "__main__":
    sys.exit(main())
