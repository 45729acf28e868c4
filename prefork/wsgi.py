"""WSGI applications (PEP 3333) as one more kind of route.

An ``[[route]]`` with ``wsgi = "package.module:app"`` becomes a ``WsgiApp`` in
the worker's ``Router`` (a ``dispatch.StreamingRoute``: it answers through
the protocol itself). The reactor reads the request head and a body up to
``wsgi_body_buffer`` whole before the app is called (larger ones stream: see
below); the connection's protocol then waits (state
``WAITING``: reading pauses, pipelined requests queue, /status counts it as
writing) while ``app(environ, start_response)`` runs in the worker's thread
pool (``[server] threads``; a full queue is a 503). So a pool thread never
waits for a slow client to send.

The response: the thread iterates the app's iterable and hands each piece,
framed, to the reactor thread (``hand_back``: the reactor's
``call_soon_threadsafe``), which delivers it on the connection. One piece is
held back until the next comes, so a response of one piece (or a list) goes
out in one delivery with a Content-Length; longer ones are chunked on
HTTP/1.1 and close-delimited on HTTP/1.0 unless the app gave a Content-Length.
The thread waits only while the connection's unsent output is above
``high_water`` (the driver's ``write_blocked``/``when_drained``) or that much
is still on its way to the reactor; it stops, and the iterable is closed, when
the client is gone (the driver closes a client that reads nothing for
``send_timeout``). An app error before the head is out is a 500 (logged once,
with its traceback); after, the connection is closed. The iterable's
``close()`` is always called, before the last piece is handed over.

``wsgi.file_wrapper`` over a regular file, returned before anything else
was sent, goes out as a ``FileChunk`` (sendfile on epoll; read as the
transport drains on the asyncio backends): the thread never reads it.

A request body larger than ``[http] wsgi_body_buffer`` (a chunked one once it is) streams:
``WsgiApp`` is a ``dispatch.StreamingRoute`` that takes such a request at head
time (``serve_stream``; the ``_Call`` is the protocol's ``BodySink``) and the
app reads it from ``wsgi.input``, a ``wsgi_input.BodyInput`` the reactor
fills, holding about that much at most (reading pauses while it is full). A
smaller body comes whole (``wsgi.input`` an ``io.BytesIO``). An app that
answers before its body has all come gets ``Connection: close``.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import threading
from typing import Any, Callable, Protocol

from .dispatch import Waiting
from .framing import LAST_CHUNK, ClientDisconnected, end_head
from .messages import FileChunk, Request, close_files, no_content
from .protocols.http import WAITING
from .wsgi_environ import OWN_DATE, OWN_SERVER, FileWrapper, Mount, build_environ, check_headers, check_status
from .wsgi_input import CHUNKED, BodyInput, body_kind

__all__ = ["WsgiApp", "ClientDisconnected"]

log = logging.getLogger("prefork.worker")



class Writer(Protocol):
    """What a call asks of the connection's driver (part of ``driver.Driver``)."""

    def deliver(self, out) -> None: ...

    def write_blocked(self) -> bool: ...

    def when_drained(self, callback: Callable[[], None]) -> None: ...

    def sockname(self) -> Any: ...


class Exchange(Waiting, Protocol):
    """What a WSGI call needs of its connection's protocol (``HttpServerProtocol``)."""

    driver: Writer

    def want_body(self) -> None: ...


class WsgiApp(Mount):
    """One WSGI route of one worker: the app and where it is mounted (``Mount``)."""

    def __init__(self, app: Callable, mount: str = "/", prefix: str = ""):
        super().__init__(mount, prefix)
        self.app = app

    def serve(self, proto: Exchange, request: Request) -> None:
        """Run the app for ``request`` (its body whole) in the pool; ``proto`` waits."""
        flow = proto  # compiled: the protocol's class (C fields, a C call to wait())
        ctx = flow.ctx  # compiled: the context's class (its pool and table of calls C fields)
        submit, hand_back = ctx.submit, ctx.hand_back
        if submit is None or hand_back is None:
            log.error("WSGI app for %s: no thread pool to run it in", request.path.decode("latin-1"))
            proto.write_response(request, None, 500)
            return
        call = _Call.__new__(_Call)  # _Call(...) without the type call (compiled: C calls)
        call._fill(self, proto, request, hand_back, _local_name(proto, request), ctx.config.high_water)
        if not submit(_RUN, call, None):  # run(call): no bound method per request
            proto.write_response(request, None, 503)  # the pool's queue is full
            return
        flow.wait()
        ctx.asgi_calls[proto] = call  # told (lost) if the client goes

    def serve_stream(self, proto: Exchange, request: Request) -> "_Call | None":
        """The head of a request with a body: a body longer than
        ``wsgi_body_buffer`` streams to the app's ``wsgi.input`` (the call is
        the protocol's ``BodySink``), and so does a chunked one once more
        than that has come (one that ends first is given whole, with its
        CONTENT_LENGTH); None for a shorter one, which comes whole to
        ``serve`` (and so does any when the pool is full: ``serve`` answers it 503)."""
        ctx = proto.ctx
        limit = ctx.config.wsgi_body_buffer
        submit, hand_back = ctx.submit, ctx.hand_back
        kind = body_kind(request.headers, limit)
        if submit is None or hand_back is None or not kind:
            return None
        call = _Call(self, proto, request, hand_back, _local_name(proto, request))
        call.body = BodyInput(limit, hand_back, proto.want_body, ctx.config.body_timeout + 1.0)
        if kind == CHUNKED:
            call.deferred = True
            call.body.ask()  # read it meanwhile (and send a 100 Continue owed)
        elif not submit(_RUN, call, None):
            return None
        proto.wait()
        ctx.asgi_calls[proto] = call
        return call


def _local_name(proto: Exchange, request: Request):
    """The local address, for SERVER_NAME/PORT, when the request has no Host
    (HTTP/1.0: the parser answers 400 to a 1.1 request without one); else None."""
    if request.version == "1.0" and request.header(b"host") is None:
        return proto.driver.sockname()
    return None


class _Call:
    """One request handed to a WSGI app. The thread's side: ``run`` (the app,
    the iteration), ``start_response``, ``write``; the reactor's side:
    ``_deliver``, ``_complete``, ``_fail_500``, ``_abort``, ``lost``.

    The two sides share no lock: each field has one writer (``handed`` the
    thread; ``delivered``, ``blocked`` and ``gone`` the reactor), and the
    thread waits for the reactor only while the output is above high water,
    on a lock of its own it publishes as ``waiter`` (``_wait``), which the
    reactor releases after each change (``_wake``)."""

    __slots__ = ("app", "proto", "request", "hand_back", "server", "waiter", "gone", "blocked", "handed", "delivered",
                 "high_water", "status", "code", "headers", "facts", "head_sent", "declared", "length", "chunked",
                 "keep_alive", "no_body", "pending", "committed", "body", "deferred")

    def __init__(self, app: WsgiApp, proto: Exchange, request: Request, hand_back: Callable, server=None):
        self._fill(app, proto, request, hand_back, server, proto.ctx.config.high_water)

    def _fill(self, app: WsgiApp, proto: Exchange, request: Request, hand_back: Callable, server,
              high_water: int) -> None:
        self.app = app
        self.proto = proto
        self.request = request
        self.hand_back = hand_back
        self.server = server
        self.waiter: Any = None  # the thread's lock while it waits for the reactor (_wait)
        self.gone = False        # the client went away (set on the reactor thread)
        self.blocked = False     # the connection's output is above high_water (set on the reactor thread)
        self.handed = 0          # bytes handed to the reactor (by the thread) ...
        self.delivered = 0       # ... and delivered by it: the difference is on its way
        self.high_water = high_water
        self.status: str | None = None
        self.code = 0
        self.headers: list = []
        self.facts = 0           # check_headers' summary of them (Content-Length, Server, Date)
        self.head_sent = False   # the head has been handed to the reactor
        self.declared = -1       # the app's Content-Length
        self.length = 0          # body bytes handed over
        self.chunked = False
        self.keep_alive = request.keep_alive
        self.no_body = False
        self.pending: bytes | None = None  # the last piece, held back until the next (or the end)
        # a first non-empty piece (or write()) came: the headers count as sent for
        # start_response's exc_info, though that piece may still be held back
        self.committed = False
        self.body: BodyInput | None = None  # a streamed body (serve_stream): wsgi.input
        self.deferred = False  # a chunked body: the app waits until it is long, or whole

    # --- the app's side (a pool thread) -----------------------------------------------------

    def start_response(self, status: str, headers: list, exc_info=None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.committed:  # the headers count as sent (PEP 3333): too late to change them
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no cycle through the traceback
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        code = check_status(status)
        self.facts = check_headers(headers)
        self.status, self.code, self.headers = status, code, headers
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's ``write()``: out now (after what the iteration held back)."""
        if type(data) is not bytes:
            raise TypeError(f"write() takes bytes, not {type(data).__name__}")
        if self.status is None:
            raise AssertionError("write() before start_response")
        self._flush()
        if data:
            self.committed = True
            self._emit(data, True)

    def run(self) -> None:
        result = None
        try:
            environ = build_environ(self.app, self.request, self.server, None, self.body)
            result = self.app.app(environ, self.start_response)
            parts = self._file(result)
            if parts is None:
                self._iterate(result)
        except ClientDisconnected:
            self._close(result)
            return
        except BaseException:  # an app error never ends the worker
            self._close(result)
            self._error()
            return
        self._close(result)
        try:
            if parts is not None:
                self._hand(_COMPLETE, parts)
                return
            last, self.pending = self.pending or b"", None
            self._emit(last, False)
        except ClientDisconnected:
            pass
        except BaseException:
            self._error()

    def _file(self, result) -> list | None:
        """A ``wsgi.file_wrapper`` over a regular file, returned with nothing
        sent yet: the head and a ``FileChunk`` (its own fd: the app closes the
        file) from the file's position on, for sendfile. None for anything else."""
        if type(result) is not FileWrapper or self.status is None or self.head_sent or self.pending is not None:
            return None
        filelike = result.filelike
        try:
            fd = filelike.fileno()
            info = os.fstat(fd)
            offset = filelike.tell()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        size = max(info.st_size - offset, 0)
        self.committed = True
        head = self._head(size, False)
        if 0 <= self.declared != size:
            raise ValueError(f"the file's {size} bytes break the Content-Length ({self.declared}) the app gave")
        if self.no_body or not size:
            return [head]
        self.length = size
        return [head, FileChunk(os.dup(fd), offset, size)]

    def _iterate(self, result) -> None:
        if type(result) is list or type(result) is tuple:  # the whole body at once: one piece
            for chunk in result:
                if type(chunk) is not bytes:
                    raise TypeError(f"the app's iterable gave {type(chunk).__name__}, not bytes")
            body = b"".join(result)
            if body:
                self._piece(body)
            return
        for chunk in result:
            if type(chunk) is not bytes:
                raise TypeError(f"the app's iterable gave {type(chunk).__name__}, not bytes")
            if chunk:
                self._piece(chunk)
            elif self.gone:
                raise ClientDisconnected("the client has disconnected")

    def _piece(self, chunk: bytes) -> None:
        if self.status is None:
            raise AssertionError("a body before start_response")
        self.committed = True
        self._flush()
        self.pending = chunk

    def _flush(self) -> None:
        pending = self.pending
        if pending is not None:
            self.pending = None
            self._emit(pending, True)

    def _close(self, result) -> None:
        close = getattr(result, "close", None)
        if close is None:
            return
        try:
            close()
        except Exception:
            log.exception("WSGI app for %s: the iterable's close() failed", self._where())

    def _where(self) -> str:
        return self.request.path.decode("latin-1")

    def _error(self) -> None:
        if self.gone:
            return
        if not self.head_sent:
            log.exception("WSGI app for %s failed", self._where())
            self.hand_back(self._fail_500)
        else:
            log.exception("WSGI app for %s failed mid-response: closing the connection", self._where())
            self.hand_back(self._abort, b"")

    def _emit(self, body: bytes, more: bool) -> None:
        """Frame ``body`` (the last of the response unless ``more``) and hand it over."""
        if self.status is None:
            raise AssertionError("the app returned without calling start_response")
        parts = []
        if not self.head_sent:
            parts.append(self._head(len(body), more))
        if body and not self.no_body:
            if 0 <= self.declared < self.length + len(body):
                raise ValueError(f"more body than the Content-Length ({self.declared}) the app gave")
            self.length += len(body)
            parts.append(b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else body)
        if more:
            if parts:
                self._hand(_DELIVER, b"".join(parts))
            return
        if self.chunked:
            parts.append(LAST_CHUNK)
        elif self.length < self.declared and not self.no_body:
            log.error("WSGI app for %s: %d bytes of the Content-Length (%d) it gave: closing the connection",
                      self._where(), self.length, self.declared)
            self._hand(_ABORT, b"".join(parts))
            return
        self._hand(_COMPLETE, b"".join(parts))

    def _head(self, first: int, more: bool) -> bytes:
        code = self.code
        flow = self.proto  # compiled: the protocol's and its context's classes (C fields)
        ctx = flow.ctx
        facts = self.facts  # what start_response's check_headers found
        self.declared = (facts >> 2) - 1
        # the status line and the app's headers as one str, encoded once
        headers = self.headers
        text = [": "] * (3 + 4 * len(headers))  # at its final size: no reallocation as it fills
        text[0], text[1], text[2] = "HTTP/1.1 ", self.status, "\r\n"
        i = 3
        for name, value in headers:
            text[i] = name  # (text[i + 1] is ": ")
            text[i + 2] = value
            text[i + 3] = "\r\n"
            i += 4
        parts = ["".join(text).encode("latin-1")]
        if not facts & OWN_SERVER:
            parts.append(ctx.server_line)
        if not facts & OWN_DATE:
            parts.append(ctx.date_line)
        bodyless = no_content(code)
        head_only = self.request.method == b"HEAD"
        self.no_body = bodyless or head_only
        # the app produced the whole body a GET would get: a HEAD's length is known
        self.chunked, self.keep_alive = end_head(parts, self.request.version, self.declared >= 0 or bodyless, more,
                                                 first, head_only, True, self.keep_alive and not ctx.draining
                                                 and (self.body is None or self.body.done))
        self.head_sent = True
        return b"".join(parts)

    def _hand(self, fn: Callable[["_Call", bytes], None], data: bytes) -> None:
        """Hand ``data`` to the reactor thread (``fn(self, data)``, a method of
        the class, delivers it: no bound method per piece), waiting
        first while the connection is above high water or that much is on its way."""
        if self.blocked or self.handed - self.delivered > self.high_water:
            self._wait()
        if self.gone:
            close_files(data)
            raise ClientDisconnected("the client has disconnected")
        self.handed += len(data)
        self.hand_back(fn, self, data)

    def _held_back(self) -> bool:
        return not self.gone and (self.blocked or self.handed - self.delivered > self.high_water)

    def _wait(self) -> None:
        """Until the output is below high water or the client is gone. The
        lock is published first, then the condition checked again: a change
        the reactor made before it saw the lock is seen here."""
        wake = threading.Lock()
        wake.acquire()
        while self._held_back():
            self.waiter = wake
            if not self._held_back():
                self.waiter = None
                return
            wake.acquire(timeout=1.0)
            self.waiter = None

    # --- the reactor's side --------------------------------------------------------------------

    def _deliver(self, data: bytes) -> None:
        proto = self.proto
        if self.gone or proto.state != WAITING:
            self.lost()
            return
        driver = proto.driver
        driver.deliver(data)
        blocked = not self.gone and driver.write_blocked()
        self.delivered += len(data)
        self.blocked = blocked
        self._wake()
        if blocked:
            driver.when_drained(self._drained)

    def _drained(self) -> None:
        self.blocked = False
        self._wake()

    def _wake(self) -> None:
        """Wake the thread if it waits (``_wait``)."""
        wake = self.waiter
        if wake is not None:
            self.waiter = None
            try:
                wake.release()
            except RuntimeError:  # released already: the thread has not taken it back yet
                pass

    def lost(self) -> None:
        """The connection is gone (the protocol's connection_lost): the thread stops."""
        if self.body is not None:
            self.body.fail()
        self.gone = True
        self._wake()

    def eof(self) -> None:
        """The client has half-closed: it may still read the response (a
        streamed body not all here never will be)."""
        if self.body is not None:
            self.body.fail()

    # the protocol's BodySink (a streamed body: serve_stream)

    def body_data(self, data: bytes) -> None:
        body = self.body
        body.put(data)
        if self.deferred and body.size > body.limit:
            self._go()

    def body_end(self, trailers) -> None:
        self.body.end()
        if self.deferred:
            self._go()

    def _go(self) -> None:
        self.deferred = False
        self.hand_back(self._start)  # the next turn: not in the middle of the protocol's parse

    def _start(self) -> None:
        """A chunked body is long (it streams) or whole (the app gets it so)."""
        if self.gone:
            return
        body = self.body
        if body.done and body.size <= body.limit:
            self.request.body = body.read()
            self.body = None
        if not self.proto.ctx.submit(_RUN, self, None):  # the pool's queue is full
            if self._end():
                proto = self.proto
                self.request.keep_alive = False
                proto.end_wait()
                proto.write_response(self.request, None, 503)
                proto.after_wait()

    def body_failed(self, status: int) -> bool:
        """The body cannot be had (408, 413, 400): the app's reads fail and
        its response goes nowhere; the protocol answers ``status`` if the
        head has not been handed over."""
        unanswered = not self.head_sent
        self.proto.ctx.asgi_calls.pop(self.proto, None)
        self.lost()
        return unanswered

    def _end(self) -> bool:
        """The call is over; whether the protocol still waits for it."""
        proto = self.proto  # compiled: the protocol's and its context's classes (C fields)
        ctx = proto.ctx
        ctx.asgi_calls.pop(proto, None)
        return not self.gone and proto.state == WAITING

    def _complete(self, last) -> None:
        """The last of the response (bytes, or parts with a file)."""
        if not self._end():
            close_files(last)
            return
        request = self.request
        request.keep_alive = self.keep_alive
        proto = self.proto  # compiled: the protocol's class (a C call to answer_waited)
        proto.answer_waited(request, last, self.code, self.length, type(last) is list and len(last) > 1)

    def _fail_500(self) -> None:
        if self._end():
            self.proto.fail_waited(self.request)

    def _abort(self, last: bytes) -> None:
        """Started but cannot be finished: what there is, then close."""
        if not self._end():
            return
        proto = self.proto
        if last:
            proto.driver.deliver(last)
        proto.abort_waited(self.request, self.code, self.length)


# the call's steps as functions of the class, handed over with the call as
# their first argument (no bound method per request or piece); taken from
# the class's dict (compiled, the Python-callable entries of its methods)
_RUN = _Call.__dict__["run"]
_COMPLETE = _Call.__dict__["_complete"]
_DELIVER = _Call.__dict__["_deliver"]
_ABORT = _Call.__dict__["_abort"]
