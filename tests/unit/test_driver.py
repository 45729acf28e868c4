"""The driver layer's shared logic (prefork/driver.py), with a fake reactor, a
fake worker and a fake protocol; and the epoll Connection over a socketpair
for what only it does (high water, the sending counter)."""

import os
import socket

import pytest

from prefork.connection import Connection
from prefork.driver import (HELD, HIGH_WATER, LINGER_TIMEOUT, LINGERING, PROTOCOL, BaseDriver, Driver,
                            DrivenProtocol, subclass_slots)
from prefork.protocols.echo import EchoProtocol
from prefork.reactor import READABLE, WHEN, WRITABLE, Reactor


class FakeReactor:
    def __init__(self):
        self.now = 100.0
        self.timers = []   # [when, seq, callback, arg], as the epoll reactor's
        self.soon = []
        self.cancelled = 0
        self.seq = 0

    def clock(self):
        return self.now

    def call_at(self, when, callback, arg=None):
        self.seq += 1
        timer = [when, self.seq, callback, arg]
        self.timers.append(timer)
        return timer

    def call_later(self, delay, callback, arg=None):
        return self.call_at(self.now + delay, callback, arg)

    def call_soon(self, callback, *args):
        self.soon.append((callback, args))

    def cancel(self, timer):
        timer[2] = None
        self.cancelled += 1

    def pending(self):
        return sorted(t[WHEN] for t in self.timers if t[2] is not None)

    def advance(self, to):
        """Move the clock to ``to`` and run the timers due by then, in order."""
        self.now = to
        while True:
            due = sorted((t for t in self.timers if t[2] is not None and t[WHEN] <= to), key=lambda t: t[:2])
            if not due:
                return
            timer = due[0]
            callback, timer[2] = timer[2], None
            callback(timer[3])

    def run_soon(self):
        soon, self.soon = self.soon, []
        for callback, args in soon:
            callback(*args)


class FakeWorker:
    def __init__(self, reactor=None):
        self.reactor = reactor or FakeReactor()
        self.send_timeout = 10.0
        self.high_water = 1000
        self.sending = 0
        self.closed = 0

    def connection_closed(self):
        self.closed += 1


class FakeProtocol:
    def __init__(self):
        self.closing = False
        self.linger = False
        self.deadline = 0.0
        self.driver = None
        self.held = False
        self.idle = True
        self.timeouts = []
        self.lost = False
        self.resumes = 0

    def data_received(self, data):
        return data

    def eof_received(self):
        self.closing = True
        return b""

    def timeout(self, now):
        self.timeouts.append(now)
        self.closing = True
        return b"bye"

    def connection_lost(self):
        self.lost = True

    def grace(self, until):
        if not self.deadline or self.deadline > until:
            self.deadline = until

    def resume(self):
        self.resumes += 1
        self.held = False
        return b"more"


class FakeDriver(BaseDriver):
    """BaseDriver with in-memory hooks: ``blocked`` keeps writes in ``wbuf``."""

    __slots__ = subclass_slots("sent", "reading", "shut", "ended", "blocked")

    def __init__(self, proto):
        self.fd = 7
        self.proto = proto
        self.wbuf = None
        self.timer = None
        self.send_deadline = 0.0
        self.flags = 0
        self.sent = []
        self.reading = True
        self.shut = self.ended = self.blocked = False
        proto.driver = self

    def write(self, out):
        if self.blocked:
            self.wbuf = (self.wbuf or []) + [out]
        else:
            self.sent.append(out)

    def flush(self):
        self.sent.extend(self.wbuf or [])
        self.wbuf = None
        if self.flags & HELD:
            self.worker.reactor.call_soon(BaseDriver._continue, self)
        self.after()

    def close(self):
        if self.fd >= 0:
            self.fd = -1
            self.proto.connection_lost()
            self.worker.connection_closed()

    def _pause(self, reason):
        self.flags |= reason
        self.reading = False

    def _resume(self, reason):
        self.flags &= ~reason
        self.reading = not self.flags & (HIGH_WATER | PROTOCOL | HELD)

    def _shutdown_write(self):
        self.shut = True
        return True

    def _end(self):
        self.ended = True
        self.close()


def make(proto=None):
    worker = FakeWorker()
    cls = FakeDriver.for_worker(worker)
    proto = proto or FakeProtocol()
    return cls(proto), proto, worker.reactor, worker


def test_the_drivers_and_protocols_meet_the_contracts():
    for name in ("data_received", "eof_received", "timeout", "connection_lost", "grace"):
        assert callable(getattr(EchoProtocol(), name))
    assert EchoProtocol().idle is True
    for name in ("deliver", "pause_reading", "resume_reading", "hold"):
        assert callable(getattr(Connection, name))
    assert DrivenProtocol.__mro__ and Driver.__mro__  # typing.Protocols: importable, checked by type checkers


def test_connection_keeps_six_slots():
    assert Connection.__slots__ == ("fd", "proto", "wbuf", "timer", "send_deadline", "flags")
    assert BaseDriver.__slots__ == ()
    conn = Connection.__new__(Connection.for_worker(FakeWorker()))
    assert not hasattr(conn, "__dict__")


def test_a_deadline_arms_one_timer_and_fires_timeout():
    d, proto, reactor, worker = make()
    proto.deadline = 105.0
    d.after()
    assert reactor.pending() == [105.0]
    reactor.advance(105.0)
    assert proto.timeouts == [105.0]
    assert d.sent == [b"bye"] and d.fd == -1 and proto.lost and worker.closed == 1  # closing: finished


def test_a_later_deadline_is_lazy_an_earlier_one_rearms():
    d, proto, reactor, _ = make()
    proto.deadline = 105.0
    d.after()
    proto.deadline = 110.0          # later: nothing happens now
    d.after()
    assert reactor.pending() == [105.0] and reactor.cancelled == 0
    reactor.advance(105.0)          # fires early: re-arms for the new deadline, no timeout
    assert proto.timeouts == [] and reactor.pending() == [110.0]
    proto.deadline = 107.0          # earlier: the timer moves
    d.after()
    assert reactor.pending() == [107.0] and reactor.cancelled == 1
    reactor.advance(107.0)
    assert proto.timeouts == [107.0]


def test_send_deadline_closes_when_nothing_is_read():
    d, proto, reactor, worker = make()
    d.send_deadline = 103.0
    d.after()                       # no protocol deadline: the send deadline arms the timer
    assert reactor.pending() == [103.0]
    reactor.advance(103.0)
    assert d.fd == -1 and proto.timeouts == [] and worker.closed == 1


def test_closing_waits_for_the_output_then_ends():
    d, proto, reactor, _ = make()
    d.blocked = True
    d.deliver(b"last")
    proto.closing = True
    d.after()
    assert not d.ended and d.fd == 7   # output still buffered
    d.blocked = False
    d.flush()
    assert d.ended and d.sent == [b"last"] and d.fd == -1


def test_linger_sends_fin_drops_input_and_closes_after_the_timeout():
    d, proto, reactor, worker = make()
    proto.deadline = 150.0
    d.after()
    d.pause_reading()                   # paused for the pool when the error came
    proto.closing = proto.linger = True
    d.deliver(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert d.shut and not d.ended and d.flags == LINGERING
    assert d.reading                    # reading again, to drop what still arrives
    assert reactor.pending() == [100.0 + LINGER_TIMEOUT]   # the protocol's deadline no longer applies
    d.finish()                          # reached again: nothing more
    assert reactor.pending() == [100.0 + LINGER_TIMEOUT]
    reactor.advance(100.0 + LINGER_TIMEOUT)
    assert d.fd == -1 and worker.closed == 1 and proto.timeouts == []


def test_deliver_after_close_does_nothing():
    d, proto, reactor, _ = make()
    d.close()
    d.deliver(b"late")
    assert d.sent == [] and reactor.pending() == []


def test_a_file_body_delivered_after_close_is_closed_not_leaked(tmp_path):
    from prefork.messages import FileChunk

    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    d, _, _, _ = make()
    d.close()
    chunk = FileChunk(os.open(path, os.O_RDONLY), 0, 10)
    fd = chunk.fd
    d.deliver([b"head", chunk])
    assert chunk.fd == -1 and d.sent == []
    with pytest.raises(OSError):
        os.fstat(fd)


def test_pause_and_resume_reading_for_the_protocol():
    d, _, _, _ = make()
    d.pause_reading()
    assert not d.reading and d.flags & PROTOCOL
    d.resume_reading()
    assert d.reading and not d.flags


def test_hold_waits_for_the_output_then_resumes_the_protocol():
    d, proto, reactor, _ = make()
    d.blocked = True
    d.write(b"a lot")
    proto.held = True
    d.hold()
    assert not d.reading and reactor.soon == []   # the buffer is not empty: wait for it
    d.blocked = False
    d.flush()                                       # sent: the continuation is scheduled, from the loop
    assert proto.resumes == 0 and len(reactor.soon) == 1
    reactor.run_soon()
    assert proto.resumes == 1 and d.sent == [b"a lot", b"more"] and d.reading and not d.flags


def test_hold_with_nothing_buffered_continues_from_the_loop():
    d, proto, reactor, _ = make()
    proto.held = True
    d.hold()
    assert proto.resumes == 0
    reactor.run_soon()
    assert proto.resumes == 1 and d.reading


def test_a_protocol_still_held_after_resume_stays_paused():
    d, proto, reactor, _ = make()
    proto.resume = lambda: b"again"   # held stays True: it said enough again
    proto.held = True
    d.hold()
    reactor.run_soon()
    assert d.sent == [b"again"] and not d.reading and d.flags & HELD


def test_drain_gives_idle_connections_a_grace_only():
    d, proto, reactor, _ = make()
    proto.deadline = 175.0              # keep-alive
    d.after()
    d.drain(101.0)
    assert proto.deadline == 101.0 and reactor.pending()[0] == 101.0
    reactor.advance(101.0)
    assert proto.timeouts == [101.0]

    busy, bproto, breactor, _ = make()
    bproto.idle = False                  # mid-request: its own deadline stands
    bproto.deadline = 130.0
    busy.drain(101.0)
    assert bproto.deadline == 130.0

    sending, sproto, _, _ = make()
    sending.blocked = True
    sending.write(b"x")
    sproto.deadline = 175.0
    sending.drain(101.0)                 # output still going out: not idle
    assert sproto.deadline == 175.0


def test_echo_protocol_grace():
    proto = EchoProtocol()
    d, _, reactor, _ = make(proto)
    d.drain(102.0)
    assert proto.deadline == 102.0
    reactor.advance(102.0)
    assert proto.closing and d.fd == -1


# --- the epoll Connection over a socketpair -------------------------------------------------


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    b.close()
    try:
        a.detach()
    except OSError:
        pass


def test_connection_high_water_pauses_reading_and_counts_sending(pair):
    a, b = pair
    reactor = Reactor(setsize=64)
    worker = FakeWorker(reactor)
    worker.high_water = 64 * 1024
    proto = FakeProtocol()
    conn = Connection.for_worker(worker)(worker, a.fileno(), proto)
    try:
        assert reactor.mask(conn.fd) == READABLE
        assert Connection.for_worker(worker).count_sending() == 0
        big = b"x" * (8 << 20)               # more than the socket buffer takes
        conn.deliver(big)
        assert conn.wbuf is not None and worker.sending == 1
        assert conn.flags & HIGH_WATER and reactor.mask(conn.fd) == WRITABLE   # reading paused
        assert conn.send_deadline == pytest.approx(reactor.clock() + worker.send_timeout, abs=1)
        assert conn in type(conn).open_connections() and type(conn).count_sending() == 1
        got = 0
        b.settimeout(5)
        while got < len(big):
            got += len(b.recv(1 << 20))
            if conn.wbuf is not None:
                conn.on_writable()
        assert got == len(big)
        assert conn.wbuf is None and worker.sending == 0 and conn.send_deadline == 0.0
        assert not conn.flags and reactor.mask(conn.fd) == READABLE           # reading again
        b.sendall(b"ping")
        conn.on_readable()
        assert b.recv(10) == b"ping"
        conn.close()
        assert conn.fd == -1 and proto.lost and worker.closed == 1 and reactor.mask(a.fileno()) == 0
        assert type(conn).open_connections() == []
    finally:
        conn.close()
        reactor.close()


def test_connection_timer_and_linger_through_the_real_reactor(pair):
    a, b = pair
    now = [100.0]
    reactor = Reactor(setsize=64, clock=lambda: now[0])
    worker = FakeWorker(reactor)
    proto = FakeProtocol()
    proto.deadline = 101.0
    conn = Connection.for_worker(worker)(worker, a.fileno(), proto)
    try:
        assert conn.timer is not None and conn.timer[WHEN] == 101.0
        proto.linger = True
        now[0] = 101.0
        reactor.run_once(0)               # the deadline: timeout() says bye, closing with linger
        assert proto.timeouts == [101.0] and conn.flags == LINGERING and conn.fd >= 0
        b.settimeout(5)
        assert b.recv(10) == b"bye" and b.recv(10) == b""   # the answer, then FIN
        b.sendall(b"ignored")
        reactor.run_once(0)               # read and dropped
        assert conn.fd >= 0 and proto.timeouts == [101.0]
        now[0] = 101.0 + LINGER_TIMEOUT
        reactor.run_once(0)
        assert conn.fd == -1 and worker.closed == 1
    finally:
        conn.close()
        reactor.close()


def test_exclusive_listener_is_registered_with_epollexclusive():
    """reactor.add(..., exclusive=True): EPOLLEXCLUSIVE, seen in the epoll fd's fdinfo."""
    reactor = Reactor(setsize=64)
    lst = socket.socket()
    plain = socket.socket()
    try:
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        reactor.add(lst.fileno(), READABLE, lambda _: None, None, exclusive=True)
        reactor.add(plain.fileno(), READABLE, lambda _: None)
        events = {}
        with open(f"/proc/self/fdinfo/{reactor.backend.fileno()}") as f:
            for line in f:
                if line.startswith("tfd:"):
                    fields = line.split()
                    events[int(fields[1])] = int(fields[3], 16)
        exclusive = 1 << 28  # EPOLLEXCLUSIVE
        assert events[lst.fileno()] & exclusive
        assert not events[plain.fileno()] & exclusive
        assert {lst.fileno(), plain.fileno()} <= {fd for fd in events}
        assert reactor.watched().count(None) >= 2  # data None for both: watched() lists them
    finally:
        reactor.close()
        lst.close()
        plain.close()


def test_reactor_watched_lists_the_data_of_watched_fds():
    reactor = Reactor(setsize=64)
    r, w = os.pipe()
    try:
        marker = object()
        reactor.add(r, READABLE, lambda _: None, marker)
        assert marker in reactor.watched()
        reactor.remove(r)
        assert marker not in reactor.watched()
    finally:
        reactor.close()
        os.close(r)
        os.close(w)
