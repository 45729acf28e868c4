"""What the bench app answers, for the app and for the bench's checks (this module
imports no framework: the bench's own Python need not have them)."""

from __future__ import annotations

BODY = b"Hello, World!"
STREAM_PIECE = 64 * 1024
STREAM_PIECES = 16          # 1 MiB in all


def item_json(item_id: int) -> dict:
    """What GET /items/{item_id} answers."""
    return {"id": item_id, "name": f"item {item_id}", "price": 9.5, "tags": ["a", "b"]}
