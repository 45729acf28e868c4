"""Built-in handlers: the TechEmpower plaintext and json test types."""

from __future__ import annotations

import json as _json

from ..protocols.http import Handler, Request, Response

_PLAINTEXT = b"Hello, World!"


def plaintext(request: Request) -> Response:
    return Response(200, _PLAINTEXT, b"text/plain")


def json(request: Request) -> Response:
    # Serialized per request, as the TechEmpower json test requires.
    return Response(200, _json.dumps({"message": "Hello, World!"}, separators=(",", ":")).encode(),
                    b"application/json")


def default_routes() -> dict[bytes, Handler]:
    return {b"/plaintext": plaintext, b"/json": json}
