"""Streamed request bodies and the pathsend extension over real sockets
(issue 15), on uvloop and asyncio: an upload of a few MiB to a raw app that
counts what it receives (Content-Length and chunked; two uploads pipelined,
the second streamed at its turn), a Starlette app reading
``request.stream()``, ``Expect: 100-continue`` on a raw socket, and Starlette's
``FileResponse`` served through ``http.response.pathsend`` (bytes compared;
HEAD; a client that reads nothing keeps the worker's memory bounded).

tests/unit/test_asgi_body.py has the in-process tests."""

from __future__ import annotations

import hashlib
import os
import socket
import time

import httpx
import pytest

from conftest import Client, wait_until

ROUTES = """
[[route]]
path = "/count"
asgi = "tests.asgi_stream_apps:count_body"

[[route]]
path = "/"
asgi = "tests.asgi_stream_apps:starlette_files"
"""

SIZE = 5 * 1024 * 1024 + 123


@pytest.fixture(params=["uvloop", "asyncio"])
def backend(request):
    """ASGI routes run on the asyncio loops only (epoll refuses them at config time)."""
    return request.param


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


@pytest.fixture
def srv(start_server, big_file):
    return start_server(names=("http",), http="max_body = 16777216", extra=ROUTES,
                        env=dict(os.environ, PREFORK_TEST_FILE=str(big_file)))


def test_an_upload_of_a_few_mib_streams_to_the_app(srv, big_file):
    data = big_file.read_bytes()
    want = hashlib.sha256(data).hexdigest()

    def pieces():
        for i in range(0, len(data), 100_000):
            yield data[i:i + 100_000]

    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=30) as client:
        got = client.post("/count", content=data).json()  # Content-Length
        assert (got["bytes"], got["sha256"]) == (SIZE, want)
        assert got["messages"] > 1  # it came as it arrived, not gathered whole
        assert got["extensions"] == ["http.response.pathsend"]
        got = client.post("/count", content=pieces()).json()  # chunked
        assert (got["bytes"], got["sha256"]) == (SIZE, want) and got["messages"] > 1
        # and Starlette's request.stream()
        got = client.post("/upload", content=pieces()).json()
        assert (got["bytes"], got["sha256"]) == (SIZE, want) and got["pieces"] > 1
        # beyond max_body: 413 (declared length, before the app runs)
        r = client.post("/count", content=b"x" * (16777216 + 1))
        assert r.status_code == 413


def test_two_pipelined_uploads_both_stream_and_are_answered_in_order(srv):
    """Sent back to back in one go: the second upload's head (and the start of
    its body) arrives while the app still has the first; at its turn it streams
    too (more than one http.request message), not gathered whole."""
    import json

    first, second = os.urandom(3 * 1024 * 1024 + 7), os.urandom(4 * 1024 * 1024 + 11)
    c = Client(srv.connect())
    try:
        c.sock.settimeout(30)
        c.send(b"".join(b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(d), d)
                        for d in (first, second)))
        for data in (first, second):
            status, _, body = c.response()
            got = json.loads(body)
            assert status == 200 and (got["bytes"], got["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
            assert got["messages"] > 1, got  # streamed, both of them
    finally:
        c.close()


def test_expect_100_continue_is_answered_when_the_app_reads(srv):
    c = Client(srv.connect())
    try:
        c.send(b"POST /count HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        status, _, _ = c.response()
        assert status == 100
        c.send(b"hello")
        status, _, body = c.response()
        assert status == 200 and b'"bytes": 5' in body
    finally:
        c.close()


def test_starlette_file_response_goes_through_pathsend(srv, big_file):
    data = big_file.read_bytes()
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=30) as client:
        r = client.get("/file")
        assert r.status_code == 200 and int(r.headers["content-length"]) == SIZE
        assert r.content == data
        r = client.head("/file")
        assert r.status_code == 200 and int(r.headers["content-length"]) == SIZE and r.content == b""
        assert client.get("/file").content == data  # kept alive, again
        r = client.get("/file", headers={"Range": "bytes=10-19"})  # Starlette streams ranges itself
        assert r.status_code == 206 and r.content == data[10:20]


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_pathsend_to_a_client_that_reads_nothing_keeps_the_worker_small(start_server, tmp_path):
    """A 200 MiB file (sparse) to a client that reads nothing: the worker reads
    the file only as the socket drains, so its memory stays near what it was."""
    huge = tmp_path / "huge.bin"
    with open(huge, "wb") as f:
        f.truncate(200 * 1024 * 1024)
    srv = start_server(names=("http",), extra=ROUTES, env=dict(os.environ, PREFORK_TEST_FILE=str(huge)))
    [worker] = srv.wait_workers(1)
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
        assert client.get("/count").status_code == 200  # the app is loaded, warm
    before = _rss_kib(worker)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", srv.port))
    try:
        sock.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
        samples = []

        def settled():  # RSS has stopped moving
            samples.append(_rss_kib(worker))
            return len(samples) > 10 and max(samples[-10:]) - min(samples[-10:]) < 256
        wait_until(settled, timeout=20, interval=0.05, what="the worker's RSS to settle")
        assert max(samples) - before < 32 * 1024, f"RSS grew {max(samples) - before} KiB"
        sock.settimeout(20)
        got = 0
        deadline = time.monotonic() + 60
        while got < 200 * 1024 * 1024 + 100 and time.monotonic() < deadline:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        assert got > 200 * 1024 * 1024  # then it all comes
    finally:
        sock.close()
