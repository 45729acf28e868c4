"""HTTP/1.1 server protocol, sans-IO: bytes in, requests out; responses in, bytes out.

``HttpProtocol.data_received(data)`` parses with httptools (llhttp) and hands
each complete request to ``on_request``, which a subclass implements (the
dispatcher, ``prefork.dispatch.HttpServerProtocol``: routes, handlers, the
access log); the responses it writes with ``write_response`` come back as the
bytes to send. This module holds the state machine, the limits and timeouts,
the framing (lengths, chunked bodies, trailers, 100-continue, pipelining in
order) and the serialization of response heads and error pages. The driver
(the epoll ``Connection``, or the asyncio adapter) reads ``closing``,
``linger`` and ``deadline`` after each call and calls ``timeout(now)`` when
the deadline has passed. No socket call happens here, so the same code runs on
every backend and is tested fed whole, byte by byte and pipelined.

Request bodies are gathered whole for ``on_request`` -- unless, when the
head of a request with a body is complete and its turn has come (at once, or,
queued behind another, when the ones before it are answered: meanwhile its
body waits, reading paused once it begins), the subclass's
``stream_request`` returns a ``BodySink`` for it (a route that
takes its body as a stream, e.g. an ASGI app): then the request is the
route's from its head on, its body goes to the sink as it is parsed, and
reading stops after each read the sink has not taken (``want_body`` reads on,
sending a 100 Continue the first time if one is owed). ``max_body``,
``body_timeout`` (while reading for it) and the framing errors still apply:
the sink is told (``body_failed``) and, if its route has not begun to answer,
the protocol answers the error as for any request; else it closes. A route
that answers before its body has all come ends the connection (a lingering
close, as after an error: the rest is read and dropped).

Memory: an idle keep-alive connection holds only its protocol (a slotted
object). The httptools parser and the per-request state live in a
``Parser`` that is borrowed from the worker's pool when a request starts and
returned when it ends on a message boundary.
"""

from __future__ import annotations

import time
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from typing import Callable, Protocol

import httptools

from ..config import HttpConfig
from ..messages import FileChunk, Request, Response, no_content, pack_peer
from .http_parser import BODY, CLOSED, HEAD, IDLE, WAITING, Parser, ParseError, Stop

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
        self.parser_pool: list[Parser] = []
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


class BodySink(Protocol):
    """Where a streamed request body goes (``HttpProtocol.stream_request``):
    pieces as they are parsed, its end (with a chunked body's trailer
    fields), or the error that cuts it. After each read whose body it was
    given the protocol reads no more until the consumer calls ``want_body``."""

    def body_data(self, data: bytes) -> None: ...

    def body_end(self, trailers) -> None: ...

    def body_failed(self, status: int) -> bool:
        """The body cannot be had (``status``: 400, 408, 413, 431). True when its
        route has not begun to answer: the protocol answers ``status`` for it."""


PENDING_MAX = 64  # pipelined requests queued behind one in the pool before reading pauses
# Responses one call may produce before the requests that follow wait, held,
# for them to be sent (``resume``); a call also holds after ``high_water`` bytes
# of larger responses, and after a file body (one open file per connection).
BURST = 32


class HttpProtocol:
    """One HTTP/1.1 connection's protocol state.

    Output is returned from each call as ``bytes`` -- or, when a response
    carries a file, as a list of ``bytes`` and ``FileChunk`` parts. A response
    computed in the thread pool arrives later: it is handed to
    ``driver.deliver(out)``, and ``driver.pause_reading()`` /
    ``driver.resume_reading()`` stop reading while a request waits in the pool.
    After a file body, or ``BURST`` responses in one call, the protocol is
    ``held`` (it calls ``driver.hold()``): the requests that follow are queued
    until the driver has sent the output and calls ``resume()``.

    What a request gets for an answer is a subclass's business: it implements
    ``on_request`` and ``dispatch`` (``prefork.dispatch.HttpServerProtocol``)."""

    __slots__ = ("ctx", "closing", "linger", "deadline", "state", "_p", "_out", "_requests", "peer",
                 "driver", "_pending", "_stopped", "_paused", "held")

    def __init__(self, ctx: HttpContext, peer=None, driver=None):
        self.ctx = ctx
        self.peer = pack_peer(peer)
        self.driver = driver
        self.closing = False     # close once the output is flushed
        self.linger = False      # ...and drain unread input first (error responses)
        self.state = IDLE
        self.deadline = ctx.clock() + ctx.config.header_timeout
        self._p: Parser | None = None
        self._out: list | None = None
        self._requests = 0   # requests on this connection (keepalive_requests)
        self._pending: deque | None = None     # requests (or an error status) waiting their turn
        self._stopped = False                   # nothing more is parsed (an error is queued)
        self._paused = False
        self.held = False    # waiting (state WAITING) for the driver to send the output: resume()

    # --- input from the driver ------------------------------------------------

    def data_received(self, data):
        if self.state == CLOSED or self._stopped:
            return b""
        p = self._p
        if p is None:
            pool = self.ctx.parser_pool
            p = self._p = pool.pop() if pool else Parser(self.ctx.config)
            p.proto = self
        self._out = out = []
        if self.state != BODY:
            p.head_bytes += len(data)
        try:
            while True:
                try:
                    p.parser.feed_data(data)
                    break
                except httptools.HttpParserUpgrade as exc:
                    # Upgrade (h2c, websocket) without a body (_special_head
                    # refuses one with a body): not supported, so ignored as RFC
                    # 9110 7.8 allows -- the request was answered; the parser
                    # stopped at the end of its head, so the rest goes to a
                    # fresh parser (in this loop: a thousand of them in one read
                    # must not recurse).
                    self._release(p, reuse=False)
                    offset = exc.args[0] if exc.args else len(data)
                    data = memoryview(data)[offset:]
                    if self.state == CLOSED or self._stopped or not len(data):
                        return self._take()
                    pool = self.ctx.parser_pool
                    p = self._p = pool.pop() if pool else Parser(self.ctx.config)
                    p.proto = self
                    if self.state != BODY:
                        p.head_bytes += len(data)
        except httptools.HttpParserError as exc:
            # httptools re-raises an exception from a callback as
            # HttpParserCallbackError, with ours as the context.
            cause = exc.__context__
            if isinstance(cause, ParseError):
                self._fail(cause.status)
            elif not isinstance(cause, Stop):
                self._fail(400)
        else:
            if p.in_message and not p.head_done:
                if self.state == IDLE:  # a request began and its head is not all here yet
                    self._set_state(HEAD)
                    self.deadline = self.ctx.clock() + p.header_timeout
                if self.state == HEAD or self.state == WAITING:
                    self._check_head_size(p)
        if self.state == CLOSED or self._stopped:
            self._release(p, reuse=False)
        elif not p.in_message:  # on a message boundary: the parser goes back to the pool
            self._p = p.proto = None
            pool = self.ctx.parser_pool
            if p.reusable and len(pool) < self.ctx.parser_pool_max:
                pool.append(p)
        if not out:
            self._out = None
            return b""
        if len(out) == 1 and type(out[0]) is bytes:
            self._out = None
            return out[0]
        return self._take()

    def _take(self):
        """The output gathered in ``_out``: bytes, or parts when a file is in it."""
        out = self._out
        self._out = None
        if not out:
            return b""
        for part in out:
            if type(part) is FileChunk:
                return out
        return b"".join(out)

    def eof_received(self):
        """The peer closed its side: finish (a partial request is dropped)."""
        if self.state == WAITING or self._pending:
            # the peer half-closed after sending: answer what was asked, then close
            p = self._p
            if p is not None and p.sink is not None:
                self._sink_drop(p)  # a streamed body that will not come whole (its route hears of the EOF)
            if self._stopped:
                return b""  # already queued (or an error is): once is enough
            self._stopped = True
            if self._pending is None:
                self._pending = deque()
            self._pending.append(0)
            return b""
        self.connection_lost()
        return b""

    def connection_lost(self) -> None:
        """The driver closed the connection: forget everything queued."""
        self._set_state(CLOSED)
        self.closing = True
        self.deadline = 0.0
        self._pending = None
        if self._p is not None:
            self._release(self._p, reuse=False)

    def timeout(self, now: float):
        """The deadline has passed: 408 mid-request, a quiet close when idle."""
        if self.state in (HEAD, BODY):
            self._out = []
            self._fail(408)
            if self._p is not None:
                self._release(self._p, reuse=False)
            return self._take()
        if self.state == WAITING:
            p = self._p
            if p is not None and p.sink is not None:  # a streamed body is late, as in BODY
                self._out = []
                self._fail(408)
                return self._take()
            self.deadline = 0.0  # the pool's answer is what we wait for
            return b""
        self.connection_lost()
        return b""

    # --- the subclass's part: what to do with a request -------------------------------

    def on_request(self, method: bytes, target: bytes, version: str, headers: list, body: bytes,
                   keep_alive: bool, trailers=()) -> None:
        """A whole request has arrived (called by the parser, mid-``data_received``):
        answer it with ``write_response``, or ``wait()`` for its answer, or
        ``_queue`` a ``Request`` while an earlier one is still ``WAITING``."""
        raise NotImplementedError

    def dispatch(self, request: Request) -> None:
        """A queued request's turn has come (the one before it is answered)."""
        raise NotImplementedError

    def stream_request(self, method: bytes, target: bytes, version: str, headers: list,
                       keep_alive: bool) -> BodySink | None:
        """The head of a request with a body is complete and its turn has come:
        return a ``BodySink`` to hand the request to its route now and stream
        the body to it (the route ``wait()``s meanwhile, as for the pool), or
        None to gather the body whole for ``on_request``."""
        return None

    # --- a streamed request body (stream_request) -------------------------------------

    def _stream_body(self, sink: BodySink, data: bytes) -> None:
        """A piece of a streamed body: to the sink; then read no more (and no
        body deadline: the wait is the consumer's) until it is taken."""
        sink.body_data(data)
        self.deadline = 0.0
        if not self._paused and self.driver is not None:
            self._paused = True
            self.driver.pause_reading()

    def _stream_end(self, sink: BodySink, trailers) -> None:
        """A streamed body is whole: reading resumes as for any waiting
        request (``listen``; pipelined requests queue behind it)."""
        self._sink_counts(-1)
        self.deadline = 0.0
        if not self._paused and self.driver is not None and self.state == WAITING:
            self._paused = True
            self.driver.pause_reading()
        sink.body_end(trailers)

    def _sink_set(self, p: Parser, sink: BodySink) -> None:
        p.sink = sink
        self._sink_counts(1)

    def _sink_drop(self, p: Parser) -> None:
        p.sink = None
        self._sink_counts(-1)

    def _sink_counts(self, streaming: int) -> None:
        """/status: while its streamed body comes, a connection whose request
        its route has (WAITING) counts as reading, not pooled (``streaming``:
        1 as the body begins to go to a sink, -1 when it no longer does)."""
        if self.state == WAITING and not self.held:
            ctx = self.ctx
            ctx.reading += streaming
            ctx.pooled -= streaming

    def want_body(self) -> None:
        """A streamed body's consumer has taken what it was given and wants
        more: read on, with the body deadline, and send the 100 Continue the
        client may be waiting for (the first time; none if the body has begun)."""
        p = self._p
        driver = self.driver
        if p is None or p.sink is None or self.state != WAITING or driver is None:
            return
        out = b""
        if p.continue_due:
            p.continue_due = False
            if not p.body_len:
                out = _CONTINUE
        self.deadline = self.ctx.clock() + self.ctx.config.body_timeout
        if self._paused:
            self._paused = False
            driver.resume_reading()
        driver.deliver(out)  # and the driver arms the deadline

    # --- flow control: requests in order, output in bounded bursts ----------------------

    def _queue(self, item) -> None:
        if self._pending is None:
            self._pending = deque()
        self._pending.append(item)
        if len(self._pending) >= PENDING_MAX and not self._paused and self.driver is not None:
            self._paused = True
            self.driver.pause_reading()

    def wait(self) -> None:
        """The answer to the current request is computed elsewhere (the thread
        pool): requests that follow queue, and reading stops meanwhile."""
        self._set_state(WAITING)
        self.deadline = 0.0
        if not self._paused and self.driver is not None:
            # read no more meanwhile: what the client sends waits in the kernel's buffer
            self._paused = True
            self.driver.pause_reading()

    def listen(self) -> None:
        """While ``WAITING``, read again: pipelined input queues as usual (up
        to ``PENDING_MAX``), and the peer's EOF or reset is seen (an ASGI app
        waiting for ``http.disconnect``)."""
        p = self._p
        if p is not None and p.head_done and p.in_message and p.sink is None:
            return  # a queued request's body has begun: the rest waits for its turn
        if self._paused and self.driver is not None and self.state == WAITING:
            self._paused = False
            self.driver.resume_reading()

    def end_wait(self, out=b"") -> None:
        """The answer to the request this protocol waited for (``wait``) is
        here: back to IDLE, with ``out`` (already framed: bytes, or a list of
        parts) as the first output. If its streamed body has not all come,
        nothing more is read but to drop it: its answer must not keep the
        connection alive (a lingering close follows)."""
        p = self._p
        if p is not None and p.sink is not None:
            self._sink_drop(p)
            self._stopped = True
            self.linger = True
        self._out = list(out) if type(out) is list else [out] if out else []
        self._set_state(IDLE)

    def after_wait(self) -> None:
        """That answer is written: answer the requests queued meanwhile and
        hand everything to the driver."""
        self._run_pending()
        out = self._take()
        if self.driver is not None:
            self.driver.deliver(out)

    def _run_pending(self) -> None:
        """Answer the requests queued behind a pooled or held one, up to the
        next wait; then the next request's head or body may come."""
        pending = self._pending
        while pending and self.state == IDLE:
            item = pending.popleft()
            if type(item) is int:  # an error (or the peer's EOF) queued behind the requests
                if item:
                    self._fail(item, now=True)
                else:
                    self.connection_lost()
            else:
                self.dispatch(item)
        if not pending:
            self._pending = None
            if self._paused and self.state != WAITING:
                self._paused = False
                self.driver.resume_reading()
        if self.state == IDLE and self._p is not None and self._p.in_message:
            p = self._p
            if p.head_done and self._stream_queued(p):
                return  # its route has it now, and the body parsed so far
            if p.continue_due:
                # its turn has come: now the client may send the body it holds back
                p.continue_due = False
                if not p.body_len:
                    self._out.append(_CONTINUE)
                self._set_state(BODY)
                self.deadline = self.ctx.clock() + self.ctx.config.body_timeout
            elif p.head_done:  # its body is arriving
                self._set_state(BODY)
                self.deadline = self.ctx.clock() + self.ctx.config.body_timeout
            else:
                self._set_state(HEAD)  # the next request is already arriving
                self.deadline = self.ctx.clock() + self.ctx.config.header_timeout

    def _stream_queued(self, p: Parser) -> bool:
        """The turn of a request whose head came while another was answered
        (its body part-read, held in the parser): as at head time, its route
        may take it now (``stream_request``), the body so far and the rest as
        it comes, the 100 Continue (still due if none of it came) at the
        consumer's first ``want_body``. True when it did."""
        sink = self.stream_request(p.method, p.url, p.version, p.headers, p.parser.should_keep_alive())
        if sink is None:
            return False
        self._sink_set(p, sink)
        body = p.body
        if body:
            p.body = None
            self._stream_body(sink, body[0] if len(body) == 1 else b"".join(body))
        return True

    def abort(self) -> None:
        """The answer being sent cannot be finished (a route that failed mid-way):
        close now, so the client sees it cut, not complete."""
        self._finish()
        if self.driver is not None:
            self.driver.abort()

    def _hold(self) -> None:
        """Enough output for one go: queue what follows until it is sent."""
        if self.driver is None:
            return  # nobody would call resume()
        self.state = WAITING  # as for the pool (requests queue), but not counted as pooled
        self.held = True
        self.deadline = 0.0   # the driver's send timeout is what applies now
        self.driver.hold()

    def resume(self):
        """The driver has sent the output of a ``held`` protocol: answer the
        requests queued meanwhile (up to the next hold). Returns the output,
        as ``data_received`` does."""
        if not self.held or self.state != WAITING:
            return b""
        self.held = False
        self.state = IDLE
        self.deadline = self.ctx.clock() + self.ctx.keepalive_timeout
        self._out = []
        self._run_pending()
        return self._take()

    def write_response(self, request: Request, response: Response | None, status: int = 0) -> None:
        """Queue ``response`` (or, when it is None, an error page for ``status``)
        and move on: keep alive, close, or hold. ``ctx.on_response``, when set,
        is told the request, the status and the length of the content sent."""
        ctx = self.ctx
        head_only = request.method == b"HEAD"
        http10 = request.version == "1.0"
        hold = False
        if response is None:
            extra = ()
            if status >= 500:
                if status == 503:
                    extra = ((b"Retry-After", ctx.retry_after),)
                else:
                    request.keep_alive = False
                    self.linger = True
            status, length = self._error_response(status, request.keep_alive, head_only, http10, extra)
        else:
            status = response.status
            length = response.length
            head = ctx.head(status, response.content_type, length, response.headers, request.keep_alive, http10)
            file = response.file
            if head_only or not length:
                self._out.append(head)
                length = 0
                if file is not None:
                    file.close()
            elif file is not None:
                self._out.append(head + response.body if response.body else head)
                self._out.append(file)
                hold = True  # after it: one file body at a time per connection
            else:
                self._out.append(head + response.body)
        self.answered(request, status, length, hold)

    def answered(self, request: Request, status: int, length: int, hold: bool = False) -> None:
        """The response to ``request`` is in ``_out``: log it, then keep alive, close or hold."""
        ctx = self.ctx
        if ctx.on_response is not None:
            ctx.on_response(request, status, length)
        if not request.keep_alive:
            self._finish()
        elif self.state != WAITING:
            self._set_state(IDLE)
            self.deadline = ctx.clock() + ctx.keepalive_timeout
            if hold or len(self._out) >= BURST or (length > 4096 and self._out_bytes() > ctx.config.high_water):
                self._hold()

    # --- helpers ---------------------------------------------------------------

    def _out_bytes(self) -> int:
        """The size of this call's output so far (files included)."""
        n = 0
        for part in self._out:
            n += part.count if type(part) is FileChunk else len(part)
        return n

    def _release(self, p: Parser, reuse: bool) -> None:
        self._p = None
        p.proto = None
        if reuse:
            pool = self.ctx.parser_pool
            if len(pool) < self.ctx.parser_pool_max:
                pool.append(p)

    def _check_head_size(self, p: Parser) -> None:
        """Bound what an endless head may make us buffer: httptools holds a
        partial header field until it completes, so one huge field is only
        seen here, by the bytes received since the request began."""
        config = self.ctx.config
        if p.head_bytes > config.max_header_bytes + config.max_request_line:
            self._fail(431)

    def _special_head(self, p: Parser) -> None:
        """The head of a request with a body or an Expect header is complete."""
        config = self.ctx.config
        if p.chunked and p.version == "1.0":
            # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing (nginx: 400)
            raise ParseError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if p.content_length > config.max_body:
            raise ParseError(413, "request body too large")
        has_body = p.chunked or p.content_length > 0
        if has_body and p.parser.should_upgrade():
            # llhttp would stop at the end of this head and skip the body, whose
            # bytes must never be parsed as a request: Upgrade is not supported,
            # and a request that asks for it with a body is refused (and closed)
            raise ParseError(400, "Upgrade with a request body")
        if p.expect and p.expect != b"100-continue":
            raise ParseError(417, "unsupported expectation")
        if has_body and self.state != WAITING and not self._pending:
            sink = self.stream_request(p.method, p.url, p.version, p.headers, p.parser.should_keep_alive())
            if sink is not None:
                # the request is its route's now; the 100 Continue waits for want_body()
                self._sink_set(p, sink)
                p.body_len = 0
                p.continue_due = bool(p.expect) and p.version == "1.1"
                return
        if p.expect:
            if has_body and p.version == "1.1":
                if self.state == WAITING:
                    # an earlier request is still in the pool: the 100 goes out
                    # when this one is next (_on_result), unless the body comes anyway
                    p.continue_due = True
                else:
                    self._out.append(_CONTINUE)
        if has_body:
            p.body_len = 0
            if self.state == WAITING:
                return  # the body of a request queued behind one in the pool
            self._set_state(BODY)
            self.deadline = self.ctx.clock() + config.body_timeout

    def _body_progress(self) -> None:
        if self.state == BODY:
            self.deadline = self.ctx.clock() + self.ctx.config.body_timeout
        elif self.state == WAITING and not self._paused and self.driver is not None:
            # the body of a request queued behind another: the rest waits in the
            # kernel's buffer for its turn (its route may want it streamed)
            self._paused = True
            self.driver.pause_reading()

    def _error_response(self, status: int, keep_alive: bool, head_only: bool = False,
                        http10: bool = False, extra: list | None = None) -> tuple[int, int]:
        body = self.ctx.error_body(status)
        head = self.ctx.head(status, b"text/html", len(body), extra or (), keep_alive, http10)
        self._out.append(head if head_only else head + body)
        return status, 0 if head_only else len(body)

    def _fail(self, status: int, now: bool = False) -> None:
        """Answer a bad request with ``status`` and close after a lingering read.
        A negative ``status`` (as queued) answers a HEAD request: no content."""
        if self.state == CLOSED:
            return  # already answered the last request; nothing more is said
        head_only = status < 0 or self._failing_head()
        p = self._p
        if p is not None and p.sink is not None:
            # a streamed body failed: its request is the one being answered
            sink = p.sink
            self._sink_drop(p)
            if sink.body_failed(abs(status)):  # its route has not begun to answer: the error is the answer
                self._error_response(abs(status), False, head_only)
                self.linger = True
            self._finish()
            return
        if not now and (self.state == WAITING or self._pending):
            # answers to earlier requests are still to come: this one goes after them
            self._stopped = True
            self._queue(-abs(status) if head_only else status)
            return
        self._error_response(abs(status), False, head_only)
        self.linger = True
        self._finish()

    def _failing_head(self) -> bool:
        """Is the request being parsed (now failing) a HEAD? Its method is known
        once its target has begun (before that llhttp still holds the last one's)."""
        p = self._p
        if p is None or not p.in_message or not p.url:
            return False
        return p.parser.get_method() == b"HEAD"

    def _set_state(self, new: int) -> None:
        """Change state, keeping the context's counts (for /status) right."""
        old = self.state
        if old == new:
            return
        ctx = self.ctx
        if old == HEAD or old == BODY:
            ctx.reading -= 1
        elif old == WAITING:
            if self.held:
                self.held = False  # held for its output, not counted as pooled
            elif self._p is not None and self._p.sink is not None:
                ctx.reading -= 1  # a streamed body was coming (_sink_counts)
            else:
                ctx.pooled -= 1
        if new == HEAD or new == BODY:
            ctx.reading += 1
        elif new == WAITING:
            ctx.pooled += 1
        self.state = new

    # --- what the driver reads at a graceful stop (driver.DrivenProtocol) ------------

    @property
    def idle(self) -> bool:
        """Between requests: nothing half-received, nothing owed."""
        return self.state == IDLE

    def grace(self, until: float) -> None:
        """Graceful stop: idle, give up by ``until`` (a request may still be on its way)."""
        if not self.deadline or self.deadline > until:
            self.deadline = until

    def _finish(self) -> None:
        self._set_state(CLOSED)
        self.closing = True
        self.deadline = 0.0
        self._pending = None

