"""The WebSocket opening handshake (RFC 6455 4.2), server side, sans-IO:
is a request an upgrade to websocket (``wants_websocket``), is it a valid
one (``check_handshake``: the key, or the refusal's status and headers),
the permessage-deflate it agrees (``agree``, ``wsdeflate``), and the 101
that switches the connection to ``protocols.websocket`` (``response_101``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from .wsdeflate import Agreement, Deflate

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip().lower() for token in value.split(b",")]


def wants_websocket(headers) -> bool:
    """Does the request ask to upgrade to websocket (whatever else is wrong with it)?"""
    for name, value in headers:
        if len(name) == 7 and name.lower() == b"upgrade" and b"websocket" in _tokens(value):
            return True
    return False


def check_handshake(method: bytes, headers, origins: tuple[str, ...] = ()) -> tuple[int, Any]:
    """Is this request a valid WebSocket opening handshake? ``(101, key)``,
    or ``(status, extra response headers)``: 400 (not GET, no or a bad
    ``Sec-WebSocket-Key``), 426 (not an upgrade to websocket, or a
    ``Sec-WebSocket-Version`` other than 13), 403 (an ``Origin`` not in
    ``origins``, when it is not empty)."""
    upgrade = connection = key = version = origin = None
    for name, value in headers:
        n = len(name)
        if n == 7 and name.lower() == b"upgrade":
            upgrade = value if upgrade is None else upgrade + b"," + value
        elif n == 10 and name.lower() == b"connection":
            connection = value if connection is None else connection + b"," + value
        elif n == 17 and name.lower() == b"sec-websocket-key":
            key = value.strip() if key is None else b""  # twice: invalid
        elif n == 21 and name.lower() == b"sec-websocket-version":
            version = value.strip()
        elif n == 6 and name.lower() == b"origin":
            origin = value.strip()
    if upgrade is None or b"websocket" not in _tokens(upgrade) or connection is None \
            or b"upgrade" not in _tokens(connection):
        return 426, ((b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"))
    if method != b"GET":
        return 400, ()
    if version != b"13":
        return 426, ((b"Sec-WebSocket-Version", b"13"),)
    if not key:
        return 400, ()
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return 400, ()
    if len(raw) != 16:
        return 400, ()
    if origins and (origin is None or origin.decode("latin-1").lower().rstrip("/") not in origins):
        return 403, ()
    return 101, key


def agree(deflate: Deflate | None, headers) -> Agreement | None:
    """The permessage-deflate this handshake agrees, if the route offers it and the client does."""
    return None if deflate is None else deflate.negotiate(headers)


def response_101(key: bytes, extra=(), pmd: Agreement | None = None) -> bytes:
    """The server's handshake: 101 Switching Protocols with the accept key
    (``extra``: more headers, e.g. the chosen ``Sec-WebSocket-Protocol``;
    ``pmd``: the permessage-deflate agreed)."""
    head = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n")
    if pmd is not None:
        head += b"Sec-WebSocket-Extensions: " + pmd.response + b"\r\n"
    for name, value in extra:
        head += name + b": " + value + b"\r\n"
    return head + b"\r\n"
