"""The server side of HTTP: routes, handlers, the access log and the counters.

``HttpServerProtocol`` is the HTTP/1.1 protocol (``protocols/http.py``) with
its ``on_request`` filled in: a complete request is routed (``Router``: exact
paths, prefixes, constant responses), its handler runs inline or in the
worker's thread pool (``Offload``, blocking routes), and its response is
written back through the protocol (``write_response``) and logged. This is
the seam where other kinds of application (ASGI, WSGI, WebSocket) plug in
beside the built-in handlers. A route that takes request bodies as a stream
(a ``StreamingRoute``: an ASGI app) is handed a request with a body when its
head is complete, or at its turn if it was queued (``stream_request``);
built-in handlers and the thread pool get whole bodies. What a route is
(inline, pooled, streaming) is recorded once, by ``Router.add``.

The hot path is ``on_request``: a constant route kept alive is answered from a
whole response cached for the second, and a handler that answers inline with
an in-memory body is written there too, without building more than the
``Request``; everything else goes through ``dispatch``.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Protocol, runtime_checkable
from urllib.parse import unquote_to_bytes

from .config import HttpConfig
from .forwarded import Trusted, resolve
from .messages import Handler, Offload, Request, Response, new_request
from .protocols.http import BURST, IDLE, WAITING, BodySink, HttpProtocol
from .protocols.http_response import HttpContext

log = logging.getLogger("prefork.worker")


class Waiting(Protocol):
    """What an app route's call (ASGI, WSGI) needs of its connection's
    protocol (``HttpServerProtocol``) to answer a request the protocol waits
    for; each adapter's ``Exchange`` adds its driver's part and the rest."""

    ctx: "HttpServerContext"
    state: int

    def wait(self) -> None: ...

    def end_wait(self, out=b"") -> None: ...

    def after_wait(self) -> None: ...

    def answered(self, request: Request, status: int, length: int, hold: bool = False) -> None: ...

    def write_response(self, request: Request, response: Response | None, status: int = 0) -> None: ...

    def abort(self) -> None: ...

    def answer_waited(self, request: Request, out, status: int, length: int, hold: bool = False) -> None: ...

    def fail_waited(self, request: Request) -> None: ...

    def abort_waited(self, request: Request, status: int, length: int) -> None: ...


@runtime_checkable
class StreamingRoute(Protocol):
    """A route that answers through the protocol itself (``serve``, an ASGI
    app) and takes request bodies as a stream: ``serve_stream`` is called when
    the head of a request with a body is complete; it ``wait()``s like
    ``serve`` and returns where the body goes, or returns None (without
    waiting) to have this body whole, at ``serve`` (a WSGI app's small body)."""

    def serve(self, proto: "HttpServerProtocol", request: Request) -> None: ...

    def serve_stream(self, proto: "HttpServerProtocol", request: Request) -> BodySink | None: ...


@runtime_checkable
class ServedRoute(Protocol):
    """A route that answers through the protocol itself (``serve``: a WSGI
    app, run in the pool) and gets whole request bodies."""

    def serve(self, proto: "HttpServerProtocol", request: Request) -> None: ...


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """The path (absolute-form reduced to its path, %-escapes decoded) and the
    query of a request target. (``on_request`` inlines the same, for speed.)"""
    path, _, query = target.partition(b"?")
    if path[:1] != b"/" and b"://" in path:
        authority_and_path = path.partition(b"://")[2]
        slash = authority_and_path.find(b"/")
        path = authority_and_path[slash:] if slash >= 0 else b"/"
    if 37 in path:
        path = unquote_to_bytes(path)
    return path, query


# What a route is, recorded once by ``Router.add`` (a route's ``kind``): its
# handler runs inline, or in the thread pool, or it is a ``StreamingRoute``
# that answers through the protocol itself (``serve``, ``serve_stream``).
# Plain ints: the hot path tests ``kind`` for truth (anything but INLINE
# leaves it for ``dispatch``) and ``dispatch`` compares it.
INLINE = 0
POOLED = 1
STREAMING = 2
SERVED = 3  # a ServedRoute: answers through the protocol (``serve``), bodies whole


class Router:
    """Exact paths in a dict; prefixes (paths ending in "/") longest first.
    ``constants`` holds the exact paths whose handler is a ``constant``.
    Each route is a ``(handler, kind)``: ``kind`` INLINE, POOLED, STREAMING or SERVED."""

    def __init__(self, routes: dict[bytes, Handler] | None = None):
        self.exact: dict[bytes, tuple[Handler, int]] = {}
        self.constants: dict[bytes, Response] = {}
        self.prefixes: list[tuple[bytes, Handler, int]] = []
        self.streaming = False  # a route takes request bodies as a stream (StreamingRoute)
        for path, handler in (routes or {}).items():
            self.add(path, handler)

    def add(self, path: bytes | str, handler: "Handler | StreamingRoute", blocking: bool = False) -> None:
        if isinstance(path, str):
            path = path.encode()
        # the one isinstance on the Protocol, here and not per request
        kind = (STREAMING if isinstance(handler, StreamingRoute) else SERVED if isinstance(handler, ServedRoute)
                else POOLED if blocking else INLINE)
        if kind == STREAMING:
            self.streaming = True
        if path == b"/" and kind >= STREAMING:
            # an app mounted at "/" (ASGI, WSGI) gets every path no other route has
            self.exact[path] = (handler, kind)
            self.prefixes.append((path, handler, kind))
            self.prefixes.sort(key=lambda item: -len(item[0]))
            return
        if path.endswith(b"/") and len(path) > 1:
            self.prefixes.append((path, handler, kind))
            self.prefixes.sort(key=lambda item: -len(item[0]))
            self.exact.setdefault(path[:-1], (_redirect_to(path), INLINE))  # /static -> /static/
        else:
            self.exact[path] = (handler, kind)
            response = getattr(handler, "constant", None)
            # only a plain path: a request target equal to it is then routed to it
            # as is (HttpServerProtocol.on_request looks the raw target up first)
            plain = path[:1] == b"/" and b"?" not in path and b"%" not in path
            if type(response) is Response and response.file is None and kind == INLINE and plain:
                self.constants[path] = response
            else:
                self.constants.pop(path, None)

    def resolve(self, path: bytes) -> tuple[Handler, int] | None:
        found = self.exact.get(path)
        if found is not None:
            return found
        for prefix, handler, kind in self.prefixes:
            if path.startswith(prefix):
                return handler, kind
        return None


def _forwarded(trusted: Trusted, request: Request) -> None:
    """A request from a trusted proxy: the client and scheme it forwarded
    become the request's (the access log, /status's allow and the ASGI
    scope read them there)."""
    client, scheme = resolve(trusted, request.headers)
    if client is not None:
        request.peer = client
    if scheme is not None:
        request.scheme = scheme


def _redirect_to(location: bytes) -> Handler:
    def redirect(request: Request) -> Response:
        return Response(301, b"", b"text/html", [(b"Location", location)])
    return redirect


_OPTIONS_ANY = Response(200, b"", b"text/plain", ((b"Allow", b"GET, HEAD, POST, OPTIONS"),))


class HttpServerContext(HttpContext):
    """Per-worker state of the server side, over the protocol's: the routes,
    the thread pool, the access log, the request count and draining."""

    def __init__(self, config: HttpConfig, routes: "dict[bytes, Handler] | Router | None" = None,
                 clock: Callable[[], float] = time.monotonic):
        self.router = routes if isinstance(routes, Router) else Router(routes)
        # submit(fn, arg, done) -> bool: the worker's thread pool; None runs offloaded work inline
        self.submit: Callable | None = None
        # hand_back(fn, *args): fn(*args) on the reactor thread, from any thread (WSGI calls' responses)
        self.hand_back: Callable | None = None
        self._constant_out: dict[Response, bytes] = {}  # constant responses of this second, kept alive
        self.requests = 0  # counter, for status
        self._access_log = None
        self.draining = False   # graceful stop: no more keep-alive
        self.asgi_calls: dict = {}  # protocol -> its running ASGI call (prefork.asgi), told if the client goes
        # [http] forwarded_allow: whose forwarded headers to believe (None: nobody's, nothing is read)
        self.forwarded: Trusted | None = Trusted(config.forwarded_allow) if config.forwarded_allow else None
        super().__init__(config, clock)

    @property
    def access_log(self):
        """An AccessLog, or None when off. Set, it is told of every response
        written (``on_response``), and constant routes leave their fast path."""
        return self._access_log

    @access_log.setter
    def access_log(self, access_log) -> None:
        self._access_log = access_log
        self.on_response = None if access_log is None else access_log.log

    def refresh_date(self, now: float | None = None) -> bool:
        if not super().refresh_date(now):
            return False
        self._constant_out.clear()
        return True


class HttpServerProtocol(HttpProtocol):
    """One HTTP/1.1 connection, serving the worker's routes."""

    __slots__ = ()  # an idle connection costs what the protocol's slots do, no more

    def on_request(self, method: bytes, target: bytes, version: str, headers: list, body: bytes,
                  keep_alive: bool, trailers=()) -> None:
        """A whole request has arrived: route it, or queue it behind one in the pool.

        The hot path of every request: a handler that answers at once with an
        in-memory body is answered here, the rest goes through ``dispatch``."""
        ctx = self.ctx
        requests = self._requests = self._requests + 1
        ctx.requests += 1
        if requests >= ctx.keepalive_requests or ctx.draining:
            keep_alive = False
        elif keep_alive and version == "1.1":
            # the commonest answer of all: a constant, kept alive, for a target
            # that is its path exactly (no query, no escapes to decode). The
            # whole response (head and body) is built once per second.
            response = ctx.router.constants.get(target)
            if (response is not None and ctx.on_response is None and method != b"HEAD"
                    and self.state != WAITING and not self._pending):
                whole = ctx._constant_out.get(response)
                if whole is None:
                    whole = ctx._constant_out[response] = ctx.head(
                        response.status, response.content_type, response.length, response.headers,
                        True, False) + response.body
                self._out.append(whole)
                if self.state != IDLE:
                    self._set_state(IDLE)
                self.deadline = ctx.clock() + ctx.keepalive_timeout
                return
        path, _, query = target.partition(b"?")
        if path[:1] != b"/" and b"://" in path:
            # absolute-form (RFC 9112 3.2.2): route by its path
            authority_and_path = path.partition(b"://")[2]
            slash = authority_and_path.find(b"/")
            path = authority_and_path[slash:] if slash >= 0 else b"/"
        if 37 in path:  # b"%" (an int is found with memchr, much faster than a bytes needle)
            path = unquote_to_bytes(path)
        fast = not (self.state == WAITING or self._pending or ctx.on_response is not None or method == b"HEAD")
        router = ctx.router
        response = router.constants.get(path) if fast else None
        if response is None:
            request = new_request(method, target, path, query, version, headers, body, keep_alive, self.peer, trailers)
            if ctx.forwarded is not None and ctx.forwarded.peer(self.peer):
                _forwarded(ctx.forwarded, request)
            if self.state == WAITING or self._pending:
                self._queue(request)
                return
            if self.state != IDLE:  # the request has been read, whether in one piece or several
                self._set_state(IDLE)
            found = router.exact.get(path)
            if found is None or found[1] or not fast:
                self.dispatch(request)
                return
            try:
                response = found[0](request)
            except Exception:
                log.exception("handler for %s failed", path.decode("latin-1"))
                response = None
            if type(response) is not Response or response.file is not None or not response.length:
                self._handled(request, response)
                return
        extra = response.headers
        if extra and type(extra) is not tuple:
            self._handled(request, response)
            return
        http10 = version == "1.0"
        key = (response.status, response.content_type, response.length, keep_alive, http10, extra)
        head = ctx._heads.get(key)
        if head is None:
            head = ctx.head(response.status, response.content_type, response.length, extra, keep_alive, http10)
        self._out.append(head + response.body)
        if keep_alive:
            if self.state != IDLE:
                self._set_state(IDLE)
            self.deadline = ctx.clock() + ctx.keepalive_timeout
            if len(self._out) >= BURST:
                self._hold()
        else:
            self._finish()

    def dispatch(self, request: Request) -> None:
        """Route ``request`` and answer it: inline, in the pool, or 404. The
        protocol calls this too when a queued request's turn comes."""
        ctx = self.ctx  # compiled: the context's and router's classes (C fields)
        router = ctx.router
        if request.path[:1] != b"/":  # llhttp lets only "*" (asterisk-form) through here
            self._asterisk(request)
            return
        found = router.exact.get(request.path) or router.resolve(request.path)
        if found is None:
            self.write_response(request, None, 404)
            return
        handler, kind = found
        if kind >= STREAMING:  # an app that answers through the protocol itself (ASGI, WSGI)
            handler.serve(self, request)  # a ServedRoute (no typing.cast: a call per request)
        elif kind == POOLED:
            self._offload(request, handler)
        else:
            self._handled(request, self._call(request, handler))

    def stream_request(self, method: bytes, target: bytes, version: str, headers: list,
                       keep_alive: bool) -> BodySink | None:
        """The head of a request with a body, its turn come: a ``StreamingRoute``
        takes it now and gets the body as it arrives; any other route gets it whole."""
        router = self.ctx.router
        if not router.streaming:
            return None
        path, query = split_target(target)
        found = router.exact.get(path) or router.resolve(path)
        if found is None or found[1] != STREAMING:
            return None
        ctx = self.ctx
        requests = self._requests + 1
        if requests >= ctx.keepalive_requests or ctx.draining:
            keep_alive = False
        request = new_request(method, target, path, query, version, headers, b"", keep_alive, self.peer, ())
        if ctx.forwarded is not None and ctx.forwarded.peer(self.peer):
            _forwarded(ctx.forwarded, request)
        sink = found[0].serve_stream(self, request)  # a StreamingRoute
        if sink is not None:  # (None: it wants this one's body whole, as on_request counts it)
            self._requests = requests
            ctx.requests += 1
        return sink

    def eof_received(self):
        if self.state == WAITING:
            call = self.ctx.asgi_calls.get(self)
            if call is not None:
                call.eof()  # the client has said all it will: an app in receive() gets http.disconnect
        return super().eof_received()

    def connection_lost(self) -> None:
        if self.state == WAITING:
            call = self.ctx.asgi_calls.pop(self, None)
            super().connection_lost()
            if call is not None:
                call.lost()
            return
        super().connection_lost()

    def _asterisk(self, request: Request) -> None:
        """``OPTIONS *`` asks about the server itself (RFC 9110 9.3.7): 200 and
        the methods it serves. Asterisk-form with any other method is a bad
        request (RFC 9112 3.2.4): 400 and close."""
        if request.method == b"OPTIONS" and request.target == b"*":
            self.write_response(request, _OPTIONS_ANY)
            return
        request.keep_alive = False
        self.linger = True
        self.write_response(request, None, 400)

    def _handled(self, request: Request, response) -> None:
        """What an inline handler returned: answer it, or hand it to the pool."""
        if type(response) is Offload:
            self._offload(request, response.fn)
        else:
            self.write_response(request, response, 500)

    @staticmethod
    def _call(request: Request, fn):
        """``fn(request)`` here and now: a Response or an Offload, or None
        (logged) when it raised or returned something else."""
        try:
            response = fn(request)
        except Exception:
            log.exception("handler for %s failed", request.path.decode("latin-1"))
            return None
        if isinstance(response, (Response, Offload)):
            return response
        log.error("handler for %s returned %r, not a Response", request.path.decode("latin-1"), response)
        return None

    def _offload(self, request: Request, fn) -> None:
        submit = self.ctx.submit
        if submit is None:  # no pool (threads = 0, or a test): run it here
            response = self._call(request, fn)
            self.write_response(request, response if type(response) is Response else None, 500)
            return
        if not submit(fn, request, lambda response, exc: self._on_result(request, response, exc)):
            self.write_response(request, None, 503)  # the pool's queue is full
            return
        self.wait()

    def _on_result(self, request: Request, response, exc) -> None:
        """The pool's answer to ``request``, on the reactor thread."""
        if self.state != WAITING:  # the connection went away meanwhile
            if isinstance(response, Response) and response.file is not None:
                response.file.close()
            return
        self.end_wait()
        if exc is not None:
            log.error("handler for %s failed in the thread pool", request.path.decode("latin-1"), exc_info=exc)
            response = None
        elif not isinstance(response, Response):
            log.error("handler for %s returned %r, not a Response", request.path.decode("latin-1"), response)
            response = None
        self.write_response(request, response, 500)
        self.after_wait()
