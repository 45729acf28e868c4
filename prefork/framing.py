"""Response framing the app adapters share (``asgi_response`` for ASGI,
``wsgi`` for WSGI): the end of a response head — Content-Length when the
whole body is known, else chunked on HTTP/1.1 or close-delimited on
HTTP/1.0, and the Connection header — and the error a write after the
client has gone raises. Imports nothing else of prefork."""

from __future__ import annotations

CHUNKED = b"Transfer-Encoding: chunked\r\n"
CLOSE = b"Connection: close\r\n"
KEEP_ALIVE = b"Connection: keep-alive\r\n"
LAST_CHUNK = b"0\r\n\r\n"


class ClientDisconnected(OSError):
    """A write after the client has gone (ASGI HTTP spec 2.4: an OSError
    subclass; WSGI's ``write()`` raises it too)."""


def end_head(parts: list, version: str, framed: bool, more: bool, first: int, head_only: bool,
             length_known: bool, keep_alive: bool) -> tuple[bool, bool]:
    """Append the framing headers and the blank line to a head's ``parts``;
    return ``(chunked, keep_alive)``.

    ``framed``: the app gave a Content-Length, or the status has no body.
    ``more``: more body follows the ``first`` bytes the app gave with the
    head (else they are the whole body: their length is the Content-Length).
    A HEAD response whose length is not known gets none (``length_known``:
    the app produced the body a GET would get, or it is a file's)."""
    chunked = False
    if not framed and (length_known or not head_only):
        if not more:
            parts.append(b"Content-Length: %d\r\n" % first)
        elif head_only:
            pass  # nothing follows the head anyway
        elif version == "1.1":
            chunked = True
            parts.append(CHUNKED)
        else:
            keep_alive = False  # HTTP/1.0: the body ends with the connection
    if not keep_alive:
        parts.append(CLOSE)
    elif version == "1.0":
        parts.append(KEEP_ALIVE)
    parts.append(b"\r\n")
    return chunked, keep_alive
