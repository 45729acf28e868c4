"""The ASGI app ``bench/faults.py`` reloads and recycles under load:
Starlette, with a lifespan that makes a per-worker resource before the worker
serves and drops it when the worker retires; every path answers a short text
from it (wait_ready asks for /plaintext, wrk for / or /leak).

``GET /leak`` is a deliberate memory leak, the fixture of the ``recycle rss``
scenario: it answers like every other path, and a request that finds its
worker behind ``LEAK_PACE`` keeps one ``LEAK_CHUNK`` (written, so resident)
in that worker's ``Leak`` for good. The leak lives in the lifespan state (one
per worker process, shared by the request scopes' copies of the state), not
in the module. Paced by the worker's age rather than a fixed amount per
request, the RSS of a worker under wrk grows by ``LEAK_PACE`` a second
whatever this machine's request rate, so the bench can pick a ``max_rss``
that a worker passes at a known age: past the recycler's 10 s "young worker"
rule, not before it.
"""

from __future__ import annotations

import os
import time
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

LEAK_CHUNK = 64 << 10   # bytes one leaking request keeps
LEAK_PACE = 6 << 20     # bytes a second of the worker's life, at most, under load


class Leak:
    """What one worker has leaked: chunks that are never freed."""

    __slots__ = ("started", "kept")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.kept: list[bytes] = []

    def grow(self) -> None:
        """Keep one more chunk if the worker is behind its pace."""
        if len(self.kept) * LEAK_CHUNK < (time.monotonic() - self.started) * LEAK_PACE:
            self.kept.append(b"x" * LEAK_CHUNK)


@asynccontextmanager
async def lifespan(app: Starlette):
    # request.state.greeting, request.state.leak
    yield {"greeting": f"Hello from worker {os.getpid()}", "leak": Leak()}


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.state.greeting)


async def leak(request: Request) -> PlainTextResponse:
    request.state.leak.grow()
    return PlainTextResponse(request.state.greeting)


app = Starlette(routes=[Route("/leak", leak), Route("/{path:path}", hello)], lifespan=lifespan)
