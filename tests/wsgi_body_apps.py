"""A WSGI app for tests/e2e/test_wsgi_body_e2e.py: reads ``wsgi.input`` in
64 KiB pieces and answers the body's sha256, its size and what kind of
stream it came in (``BytesIO`` whole, ``BodyInput`` streamed)."""

from __future__ import annotations

import hashlib
import json


def digest(environ, start_response):
    stream = environ["wsgi.input"]
    h = hashlib.sha256()
    n = 0
    while True:
        data = stream.read(65536)
        if not data:
            break
        h.update(data)
        n += len(data)
    body = json.dumps({"sha256": h.hexdigest(), "bytes": n, "input": type(stream).__name__,
                       "terminated": environ["wsgi.input_terminated"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
