"""Handlers over the wire: the thread pool, user handlers, static files, status.

This file: the tests with server processes, subprocesses and sockets;
tests/unit/test_apps.py has the in-process ones."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, Client, free_port, make_config, wait_until


ROUTES = """
[[route]]
path = "/plaintext"
handler = "plaintext"

[[route]]
path = "/hello"
handler = "examples.hello:hello"

[[route]]
path = "/slow"
handler = "examples.hello:slow"
blocking = true

[[route]]
path = "/boom"
handler = "examples.hello:boom"

[[route]]
path = "/boom-in-pool"
handler = "examples.hello:boom"
blocking = true

[[route]]
path = "/files/"
handler = "static"

[[route]]
path = "/status"
handler = "status"

[[route]]
path = "/metrics"
handler = "metrics"
"""


@pytest.fixture
def docroot(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "small.txt").write_bytes(b"0123456789" * 10)
    (root / "page.html").write_text("<p>hi</p>")
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_text("sub index")
    (root / "noindex").mkdir()
    (root / "big.bin").write_bytes(os.urandom(1 << 20) * 50)  # 50 MiB: sent with sendfile
    (tmp_path / "secret.txt").write_text("outside the root")
    os.symlink(tmp_path / "secret.txt", root / "escape.txt")
    os.symlink(root / "small.txt", root / "inside-link.txt")
    return root


def start(start_server, docroot, server="workers = 1", routes=ROUTES, status_allow=None):
    extra = routes + f'\n[static]\nroot = "{docroot}"\n'
    if status_allow is not None:
        extra += f"\n[status]\nallow = {status_allow}\n"
    return start_server(server=server, names=("http",), extra=extra)


def get(port, path, headers=b"", method=b"GET"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        c = Client(s)
        c.send(method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n")
        return c.response(head_only=method == b"HEAD")


# --- handlers and the pool ---------------------------------------------------------------


def test_user_handler_and_example(start_server, docroot):
    srv = start(start_server, docroot)
    status, headers, body = get(srv.port, b"/hello?name=prefork")
    assert status == 200
    assert headers["x-example"] == "hello"
    assert body == b'{"hello": "prefork", "method": "GET", "bytes": 0}'


def test_blocking_handler_runs_in_pool_without_blocking_the_loop(start_server, docroot):
    srv = start(start_server, docroot)
    slow = Client(srv.connect())
    slow.send(b"GET /slow?s=1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
    start_t = time.monotonic()
    # the same (only) worker keeps answering while the slow handler sleeps in the pool
    for _ in range(5):
        assert get(srv.port, b"/plaintext")[0] == 200
    assert time.monotonic() - start_t < 1.0
    status, _, body = slow.response()
    assert (status, body) == (200, b"done\n")
    assert time.monotonic() - start_t >= 1.4


def test_pipelined_requests_keep_order_around_pool_work(start_server, docroot):
    srv = start(start_server, docroot)
    c = Client(srv.connect())
    c.send(b"GET /slow?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /slow?s=0.1 HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    bodies = [c.response()[2] for _ in range(4)]
    assert bodies[0] == b"done\n" and bodies[1] == b"Hello, World!"
    assert bodies[2] == b"done\n" and bodies[3].startswith(b'{"hello"')


def test_pool_saturation_gives_503(start_server, docroot):
    srv = start(start_server, docroot, server="workers = 1\nthreads = 1\nqueue = 1")
    clients = [Client(srv.connect()) for _ in range(4)]
    for c in clients:
        c.send(b"GET /slow?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    results = [c.response() for c in clients]
    statuses = sorted(r[0] for r in results)
    # at most one running and one queued; the rest are turned away at once
    # (one fewer gets in when the second arrives before the thread took the first)
    assert 1 <= statuses.count(200) <= 2
    assert statuses.count(503) == 4 - statuses.count(200)
    assert all(r[1]["retry-after"] == "1" for r in results if r[0] == 503)
    assert get(srv.port, b"/plaintext")[0] == 200


@pytest.mark.parametrize("path", [b"/boom", b"/boom-in-pool"])
def test_handler_exception_gives_500_and_worker_lives(start_server, docroot, path):
    srv = start(start_server, docroot)
    [worker] = srv.wait_workers(1)
    status, headers, body = get(srv.port, path)
    assert status == 500
    assert b"RuntimeError" not in body and b"Traceback" not in body  # nothing internal leaks
    assert get(srv.port, b"/plaintext")[0] == 200
    assert srv.workers() == [worker]


def test_bad_handler_is_a_config_error_naming_route_and_callable(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(make_config({"http": free_port()}) +
                    '\n[[route]]\npath = "/x"\nhandler = "examples.nope:handler"\n')
    for args in (["-t", "-c", str(path)], ["-c", str(path)]):
        res = subprocess.run([sys.executable, "-m", "prefork.cli", *args], cwd=ROOT, capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=30)
        assert res.returncode == 1
        assert "route[0].handler" in res.stderr and "examples.nope:handler" in res.stderr
    path.write_text(make_config({"http": free_port()}) +
                    '\n[[route]]\npath = "/x"\nhandler = "examples.hello:missing"\n')
    res = subprocess.run([sys.executable, "-m", "prefork.cli", "-t", "-c", str(path)], cwd=ROOT, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=30)
    assert res.returncode == 1 and "has no attribute 'missing'" in res.stderr


def test_reload_with_bad_handler_keeps_running(start_server, docroot):
    srv = start(start_server, docroot)
    old = srv.wait_workers(1)
    srv.path.write_text(srv.path.read_text() + '\n[[route]]\npath = "/y"\nhandler = "no.such:thing"\n')
    os.kill(srv.pid, signal.SIGHUP)
    wait_until(lambda: "reload failed" in srv.log(), what="reload failure logged")
    assert "no.such:thing" in srv.log()
    assert srv.workers() == old
    assert get(srv.port, b"/hello")[0] == 200


# --- static files ------------------------------------------------------------------------


def test_static_content_and_headers(start_server, docroot):
    srv = start(start_server, docroot)
    status, h, body = get(srv.port, b"/files/small.txt")
    assert status == 200 and body == b"0123456789" * 10
    assert h["content-type"] == "text/plain" and h["content-length"] == "100"
    assert h["accept-ranges"] == "bytes"
    mtime = int(os.stat(docroot / "small.txt").st_mtime)
    assert h["etag"] == f'"{mtime:x}-64"'
    assert h["last-modified"].endswith("GMT")
    status, h2, body = get(srv.port, b"/files/small.txt", method=b"HEAD")
    assert status == 200 and body == b"" and h2["content-length"] == "100" and h2["etag"] == h["etag"]
    assert get(srv.port, b"/files/page.html")[1]["content-type"] == "text/html"
    assert get(srv.port, b"/files/missing.txt")[0] == 404
    assert get(srv.port, b"/files/small.txt", method=b"POST")[0] == 405


def test_static_conditional_requests(start_server, docroot):
    srv = start(start_server, docroot)
    _, h, _ = get(srv.port, b"/files/small.txt")
    status, _, body = get(srv.port, b"/files/small.txt", b"If-None-Match: " + h["etag"].encode() + b"\r\n")
    assert (status, body) == (304, b"")
    assert get(srv.port, b"/files/small.txt", b'If-None-Match: "other"\r\n')[0] == 200
    status, _, _ = get(srv.port, b"/files/small.txt", b"If-Modified-Since: " + h["last-modified"].encode() + b"\r\n")
    assert status == 304
    assert get(srv.port, b"/files/small.txt", b"If-Modified-Since: Thu, 01 Jan 1998 00:00:00 GMT\r\n")[0] == 200


def test_static_ranges(start_server, docroot):
    srv = start(start_server, docroot)
    status, h, body = get(srv.port, b"/files/small.txt", b"Range: bytes=10-14\r\n")
    assert (status, body) == (206, b"01234") and h["content-range"] == "bytes 10-14/100"
    status, h, body = get(srv.port, b"/files/small.txt", b"Range: bytes=-3\r\n")
    assert (status, body) == (206, b"789")
    status, h, _ = get(srv.port, b"/files/small.txt", b"Range: bytes=500-\r\n")
    assert status == 416 and h["content-range"] == "bytes */100"
    status, h, body = get(srv.port, b"/files/big.bin", b"Range: bytes=1048576-1048585\r\n")
    with open(docroot / "big.bin", "rb") as f:
        f.seek(1048576)
        assert (status, body) == (206, f.read(10))


def test_static_invalid_range_is_ignored(start_server, docroot):
    """An invalid range is ignored (RFC 9110 14.2): 200 with the whole file,
    never a 416 nor a part; positions are 1*DIGIT, not what int() accepts."""
    srv = start(start_server, docroot)
    for value in (b"bytes=--5", b"bytes=-+5", b"bytes=+5-", b"bytes=1_0-", b"bytes=1-1_0", b"bytes= 5-", b"bytes=5- 9"):
        status, h, body = get(srv.port, b"/files/small.txt", b"Range: " + value + b"\r\n")
        assert (status, "content-range" in h, body) == (200, False, b"0123456789" * 10), value
        status, h, _ = get(srv.port, b"/files/big.bin", b"Range: " + value + b"\r\n", method=b"HEAD")
        assert (status, "content-range" in h, h["content-length"]) == (200, False, str(50 << 20)), value


def test_static_directories(start_server, docroot):
    srv = start(start_server, docroot)
    status, h, _ = get(srv.port, b"/files/sub")
    assert status == 301 and h["location"] == "/files/sub/"
    assert get(srv.port, b"/files/sub/")[2] == b"sub index"
    assert get(srv.port, b"/files/noindex/")[0] == 403  # no listings
    status, h, _ = get(srv.port, b"/files")
    assert status == 301 and h["location"] == "/files/"


def test_static_directory_redirect_is_percent_encoded(start_server, docroot):
    (docroot / "a b%?").mkdir()
    (docroot / "a b%?" / "index.html").write_text("spaced index")
    srv = start(start_server, docroot)
    status, h, _ = get(srv.port, b"/files/a%20b%25%3F")
    assert status == 301 and h["location"] == "/files/a%20b%25%3F/"
    assert get(srv.port, h["location"].encode())[2] == b"spaced index"


@pytest.mark.parametrize("path", [b"/files/small.txt/", b"/files/big.bin/", b"/files/inside-link.txt/",
                                  b"/files/sub/index.html/"])
def test_static_trailing_slash_on_a_file_is_404(start_server, docroot, path):
    srv = start(start_server, docroot)
    for _ in range(2):  # the second time with the file (without the slash) in the cache
        assert get(srv.port, path)[0] == 404
        assert get(srv.port, path.rstrip(b"/"))[0] == 200


@pytest.mark.parametrize("path", [
    b"/files/../secret.txt",
    b"/files/%2e%2e/secret.txt",
    b"/files/%2E%2E%2Fsecret.txt",
    b"/files/sub/..%2f..%2fsecret.txt",
    b"/files/..%5csecret.txt",
    b"/files/sub\\..\\..\\secret.txt",
    b"/files/small.txt%00.html",
    b"/files/./small.txt",
    b"/files/escape.txt",
])
def test_static_traversal_never_serves_the_file(start_server, docroot, path):
    srv = start(start_server, docroot)
    status, _, body = get(srv.port, path)
    assert status in (400, 403, 404)
    assert b"outside the root" not in body
    assert str(docroot).encode() not in body  # no paths in error pages


def test_static_symlink_inside_root_is_served(start_server, docroot):
    srv = start(start_server, docroot)
    assert get(srv.port, b"/files/inside-link.txt")[2] == b"0123456789" * 10


def test_static_large_file_to_slow_reader_does_not_block_worker(start_server, docroot):
    srv = start(start_server, docroot)  # one worker: the slow client and the others share it
    slow = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    slow.sendall(b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    first = slow.recv(4096)  # then nothing is read: 50 MiB is far more than the socket buffers hold
    assert first.startswith(b"HTTP/1.1 200")
    # while 50 MiB wait to be read, other requests on the same worker are prompt
    for _ in range(20):
        t = time.monotonic()
        assert get(srv.port, b"/files/small.txt")[0] == 200
        assert time.monotonic() - t < 0.5
    # then read it all, slowly at first, and check every byte
    head, _, rest = first.partition(b"\r\n\r\n")
    assert b"Content-Length: 52428800" in head
    received = bytearray(rest)
    while len(received) < 50 << 20:
        chunk = slow.recv(1 << 20)
        assert chunk
        received += chunk
    with open(docroot / "big.bin", "rb") as f:
        assert bytes(received) == f.read()
    slow.close()


# --- status ---------------------------------------------------------------------------------


def test_status_counts_add_up_across_workers(start_server, docroot):
    srv = start(start_server, docroot, server="workers = 2")
    workers = srv.wait_workers(2)
    n = 40
    for _ in range(n):
        assert get(srv.port, b"/plaintext")[0] == 200

    def settled():
        body = get(srv.port, b"/status")[2].decode()
        lines = body.splitlines()
        accepted, handled, requests = map(int, lines[2].split())
        per_worker = [line for line in lines if line.startswith("worker ")]
        worker_requests = sum(int(line.split(" requests ")[1].split()[0]) for line in per_worker)
        # n plaintext requests, plus status requests so far (this one included)
        return (len(per_worker) == 2 and requests == worker_requests and requests >= n + 1
                and accepted == handled and all(str(p) in body for p in workers)) and body

    body = wait_until(settled, timeout=10, interval=0.3, what="status totals to settle")
    assert body.startswith("Active connections: ")
    assert "Reading: " in body and "Writing: " in body and "Waiting: " in body
    metrics = get(srv.port, b"/metrics")[2].decode()
    assert "# TYPE prefork_requests_total counter" in metrics
    values = [int(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith("prefork_requests_total{")]
    assert len(values) == 2 and sum(values) >= n


def test_status_reading_and_writing_follow_connections(start_server, docroot):
    """Reading counts connections part-way through a request; the status
    request itself is writing; both fall back when the clients go away."""
    srv = start(start_server, docroot, server="workers = 1")
    srv.wait_workers(1)

    def counts():
        line = get(srv.port, b"/status")[2].decode().splitlines()[3].split()
        return int(line[1]), int(line[3]), int(line[5])  # reading, writing, waiting

    wait_until(lambda: counts() == (0, 1, 0), what="only the status request")
    partial = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n")  # the head is not finished
        partial.append(s)
    idle = socket.create_connection(("127.0.0.1", srv.port))  # open, nothing sent yet
    wait_until(lambda: counts() == (3, 1, 1), what="3 reading, 1 waiting")
    for s in partial:
        s.sendall(b"\r\n")  # finish the requests: answered, then idle in keep-alive
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    wait_until(lambda: counts() == (0, 1, 4), what="the 3 answered and idle")
    for s in partial + [idle]:
        s.close()
    wait_until(lambda: counts() == (0, 1, 0), what="all closed")


def test_status_refused_to_other_addresses(start_server, docroot):
    srv = start(start_server, docroot, status_allow='["127.0.0.1"]')
    for path in (b"/status", b"/metrics"):
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))  # another loopback address as the client
            s.settimeout(10)
            s.connect(("127.0.0.1", srv.port))
            c = Client(s)
            c.send(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status, _, body = c.response()
            assert status == 403 and b"Active" not in body
    assert get(srv.port, b"/status")[0] == 200


def _unix_get(path, target):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        c = Client(s)
        c.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return c.response()


@pytest.mark.parametrize("allow,unix_status", [(None, 403), ('["127.0.0.1", "unix"]', 200)])
def test_status_unix_socket_clients_only_when_allowed(start_server, docroot, tmp_path, allow, unix_status):
    """A unix-socket peer may be a reverse proxy relaying anyone: refused unless
    ``[status] allow`` lists "unix"; the default allows loopback TCP only."""
    sock = tmp_path / "s.sock"
    srv = start(start_server, docroot, status_allow=allow,
                routes=ROUTES + f'\n[[listen]]\naddress = "unix:{sock}"\nprotocol = "http"\nname = "unix"\n')

    def serves():
        try:
            return _unix_get(sock, b"/plaintext")[0] == 200  # bound after the TCP port: poll until it listens
        except (FileNotFoundError, ConnectionRefusedError):
            return False

    wait_until(serves, what="the unix socket to serve")
    for target in (b"/status", b"/metrics"):
        status, _, body = _unix_get(sock, target)
        assert status == unix_status and (b"Active" in body or b"prefork_" in body) == (unix_status == 200)
        assert get(srv.port, target)[0] == 200  # loopback TCP: allowed either way
