"""ASGI 3.0 applications (HTTP) as one more kind of route.

An ``[[route]]`` with ``asgi = "package.module:app"`` becomes an ``AsgiApp``
in the worker's ``Router``; the dispatcher hands it the request
(``serve``). The connection's protocol then waits (state ``WAITING``, as for
a request in the thread pool: reading pauses, pipelined requests queue behind
it, /status counts it as pooled) while ``app(scope, receive, send)`` runs as a
task on the worker's asyncio loop (uvloop or asyncio: config refuses ASGI
routes on epoll). The response goes out through the driver as the app sends
it; after the last body the protocol goes back to ``IDLE`` and the requests
queued behind run, as after a pool result (``HttpServerProtocol._on_result``).

This slice: the request body is the one the protocol has read whole
(``max_body`` applies), given to the first ``receive()``; no lifespan, no
extensions.
"""

from __future__ import annotations

import asyncio
import logging

from .dispatch import HttpServerProtocol
from .messages import Request, no_content
from .protocols.http import WAITING, status_line

log = logging.getLogger("prefork.worker")

SPEC_VERSION = "2.3"
# the methods as scope strings, decoded once (any other is decoded per request)
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


class ClientDisconnected(OSError):
    """``send()`` after the client has gone (ASGI HTTP spec 2.4: an OSError subclass)."""


class AsgiApp:
    """One ASGI route of one worker: the app, where it is mounted, its state."""

    __slots__ = ("app", "root_path", "state", "_loop")

    def __init__(self, app, mount: str = "/"):
        self.app = app
        # a prefix route's mount point, without its trailing slash ("" for "/");
        # an exact route is not a mount point
        self.root_path = mount[:-1] if mount.endswith("/") else ""
        self.state: dict = {}  # per worker (lifespan would fill it); each request gets a copy
        # the worker's loop (a router, and so this object, belongs to one worker):
        # asyncio.get_running_loop() costs a getpid() system call on every call
        self._loop: asyncio.AbstractEventLoop | None = None

    def serve(self, proto: HttpServerProtocol, request: Request) -> None:
        """Run the app for ``request`` on the loop; ``proto`` waits for it."""
        proto.wait()
        call = _Call(self, proto, request)
        proto.ctx.asgi_calls[proto] = call
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        call.task = loop.create_task(call.run())


def _raw_path(request: Request) -> bytes:
    raw = request.target.partition(b"?")[0]
    if raw[:1] != b"/" and b"://" in raw:  # absolute-form: its path part
        rest = raw.partition(b"://")[2]
        slash = rest.find(b"/")
        raw = rest[slash:] if slash >= 0 else b"/"
    return raw


def build_scope(app: AsgiApp, request: Request, server) -> dict:
    """The HTTP connection scope (ASGI HTTP spec 2.3)."""
    peer = request.peer
    if type(peer) is not tuple:
        client = None
    elif len(peer) == 2:
        client = peer  # a tuple: nobody can change it
    else:
        client = (peer[0], peer[1]) if len(peer) > 2 else None
    method = request.method
    target = request.target
    if target[:1] == b"/":  # origin-form, nearly every request: the path part as sent
        raw_path = target.partition(b"?")[0] if 63 in target else target  # 63: b"?"
    else:
        raw_path = _raw_path(request)
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": SPEC_VERSION},
        "http_version": request.version,
        "method": _METHODS.get(method) or method.decode("latin-1"),
        "scheme": "http",
        "path": request.path.decode("utf-8", "replace"),
        "raw_path": raw_path,
        "query_string": request.query,
        "root_path": app.root_path,
        "headers": [(name.lower(), value) for name, value in request.headers],
        "client": client,
        "server": server,
        "state": dict(app.state),
        "extensions": {},
    }


class _Call:
    """One request handed to an ASGI app: its receive, its send, its end."""

    __slots__ = ("app", "proto", "request", "task", "status", "headers", "started", "head_sent", "done",
                 "gone", "half_closed", "body_given", "waiter", "chunked", "length", "declared", "keep_alive", "head_only", "no_body")

    def __init__(self, app: AsgiApp, proto: HttpServerProtocol, request: Request):
        self.app = app
        self.proto = proto
        self.request = request
        self.task = None
        self.status = 0
        self.headers: list = []
        self.started = False     # http.response.start received
        self.head_sent = False
        self.done = False        # the response is complete (or failed)
        self.gone = False        # the client went away
        self.half_closed = False  # the client has half-closed (it may still read the response)
        self.body_given = False  # the first receive() has had the request body
        self.waiter: asyncio.Future | None = None  # a receive() waiting for http.disconnect
        self.chunked = False
        self.length = 0          # content bytes sent
        self.declared = -1       # the app's Content-Length (-1: none)
        self.keep_alive = request.keep_alive
        self.head_only = request.method == b"HEAD"
        self.no_body = False

    # --- the app's side -----------------------------------------------------------------

    async def receive(self) -> dict:
        if not self.body_given:
            self.body_given = True
            return {"type": "http.request", "body": self.request.body, "more_body": False}
        if not (self.done or self.gone or self.half_closed):
            # only a disconnect can come now: read again, to see the client go
            self.proto.listen()
            waiter = self.waiter = asyncio.get_running_loop().create_future()
            await waiter
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        if self.gone:
            raise ClientDisconnected("the client has disconnected")
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.status = int(message["status"])
            self.headers = list(message.get("headers", ()))
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self.started:
            raise RuntimeError("http.response.body before http.response.start")
        if self.done:
            raise RuntimeError("http.response.body after the response is complete")
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
            if self.chunked:
                parts.append(_LAST_CHUNK)
            elif self.length < self.declared and not self.no_body:
                if parts:
                    self.proto.driver.deliver(b"".join(parts))
                raise RuntimeError(f"less body than the Content-Length ({self.declared}) the app gave")
            self._complete(b"".join(parts))
            return
        driver = self.proto.driver
        if parts:
            driver.deliver(b"".join(parts))
        if self.gone or self.proto.state != WAITING:
            raise ClientDisconnected("the client has disconnected")
        if driver.write_blocked():
            await driver.drained()
            if self.gone:
                raise ClientDisconnected("the client has disconnected")

    def _head(self, first: int, more: bool) -> bytes:
        """The response head, framed: the app's Content-Length, else chunked
        (HTTP/1.1) or close-delimited (HTTP/1.0) -- or, when the first body
        is the whole body, its length."""
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
        if not has_length and not bodyless:
            if self.head_only:
                pass  # what a GET would get is not known; nothing follows the head anyway
            elif not more:
                parts.append(b"Content-Length: %d\r\n" % first)
            elif self.request.version == "1.1":
                self.chunked = True
                parts.append(_CHUNKED)
            else:
                self.keep_alive = False  # HTTP/1.0: the body ends with the connection
        if not self.keep_alive:
            parts.append(_CLOSE)
        elif self.request.version == "1.0":
            parts.append(_KEEP_ALIVE)
        parts.append(b"\r\n")
        self.head_sent = True
        return b"".join(parts)

    # --- the server's side --------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self.app.app(build_scope(self.app, self.request, self.proto.driver.sockname()),
                               self.receive, self.send)
        except Exception:
            if self.gone:
                return
            if not self.started or not self.head_sent:
                log.exception("ASGI app for %s failed", self.request.path.decode("latin-1"))
                self._fail_500()
            elif not self.done:
                log.exception("ASGI app for %s failed mid-response: closing the connection",
                              self.request.path.decode("latin-1"))
                self._abort()
            return
        if self.gone or self.done:
            return
        if not self.head_sent:
            log.error("ASGI app for %s returned without a response", self.request.path.decode("latin-1"))
            self._fail_500()
        else:
            log.error("ASGI app for %s returned mid-response: closing the connection",
                      self.request.path.decode("latin-1"))
            self._abort()

    def lost(self) -> None:
        """The connection is gone (called by the protocol's connection_lost)."""
        self.gone = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof(self) -> None:
        """The client has half-closed: a receive() gets http.disconnect (as
        uvicorn does); send() still works, the client may be reading."""
        self.half_closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self) -> None:
        self.done = True
        self.proto.ctx.asgi_calls.pop(self.proto, None)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _complete(self, last: bytes) -> None:
        """The last body: the protocol takes over again, as after a pool result."""
        proto = self.proto
        self._end()
        if proto.state != WAITING:
            return
        request = self.request
        request.keep_alive = self.keep_alive
        proto.end_wait(last)
        proto.answered(request, self.status, self.length)
        proto.after_wait()

    def _fail_500(self) -> None:
        proto = self.proto
        self._end()
        if proto.state != WAITING:
            return
        proto.end_wait()
        proto.write_response(self.request, None, 500)
        proto.after_wait()

    def _abort(self) -> None:
        """Started but not finished: close, so the client sees the response cut."""
        proto = self.proto
        self._end()
        if proto.state != WAITING:
            return
        if proto.ctx.on_response is not None:
            proto.ctx.on_response(self.request, self.status, self.length)
        proto._finish()
        proto.driver.abort()
