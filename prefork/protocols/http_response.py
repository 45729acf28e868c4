"""What the HTTP/1.1 protocol writes besides a route's content: status
lines, response heads and error pages, built by the per-worker ``HttpContext``
(which also carries what every connection of the worker shares: the limits,
the clock, the Date header, the head cache, the parser pool and the /status
counts of connections reading and pooled). Sans-IO, like ``http.py``, whose
``HttpProtocol`` serializes every response through it.
"""

from __future__ import annotations

import time
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Callable

from ..config import HttpConfig
from ..messages import no_content

if TYPE_CHECKING:  # (the parser's module, compiled, imports the flow control, which imports this)
    from .http_parser import Parser

_STATUS_LINES = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("latin-1") for s in HTTPStatus
}

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    return line


class HttpContext:
    """Per-worker state shared by every HTTP connection: limits, the clock,
    the cached Date header and response heads, and the pool of idle parsers.
    ``reading`` and ``pooled`` count the connections in those states (for
    /status): they change with the state, which only the protocol sees."""

    def __init__(self, config: HttpConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.keepalive_requests = config.keepalive_requests
        self.keepalive_timeout = config.keepalive_timeout
        self.retry_after = b"1"
        # on_response(request, status, length), called for each response written
        # (not for the error that ends a bad request): the dispatcher's access log
        self.on_response: Callable | None = None
        self.clock = clock
        self.server_line = b"Server: " + config.server_header.encode("latin-1") + b"\r\n"
        self.date_line = b""
        self._date_second = -1
        self._heads: dict[tuple, bytes] = {}  # response heads of this second, by shape
        # idle parsers, taken and given back at every request: a deque, which
        # never reallocates as it shrinks and grows by one (a list does, at each turn)
        self.parser_pool: deque[Parser] = deque()
        self.parser_pool_max = 256
        self.reading = 0   # connections reading a request (HEAD or BODY, or a body streamed to its route)
        self.pooled = 0    # connections whose response is being computed (WAITING: the pool, an ASGI app)
        self.refresh_date()

    def refresh_date(self, now: float | None = None) -> bool:
        """Recompute the Date header; the worker calls this once a second.
        True when the second has changed (and the cached heads are gone)."""
        second = int(time.time() if now is None else now)
        if second == self._date_second:
            return False
        self._date_second = second
        self.date_line = b"Date: " + formatdate(second, usegmt=True).encode("ascii") + b"\r\n"
        self._heads.clear()
        return True

    def head(self, status: int, content_type: bytes, length: int, extra: list[tuple[bytes, bytes]],
             keep_alive: bool, http10: bool) -> bytes:
        # Most responses share a shape (status, type, length, connection): the
        # head for it is built once per second (the Date changes) and reused.
        # A response whose extra headers are a tuple (fixed) is cached too.
        if extra and type(extra) is not tuple:  # a list may change: build it each time
            return self._build_head(status, content_type, length, extra, keep_alive, http10)
        key = (status, content_type, length, keep_alive, http10, extra)
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) > 512:
                self._heads.clear()
            head = self._heads[key] = self._build_head(status, content_type, length, extra, keep_alive, http10)
        return head

    def _build_head(self, status: int, content_type: bytes, length: int, extra: list[tuple[bytes, bytes]],
                    keep_alive: bool, http10: bool) -> bytes:
        parts = [status_line(status), self.server_line, self.date_line,
                 b"Content-Type: ", content_type, b"\r\nContent-Length: ", b"%d\r\n" % length]
        if no_content(status):
            # no content, so neither Content-Length (RFC 9110 8.6: a 304's would
            # have to be the 200's) nor Content-Type (15.4.5: no representation
            # metadata in a 304)
            del parts[3:]
        for name, value in extra:
            parts += (name, b": ", value, b"\r\n")
        if not keep_alive:
            parts.append(_CLOSE)
        elif http10:
            parts.append(_KEEP_ALIVE)
        parts.append(b"\r\n")
        return b"".join(parts)

    def error_body(self, status: int) -> bytes:
        phrase = status_line(status)[13:-2]
        return (b"<html>\r\n<head><title>%d %s</title></head>\r\n<body>\r\n<center><h1>%d %s</h1></center>\r\n"
                b"</body>\r\n</html>\r\n" % (status, phrase, status, phrase))
