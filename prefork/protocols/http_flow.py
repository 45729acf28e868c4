"""Flow control of the HTTP/1.1 protocol (``http.py``): requests answered in
order and output in bounded bursts. A request whose answer is computed
elsewhere (the thread pool, an ASGI app) makes the connection wait
(``wait``/``listen``/``end_wait``/``after_wait``): the requests pipelined
behind it queue (``_queue``, reading pauses past ``PENDING_MAX``) and are
answered at their turn (``_run_pending``). After ``BURST`` responses in one
call, ``high_water`` bytes of larger ones, or a file body, the protocol is
``held`` until the driver has sent the output (``resume``). ``FlowControl`` is
that part of ``HttpProtocol`` (a mixin with no state of its own).
"""

from __future__ import annotations

from collections import deque

from .states import BODY, HEAD, IDLE, WAITING
from .http_response import _CONTINUE

PENDING_MAX = 64  # pipelined requests queued behind one in the pool before reading pauses
# Responses one call may produce before the requests that follow wait, held,
# for them to be sent (``resume``); a call also holds after ``high_water`` bytes
# of larger responses, and after a file body (one open file per connection).
BURST = 32


class FlowControl:
    """``HttpProtocol``'s waiting, queueing and holding (they use its state:
    ``state``, ``_pending``, ``_paused``, ``held``, ``_p``, ``_out``, ``deadline``,
    ``driver``, ``ctx``, and its ``dispatch``, ``_fail``, ``_set_state``, ``_take``)."""

    __slots__ = ()

    # HttpProtocol's own steps, declared here (http_flow.pxd) so that the
    # compiled calls of this class reach them as C calls through its table
    def _set_state(self, new: int) -> None:
        raise NotImplementedError

    def answered(self, request, status: int, length: int, hold: bool = False) -> None:
        raise NotImplementedError

    def _take(self):
        raise NotImplementedError

    def on_request(self, method: bytes, target: bytes, version: str, headers: list, body: bytes,
                   keep_alive: bool, trailers=()) -> None:
        raise NotImplementedError

    def _queue(self, item) -> None:
        if self._pending is None:
            self._pending = deque()
        self._pending.append(item)
        if len(self._pending) >= PENDING_MAX and not self._paused and self.driver is not None:
            self._paused = True
            self.driver.pause_reading()

    def wait(self) -> None:
        """The answer to the current request is computed elsewhere (the thread
        pool, an ASGI app): requests that follow queue, and reading stops
        meanwhile -- lazily: ``_paused`` None means "pause once input comes"
        (``data_received`` does, after queueing that read: one read at most
        beyond the waiting request, as when it paused here). Most clients send
        nothing until they are answered, so most waits never pause."""
        self._set_state(WAITING)
        self.deadline = 0.0
        if not self._paused and self.driver is not None:
            self._paused = None

    def _lazy_pause(self) -> None:
        """Input came while ``WAITING`` (``_paused`` None): read no more
        meanwhile; what the client sends waits in the kernel's buffer."""
        self._paused = True
        self.driver.pause_reading()

    def listen(self) -> None:
        """While ``WAITING``, read again: pipelined input queues as usual (up
        to ``PENDING_MAX``), and the peer's EOF or reset is seen (an ASGI app
        waiting for ``http.disconnect``)."""
        p = self._p
        if p is not None and p.head_done and p.in_message and p.sink is None:
            return  # a queued request's body has begun: the rest waits for its turn
        if self._paused is None:
            self._paused = False  # reading is on (wait() did not pause): it stays on
        elif self._paused and self.driver is not None and self.state == WAITING:
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
        if self._paused is None:
            self._paused = False  # nothing came meanwhile: reading never paused

    def answer_waited(self, request, out, status: int, length: int, hold: bool = False) -> None:
        """``end_wait(out)``, ``answered(...)`` and ``after_wait()`` in one call:
        an app call's last body (the hot path of every ASGI and WSGI request)."""
        self.end_wait(out)
        self.answered(request, status, length, hold)
        self.after_wait()

    def fail_waited(self, request) -> None:
        """The answer waited for failed before its head was sent: a 500 in its place."""
        self.end_wait()
        self.write_response(request, None, 500)
        self.after_wait()

    def abort_waited(self, request, status: int, length: int) -> None:
        """The answer waited for began but cannot be finished: it is logged as
        it went (``ctx.on_response``), and the connection is closed, so the
        client sees the response cut."""
        if self.ctx.on_response is not None:
            self.ctx.on_response(request, status, length)
        self.abort()

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
