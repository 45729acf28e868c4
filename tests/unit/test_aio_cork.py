"""The asyncio driver's cork (prefork/aio.py): output given to a connection
during one loop turn reaches the transport once that turn's callbacks have
run -- all of the turn's connections back to back, each in one write -- or
at once past CORK_LIMIT; order is kept around file bodies, a close drops
it and a finish sends it first. Real uvloop and asyncio loops over
socketpairs; the peer reads what was sent."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from prefork.aio import CORK_LIMIT, AioConnection, AsyncioReactor
from prefork.messages import FileChunk
from test_driver import FakeWorker


class Quiet:
    """A protocol that says nothing unless told to close."""

    def __init__(self):
        self.closing = self.linger = False
        self.deadline = 0.0
        self.driver = None
        self.idle = True

    def data_received(self, data):
        return None

    def eof_received(self):
        return None

    def connection_lost(self):
        pass


@pytest.fixture(params=["uvloop", "asyncio"])
def setup(request):
    """(reactor, make): ``make()`` gives a connected AioConnection and the peer socket."""
    reactor = AsyncioReactor(request.param)
    worker = FakeWorker(reactor)
    worker.high_water = 1 << 20  # the writes here never pause the transport
    cls = AioConnection.for_worker(worker)
    peers = []

    def make():
        ours, peer = socket.socketpair()
        ours.setblocking(False)
        peer.settimeout(5)
        peers.append(peer)
        conn = cls(worker, ours.detach(), Quiet())
        reactor.loop.run_until_complete(asyncio.sleep(0.01))  # connect_accepted_socket
        assert conn.transport is not None
        writes = []
        real = conn.transport.write
        conn.transport = _Recording(conn.transport, real, writes)
        return conn, peer, writes

    yield reactor, make
    for peer in peers:
        peer.close()
    for conn in list(cls.conns):
        conn.close()
    reactor.close()


class _Recording:
    """The transport, with its writes noted."""

    def __init__(self, transport, real, writes):
        self._transport, self._real, self._writes = transport, real, writes

    def write(self, data):
        self._writes.append(bytes(data))
        self._real(data)

    def __getattr__(self, name):
        return getattr(self._transport, name)


def recv_exactly(peer, n):
    got = b""
    while len(got) < n:
        piece = peer.recv(n - len(got))
        assert piece, f"EOF after {got!r}"
        got += piece
    return got


def test_a_turns_output_leaves_after_the_turn_each_connection_in_one_write(setup):
    reactor, make = setup
    (a, peer_a, writes_a), (b, peer_b, writes_b) = make(), make()
    seen = {}

    def turn():  # one callback of the loop, as a batch of ASGI calls is
        a.write(b"HTTP/1.1 200 OK\r\n\r\n")
        b.write([b"head ", b"body"])
        a.write(b"hello")
        seen["during"] = (list(writes_a), list(writes_b), a.unsent(), b.unsent())

    async def main():
        reactor.call_soon(turn)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    reactor.loop.run_until_complete(main())
    assert seen["during"] == ([], [], True, True)  # nothing written while the turn ran, but owed
    assert writes_a == [b"HTTP/1.1 200 OK\r\n\r\nhello"] and writes_b == [b"head body"]
    assert recv_exactly(peer_a, 24) == b"HTTP/1.1 200 OK\r\n\r\nhello"
    assert recv_exactly(peer_b, 9) == b"head body"
    assert not a.unsent() and not b.unsent()


def test_past_the_cork_limit_the_output_goes_at_once(setup):
    reactor, make = setup
    conn, peer, writes = make()
    big = b"x" * CORK_LIMIT

    def turn():
        conn.write(b"small")
        assert writes == []
        conn.write(big)
        assert writes == [b"small" + big]  # not held to the end of the turn

    reactor.loop.call_soon(turn)
    reactor.loop.run_until_complete(asyncio.sleep(0.01))
    assert recv_exactly(peer, 5 + CORK_LIMIT) == b"small" + big


def test_bytes_before_a_file_body_go_first_and_after_it_last(setup, tmp_path):
    reactor, make = setup
    conn, peer, _ = make()
    path = tmp_path / "body"
    path.write_bytes(b"FILE")
    fd = os.open(path, os.O_RDONLY)  # the driver closes it once sent

    def turn():
        conn.write(b"head|")
        conn.write([b"more|", FileChunk(fd, 0, 4), b"|tail"])

    reactor.loop.call_soon(turn)
    reactor.loop.run_until_complete(asyncio.sleep(0.01))
    assert recv_exactly(peer, 19) == b"head|more|FILE|tail"


def test_close_drops_the_corked_output(setup):
    reactor, make = setup
    conn, peer, writes = make()

    def turn():
        conn.write(b"never sent")
        conn.close()

    reactor.loop.call_soon(turn)
    reactor.loop.run_until_complete(asyncio.sleep(0.01))
    assert writes == [] and peer.recv(100) == b""


def test_finish_sends_the_corked_output_before_closing(setup):
    reactor, make = setup
    conn, peer, writes = make()

    def turn():
        conn.write(b"last words")
        conn.proto.closing = True
        conn.after()  # the protocol is done: close once flushed

    reactor.loop.call_soon(turn)
    reactor.loop.run_until_complete(asyncio.sleep(0.01))
    assert writes == [b"last words"]
    assert recv_exactly(peer, 10) == b"last words" and peer.recv(100) == b""


def test_a_transport_that_refuses_is_closed_and_the_others_and_later_turns_still_flush(setup, caplog):
    reactor, make = setup
    (bad, _, _), (good, peer, writes) = make(), make()

    def refuse(data):
        raise RuntimeError("Cannot call write() after write_eof()")

    bad.transport.write = refuse

    def turn():
        bad.write(b"refused")
        good.write(b"first")

    reactor.loop.call_soon(turn)
    reactor.loop.run_until_complete(asyncio.sleep(0.01))
    assert "cannot write a connection's output" in caplog.text
    assert bad.fd < 0 or bad.transport.is_closing()  # closed, not left half-sent
    assert recv_exactly(peer, 5) == b"first"
    reactor.loop.call_soon(good.write, b"second")  # the queue was emptied: a later turn flushes too
    reactor.loop.run_until_complete(asyncio.sleep(0.01))
    assert writes == [b"first", b"second"] and recv_exactly(peer, 6) == b"second"
