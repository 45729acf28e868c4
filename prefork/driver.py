"""The driver layer's shared part: the contracts between a driver (the epoll
``connection.Connection``, the asyncio ``aio.AioConnection``), the sans-IO
protocol it drives and the worker it belongs to; and the deadline / linger /
finish / hold logic both drivers run (``BaseDriver``).

A driver keeps six fields -- ``fd`` (-1 once closed), ``proto``, ``wbuf``
(None while nothing waits in the driver), ``timer`` (the one pending reactor
timer, lazily re-armed), ``send_deadline`` and ``flags`` -- and gives the
backend's part: ``write``, ``close``, ``_pause`` / ``_resume`` (reading),
``_shutdown_write`` (the FIN of a lingering close), ``_end`` (close once
flushed) and ``unsent``. Timers go through the reactor (``call_at``,
``call_later``, ``cancel``, ``timer[WHEN]``), the same on both backends.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Union

from .messages import close_files
from .protocols.http_flow import FlowControl
from .reactor import WHEN

LINGER_TIMEOUT = 5.0  # nginx lingering_timeout: drain input this long before closing after an error

# BaseDriver.flags
HIGH_WATER = 1   # reading paused: too much unsent output
PROTOCOL = 2     # reading paused: the protocol waits for the pool
LINGERING = 4    # lingering close: input is read and dropped until EOF or LINGER_TIMEOUT
PAUSED_EOF = 8   # reading stopped: the peer has half-closed (EPOLLIN would fire forever)
HELD = 16        # reading paused: the protocol waits for its output to be sent (then resume())
PAUSED = HIGH_WATER | PROTOCOL | PAUSED_EOF | HELD

# What a protocol returns to send: bytes, or a list of bytes and file chunks
Output = Union[bytes, list, None]


# --- the contracts ------------------------------------------------------------------


class DrivenProtocol(Protocol):
    """What a driver may ask of the sans-IO protocol it drives.

    After each call the driver reads ``closing`` (close once the output is
    flushed), ``linger`` (drain unread input before closing) and ``deadline``
    (absolute reactor-clock time at which to call ``timeout``; 0.0 for none)."""

    closing: bool
    linger: bool
    deadline: float
    driver: Any  # the driver sets itself here (a ``Driver``)

    @property
    def idle(self) -> bool:
        """Between requests: nothing half-received, nothing owed."""

    def data_received(self, data: bytes) -> Output: ...

    def eof_received(self) -> Output: ...

    def timeout(self, now: float) -> Output: ...

    def connection_lost(self) -> None: ...

    def grace(self, until: float) -> None:
        """Graceful stop: an idle protocol gives up by ``until`` (its deadline
        moves there if it is later)."""


class HoldingProtocol(DrivenProtocol, Protocol):
    """A protocol that calls ``driver.hold()`` (the HTTP protocol): ``held``
    while it waits, ``resume()`` once its output has been sent."""

    held: bool

    def resume(self) -> Output: ...


class Driver(Protocol):
    """What a protocol (or the dispatcher on its behalf) may ask of its driver."""

    proto: Any  # the protocol driven (after ``switch``, the new one)

    def switch(self, proto: Any) -> None:
        """Drive ``proto`` from now on (an upgrade: HTTP hands the connection over)."""

    def deliver(self, out: Output) -> None:
        """Send ``out`` (a response that came later, e.g. from the pool)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def hold(self) -> None:
        """Once what was said is sent, call the protocol's ``resume()``."""

    def abort(self) -> None:
        """Close now, dropping unsent output (a response that cannot be finished)."""

    def write_blocked(self) -> bool:
        """Is the unsent output above ``high_water`` (a streaming writer should wait)?"""

    def drained(self) -> Any:
        """An awaitable done when the output is below ``high_water`` again, or the
        connection is gone (asyncio backends only)."""

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (on the reactor thread) once the output is below
        ``high_water`` again or the connection is gone: at once if it is now.
        One waiter per connection (a WSGI call's thread, woken through it)."""

    def sockname(self) -> Any:
        """The local address: (host, port), or (the unix socket's path, None); None if unknown."""


class Timers(Protocol):
    """The reactor as a driver uses it (``Reactor`` and ``AsyncioReactor``)."""

    clock: Callable[[], float]

    def add(self, fd: int, mask: int, callback: Callable[[Any], None], data: Any = None,
            exclusive: bool = False) -> None: ...

    def remove(self, fd: int, mask: int = 3) -> None: ...

    def call_at(self, when: float, callback: Callable[[Any], None], arg: Any = None) -> Any: ...

    def call_later(self, delay: float, callback: Callable[[Any], None], arg: Any = None) -> Any: ...

    def call_soon(self, callback: Callable[..., None], *args: Any) -> None: ...

    def cancel(self, timer: Any) -> None: ...


class Host(Protocol):
    """What a connection needs of its worker."""

    reactor: Timers
    send_timeout: float
    high_water: int
    sending: int  # connections with output the kernel has not taken (kept by the epoll driver)

    def connection_closed(self) -> None: ...


class AcceptorHost(Host, Protocol):
    """What an acceptor needs of its worker, besides a connection's needs."""

    accept_batch: int
    max_connections: int
    active: int
    accepted: int
    connection_class: Any  # a per-worker BaseDriver subclass (``for_worker``)

    def pause_accepting(self) -> None: ...

    def out_of_fds(self, sock: Any, exc: OSError) -> None: ...


# --- the shared logic -------------------------------------------------------------------


# The state every driver holds: the epoll Connection's slots; compiled
# (driver.pxd), C fields of BaseDriver itself.
FIELDS = ("fd", "proto", "wbuf", "timer", "send_deadline", "flags")


def subclass_slots(*extra: str) -> tuple:
    """The ``__slots__`` of a slotted BaseDriver subclass (a test's fake driver)
    holding ``FIELDS`` and ``extra``: ``FIELDS`` only where the base does not
    hold them already, as it does compiled (a slot would hide its C field)."""
    return tuple(name for name in FIELDS if not hasattr(BaseDriver, name)) + extra


class BaseDriver:
    """Deadlines, lingering close, finish and hold/resume, for every backend.

    No slots of its own: the epoll ``Connection`` declares its six. The worker
    is a class attribute of the per-worker subclass ``for_worker`` makes."""

    __slots__ = ()
    # What the subclasses hold (compiled, these are C fields of this class:
    # driver.pxd): fd (int), proto (a DrivenProtocol), wbuf, timer,
    # send_deadline (float), flags (int); and the class attribute ``worker``
    # (a Host) of the per-worker subclass.

    @classmethod
    def for_worker(cls, worker: Host) -> type:
        """The connection class of ``worker``: this class with ``worker`` bound."""
        return type(cls.__name__, (cls,), {"__slots__": (), "worker": worker})

    # --- the worker's view (O(connections): shutdown and status only) ----------

    @classmethod
    def open_connections(cls) -> list:
        raise NotImplementedError

    @classmethod
    def count_sending(cls) -> int:
        """How many of this worker's connections have output not yet sent."""
        raise NotImplementedError

    def unsent(self) -> bool:
        return self.wbuf is not None

    def drain(self, until: float) -> None:
        """Graceful stop: an idle connection with nothing to send closes by
        ``until`` (one accepted a moment ago may still send its request)."""
        if self.fd >= 0 and self.proto.idle and not self.unsent():
            self.proto.grace(until)
            self.arm()

    # --- backend hooks ----------------------------------------------------------------

    def write(self, out) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _pause(self, reason: int) -> None:
        raise NotImplementedError

    def _resume(self, reason: int) -> None:
        raise NotImplementedError

    def _shutdown_write(self) -> bool:
        """Send FIN (lingering close); False if that failed."""
        raise NotImplementedError

    def _end(self) -> None:
        """Close once what is buffered below the driver is sent."""
        self.close()

    # --- the protocol's calls -----------------------------------------------------------

    def deliver(self, out) -> None:
        if self.fd < 0:
            if type(out) is list:  # the connection is gone: close the file bodies it would have sent
                close_files(out)
            return
        if out:
            self.write(out)
        if self.fd >= 0:
            self.after()

    def switch(self, proto) -> None:
        self.proto = proto
        proto.driver = self

    def pause_reading(self) -> None:
        self._pause(PROTOCOL)

    def resume_reading(self) -> None:
        self._resume(PROTOCOL)

    def hold(self) -> None:
        """The protocol has said enough for now: once it is sent, call its
        ``resume()`` -- from the loop, so other connections get their turn."""
        self._pause(HELD)
        if self.wbuf is None:
            self.worker.reactor.call_soon(BaseDriver._continue, self)
        # else the backend calls it when its buffer is empty

    def write_blocked(self) -> bool:
        return bool(self.flags & HIGH_WATER)

    def drained(self) -> Any:
        raise NotImplementedError  # the asyncio backends' (aio.AioConnection)

    def when_drained(self, callback: Callable[[], None]) -> None:
        raise NotImplementedError

    def sockname(self) -> Any:
        return None

    def _continue(self) -> None:
        flags = self.flags
        if self.fd < 0 or not flags & HELD or flags & HIGH_WATER or self.wbuf is not None:
            return  # called again once the output is sent
        proto = self.proto
        out = proto.resume()
        if out:
            self.write(out)
            if self.fd < 0:
                return
        if not proto.held:
            self._resume(HELD)
        self.after()

    # --- timers, closing ------------------------------------------------------------------

    def on_timer(self) -> None:
        self.timer = None
        if self.fd < 0:
            return
        now = self.worker.reactor.clock()
        send_deadline = self.send_deadline
        if send_deadline and send_deadline <= now:
            self.close()  # the client has read nothing for send_timeout
            return
        if self.flags & LINGERING:
            self.close()
            return
        proto = self.proto
        deadline = proto.deadline
        if deadline and deadline <= now:
            out = proto.timeout(now)
            if out:
                self.write(out)
            if self.fd >= 0:
                self.after()
            return
        self.arm()

    def arm(self) -> None:
        """Make sure a timer is pending for the earliest deadline. A timer that
        is already pending and fires early re-arms itself (lazy), so moving a
        deadline later costs nothing per request."""
        deadline = self.proto.deadline
        send_deadline = self.send_deadline
        if send_deadline and (not deadline or send_deadline < deadline):
            deadline = send_deadline
        if not deadline or self.fd < 0:
            return
        timer = self.timer
        reactor = self.worker.reactor
        if timer is not None:
            if timer[WHEN] <= deadline:
                return
            reactor.cancel(timer)
        self.timer = reactor.call_at(deadline, BaseDriver.on_timer, self)

    def after(self) -> None:
        """After the protocol has spoken: close, linger or keep the timer."""
        if self.fd < 0:
            return
        proto = self.proto
        if isinstance(proto, FlowControl):  # HTTP (compiled: C fields)
            flow = proto
            closing, deadline = flow.closing, flow.deadline
        else:
            closing, deadline = proto.closing, proto.deadline
        if closing:
            if self.wbuf is None:
                self.finish()
            return
        # One pending timer per connection: a deadline that moved later is
        # handled when the timer fires (lazily); one that moved earlier re-arms.
        timer = self.timer
        if deadline and (timer is None or deadline < timer[WHEN]):
            self.arm()
        elif timer is None and self.send_deadline:
            self.arm()

    def finish(self) -> None:
        """The protocol is done and the driver's output is flushed."""
        if self.flags & LINGERING or self.fd < 0:
            return  # already finishing (reached again through a nested write)
        if not self.proto.linger:
            self._end()
            return
        # Lingering close (as nginx does after an error): send FIN, then read
        # and drop what the client still sends, so unread input does not make
        # the kernel reset the connection and destroy the response.
        if not self._shutdown_write():
            self.close()
            return
        paused = self.flags & PAUSED
        self.flags = LINGERING | (HIGH_WATER if paused else 0)
        if paused:
            self._resume(HIGH_WATER)  # read again, to drop what arrives
        reactor = self.worker.reactor
        if self.timer is not None:
            reactor.cancel(self.timer)
        self.timer = reactor.call_later(LINGER_TIMEOUT, BaseDriver.on_timer, self)

    def abort(self) -> None:
        """Called by the reactor when a callback for this connection raised."""
        self.close()

    def _let_go(self) -> bool:
        """The connection is gone: cancel its timer and close the file bodies it
        had not sent. True when output was still queued."""
        if self.timer is not None:
            self.worker.reactor.cancel(self.timer)
            self.timer = None
        wbuf = self.wbuf
        if wbuf is None:
            return False
        close_files(wbuf)
        self.wbuf = None
        return True
