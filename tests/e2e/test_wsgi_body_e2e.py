"""Large WSGI request bodies stream into ``wsgi.input`` over real sockets
(issue 16, point 3), on the epoll reactor and uvloop: a 5 MiB upload
(Content-Length and chunked) to an app that reads it in 64 KiB pieces comes
through whole (sha256 and size), the worker's peak memory grows far less
than the body, and a body up to ``wsgi_body_buffer`` still comes whole.

tests/unit/test_wsgi_body.py has the in-process tests."""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest

ROUTES = """
[[route]]
path = "/"
wsgi = "tests.wsgi_body_apps:digest"
"""

SIZE = 5 * 1024 * 1024 + 321


@pytest.fixture(params=["epoll", "uvloop"])
def backend(request):
    return request.param


def _hwm_kib(pid: int) -> int:
    """The process's peak resident memory (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def test_a_5_mib_upload_streams_and_the_worker_stays_small(start_server):
    srv = start_server(names=("http",), http="max_body = 16777216", extra=ROUTES)
    [worker] = srv.wait_workers(1)
    data = os.urandom(SIZE)
    want = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": SIZE, "input": "BodyInput", "terminated": True}
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=30) as client:
        small = b"s" * 65536  # wsgi_body_buffer's default: whole, before the app runs
        r = client.post("/up", content=small)
        assert r.json() == {"sha256": hashlib.sha256(small).hexdigest(), "bytes": len(small), "input": "BytesIO",
                            "terminated": True}
        before = _hwm_kib(worker)
        r = client.post("/up", content=data)  # Content-Length
        assert r.status_code == 200 and r.json() == want
        assert r.headers.get("connection") != "close"

        def pieces():
            for i in range(0, len(data), 100_000):
                yield data[i:i + 100_000]
        r = client.post("/up", content=pieces())  # chunked
        assert r.status_code == 200 and r.json() == want
        grown = _hwm_kib(worker) - before
        assert grown < 1536, f"the worker's peak RSS grew {grown} KiB for a {SIZE >> 10} KiB body"
        r = client.post("/up", content=b"tiny")  # the connection is still good
        assert r.json()["input"] == "BytesIO" and r.json()["bytes"] == 4
