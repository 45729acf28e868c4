"""Bounded memory, fds and work per connection (issue 13, points 8-10).

Unit tests drive the sans-IO protocol with a fake driver; the e2e tests run a
server on every backend with clients that pipeline and do not read, flood a
connection whose request waits in the pool, or half-close, and measure the
worker in /proc: RSS, open fds, CPU time.

This file: the tests with server processes, subprocesses and sockets;
tests/unit/test_bounded.py has the in-process ones."""

from __future__ import annotations

import os
import socket
import time

import pytest

from conftest import Client

# --- e2e: a real server, measured in /proc ------------------------------------------------


ROUTES = """
[[route]]
path = "/slow"
handler = "examples.hello:slow"
blocking = true

[[route]]
path = "/files/"
handler = "static"
"""


def start(start_server, tmp_path, http=""):
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    (root / "60k.bin").write_bytes(b"6" * 60_000)    # kept in memory by the static cache
    (root / "200k.bin").write_bytes(b"2" * 200_000)  # sent with sendfile from a dup'ed fd
    srv = start_server(server="workers = 1", names=("http",), http=http,
                       extra=ROUTES + f'\n[static]\nroot = "{root}"\n')
    [worker] = srv.wait_workers(1)
    return srv, worker


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.parametrize("name,size", [("60k.bin", 60_000), ("200k.bin", 200_000)])
def test_pipelined_files_to_a_client_that_does_not_read(start_server, tmp_path, name, size):
    """400 pipelined GETs of a file, all in one read, and the client reads
    nothing: the worker's RSS and open fds stay bounded (before: +20 MB for the
    60 KB file, +300 fds for the 200 KB one); then every response arrives whole."""
    srv, worker = start(start_server, tmp_path, http="keepalive_requests = 100000")
    request = b"GET /files/" + name.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    c = Client(srv.connect(timeout=10))
    c.send(request)  # the file is now in the worker's cache, the code paths are warm
    status, _, body = c.response()
    assert status == 200 and len(body) == size
    base_rss, base_fds = rss(worker), fds(worker)
    greedy = srv.connect(timeout=10)
    greedy.sendall(request * 400)  # one read; the kernel's buffers hold ~10 MB of the ~24-80 MB asked for
    peak_rss, peak_fds = 0, 0
    end = time.monotonic() + 1.5  # a measurement window: the worker answers what it will meanwhile
    while time.monotonic() < end:
        peak_rss = max(peak_rss, rss(worker) - base_rss)
        peak_fds = max(peak_fds, fds(worker) - base_fds)
        time.sleep(0.02)
    assert peak_fds <= 4, f"{peak_fds} more fds open in the worker for one client"
    assert peak_rss < 8 << 20, f"the worker grew by {peak_rss} bytes for one client that does not read"
    reader = Client(greedy)
    for _ in range(400):
        status, headers, body = reader.response()
        assert status == 200 and len(body) == size
        peak_fds = max(peak_fds, fds(worker) - base_fds)
    assert peak_fds <= 4
    greedy.close()
    c.close()


def _flood(sock: socket.socket, data_iter, limit: int) -> tuple[int, bool]:
    """Send until ``limit`` bytes are sent or the server stops taking them
    (nothing accepted for half a second). Returns (sent, blocked)."""
    sock.settimeout(0.5)
    sent = 0
    for chunk in data_iter:
        view = memoryview(chunk)
        while view:
            try:
                n = sock.send(view)
            except socket.timeout:
                return sent, True
            sent += n
            view = view[n:]
            if sent >= limit:
                return sent, False
    return sent, False


def _endless_header():
    yield b"GET /files/60k.bin HTTP/1.1\r\nHost: x\r\nX-Endless: "
    while True:
        yield b"a" * 65536


def _big_posts():
    body = b"p" * (1 << 20)
    while True:
        yield b"POST /files/60k.bin HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
        yield body


@pytest.mark.parametrize("flood", [_endless_header, _big_posts], ids=["endless-header", "1MB-posts"])
def test_input_behind_a_pooled_request_is_bounded(start_server, tmp_path, flood):
    """While ``GET /slow`` waits in the pool, what the client sends next is not
    buffered without bound (before: an endless header buffered 28 MB, 1 MB
    POSTs 64 MB): the server stops taking it."""
    srv, worker = start(start_server, tmp_path)
    c = Client(srv.connect(timeout=10))
    c.send(b"GET /slow?s=0 HTTP/1.1\r\nHost: x\r\n\r\n")  # warm up: the pool's threads are started
    assert c.response()[0] == 200
    base = rss(worker)
    c.send(b"GET /slow?s=3 HTTP/1.1\r\nHost: x\r\n\r\n")
    sent, blocked = _flood(c.sock, flood(), 40 << 20)
    growth = rss(worker) - base
    assert blocked, f"the server took {sent} bytes behind a request in the pool"
    assert growth < 8 << 20, f"the worker grew by {growth} bytes"
    c.sock.settimeout(10)
    status, _, body = c.response()
    assert (status, body) == (200, b"done\n")


def test_half_closed_client_does_not_spin_the_worker(start_server, tmp_path):
    """A request for the pool, then shutdown(SHUT_WR): the worker waits for the
    answer without using the CPU (before: 1.67 s of CPU in 2 s on epoll), then
    answers and closes."""
    srv, worker = start(start_server, tmp_path)
    c = Client(srv.connect(timeout=10))
    c.send(b"GET /slow?s=2 HTTP/1.1\r\nHost: x\r\n\r\n")
    c.sock.shutdown(socket.SHUT_WR)
    before = cpu_seconds(worker)
    status, _, body = c.response()
    used = cpu_seconds(worker) - before
    assert (status, body) == (200, b"done\n")
    assert used < 0.5, f"the worker used {used:.2f} s of CPU while the pool worked for a half-closed client"
    assert c.closed()
