"""An example user handler for prefork.

Route it in the config::

    [[route]]
    path = "/hello"
    handler = "examples.hello:hello"

    [[route]]
    path = "/slow"
    handler = "examples.hello:slow"
    blocking = true          # runs in the worker's thread pool

A handler takes a ``prefork.messages.Request`` (method, path, query,
headers, body) and returns a ``Response`` (status, body, content type,
headers).
"""

import json
import time
from urllib.parse import parse_qs

from prefork.messages import Request, Response


def hello(request: Request) -> Response:
    query = parse_qs(request.query.decode("latin-1"))
    name = query.get("name", ["world"])[0]
    body = json.dumps({"hello": name, "method": request.method.decode(), "bytes": len(request.body)})
    return Response(200, body.encode(), b"application/json", [(b"X-Example", b"hello")])


def slow(request: Request) -> Response:
    """Blocking work (a sleep standing in for disk or a remote call): route it with blocking = true."""
    seconds = float(parse_qs(request.query.decode("latin-1")).get("s", ["0.2"])[0])
    time.sleep(min(seconds, 5.0))
    return Response(200, b"done\n", b"text/plain")


def boom(request: Request) -> Response:
    raise RuntimeError("this handler always fails")
