"""Built-in handlers: the TechEmpower plaintext and json test types."""

from __future__ import annotations

import orjson

from ..messages import Handler, Request, Response, constant

# The same response every time (the protocol never mutates a Response), which
# TechEmpower's plaintext rules allow: the router answers it without a Request.
plaintext = constant(Response(200, b"Hello, World!", b"text/plain"))


def json(request: Request) -> Response:
    # Serialized per request, as the TechEmpower json test requires (orjson:
    # compact, like json.dumps with separators=(",", ":"), at a tenth of the cost).
    return Response(200, orjson.dumps({"message": "Hello, World!"}), b"application/json")


def default_routes() -> dict[bytes, Handler]:
    return {b"/plaintext": plaintext, b"/json": json}
