"""Protocol microbenchmark: the HTTP protocol and dispatcher alone, no sockets.

Feeds batches of pipelined keep-alive requests to one connection's protocol
(with a fake driver) and reports microseconds per request for a constant
route (/plaintext), an inline handler (/json) and a 404; and, on uvloop, the
ASGI adapter with the bench app of ``bench/asgi.py`` (``asgi-hello``: raw ASGI,
``asgi-fastapi``: FastAPI JSON; ``prefork_bench/asgi/proto.py``); and the WSGI
adapter with the bench app of ``bench/wsgi.py`` (``wsgi-hello``, the pool
thread's part run inline; ``prefork_bench/wsgi/proto.py``). It imports the
server classes from wherever the tree at hand defines them, so the same
script measures a tree before and after a refactoring:

    prefork-bench proto [--requests 200000] [--batch 16] [--rounds 5] [--case plaintext]
    python -m prefork_bench.protobench ...   (not bench/proto.py: bench/http.py would
                                             shadow the standard library's http)

``--once CASE`` runs one case once (for ``valgrind --tool=callgrind``).
"""

from __future__ import annotations

import argparse
import gc
import time

from prefork.config import HttpConfig

try:  # the split tree: protocol, dispatcher and messages apart
    from prefork.dispatch import HttpServerContext as Context, HttpServerProtocol as Protocol
except ImportError:  # the tree before it
    from prefork.protocols.http import HttpContext as Context, HttpProtocol as Protocol
from prefork.apps.builtin import default_routes

CASES = {"plaintext": b"/plaintext", "json": b"/json", "404": b"/missing"}
ASGI_CASES = ("asgi-hello", "asgi-fastapi")  # run by prefork_bench.asgi.proto
WSGI_CASES = ("wsgi-hello",)  # run by prefork_bench.wsgi.proto
ONE_AT_A_TIME = ASGI_CASES + WSGI_CASES


class FakeDriver:
    """What a protocol may ask its driver; nothing here is called on these paths."""

    def deliver(self, out) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def hold(self) -> None:
        raise AssertionError("held: use a batch below the protocol's BURST")


def request(path: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"


def run(case: str, requests: int, batch: int) -> float:
    """Seconds per request for ``requests`` requests, ``batch`` per read (the ASGI
    cases: CPU seconds, one request at a time)."""
    if case in ASGI_CASES:
        from .asgi.proto import run as run_asgi

        return run_asgi(case, requests // 10)  # a task per request: ten times fewer
    if case in WSGI_CASES:
        from .wsgi.proto import run as run_wsgi

        return run_wsgi(case, requests // 10)  # a call per request: ten times fewer
    ctx = Context(HttpConfig(keepalive_requests=1 << 62), default_routes())
    proto = Protocol(ctx, peer=("127.0.0.1", 40000), driver=FakeDriver())
    data = request(CASES[case]) * batch
    reads = max(1, requests // batch)
    feed = proto.data_received
    out = feed(data)  # warm up: the parser pool, the head cache
    assert out.startswith(b"HTTP/1.1 404" if case == "404" else b"HTTP/1.1 200"), out[:40]
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(reads):
            feed(data)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    assert not proto.closing
    return elapsed / (reads * batch)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="prefork-bench proto", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=16, help="pipelined requests per read (1 = keep-alive)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--case", action="append", choices=sorted(CASES) + list(ONE_AT_A_TIME),
                        help="default: the cases without an app (not ASGI, not WSGI)")
    parser.add_argument("--once", choices=sorted(CASES) + list(ONE_AT_A_TIME),
                        help="one run of one case, no report (callgrind)")
    args = parser.parse_args(argv)
    if args.once:
        run(args.once, args.requests, args.batch)
        return 0
    cases = args.case or list(CASES)
    best = {case: float("inf") for case in cases}
    for _ in range(args.rounds):
        for case in cases:
            best[case] = min(best[case], run(case, args.requests, args.batch))
    for case in cases:
        print(f"{case:12s} {best[case] * 1e6:7.3f} us/request (best of {args.rounds}, "
              + ("one at a time, CPU time)" if case in ONE_AT_A_TIME else f"batch {args.batch})"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
