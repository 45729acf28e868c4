"""Fixtures for the recycling tests (named by routes as "tests.recycle_apps:..."):
apps that leak on purpose for max_rss — each request keeps ``CHUNK`` more
bytes for the worker's life, an ASGI app and a prefork handler — and a slow
blocking handler (``?s=`` seconds, uncapped) for a request in flight across
a recycle."""

from __future__ import annotations

import time

from prefork.messages import Request, Response

CHUNK = 16 << 20


class _Leak:
    """What each leaking app keeps: one instance per app, per worker."""

    def __init__(self) -> None:
        self.kept: list[bytes] = []

    def grow(self) -> bytes:
        self.kept.append(b"x" * CHUNK)  # written, so resident
        return b"%d MiB kept\n" % (len(self.kept) * CHUNK >> 20)


class LeakyAsgi:
    def __init__(self) -> None:
        self.leak = _Leak()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise RuntimeError("no lifespan here")
        body = self.leak.grow()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


class LeakyHandler:
    def __init__(self) -> None:
        self.leak = _Leak()

    def __call__(self, request: Request) -> Response:
        return Response(200, self.leak.grow(), b"text/plain")


app = LeakyAsgi()
handler = LeakyHandler()


def slow(request: Request) -> Response:
    time.sleep(float(request.query.decode().partition("s=")[2] or "0.2"))
    return Response(200, b"done\n", b"text/plain")
