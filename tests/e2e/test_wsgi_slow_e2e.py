"""Slow clients against a WSGI app (issue 16, Tests: slow clients) and the
"threads busy" figure of /status.

1,000 connections trickle their request heads and 100 trickle their bodies
against a 4-thread pool: the reactor holds them all, so a normal client's GET
to the same WSGI app is answered in milliseconds and /status shows no pool
thread busy for the whole trickle. The app is ``tests.wsgi_apps:hold_app``."""

from __future__ import annotations

import re
import resource
import socket
import statistics
import time

import httpx
import pytest

from conftest import Client, wait_until

ROUTES = """
[[route]]
path = "/status"
handler = "status"

[[route]]
path = "/metrics"
handler = "metrics"

[[route]]
path = "/app/"
wsgi = "tests.wsgi_apps:hold_app"
"""

HEADS, BODIES = 1000, 100
BODY_LENGTH = 1000
ROUNDS = 10            # trickle rounds (a GET and a /status poll after each)
PACE = 0.2             # seconds between a connection's trickles: slower than the app's work
LATENCY_MAX = 0.5      # any one GET during the trickle (a loaded 2-core machine)
LATENCY_MEDIAN = 0.2   # the typical GET: milliseconds on a quiet machine


@pytest.fixture(params=["epoll", "uvloop"])
def backend(request):
    return request.param


@pytest.fixture
def nofile():
    """This process holds 1,100+ sockets: raise its soft open-file limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"the hard open-file limit ({hard}) is below {want}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _start(start_server):
    return start_server(names=("http",), extra=ROUTES, server="threads = 4\nworker_connections = 2000")


def _figure(client: httpx.Client, name: str) -> int:
    return int(re.search(rf"{name}: (\d+)", client.get("/status").text).group(1))


def test_slow_clients_leave_the_pool_idle(start_server, nofile):
    srv = _start(start_server)
    heads: list[socket.socket] = []
    bodies: list[socket.socket] = []
    try:
        for _ in range(HEADS):
            sock = srv.connect()
            sock.sendall(b"GET /app/slow HTTP/1.1\r\nHost: x\r\nX-Pad: ")
            heads.append(sock)
        for _ in range(BODIES):
            sock = srv.connect()
            sock.sendall(b"POST /app/upload HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: %d\r\n\r\n" % BODY_LENGTH)
            bodies.append(sock)
        latencies, busy = [], []
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
            wait_until(lambda: _figure(client, "Reading") >= HEADS + BODIES, timeout=20,
                       what=f"{HEADS + BODIES} connections reading")
            for _ in range(ROUNDS):
                for sock in heads:
                    sock.sendall(b"abcd")
                for sock in bodies:
                    sock.sendall(b"0123")
                start = time.monotonic()
                r = client.get("/app/ping")
                latencies.append(time.monotonic() - start)
                assert (r.status_code, r.text) == (200, "ok")
                # the ping's own thread may still be leaving the app (its answer is
                # out before the call returns): 0 within a moment; a thread held by
                # a trickling client would stay busy for the whole trickle
                wait_until(lambda: _figure(client, "Threads busy") == 0, timeout=2,
                           what="no pool thread busy during the trickle")
                busy.append(_figure(client, "Threads busy"))
                time.sleep(PACE)  # the trickle's pacing, not a readiness check
            assert _figure(client, "Reading") >= HEADS + BODIES  # nobody was answered or dropped
        assert busy == [0] * ROUNDS, busy
        assert max(latencies) < LATENCY_MAX, latencies
        assert statistics.median(latencies) < LATENCY_MEDIAN, latencies
        # the trickled requests are answered once whole
        for sock in heads[:5]:
            sock.sendall(b"\r\n\r\n")
            assert Client(sock).response()[2] == b"ok"
        sent = 4 * ROUNDS
        for sock in bodies[:5]:
            sock.sendall(b"x" * (BODY_LENGTH - sent))
            assert Client(sock).response()[2] == b"ok" + b"0123" * ROUNDS + b"x" * (BODY_LENGTH - sent)
    finally:
        for sock in heads + bodies:
            sock.close()


@pytest.mark.parametrize("backend", ["epoll", "uvloop", "asyncio"], indirect=True)
def test_threads_busy_counts_a_call_in_the_pool(start_server, tmp_path):
    """A WSGI call held in its thread shows as 1 thread busy in /status and
    /metrics; once it returns, 0."""
    srv = _start(start_server)
    flag = tmp_path / "go"
    held = Client(srv.connect())
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
            assert _figure(client, "Threads busy") == 0
            held.send(b"GET /app/hold?%s HTTP/1.1\r\nHost: x\r\n\r\n" % str(flag).encode())
            wait_until(lambda: _figure(client, "Threads busy") == 1, what="the held call counted busy")
            assert re.search(r"worker 0 pid \d+ generation \d+: .* busy 1$", client.get("/status").text, re.M)
            assert re.search(r'^prefork_threads_busy\{slot="0",pid="\d+"\} 1$', client.get("/metrics").text, re.M)
            flag.write_text("go")
            assert held.response()[2] == b"ok"
            wait_until(lambda: _figure(client, "Threads busy") == 0, what="the thread idle again")
    finally:
        held.close()
