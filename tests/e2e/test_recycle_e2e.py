"""Worker recycling over real processes: ``[server] max_requests`` and
``max_rss``. A worker past either is replaced in its slot the way a reload
replaces it (successor on the same listening socket, ready first, then the
old one retires gracefully), so no client request fails across it; built-in
handlers on epoll and ASGI routes on uvloop and asyncio.

tests/unit/test_recycle.py has the pure parts (jitter, config keys, the
Recycler's decisions against a fake master)."""

from __future__ import annotations

import os
import re
import socket
import threading
import time

import pytest

from conftest import Client, pid_alive, wait_until
from testkit import listening_inodes

N = 300  # max_requests in these tests

BUILTIN_ROUTES = """
[[route]]
path = "/plaintext"
handler = "plaintext"

[[route]]
path = "/status"
handler = "status"

[[route]]
path = "/slow"
handler = "tests.recycle_apps:slow"
blocking = true
"""

ASGI_ROUTES = """
[[route]]
path = "/status"
handler = "status"

[[route]]
path = "/"
asgi = "tests.asgi_apps:starlette_app"
"""

LEAKY_ROUTES = {
    "epoll": '[[route]]\npath = "/leak"\nhandler = "tests.recycle_apps:handler"\n',
    "uvloop": '[[route]]\npath = "/"\nasgi = "tests.recycle_apps:app"\n',
}


class Traffic:
    """A client that keeps sending ``GET path`` until stopped, alternating a
    kept-alive connection (reopened when the server says ``Connection:
    close``) and a new connection per request; every outcome is recorded."""

    def __init__(self, port: int, path: str, pace: float = 0.0):
        self.port, self.path, self.pace = port, path, pace
        self.statuses: list[int] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self) -> Client:
        return Client(socket.create_connection(("127.0.0.1", self.port), timeout=10))

    def _run(self) -> None:
        kept = None
        request = f"GET {self.path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        fresh = f"GET {self.path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        n = 0
        while not self.stopping.is_set():
            n += 1
            try:
                if n % 2:
                    if kept is None:
                        kept = self._connect()
                    kept.send(request)
                    status, headers, _ = kept.response()
                    if headers.get("connection") == "close":
                        kept.close()
                        kept = None
                else:
                    one = self._connect()
                    one.send(fresh)
                    status = one.response()[0]
                    one.close()
                self.statuses.append(status)
                if status != 200:
                    self.failures.append(f"request {n}: status {status}")
            except OSError as exc:
                self.failures.append(f"request {n}: {exc!r}")
                if kept is not None:
                    kept.close()
                    kept = None
            if self.pace:
                self.stopping.wait(self.pace)  # a request rate, not a readiness wait
        if kept is not None:
            kept.close()

    def __enter__(self) -> "Traffic":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(30)


def get(port: int, path: str, keep: Client | None = None) -> tuple[int, dict, bytes]:
    client = keep or Client(socket.create_connection(("127.0.0.1", port), timeout=10))
    client.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    try:
        return client.response()
    finally:
        if keep is None:
            client.close()


@pytest.mark.parametrize("backend,accept", [("epoll", "reuseport"), ("epoll", "shared"),
                                            ("uvloop", "reuseport"), ("asyncio", "reuseport")])
def test_max_requests_replaces_the_worker_in_its_slot_and_no_request_fails(start_server, backend, accept):
    asgi = backend != "epoll"
    path, slow = ("/", "/slow?s=8&n=x") if asgi else ("/plaintext", "/slow?s=8")
    srv = start_server(server=f'workers = 1\naccept = "{accept}"\nmax_requests = {N}\nshutdown_timeout = 20',
                       names=("http",), extra=ASGI_ROUTES if asgi else BUILTIN_ROUTES)
    [old] = srv.wait_workers(1)
    old_sockets = listening_inodes(old)
    # N - 1 requests, kept alive and on new connections (the last one, /status,
    # makes the worker publish its count at once): no recycle yet
    keep = Client(srv.connect())
    for i in range(N - 2):
        assert get(srv.port, path, keep if i % 2 else None)[0] == 200
    status, _, body = get(srv.port, "/status", keep)
    assert status == 200 and re.search(rb"pid %d .* requests %d " % (old, N - 1), body), body
    time.sleep(0.6)  # an absence: two of the master's 0.25 s ticks see N - 1 and leave the worker be
    assert srv.workers() == [old]
    # request N is a slow one: the old worker must finish it after it is told to retire
    answer: list = []
    slow_client = threading.Thread(target=lambda: answer.append(get(srv.port, slow)))
    slow_client.start()
    wait_until(lambda: "replacing it" in srv.log(), timeout=10, what="the recycle")
    with Traffic(srv.port, path, pace=0.005) as traffic:
        new = wait_until(lambda: [p for p in srv.workers() if p != old], timeout=15, what="the successor")[0]
        # the successor serves the old worker's listening socket (not one bound anew)
        assert wait_until(lambda: listening_inodes(new) == old_sockets, timeout=5, what="the same socket")
        # the old worker retires once its successor is ready: it closes its idle
        # connection (after the drain grace) while the slow request is in flight
        assert keep.closed(timeout=10)
        assert not answer and pid_alive(old)
        wait_until(lambda: not pid_alive(old), timeout=25, what="the old worker to exit")
        wait_until(lambda: len(traffic.statuses) > 20, what="requests served by the successor")
    slow_client.join(10)
    assert traffic.failures == []
    status, headers, body = answer[0]
    assert status == 200 and body == (b"slow x" if asgi else b"done\n")
    # the master logs the exit once it has reaped the worker (a zombie is not alive already)
    wait_until(lambda: re.search(rf"worker process {old} \(slot 0\) exited with code 0", srv.log()),
               timeout=10, what="the master to reap the old worker")
    log = srv.log()
    m = re.search(rf"worker 0 \(pid {old}\) served (\d+) requests \(max_requests {N}\): replacing it", log)
    assert m and int(m.group(1)) >= N, log
    assert "respawning" not in log and "could not start" not in log
    assert get(srv.port, path)[0] == 200


@pytest.mark.parametrize("backend", ["epoll", "uvloop"])
def test_each_successor_takes_its_own_slots_socket(start_server, backend):
    """Two workers, each with its own SO_REUSEPORT socket: a recycled worker's
    successor serves that worker's socket, and recycles repeat under load."""
    asgi = backend != "epoll"
    path = "/" if asgi else "/plaintext"
    srv = start_server(server="workers = 2\nmax_requests = 40\nmax_requests_jitter = 10", names=("http",),
                       extra=ASGI_ROUTES if asgi else BUILTIN_ROUTES)
    first = srv.wait_workers(2)
    sockets = {pid: listening_inodes(pid) for pid in first}
    assert len(set.union(*sockets.values())) == 2  # one socket per slot

    def started() -> dict[int, int]:
        return {int(pid): int(slot) for pid, slot in re.findall(r"started worker process (\d+) \(slot (\d+)", srv.log())}

    slot_sockets = {started()[pid]: socks for pid, socks in sockets.items()}
    with Traffic(srv.port, path) as traffic:
        wait_until(lambda: len(re.findall(r"max_requests \d+\): replacing it", srv.log())) >= 6, timeout=60,
                   what="six recycles")
        for pid in srv.workers():
            slot = started().get(pid)
            if slot is not None and pid_alive(pid):
                try:
                    held = listening_inodes(pid)
                except OSError:  # exited meanwhile
                    continue
                assert held == slot_sockets[slot] or not pid_alive(pid), (pid, slot)
    assert traffic.failures == [] and len(traffic.statuses) > 6 * 40
    limits = [int(n) for n in re.findall(r"\(max_requests (\d+)\)", srv.log())]
    assert all(40 <= n <= 50 for n in limits)


@pytest.mark.parametrize("backend", ["epoll", "uvloop"])
def test_max_rss_replaces_a_leaking_worker(start_server, backend):
    path = "/leak" if backend == "epoll" else "/"
    srv = start_server(server="workers = 1\nmax_rss = 160", names=("http",), extra=LEAKY_ROUTES[backend])
    [old] = srv.wait_workers(1)
    with Traffic(srv.port, path, pace=0.05) as traffic:
        [new] = srv.wait_workers(1, exclude={old}, timeout=30)
        wait_until(lambda: not pid_alive(old), timeout=30, what="the leaking worker to exit")
    assert traffic.failures == [] and len(traffic.statuses) >= 160 // 16 - 3
    m = re.search(rf"worker 0 \(pid {old}\) uses (\d+) MiB \(max_rss 160 MiB\): replacing it", srv.log())
    assert m and int(m.group(1)) > 160, srv.log()
    assert get(srv.port, path)[0] == 200


@pytest.mark.parametrize("backend", ["epoll"])
def test_successor_that_cannot_boot_leaves_the_old_worker_serving(start_server, backend, tmp_path):
    """A successor that exits with the boot-failure code (its access log's
    directory went away after the first worker opened its file) must not
    stop the server (as a first boot failure does): the old worker serves
    on, and the slot tries again after a back-off."""
    logs = tmp_path / "logs"
    logs.mkdir()
    srv = start_server(server="workers = 1\nmax_requests = 20", names=("http",),
                       extra=BUILTIN_ROUTES + f'\n[log]\nerror_log = "{tmp_path}/error.log"\n'
                                              f'access_log = "{logs}/access.log"\n')
    [old] = srv.wait_workers(1)
    assert get(srv.port, "/plaintext")[0] == 200  # it serves: it has opened its access log
    os.rename(logs, tmp_path / "moved")
    for _ in range(25):
        assert get(srv.port, "/plaintext")[0] == 200
    wait_until(lambda: "before it took over" in srv.log(), timeout=15, what="the successor's failure")
    assert srv.proc.poll() is None and srv.workers() == [old]
    assert get(srv.port, "/plaintext")[0] == 200
    assert "stopping" not in srv.log()
    os.rename(tmp_path / "moved", logs)  # the next try (after the back-off) boots
    srv.wait_workers(1, exclude={old}, timeout=15)
    wait_until(lambda: not pid_alive(old), timeout=15, what="the old worker to exit")
    assert get(srv.port, "/plaintext")[0] == 200
