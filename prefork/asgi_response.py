"""The response side of an ASGI call: ``send()`` and the HTTP/1.1 framing.

``AsgiResponse`` is the base of ``asgi._Call``: it turns the app's
``http.response.start`` / ``http.response.body`` messages -- and the
extensions ``http.response.pathsend`` and ``http.response.trailers`` -- into
framed output for the connection's protocol (``Exchange``, what a call needs
of ``HttpServerProtocol``) and driver (``Writer``): the app's Content-Length,
else chunked (HTTP/1.1) or close-delimited (HTTP/1.0); no body for HEAD, 1xx,
204 and 304; ``send()`` waits while the unsent output is above ``high_water``.
A pathsend body is a ``FileChunk`` (read in pieces as the transport drains on
the asyncio backends); trailer fields go in the last chunk of a chunked
response to a client that sent ``TE: trailers`` and are dropped otherwise.
Completing the response (``_complete``) is the call's.
"""

from __future__ import annotations

import asyncio
import os
import stat
from typing import Any, Awaitable, Protocol

from .dispatch import Waiting
from .framing import LAST_CHUNK, ClientDisconnected, end_head
from .messages import FileChunk, Request, no_content
from .protocols.http import WAITING, status_line

_NO_TRAILERS = frozenset((b"content-length", b"transfer-encoding", b"trailer", b"connection", b"te"))


class Writer(Protocol):
    """What a call asks of the connection's driver (the part of ``driver.Driver`` it uses)."""

    def deliver(self, out) -> None: ...

    def write_blocked(self) -> bool: ...

    def drained(self) -> Any: ...

    def sockname(self) -> Any: ...


class Exchange(Waiting, Protocol):
    """What an ASGI call needs of its connection's protocol (``HttpServerProtocol``)."""

    driver: Writer

    def listen(self) -> None: ...

    def want_body(self) -> None: ...

    def upgradable(self, request: Request) -> bool: ...


def _join(parts: list):
    """Output parts as the driver takes them: bytes, or the list when a file is in it."""
    for part in parts:
        if type(part) is FileChunk:
            return parts
    return b"".join(parts)


class _Sent:
    """An awaitable that is already done (its iterator ends at once): what
    ``AsgiResponse.send`` returns when there is nothing to wait for."""

    __slots__ = ()

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        raise StopIteration


SENT = _Sent()  # stateless: one for every call


class AsgiResponse:
    """The response to one request handed to an ASGI app, and the state the
    request side (``asgi._Call``) shares with it."""

    __slots__ = ("proto", "request", "status", "headers", "started", "head_sent", "done", "gone",
                 "half_closed", "body_done", "waiter", "chunked", "length", "declared", "keep_alive",
                 "head_only", "no_body", "trailers", "te", "body_sent", "file_sent")

    def __init__(self, proto: Exchange, request: Request, body_done: bool):
        self._begin(proto, request, body_done)

    def _begin(self, proto: Exchange, request: Request, body_done: bool) -> None:
        """``__init__``'s work, which a subclass's ``__init__`` calls directly
        (compiled: a C call, where ``super().__init__`` is a Python one)."""
        self.proto = proto
        self.request = request
        self.status = 0
        self.headers: list = []
        self.started = False     # http.response.start received
        self.head_sent = False
        self.done = False        # the response is complete (or failed)
        self.gone = False        # the client went away
        self.half_closed = False  # the client has half-closed (it may still read the response)
        self.body_done = body_done  # the request body is all here
        self.waiter: asyncio.Future | None = None  # a receive() waiting for body or http.disconnect
        self.chunked = False
        self.length = 0          # content bytes sent
        self.declared = -1       # the app's Content-Length (-1: none)
        self.keep_alive = request.keep_alive
        self.head_only = request.method == b"HEAD"
        self.no_body = False
        self.trailers = False    # the app will send http.response.trailers
        self.te = False          # ...and the client takes them (TE: trailers: the extension is offered)
        self.body_sent = False   # the last body is out; trailers are to come
        self.file_sent = False   # a FileChunk (pathsend) is in the output

    def _complete(self, last) -> None:
        """The last of the response (bytes, or parts with a file): the call's."""
        raise NotImplementedError

    def send(self, message: dict) -> Awaitable[None]:
        """The app's ``send``: ``await send(message)``. The work is done in
        the call; what it returns is ``SENT`` (an awaitable that is already
        done: no coroutine made and run per message) unless the output is
        above high water, when it is the wait for the driver to drain. Errors
        are raised by the call, so ``await send(...)`` raises them as before."""
        if self.gone:
            raise ClientDisconnected("the client has disconnected")
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.status = int(message["status"])
            self.headers = list(message.get("headers", ()))
            self.trailers = bool(message.get("trailers", False))
            return SENT
        if not self.started:
            raise RuntimeError(f"{kind!r} before http.response.start")
        if kind == "http.response.trailers":
            self._trailers(message)
            return SENT
        if self.done or self.body_sent:
            raise RuntimeError(f"{kind!r} after the response body is complete")
        if kind == "http.response.pathsend":
            self._pathsend(message["path"])
            return SENT
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        body = message.get("body", b"")
        more = bool(message.get("more_body", False))
        parts = []
        if not self.head_sent:
            parts.append(self._head(len(body), more))
        if body and not self.no_body:
            if 0 <= self.declared < self.length + len(body):
                raise RuntimeError(f"more body than the Content-Length ({self.declared}) the app gave")
            self.length += len(body)
            parts.append(b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else bytes(body))
        if not more:
            self._last(parts)
            return SENT
        driver = self.proto.driver
        if parts:
            driver.deliver(b"".join(parts))
        if self.gone or self.proto.state != WAITING:
            raise ClientDisconnected("the client has disconnected")
        if driver.write_blocked():
            return self._drained(driver)
        return SENT

    async def _drained(self, driver) -> None:
        """send()'s wait while the connection's output is above high water."""
        await driver.drained()
        if self.gone:
            raise ClientDisconnected("the client has disconnected")

    def _pathsend(self, path: str) -> None:
        """The whole body is the file at ``path`` (http.response.pathsend): it
        goes out as a FileChunk; Content-Length from its size unless the app
        gave one (which must match)."""
        if self.head_sent and self.no_body:
            self._last([])
            return
        if self.head_only or no_content(self.status):
            parts = [] if self.head_sent else [self._head(os.stat(path).st_size, False, known=True)]
            self._last(parts)
            return
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        file = FileChunk(fd, 0, 0)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise RuntimeError(f"pathsend: {path!r} is not a regular file")
            size = file.count = info.st_size
            parts: list = [] if self.head_sent else [self._head(size, False)]
            if 0 <= self.declared != self.length + size:
                raise RuntimeError(f"pathsend: the file's {size} bytes break the Content-Length"
                                   f" ({self.declared}) the app gave")
        except BaseException:
            file.close()
            raise
        self.length += size
        if not size:
            file.close()
        elif self.chunked:
            parts += (b"%x\r\n" % size, file, b"\r\n")
        else:
            parts.append(file)
        if size:
            self.file_sent = True
        self._last(parts)

    def _last(self, parts: list) -> None:
        """The last body: end the framing; complete, or wait for the trailers."""
        if self.chunked:
            parts.append(b"0\r\n" if self.trailers else LAST_CHUNK)
        elif self.length < self.declared and not self.no_body:
            if parts:
                self.proto.driver.deliver(_join(parts))
            raise RuntimeError(f"less body than the Content-Length ({self.declared}) the app gave")
        if self.trailers:
            self.body_sent = True
            if parts:
                self.proto.driver.deliver(_join(parts))
            return
        # a file part comes only from _pathsend, which sets file_sent when it adds one
        self._complete(parts if self.file_sent else b"".join(parts))

    def _trailers(self, message: dict) -> None:
        """http.response.trailers: in a chunked response to a client that takes
        them, trailer fields; else dropped. The last one completes the response."""
        if not self.trailers or not self.body_sent or self.done:
            raise RuntimeError("http.response.trailers without trailers=True, or before the last body")
        parts = []
        if self.chunked and self.te:
            for name, value in message.get("headers", ()):
                if bytes(name).lower() not in _NO_TRAILERS:
                    parts += (bytes(name), b": ", bytes(value), b"\r\n")
        if message.get("more_trailers", False):
            if parts:
                self.proto.driver.deliver(b"".join(parts))
            return
        if self.chunked:
            parts.append(b"\r\n")
        self._complete(b"".join(parts))

    def _head(self, first: int, more: bool, known: bool = False) -> bytes:
        """The response head, framed: the app's Content-Length, else chunked
        (HTTP/1.1) or close-delimited (HTTP/1.0) -- or, when the first body
        is the whole body (and trailers are not to follow), its length. A
        request body not all here yet ends the connection after the answer."""
        status = self.status
        ctx = self.proto.ctx
        parts = [status_line(status), ctx.server_line, ctx.date_line]
        has_length = False
        for name, value in self.headers:
            if type(name) is not bytes:  # bytes-like (the spec allows it): as bytes, once
                name = bytes(name)
            if type(value) is not bytes:
                value = bytes(value)
            lower = name.lower()
            if lower == b"content-length":
                has_length = True
                self.declared = int(value)
            elif lower == b"connection" or lower == b"transfer-encoding":
                continue  # the framing is the server's
            parts += (name, b": ", value, b"\r\n")
        bodyless = no_content(status)
        self.no_body = bodyless or self.head_only
        if self.trailers and self.te:
            more = True  # chunked, to carry them
        keep_alive = self.keep_alive
        if not self.body_done or self.half_closed or ctx.draining:
            # the request body has not all come (nor will it be read), or a
            # graceful stop began while the app ran: this is the last response
            keep_alive = False
        # a HEAD's length is not known (what a GET would get) unless it is a file's
        self.chunked, self.keep_alive = end_head(parts, self.request.version, has_length or bodyless, more, first,
                                                 self.head_only, known, keep_alive)
        self.head_sent = True
        return b"".join(parts)
