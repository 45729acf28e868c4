"""Clients that are slow, and clients behind proxies, with ASGI apps over real
sockets on uvloop and asyncio (issue 15): a slowloris gets 408 at
header_timeout while FastAPI answers everyone else; a client that reads
nothing of a 100 MB response leaves the worker's memory bounded; forwarded
headers are believed from a trusted proxy only (the scope's client and scheme,
the access log, /status's allow)."""

from __future__ import annotations

import os
import socket
import threading
import time

import httpx
import pytest

from conftest import until_still, wait_until
from tests.framework_apps import HUNDRED_CHUNK, HUNDRED_CHUNKS


@pytest.fixture(params=["uvloop", "asyncio"])
def backend(request):
    """ASGI routes run on the asyncio loops only."""
    return request.param


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


# --- slow clients ---------------------------------------------------------------------


def test_slowloris_gets_408_while_fastapi_answers_others(start_server):
    srv = start_server(names=("http",), http="header_timeout = 1.0",
                       extra='\n[[route]]\npath = "/"\nasgi = "tests.framework_apps:fastapi_app"\n')
    results: dict[int, tuple[bytes, float]] = {}

    def slowloris(n: int) -> None:
        sock = srv.connect()
        start = time.monotonic()
        got = b""
        try:
            for byte in b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 60:  # a byte every 50 ms
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                sock.settimeout(0.05)
                try:
                    got = sock.recv(65536)
                    break
                except socket.timeout:
                    continue
        finally:
            results[n] = (got, time.monotonic() - start)
            sock.close()

    threads = [threading.Thread(target=slowloris, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    answered = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as c:
        while any(t.is_alive() for t in threads):
            r = c.get("/ping")
            assert (r.status_code, r.json()) == (200, {"pong": True})
            answered += 1
    for t in threads:
        t.join()
    assert answered >= 5  # served all along, not only after the slow ones were dropped
    for got, elapsed in results.values():
        assert got.startswith(b"HTTP/1.1 408"), got
        assert 0.9 < elapsed < 3.5  # trickling bytes did not extend the deadline


def test_a_client_that_reads_nothing_of_100_mb(start_server, tmp_path):
    """A raw ASGI app streams 100 MB in 1 MiB pieces to a client that reads
    nothing: send() blocks once the unsent output is above high_water, so the
    worker's RSS grows by far less than the response (< 20 MB); then the
    client reads, and gets all of it."""
    progress = tmp_path / "progress"
    srv = start_server(names=("http",),
                       extra='\n[[route]]\npath = "/big"\nasgi = "tests.framework_apps:hundred_mb"\n'
                             '\n[[route]]\npath = "/status"\nhandler = "status"\n',
                       env=dict(os.environ, PREFORK_TEST_PROGRESS=str(progress)))
    [worker] = srv.wait_workers(1)
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as c:
        assert c.get("/status").status_code == 200  # warm: the worker has served a request
    base = rss(worker)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", srv.port))
    try:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(progress.exists, what="the app's first send")

        # the count has stopped moving: the app waits in send()
        sent = until_still(lambda: int(progress.read_text()), timeout=30, what="the app to block in send()")
        peak = max(rss(worker) for _ in range(5))
        assert sent < 20, f"{sent} MiB handed over to a client that reads nothing"
        assert peak - base < 20 << 20, f"worker RSS grew by {(peak - base) >> 20} MiB"
        sock.settimeout(20)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert b"content-length: %d" % (HUNDRED_CHUNK * HUNDRED_CHUNKS) in head.lower()
        got = len(rest)
        view = bytearray(1 << 20)
        while got < HUNDRED_CHUNK * HUNDRED_CHUNKS:
            n = sock.recv_into(view)
            assert n, f"closed after {got} bytes"
            got += n
        assert got == HUNDRED_CHUNK * HUNDRED_CHUNKS
        assert view[n - 1] == 65 + (HUNDRED_CHUNKS - 1) % 26  # the last piece's byte
        assert wait_until(lambda: progress.read_text() == str(HUNDRED_CHUNKS), what="the app's last send")
    finally:
        sock.close()


# --- forwarded headers ----------------------------------------------------------------

FORWARDED = """
[status]
allow = ["192.0.2.0/24"]

[[route]]
path = "/status"
handler = "status"

[[route]]
path = "/dj/"
asgi = "tests.django_project.asgi:application"

[[route]]
path = "/"
asgi = "tests.framework_apps:starlette_app"

[log]
error_log = "{tmp}/error.log"
access_log = "{tmp}/access.log"
"""


@pytest.fixture
def proxied(start_server, tmp_path):
    """127.0.0.1 is the trusted proxy; a client from 127.0.0.2 is anyone else."""
    return start_server(names=("http",), http='forwarded_allow = ["127.0.0.1", "10.0.0.0/8"]',
                        extra=FORWARDED.format(tmp=tmp_path))


def via(srv, source: str) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10,
                        transport=httpx.HTTPTransport(local_address=source))


XFF = {"X-Forwarded-For": "198.51.100.9, 192.0.2.7:5555, 10.1.1.1", "X-Forwarded-Proto": "https"}


def _access_line(tmp_path, marker: str) -> str:
    def find():
        path = tmp_path / "access.log"
        lines = [line for line in (path.read_text() if path.exists() else "").splitlines() if marker in line]
        return lines[-1] if lines else None
    return wait_until(find, what=f"the access log line of {marker}")


def test_forwarded_headers_from_a_trusted_proxy(proxied, tmp_path):
    with via(proxied, "127.0.0.1") as c:
        # X-Forwarded-*: the right-most address that is not a trusted proxy
        assert c.get("/who", params={"n": 1}, headers=XFF).json() == {"client": ["192.0.2.7", 5555],
                                                                    "scheme": "https"}
        r = c.get("/who", params={"n": 2}, headers={"Forwarded": 'for="[2001:db8::7]:80";proto=https, for=10.2.2.2'})
        assert r.json() == {"client": ["2001:db8::7", 80], "scheme": "https"}
        r = c.post("/dj/async", json=1, headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.8"})
        assert (r.json()["scheme"], r.json()["remote_addr"]) == ("https", "192.0.2.8")  # Django sees it too
        # /status's allow judges the forwarded client, not the proxy
        assert c.get("/status").status_code == 403
        assert c.get("/status", headers={"X-Forwarded-For": "192.0.2.200"}).status_code == 200
        assert c.get("/status", headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 403
        assert c.get("/status", headers={"Forwarded": "for=unknown"}).status_code == 403
    assert _access_line(tmp_path, "/who?n=1 ").startswith("192.0.2.7 - - [")
    assert _access_line(tmp_path, "/who?n=2 ").startswith("2001:db8::7 - - [")


def test_forwarded_headers_from_anyone_else_are_ignored(proxied, tmp_path):
    with via(proxied, "127.0.0.2") as c:
        who = c.get("/who", params={"n": 3}, headers=XFF).json()
        assert who["client"][0] == "127.0.0.2" and who["scheme"] == "http"
        who = c.get("/who", headers={"Forwarded": "for=192.0.2.1;proto=https"}).json()
        assert who["client"][0] == "127.0.0.2" and who["scheme"] == "http"
        assert c.get("/status", headers={"X-Forwarded-For": "192.0.2.200"}).status_code == 403
    assert _access_line(tmp_path, "/who?n=3 ").startswith("127.0.0.2 - - [")


def test_forwarded_headers_are_ignored_without_forwarded_allow(start_server, tmp_path):
    srv = start_server(names=("http",), extra=FORWARDED.format(tmp=tmp_path))
    with via(srv, "127.0.0.1") as c:
        assert c.get("/who", headers=XFF).json()["scheme"] == "http"
        assert c.get("/who", headers=XFF).json()["client"][0] == "127.0.0.1"
        assert c.get("/status", headers={"X-Forwarded-For": "192.0.2.200"}).status_code == 403


def test_unix_socket_peers_are_trusted_with_unix(start_server, tmp_path):
    """forwarded_allow = ["unix"]: a proxy on the unix-socket listener is
    believed, a TCP client is not."""
    path = tmp_path / "prefork.sock"
    srv = start_server(names=("http",), http='forwarded_allow = ["unix"]',
                       extra=FORWARDED.format(tmp=tmp_path) + f'\n[[listen]]\naddress = "unix:{path}"\n')
    wait_until(path.exists, what="the unix socket")
    with httpx.Client(base_url="http://proxy", timeout=10, transport=httpx.HTTPTransport(uds=str(path))) as c:
        # only the unix peer is trusted here: 10.1.1.1, the right-most, is the client
        assert c.get("/who", headers=XFF).json() == {"client": ["10.1.1.1", 0], "scheme": "https"}
        assert c.get("/status", headers={"X-Forwarded-For": "192.0.2.200"}).status_code == 200
        assert c.get("/status").status_code == 403  # a unix peer, not in [status] allow
    with via(srv, "127.0.0.1") as c:
        assert c.get("/who", headers=XFF).json()["scheme"] == "http"
