"""The hostile request corpus (tests/requests/), run over real sockets on every
backend: each case's bytes are sent at once, the responses read back, and the
connection must end up as the case says -- closed, or still serving -- with
the server answering a fresh connection afterwards.

A case is two files in tests/requests/valid/ or tests/requests/invalid/:
``NAME.http``, the bytes, written with escapes (``\\r``, ``\\n``, ``\\xNN``;
the file's own line breaks are only for reading and are dropped), and
``NAME.toml``: ``statuses = [...]`` (the responses, in order) and ``closed``
(whether the server must close the connection after them). The outcomes
follow RFC 9112 and what nginx does.

This file: the tests with server processes, subprocesses and sockets;
tests/unit/test_hostile.py has the in-process ones."""

from __future__ import annotations

import socket
import time

import pytest

from conftest import BACKENDS, Server, free_port, http_get, make_config
from testkit import CASES, load_case as load


FOLLOW_UP = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory):
    port = free_port()
    config = make_config({"http": port}, f'backend = "{request.param}"\nworkers = 1')
    srv = Server(tmp_path_factory.mktemp(f"hostile-{request.param}"), config, {"http": port}).start()
    srv.wait_workers(1)
    yield srv
    srv.stop()


class Reader:
    """Reads responses off a socket one by one, and whether it was closed."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def fill(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def response(self, head_only: bool, timeout: float = 5.0) -> int | None:
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if self.eof or not self.fill(deadline):
                return None
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if head_only or status == 100 or status == 304:
            length = 0
        while len(rest) < length:
            if self.eof or not self.fill(deadline):
                return None
            rest = self.buf.partition(b"\r\n\r\n")[2]
        self.buf = rest[length:]
        return status

    def closed(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self.fill(deadline)
        return self.eof


@pytest.mark.parametrize("case", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_request_corpus(server, case):
    raw, statuses, closed = load(case)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(raw)
        reader = Reader(sock)
        got = []
        for _ in statuses:
            status = reader.response(head_only=raw.startswith(b"HEAD "))
            if status is None:
                break
            got.append(status)
        assert got == statuses, f"{case.stem}: expected {statuses}, got {got}"
        if closed:
            assert reader.closed(), f"{case.stem}: the connection should have been closed"
            assert reader.buf == b"", f"{case.stem}: nothing may follow the last response: {reader.buf[:80]!r}"
        else:
            sock.sendall(FOLLOW_UP)
            assert reader.response(head_only=False) == 200, f"{case.stem}: the connection should still serve"
    assert http_get(server.port)[0] == 200  # and the server answers everyone else
