"""The ASGI app ``bench/faults.py`` reloads under load (``asgi reload x20``):
Starlette, with a lifespan that makes a per-worker resource before the worker
serves and drops it when the worker retires; every path answers a short text
from it (wait_ready asks for /plaintext, wrk for /)."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


@asynccontextmanager
async def lifespan(app: Starlette):
    yield {"greeting": f"Hello from worker {os.getpid()}"}  # request.state.greeting


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.state.greeting)


app = Starlette(routes=[Route("/{path:path}", hello)], lifespan=lifespan)
