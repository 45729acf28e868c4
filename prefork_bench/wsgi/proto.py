"""The WSGI case of ``prefork-bench proto``: the protocol, the dispatcher and the WSGI
adapter with the bench app (``apps.py``: ``wsgi-hello`` is its raw hello world), a
fake driver, no sockets and no threads.

Each request is fed on its own, and what a worker splits between its reactor and a
pool thread runs here on one thread, in the same order: the protocol takes the
request and submits the call (the reactor's part), the call runs the app (the pool
thread's part) and hands its response back, and the hand-back delivers it (the
reactor's part again). So a request costs its parse, the environ, the app, the
framing and both hand-overs, without the context switches and the GIL (which the
real benchmark, ``bench/wsgi.py``, has). Timed with the thread's CPU time.
"""

from __future__ import annotations

import gc
import time
from collections import deque

from prefork.config import HttpConfig
from prefork.dispatch import HttpServerContext, HttpServerProtocol, Router
from prefork.wsgi import WsgiApp

from ..asgi.proto import FakeDriver  # (its waiter unset: it keeps the last delivery)
from ..protobench import request

CASES = {"wsgi-hello": b"/"}


def run(case: str, requests: int) -> float:
    """CPU seconds per request of one WSGI case."""
    from .apps import hello

    router = Router()
    router.add(b"/", WsgiApp(hello, "/"), True)
    ctx = HttpServerContext(HttpConfig(keepalive_requests=1 << 62), router)
    jobs: deque = deque()
    backs: deque = deque()
    ctx.submit = lambda fn, arg, done: jobs.append((fn, arg)) or True
    ctx.hand_back = lambda fn, *args: backs.append((fn, args))
    driver = FakeDriver()
    proto = HttpServerProtocol(ctx, peer=("127.0.0.1", 40000), driver=driver)
    data = request(CASES[case])

    def one() -> None:
        proto.data_received(data)
        fn, arg = jobs.popleft()
        fn(arg)
        while backs:
            fn, args = backs.popleft()
            fn(*args)

    one()  # warm up: imports, caches
    if not driver.delivered.startswith(b"HTTP/1.1 200"):
        raise AssertionError(f"GET {CASES[case]!r}: {driver.delivered[:60]!r}")
    gc.collect()
    start = time.thread_time()
    for _ in range(requests):
        one()
    return (time.thread_time() - start) / requests
