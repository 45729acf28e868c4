"""The ASGI app every server of ``bench/asgi.py`` runs (``prefork_bench.asgi.apps:app``).

One app object, the same for every server, routing by path before anything else:

    /items/{item_id}   FastAPI: a JSON object built from an int path parameter
    /stream            Starlette: a 1 MiB StreamingResponse in 16 pieces of 64 KiB
    anything else      raw ASGI: ``Hello, World!`` text/plain (hello world, keep-alive)

The routing is one comparison of the path's first characters, the same cost
for every server. Lifespan is answered here (nothing to set up), so servers
that run it and servers that do not see the same app.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route

from .answers import BODY, STREAM_PIECE, STREAM_PIECES, item_json

_PIECE = b"x" * STREAM_PIECE

_HELLO_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(BODY))],
}
_HELLO_BODY = {"type": "http.response.body", "body": BODY}


# --- (a), (d): raw ASGI --------------------------------------------------------------


async def hello(scope, receive, send):
    await send(_HELLO_START)
    await send(_HELLO_BODY)


# --- (b): FastAPI --------------------------------------------------------------------

fastapi_app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@fastapi_app.get("/items/{item_id}")
async def read_item(item_id: int):
    return item_json(item_id)


# --- (c): Starlette ------------------------------------------------------------------


async def _pieces():
    for _ in range(STREAM_PIECES):
        yield _PIECE


async def _stream(request):
    return StreamingResponse(_pieces(), media_type="application/octet-stream")


starlette_app = Starlette(routes=[Route("/stream", _stream)])


# --- the one app ---------------------------------------------------------------------


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        return
    path = scope["path"]
    if path.startswith("/items/"):
        await fastapi_app(scope, receive, send)
    elif path == "/stream":
        await starlette_app(scope, receive, send)
    else:
        await hello(scope, receive, send)
