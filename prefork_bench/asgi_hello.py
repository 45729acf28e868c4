"""A raw ASGI hello world for the benchmarks' ASGI routes (``asgi =
"prefork_bench.asgi_hello:app"``): the body /plaintext sends, no framework."""

from __future__ import annotations

BODY = b"Hello, World!"
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(BODY))]}
END = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        raise RuntimeError("no lifespan")  # tolerated: the app has nothing to start
    await send(START)
    await send(END)
