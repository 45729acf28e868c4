"""Slow and greedy clients, over real sockets on every backend: each is cut
off by its timeout or held back by flow control, its worker's memory stays
bounded, and everyone else is served meanwhile."""

from __future__ import annotations

import socket
import threading
import time

from conftest import Client, http_get, wait_until

GET = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_slowloris_is_dropped_at_the_header_timeout(start_server):
    srv = start_server(http="header_timeout = 1.0")
    c = Client(srv.connect())
    start = time.monotonic()
    head = b"GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40
    got = None
    for byte in head:  # a byte every 50 ms: more than the timeout in all
        try:
            c.sock.sendall(bytes([byte]))
        except OSError:
            break
        c.sock.settimeout(0.05)
        try:
            got = c.sock.recv(65536)
            break
        except socket.timeout:
            continue
    assert got and got.startswith(b"HTTP/1.1 408"), got
    assert 0.9 < time.monotonic() - start < 3.5  # trickling bytes did not extend the deadline
    assert http_get(srv.port)[0] == 200


def test_slow_body_gets_408_at_the_body_timeout(start_server):
    srv = start_server(http="body_timeout = 0.5")
    c = Client(srv.connect())
    c.send(b"POST /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf.")
    start = time.monotonic()
    status, headers, _ = c.response()
    assert status == 408 and headers["connection"] == "close"
    assert 0.4 < time.monotonic() - start < 3
    assert c.closed()


def test_client_that_never_reads_is_bounded_then_dropped(start_server):
    """A pipelining client that never reads: the server stops reading once its
    unsent output passes the high-water mark, so its memory stays bounded;
    after send_timeout without progress the connection is closed."""
    srv = start_server(server="workers = 1",
                       http="send_timeout = 1.5\nhigh_water = 65536\nkeepalive_requests = 10000000")
    [worker] = srv.wait_workers(1)
    before = rss(worker)
    greedy = srv.connect()
    greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    greedy.setblocking(False)
    sent, burst, blocked = 0, GET * 1000, False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until both sides' buffers are full
        try:
            sent += greedy.send(burst)
        except BlockingIOError:
            try:
                socket.socket.setblocking(greedy, True)
                greedy.settimeout(0.5)
                sent += greedy.send(burst)
            except (socket.timeout, BlockingIOError):
                blocked = True  # the server stopped reading: its flow control holds us back
                break
            finally:
                greedy.setblocking(False)
    assert blocked and sent > 100_000
    growth = rss(worker) - before
    # bounded: the high-water mark, the kernel's buffers and one read's worth
    # of responses (an asyncio transport reads up to 256 KiB at a time)
    assert growth < 24 << 20, f"the worker grew by {growth} bytes for one client that does not read"
    assert http_get(srv.port)[0] == 200  # the others are served meanwhile

    # without reading a byte (that would be progress), wait for the server to
    # drop it: once send_timeout passes, the only connection left is /status's own
    wait_until(lambda: _active(srv.port) == 1, timeout=15, interval=0.2,
               what="the greedy connection to be closed")
    greedy.setblocking(True)
    greedy.settimeout(5)
    try:
        while greedy.recv(1 << 20):
            pass  # what the server had sent before it gave up, then EOF
    except ConnectionResetError:
        pass  # or a reset: our unread requests were still in its buffer
    greedy.close()


def _active(port: int) -> int:
    return int(http_get(port, "/status")[2].split()[2])


def test_pipelining_flood_is_answered_in_order(start_server):
    srv = start_server(http="keepalive_requests = 10000000")
    c = Client(srv.connect())
    n = 5000
    paths = [b"/plaintext" if i % 2 else b"/json" for i in range(n)]
    writer = threading.Thread(target=lambda: c.sock.sendall(
        b"".join(b"GET " + p + b" HTTP/1.1\r\nHost: x\r\n\r\n" for p in paths)))
    writer.start()
    for i in range(n):
        status, headers, body = c.response()
        assert status == 200
        assert body == (b"Hello, World!" if i % 2 else b'{"message":"Hello, World!"}')
    writer.join()


def test_a_million_tiny_writes(start_server):
    """A client that sends every byte in its own send() (TCP_NODELAY): each
    may arrive as its own read; every request is still answered, in order."""
    srv = start_server(http="keepalive_requests = 10000000")
    sock = srv.connect()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c = Client(sock)
    stream = GET * (1_000_000 // len(GET) + 1)
    count = stream.count(b"GET ")
    answered = []

    def read():
        for _ in range(count):
            answered.append(c.response()[0])

    reader = threading.Thread(target=read)
    reader.start()
    send = sock.send
    for i in range(len(stream)):
        send(stream[i:i + 1])
    reader.join(60)
    assert len(answered) == count and set(answered) == {200}
    assert http_get(srv.port)[0] == 200
