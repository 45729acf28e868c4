"""ASGI 3.0 applications (HTTP) as one more kind of route.

An ``[[route]]`` with ``asgi = "package.module:app"`` becomes an ``AsgiApp``
in the worker's ``Router``; the dispatcher hands it the request
(``serve``). The connection's protocol then waits (state ``WAITING``, as for
a request in the thread pool: reading pauses, pipelined requests queue behind
it, /status counts it as pooled, or as reading while its body streams in)
while ``app(scope, receive, send)`` runs as a task on the worker's asyncio
loop (uvloop or asyncio: config refuses ASGI routes on epoll). The response goes out through the driver as the app sends
it; after the last body the protocol goes back to ``IDLE`` and the requests
queued behind run, as after a pool result (``HttpServerProtocol._on_result``).

Request bodies stream. ``AsgiApp`` is a ``dispatch.StreamingRoute``: a
request with a body is handed to it when its head is complete
(``serve_stream``; the ``_Call`` is the protocol's ``BodySink``), and
``receive()`` gives the body as it arrives, ``more_body`` and all. The
protocol reads no more while the app has not taken what it was given (one read
at most is buffered per connection); taking it (``want_body``) reads on, and
the first ``receive()`` sends the ``100 Continue`` an ``Expect`` asked for, so
an app that answers without reading never gets one sent. ``max_body``,
``body_timeout`` and the header limits are the protocol's, as for built-ins: a
body that fails before the app has begun to answer is answered with the error
(413, 408, 400); after, the connection closes; either way the app's
``receive()`` gets ``http.disconnect``. An app that answers before its body
has all come gets ``Connection: close`` on the answer (and a lingering close:
the rest is dropped). A request queued behind another (pipelining) is handed
over when its turn comes, the same way: the body parsed meanwhile (a read at
most: reading pauses once a queued body begins) first, the rest as it comes,
the 100 Continue at the first ``receive()``; one that came whole while queued
gets it in one message.

Extensions: ``http.response.pathsend`` (the file goes out as a ``FileChunk``,
read in pieces as the transport drains: ``AioConnection``'s pump) and, when the
client sent ``TE: trailers``, ``http.response.trailers`` (chunked responses
carry them; a response with a Content-Length, or close-delimited, drops them).
"""

from __future__ import annotations

import asyncio
import logging

from . import asgi_websocket
from .asgi_response import AsgiResponse, Exchange
from .framing import ClientDisconnected
from .messages import Request, close_files, unpack_peer
from .protocols.http import WAITING
from .protocols.websocket import WebSocketContext
from .protocols.wshandshake import wants_websocket

__all__ = ["AsgiApp", "ClientDisconnected", "build_scope"]

log = logging.getLogger("prefork.worker")

SPEC_VERSION = "2.3"
TASK_NAME = "asgi-http"  # each call's task (a debugger's or asyncio's repr of it says so)
Task = asyncio.Task
# the methods as scope strings, decoded once (any other is decoded per request)
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


class AsgiApp:
    """One ASGI route of one worker: the app, where it is mounted, its state."""

    __slots__ = ("app", "root_path", "prefix", "raw_prefix", "state", "_loop", "websocket")

    def __init__(self, app, mount: str = "/", prefix: str = ""):
        self.app = app
        # ``prefix``: what a proxy strips before forwarding (the route's
        # root_path, --root-path): as uvicorn, in front of path and raw_path too
        self.prefix = prefix
        self.raw_prefix = prefix.encode("ascii")
        # plus a prefix route's mount point, without its trailing slash ("" for
        # "/"); an exact route is not a mount point
        self.root_path = prefix + (mount[:-1] if mount.endswith("/") else "")
        self.state: dict = {}  # per worker (lifespan would fill it); each request gets a copy
        # the worker's loop (a router, and so this object, belongs to one worker):
        # asyncio.get_running_loop() costs a getpid() system call on every call
        self._loop: asyncio.AbstractEventLoop | None = None
        # the WebSocket connections' context (limits, clock): the route's builder sets the worker's
        self.websocket = WebSocketContext(handler=asgi_websocket.CallHandler())

    def serve(self, proto: Exchange, request: Request) -> None:
        """Run the app for ``request`` (its body whole) on the loop; ``proto`` waits for it.
        A WebSocket handshake gets the ``websocket`` scope (``asgi_websocket``)."""
        flow = proto  # compiled: the protocol's class (C calls, no Python frame for a plain GET)
        if request.method == b"GET" and flow.upgradable(request) and wants_websocket(request.headers):
            scope = build_scope(self, request, proto.driver.sockname())
            asgi_websocket.start(self.app, proto, request, self.websocket, self._the_loop(), scope)
            return
        self._start(proto, request, False)

    def serve_stream(self, proto: Exchange, request: Request) -> "_Call":
        """The same when the head is complete: the body streams to the call."""
        return self._start(proto, request, True)

    def _start(self, proto: Exchange, request: Request, streamed: bool) -> "_Call":
        flow = proto  # compiled: the protocol's class (a C call to wait())
        flow.wait()
        call = _Call.__new__(_Call)  # _Call(...) without the type call (compiled: C calls)
        call._fill(self, proto, request, streamed)
        ctx = flow.ctx  # (compiled: the context's class, its calls a C field)
        ctx.asgi_calls[proto] = call
        loop = self._the_loop()
        if loop.get_task_factory() is None:
            # what loop.create_task() does, with a name: without one, the Task
            # formats "Task-<n>" (a PyUnicode_FromFormat and a sprintf) for each
            # request; uvloop's create_task would then also be a keyword call more
            call.task = Task(call.run(), loop=loop, name=TASK_NAME)
        else:  # the app set a task factory (an eager one, say): it makes the tasks
            call.task = loop.create_task(call.run())
        return call

    def _the_loop(self) -> asyncio.AbstractEventLoop:
        """The worker's loop, looked up once (``get_running_loop()`` costs a
        ``getpid()`` system call on every call)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop


def is_call(task: asyncio.Task) -> bool:
    """Whether ``task`` runs an ASGI call (``AsgiApp.serve``'s): for the
    worker's end, which waits for these (an O(tasks) scan, not a hot path)."""
    return getattr(task.get_coro(), "cr_code", None) is _Call.run.__code__


def _raw_path(request: Request) -> bytes:
    raw = request.target.partition(b"?")[0]
    if raw[:1] != b"/" and b"://" in raw:  # absolute-form: its path part
        rest = raw.partition(b"://")[2]
        slash = rest.find(b"/")
        raw = rest[slash:] if slash >= 0 else b"/"
    return raw


def build_scope(app: AsgiApp, request: Request, server) -> dict:
    """The HTTP connection scope (ASGI HTTP spec 2.3)."""
    peer = unpack_peer(request._peer)  # request.peer, without the property's lookup
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
    path_bytes = request.path  # (bytes, typed for the compiler: a direct UTF-8 decode)
    path = path_bytes.decode("utf-8", "replace")
    if app.prefix:
        path, raw_path = app.prefix + path, app.raw_prefix + raw_path
    headers = request.headers[:]  # lower-cased by the parser; a copy: the app may change it
    state = app.state
    methods = _METHODS  # (a dict, typed for the compiler: a C lookup)
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": SPEC_VERSION},
        "http_version": request.version,
        "method": methods.get(method) or method.decode("latin-1"),
        "scheme": request.scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": request.query,
        "root_path": app.root_path,
        "headers": headers,
        "client": client,
        "server": server,
        "state": state.copy() if state else {},  # a copy: what the app adds stays the request's
        "extensions": _extensions(headers),
    }


def _extensions(headers: list) -> dict:
    """What is implemented: pathsend always, trailers when the client accepts
    them (``TE: trailers``; ``headers`` lower-cased)."""
    for name, value in headers:
        if name == b"te":
            for token in value.lower().split(b","):
                if token.strip() == b"trailers":
                    return {"http.response.pathsend": {}, "http.response.trailers": {}}
    return {"http.response.pathsend": {}}


class _Call(AsgiResponse):
    """One request handed to an ASGI app: its receive, its end (its send is
    ``AsgiResponse``'s). It is the protocol's ``BodySink`` for a streamed body."""

    __slots__ = ("app", "task", "chunks", "body_given")

    def __init__(self, app: AsgiApp, proto: Exchange, request: Request, streamed: bool = False):
        self._fill(app, proto, request, streamed)

    def _fill(self, app: AsgiApp, proto: Exchange, request: Request, streamed: bool) -> None:
        self._begin(proto, request, not streamed)
        self.app = app
        self.task = None
        # the request body's pieces not yet given to the app (all of it at once unless streamed);
        # whether the last http.request (more_body False) has been given
        self.chunks: list[bytes] = [] if streamed else [request.body]
        self.body_given = False

    # --- the protocol's side of a streamed body (protocols.http.BodySink) --------------

    def body_data(self, data: bytes) -> None:
        self.chunks.append(data)
        self._wake()

    def body_end(self, trailers) -> None:
        self.body_done = True
        self._wake()

    def body_failed(self, status: int) -> bool:
        """The body cannot be had (413, 408, 400): the app hears http.disconnect
        and its send()s fail; the protocol answers ``status`` if the app has not
        begun to."""
        unanswered = not self.head_sent
        self.gone = True
        self._end()
        return unanswered

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the app's side -----------------------------------------------------------------

    async def receive(self) -> dict:
        while True:
            if self.gone or self.done:
                return {"type": "http.disconnect"}
            chunks = self.chunks
            if chunks:
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                if self.body_done:
                    self.body_given = True
                    return {"type": "http.request", "body": body, "more_body": False}
                self.proto.want_body()  # taken: read on
                return {"type": "http.request", "body": body, "more_body": True}
            if self.body_done and not self.body_given:
                self.body_given = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self.half_closed:
                return {"type": "http.disconnect"}
            if self.body_done:
                self.proto.listen()  # only a disconnect can come now: read again, to see the client go
            else:
                self.proto.want_body()  # (the first time: the 100 Continue, if one is owed)
            waiter = self.waiter = self.app._loop.create_future()  # the worker's loop (serve set it)
            await waiter

    # --- the server's side --------------------------------------------------------------

    async def run(self) -> None:
        try:
            scope = build_scope(self.app, self.request, self.proto.driver.sockname())
            self.te = "http.response.trailers" in scope["extensions"]
            await self.app.app(scope, self.receive, self.send)
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
        self._wake()

    def eof(self) -> None:
        """The client has half-closed: a receive() gets http.disconnect (as
        uvicorn does); send() still works, the client may be reading."""
        self.half_closed = True
        self._wake()

    def _end(self) -> None:
        self.done = True
        proto = self.proto
        ctx = proto.ctx  # (compiled: the context's class, its calls a C field)
        ctx.asgi_calls.pop(proto, None)
        self._wake()

    def _complete(self, last) -> None:
        """The last body (bytes, or parts with a file): the protocol takes over
        again, as after a pool result."""
        proto = self.proto
        self._end()
        if proto.state != WAITING:
            if type(last) is list:
                close_files(last)
            return
        request = self.request
        request.keep_alive = self.keep_alive
        proto.answer_waited(request, last, self.status, self.length, self.file_sent)

    def _fail_500(self) -> None:
        proto = self.proto
        self._end()
        if proto.state != WAITING:
            return
        proto.fail_waited(self.request)

    def _abort(self) -> None:
        """Started but not finished: close, so the client sees the response cut."""
        proto = self.proto
        self._end()
        if proto.state != WAITING:
            return
        proto.abort_waited(self.request, self.status, self.length)
