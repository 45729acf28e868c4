"""ASGI apps for the streamed-body and extension tests over the wire
(tests/e2e/test_asgi_body_e2e.py), named by routes as "tests.asgi_stream_apps:...":
a raw app that counts what it receives, a Starlette app reading
``request.stream()`` and serving files with ``FileResponse`` (pathsend when
the server offers it)."""

from __future__ import annotations

import hashlib
import json
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route


async def count_body(scope, receive, send):
    """Reads the body as it comes: its size, its sha256, how many messages, and
    whether 100-continue/pathsend/trailers were offered."""
    digest = hashlib.sha256()
    size = messages = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        messages += 1
        size += len(message["body"])
        digest.update(message["body"])
        if not message.get("more_body", False):
            break
    body = json.dumps({"bytes": size, "sha256": digest.hexdigest(), "messages": messages,
                       "extensions": sorted(scope["extensions"])}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def _upload(request: Request):
    digest = hashlib.sha256()
    size = pieces = 0
    async for piece in request.stream():
        size += len(piece)
        pieces += 1
        digest.update(piece)
    return JSONResponse({"bytes": size, "sha256": digest.hexdigest(), "pieces": pieces})


async def _file(request: Request):
    return FileResponse(os.environ["PREFORK_TEST_FILE"], media_type="application/octet-stream")


starlette_files = Starlette(routes=[Route("/upload", _upload, methods=["POST"]), Route("/file", _file)])
