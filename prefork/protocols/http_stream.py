"""The streamed-body mode of the HTTP/1.1 protocol (``http.py``): a route
that takes a request's body as a stream (``HttpProtocol.stream_request``
returns a ``BodySink``, e.g. an ASGI app's call) gets it piece by piece as it
is parsed, and the protocol reads no more after each piece until the consumer
calls ``want_body`` (which sends the 100 Continue the client may wait for, the
first time). ``StreamedBody`` is that part of ``HttpProtocol`` (a mixin with no
state of its own: the sink is the parser's, ``Parser.sink``).
"""

from __future__ import annotations

from typing import Protocol

from .http_flow import FlowControl
from .http_parser import Parser
from .http_response import _CONTINUE
from .states import WAITING


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


class StreamedBody(FlowControl):
    """``HttpProtocol``'s streamed-body methods (they use its state: ``_p``,
    ``state``, ``held``, ``_paused``, ``deadline``, ``driver``, ``ctx``)."""

    __slots__ = ()

    def _stream_queued(self, p: Parser) -> bool:
        """The turn of a request whose head came while another was answered
        (its body part-read, held in the parser): as at head time, its route
        may take it now (``stream_request``), the body so far and the rest as
        it comes, the 100 Continue (still due if none of it came) at the
        consumer's first ``want_body``. True when it did."""
        sink = self.stream_request(p.method, p.url, p.version, p.headers, p.keep_alive)
        if sink is None:
            return False
        self._sink_set(p, sink)
        body = p.body
        if body:
            p.body = None
            self._stream_body(sink, body[0] if len(body) == 1 else b"".join(body))
        return True

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
