"""End to end: prefork-server as a subprocess, HTTP and echo over real sockets."""

import os
import resource
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, Client, free_port, make_config, wait_for_port

GET = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"


def test_plaintext_and_json_keep_alive(start_server):
    srv = start_server()
    c = Client(srv.connect())
    for _ in range(3):
        c.send(GET)
        status, headers, body = c.response()
        assert (status, body) == (200, b"Hello, World!")
        assert headers["content-type"] == "text/plain"
        assert headers["server"] == "prefork"
        assert headers["date"].endswith("GMT")
    c.send(b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = c.response()
    assert (status, body) == (200, b'{"message":"Hello, World!"}')
    assert headers["content-type"] == "application/json"
    c.send(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.response()[0] == 404
    c.close()


def test_pipelined_16_in_order(start_server):
    srv = start_server()
    c = Client(srv.connect())
    reqs = []
    for i in range(16):
        path = b"/json" if i % 2 else b"/plaintext"
        reqs.append(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    c.send(b"".join(reqs))
    for i in range(16):
        status, headers, body = c.response()
        assert status == 200
        assert body == (b'{"message":"Hello, World!"}' if i % 2 else b"Hello, World!")
    c.close()


def test_connection_close_and_http10(start_server):
    srv = start_server()
    c = Client(srv.connect())
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, _ = c.response()
    assert status == 200 and headers["connection"] == "close"
    assert c.closed()
    c = Client(srv.connect())
    c.send(b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert c.response()[1]["connection"] == "keep-alive"
    c.send(b"GET /plaintext HTTP/1.0\r\n\r\n")
    assert c.response()[0] == 200
    assert c.closed()


def test_bad_request_gets_400_and_close(start_server):
    srv = start_server()
    c = Client(srv.connect())
    c.send(b"POST /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    status, headers, _ = c.response()
    assert status == 400 and headers["connection"] == "close"
    assert c.closed()
    # the server is still fine
    c = Client(srv.connect())
    c.send(GET)
    assert c.response()[0] == 200


def test_error_response_survives_unread_pipelined_input(start_server):
    """Lingering close: the 400 must arrive even though the client sent more
    data the server will never read (a plain close would reset it)."""
    srv = start_server()
    c = Client(srv.connect())
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n" + b"x" * 200_000)
    status, _, _ = c.response()
    assert status == 400


def test_header_timeout_408_then_close(start_server):
    srv = start_server(http="header_timeout = 0.3")
    c = Client(srv.connect())
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
    start = time.monotonic()
    status, headers, _ = c.response()
    assert status == 408 and headers["connection"] == "close"
    assert 0.2 < time.monotonic() - start < 5
    assert c.closed()


def test_keepalive_timeout_closes_quietly(start_server):
    srv = start_server(http="keepalive_timeout = 0.3")
    c = Client(srv.connect())
    c.send(GET)
    assert c.response()[0] == 200
    start = time.monotonic()
    assert c.closed(timeout=5)
    assert c.buf == b""  # nothing sent before the close
    assert 0.2 < time.monotonic() - start < 5


def test_echo_roundtrip_and_backpressure(start_server):
    srv = start_server()
    s = srv.connect("echo")
    s.sendall(b"hello")
    assert s.recv(100) == b"hello"
    # A client that writes 16 MiB and reads nothing: the server must stop
    # reading at the high-water mark instead of buffering it all.
    pid = srv.proc.pid
    rss_before = _rss_kib(pid)
    payload = os.urandom(1 << 20) * 16
    s.setblocking(False)
    sent = 0
    stalled_since = None
    while sent < len(payload):
        try:
            sent += s.send(payload[sent:sent + 65536])
            stalled_since = None
        except BlockingIOError:
            if stalled_since is None:
                stalled_since = time.monotonic()
            elif time.monotonic() - stalled_since > 0.5:
                break  # both directions' socket buffers are full: the server stopped reading
            time.sleep(0.005)
    assert sent < len(payload), "the server never applied back-pressure"
    assert _rss_kib(pid) - rss_before < 8 * 1024
    # Now read: everything comes back, in order, and the rest can be sent.
    s.setblocking(True)
    s.settimeout(10)
    received = bytearray()
    while len(received) < len(payload):
        if sent < len(payload):
            try:
                s.setblocking(False)
                sent += s.send(payload[sent:sent + 65536])
            except BlockingIOError:
                pass
            finally:
                s.settimeout(10)
        received += s.recv(1 << 20)
    assert bytes(received) == payload
    s.close()


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_worker_connections_cap(start_server):
    srv = start_server(server="worker_connections = 4")
    held = [Client(srv.connect()) for _ in range(4)]
    for c in held:
        c.send(GET)
        assert c.response()[0] == 200
    extra = Client(srv.connect())  # completes in the kernel's queue...
    extra.send(GET)
    extra.sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        extra.sock.recv(100)  # ...but is not accepted while 4 are open
    held.pop().close()
    extra.sock.settimeout(5)
    assert extra.response()[0] == 200
    for c in held:
        c.close()


def test_emfile_does_not_spin_and_recovers(tmp_path):
    """With the fd limit below worker_connections the worker hits EMFILE; it
    must shed the pending connections without spinning, and serve again once
    fds are free."""
    port = free_port()
    path = tmp_path / "s.toml"
    path.write_text(make_config({"http": port}, server="worker_connections = 1000"))
    limit = 48

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    proc = subprocess.Popen([sys.executable, "-m", "prefork.cli", "-c", str(path)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), preexec_fn=low_limit,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
        clients = []
        for _ in range(limit + 20):
            c = Client(socket.create_connection(("127.0.0.1", port), timeout=5))
            clients.append(c)
        served = 0
        for c in clients:
            try:
                c.send(GET)
                c.sock.settimeout(2)
                if c.response()[0] == 200:
                    served += 1
            except (ConnectionError, socket.timeout, OSError):
                pass
        assert 0 < served < limit
        cpu0 = _cpu_seconds(proc.pid)
        time.sleep(1.0)  # measuring CPU use over an interval, not waiting for readiness
        assert _cpu_seconds(proc.pid) - cpu0 < 0.5, "worker spins on EMFILE"
        for c in clients:
            c.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                c = Client(socket.create_connection(("127.0.0.1", port), timeout=2))
                c.send(GET)
                c.sock.settimeout(2)
                assert c.response()[0] == 200
                c.close()
                break
            except (ConnectionError, socket.timeout, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()


def test_graceful_quit_finishes_in_flight_request(start_server):
    srv = start_server()
    idle = Client(srv.connect())
    idle.send(GET)
    assert idle.response()[0] == 200
    busy = Client(srv.connect())
    busy.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n")  # head not finished: in flight
    time.sleep(0.2)  # let the server read the partial head (ordering, not readiness)
    srv.proc.send_signal(signal.SIGQUIT)
    assert idle.closed()  # idle keep-alive connections are closed at once
    busy.send(b"\r\n")
    status, headers, body = busy.response()
    assert status == 200 and body == b"Hello, World!"
    assert busy.closed()
    assert srv.proc.wait(10) == 0


def test_sigterm_stops_fast(start_server):
    srv = start_server()
    c = Client(srv.connect())
    c.send(b"GET /plaintext HTTP/1.1\r\n")
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(10) == 0
    assert c.closed()


def test_bind_failure_is_clear(tmp_path):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    path = tmp_path / "s.toml"
    path.write_text(make_config({"http": port}))
    res = subprocess.run([sys.executable, "-m", "prefork.cli", "-c", str(path)], cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=30)
    blocker.close()
    assert res.returncode == 1
    assert f"127.0.0.1:{port}" in res.stderr and "in use" in res.stderr
