"""The ASGI cases of ``prefork-bench proto``: the protocol, the dispatcher and the ASGI
adapter with the bench app (``apps.py``) on a uvloop loop, a fake driver, no sockets.

Each request is fed on its own and awaited until its response is delivered, so a
request costs its parse, its task, the app and the framing. Timed with the thread's
CPU time (``time.thread_time``), so a busy machine inflates it less than wall time.
"""

from __future__ import annotations

import asyncio
import gc
import time

from prefork.asgi import AsgiApp
from prefork.config import HttpConfig
from prefork.dispatch import HttpServerContext, HttpServerProtocol, Router

from ..protobench import request

CASES = {"asgi-hello": b"/", "asgi-fastapi": b"/items/42"}


class FakeDriver:
    """Counts what is delivered and wakes the feeder; nothing blocks, nothing closes."""

    def __init__(self):
        self.waiter: asyncio.Future | None = None
        self.delivered = b""

    def deliver(self, out) -> None:
        self.delivered = out
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def hold(self) -> None:
        raise AssertionError("held: one request at a time never holds")

    def abort(self) -> None:
        raise AssertionError("the app failed mid-response")

    def write_blocked(self) -> bool:
        return False

    def sockname(self):
        return ("127.0.0.1", 8000)


async def _run(path: bytes, requests: int) -> float:
    from .apps import app  # FastAPI and Starlette: only for these cases

    router = Router()
    router.add(b"/", AsgiApp(app, "/"), True)
    ctx = HttpServerContext(HttpConfig(keepalive_requests=1 << 62), router)
    driver = FakeDriver()
    proto = HttpServerProtocol(ctx, peer=("127.0.0.1", 40000), driver=driver)
    data = request(path)
    loop = asyncio.get_running_loop()

    async def one() -> None:
        driver.waiter = loop.create_future()
        proto.data_received(data)
        await driver.waiter

    await one()  # warm up: imports, caches
    if not driver.delivered.startswith(b"HTTP/1.1 200"):
        raise AssertionError(f"GET {path!r}: {driver.delivered[:60]!r}")
    gc.collect()
    start = time.thread_time()
    for _ in range(requests):
        await one()
    return (time.thread_time() - start) / requests


def run(case: str, requests: int) -> float:
    """CPU seconds per request of one ASGI case."""
    import uvloop

    return uvloop.run(_run(CASES[case], requests)) if hasattr(uvloop, "run") else \
        asyncio.run(_run(CASES[case], requests))
