"""HTTP/1.1 server protocol, sans-IO: bytes in, requests out; responses in, bytes out.

``HttpProtocol.data_received(data)`` parses with httptools (llhttp) and hands
each complete request to ``on_request``, which a subclass implements (the
dispatcher, ``prefork.dispatch.HttpServerProtocol``: routes, handlers, the
access log); the responses it writes with ``write_response`` come back as the
bytes to send. It holds the state machine, the limits and timeouts, the
framing (lengths, chunked bodies, trailers, 100-continue, pipelining in
order); ``HttpContext`` serializes response heads and error pages. The
driver (the epoll ``Connection``, or the asyncio adapter) reads ``closing``,
``linger`` and ``deadline`` after each call and calls ``timeout(now)`` when
the deadline has passed. No socket call happens here, so the same code runs on
every backend and is tested fed whole, byte by byte and pipelined.

``HttpProtocol`` is in four modules, one concern each: this one (input, the
state machine, framing, limits, timeouts, writing responses, errors),
``http_flow.py`` (``FlowControl``: waiting for an answer computed elsewhere,
queued pipelined requests, held output), ``http_stream.py`` (``StreamedBody``
and ``BodySink``: the streamed-body mode below) and ``http_response.py``
(``HttpContext``, ``status_line``: response heads and error pages). Every
public name is importable from here, and so are the connection states
(``states.py``).

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

from collections import deque
import httptools

from ..messages import FileChunk, Request, Response, pack_peer
from .http_flow import BURST, PENDING_MAX
from .http_parser import Parser, ParseError, Stop
from .http_response import _CONTINUE, HttpContext, status_line
from .http_stream import BodySink, StreamedBody
from .states import BODY, CLOSED, HEAD, IDLE, UPGRADED, WAITING

__all__ = ["BODY", "BURST", "CLOSED", "HEAD", "IDLE", "PENDING_MAX", "UPGRADED", "WAITING", "BodySink", "HttpContext",
           "HttpProtocol", "status_line"]


class HttpProtocol(StreamedBody):
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
        self._paused = False     # reading stopped by the protocol; None: once input comes (wait())
        self.held = False    # waiting (state WAITING) for the driver to send the output: resume()

    # --- input from the driver ------------------------------------------------

    def data_received(self, data):
        if self._paused is None and self.state == WAITING and not self.held:
            self._lazy_pause()  # input while a request waits (wait()): this read, then no more
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
                    # Upgrade without a body (_special_head refuses one with a
                    # body). Switched (a WebSocket route, switch_to): the rest
                    # is the new protocol's. Otherwise (h2c, or not a
                    # WebSocket route) ignored as RFC 9110 7.8 allows -- the
                    # request was answered; the parser stopped at the end of
                    # its head, so the rest goes to a fresh parser (in this
                    # loop: a thousand of them in one read must not recurse).
                    self._release(p, reuse=False)
                    offset = exc.args[0] if exc.args else len(data)
                    data = memoryview(data)[offset:]
                    if self.state == UPGRADED:
                        if len(data):
                            out.append(self.driver.proto.data_received(bytes(data)))
                        return self._take()
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
        if (self._paused is None and self.state == WAITING and (self._pending or self._p is not None)
                and not self.held):
            # this read began a wait and went on past its request (pipelined, or its
            # own body still to come): read no more, as wait() once did at once
            self._lazy_pause()
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

    # --- handing the connection over (an Upgrade) -----------------------------------

    def upgradable(self, request: Request) -> bool:
        """Is ``request`` the one llhttp has just stopped at for its Upgrade
        header, with nothing queued before it? Only then may the connection
        switch protocols (what follows its head is not HTTP)."""
        p = self._p
        # p.connection first: llhttp upgrades only with "Connection: upgrade",
        # and nearly no request has a Connection field (one C test for them)
        return (p is not None and p.connection and p.headers is request.headers and self.state == IDLE
                and not self._pending and p.parser.should_upgrade())

    def switch_to(self, new, head: bytes, request: Request) -> None:
        """Hand the connection to ``new`` (a ``DrivenProtocol`` with a
        ``start(out)``: the WebSocket protocol) after ``head`` (the 101): the
        driver drives ``new`` from now on, and what the client sent after the
        request's head is ``new``'s (``data_received`` passes it on). Called
        from the request's dispatch, or later (``end_wait``'s place: an app
        that accepts after a wait; what a client sent meanwhile, before the
        101, breaks RFC 6455 4.1 and is dropped)."""
        ctx = self.ctx
        if ctx.on_response is not None:
            ctx.on_response(request, 101, 0)
        self._set_state(UPGRADED)
        self.deadline = 0.0
        self._pending = None
        driver = self.driver
        out = self._out
        if out is not None:  # inside data_received: the rest of this read follows
            out.append(head)
            driver.switch(new)
            new.start(out)
            return
        if self._p is not None:
            self._release(self._p, reuse=False)
        out = [head]
        driver.switch(new)
        new.start(out)
        driver.deliver(b"".join(out))

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
            sink = self.stream_request(p.method, p.url, p.version, p.headers, p.keep_alive)
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

