"""Shared fixtures for tests/unit and tests/e2e: start prefork-server as a real
subprocess on free ports (the e2e tests), free_port, wait_until, Client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# the HTTP test helpers (tests/unit/http_helpers.py) assert too: keep pytest's detailed messages
pytest.register_assert_rewrite("http_helpers")

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 15.0,
                  host: str = "127.0.0.1") -> None:
    """Wait until something accepts on ``port`` (polling connect, with a deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


class Server:
    def __init__(self, tmp_path: Path, config: str, ports: dict[str, int]):
        self.path = tmp_path / "server.toml"
        self.log_path = tmp_path / "error.log"
        self.pid_path = tmp_path / "prefork.pid"
        if "[log]" not in config:
            config += f'\n[log]\nerror_log = "{self.log_path}"\n'
        if "pid_file" not in config:
            config = config.replace("[server]\n", f'[server]\npid_file = "{self.pid_path}"\n', 1)
        self.path.write_text(config)
        self.ports = ports
        self.port = ports.get("http") or next(iter(ports.values()))
        self.proc: subprocess.Popen | None = None

    def start(self, env: dict | None = None, wait: bool = True) -> "Server":
        """Start the master; with ``wait``, return once every port accepts
        (without: at once, for a server that is meant to fail its start)."""
        env = dict(os.environ if env is None else env,
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "prefork.cli", "-c", str(self.path)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        for port in self.ports.values() if wait else ():
            wait_for_port(port, self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode

    @property
    def pid(self) -> int:
        return self.proc.pid

    def workers(self) -> list[int]:
        return children(self.proc.pid)

    def wait_workers(self, n: int, timeout: float = 15.0, exclude: set[int] = frozenset()) -> list[int]:
        """Wait until the master has exactly ``n`` workers (none of ``exclude``) that are serving."""
        def ready():
            # a fresh fork still shows the master's title, and a new master
            # (USR2) is a child too: count only children titled as workers
            pids = [p for p in self.workers() if "worker process" in _title(p)]
            if len(pids) == n and not set(pids) & set(exclude):
                return pids
            return None
        return wait_until(ready, timeout, what=f"{n} workers")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def connect(self, name: str = "http", timeout: float = 5.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.ports[name]), timeout=timeout)


def make_config(ports: dict[str, int], server: str = "", http: str = "") -> str:
    listens = "\n".join(
        f'[[listen]]\naddress = "127.0.0.1:{port}"\nprotocol = "{"echo" if name.startswith("echo") else "http"}"\nname = "{name}"\n'
        for name, port in ports.items()
    )
    defaults = [line for line in ("workers = 1", "worker_connections = 1000")
                if line.split(" =")[0] + " =" not in server]
    server = "\n".join(defaults + [server])
    return textwrap.dedent("""\
        [server]
        {server}

        {listens}

        [http]
        {http}
        """).format(server=server, listens=listens, http=http)


BACKENDS = ("epoll", "uvloop", "asyncio")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Every test that starts a server runs once per backend (as uvicorn runs
    its suite once per HTTP implementation)."""
    return request.param


@pytest.fixture
def start_server(tmp_path, backend):
    servers: list[Server] = []

    def start(server: str = "", http: str = "", names: tuple[str, ...] = ("http", "echo"),
              env: dict | None = None, extra: str = "", wait: bool = True) -> Server:
        ports = {name: free_port() for name in names}
        if "backend =" not in server:
            server = f'backend = "{backend}"\n' + server
        srv = Server(tmp_path, make_config(ports, server, http) + extra, ports)
        servers.append(srv)
        return srv.start(env, wait)

    yield start
    for srv in servers:
        workers = srv.workers() if srv.proc and srv.proc.poll() is None else []
        srv.stop()
        for pid in workers:  # never leave a worker behind, even if the test broke the master
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Client:
    """A blocking HTTP/1.1 client over one socket that keeps its leftover bytes,
    so pipelined responses can be read one by one."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the server; unparsed: {self.buf[:200]!r}")
        self.buf += chunk

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = 0 if head_only or status in (100, 204, 304) else int(headers.get("content-length", 0))
        if len(self.buf) < length:  # gather pieces: growing one bytes object is quadratic for big bodies
            pieces, have = [self.buf], len(self.buf)
            while have < length:
                chunk = self.sock.recv(max(65536, min(length - have, 1 << 20)))
                if not chunk:
                    raise ConnectionError(f"closed by the server after {have} of {length} body bytes")
                pieces.append(chunk)
                have += len(chunk)
            self.buf = b"".join(pieces)
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def closed(self, timeout: float = 5.0) -> bool:
        """True once the server has closed (EOF, or a reset after lingering)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    pieces = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(pieces)
        pieces.append(chunk)


def children(pid: int) -> list[int]:
    """Live child pids of ``pid`` (scanning /proc: this kernel has no task/children)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return sorted(out)


def _title(pid: int) -> str:
    try:
        return cmdline(pid)
    except OSError:
        return ""


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode().strip()


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns a true value (or fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def until_still(read, quiet: float = 0.5, timeout: float = 20.0, what: str = "a value to settle"):
    """Poll ``read()`` until it returns the same value for ``quiet`` seconds
    (e.g. a count an app writes stops moving: it waits in ``send()``); that value."""
    def settled():
        before = read()
        deadline = time.monotonic() + quiet
        while time.monotonic() < deadline:
            if read() != before:
                return None
            time.sleep(0.05)
        return (before,)
    return wait_until(settled, timeout=timeout, what=what)[0]


def pid_alive(pid: int) -> bool:
    """Is any thread of process ``pid`` still running? Not the main thread's
    state alone: it shows as a zombie while other threads (a worker's pool)
    are still exiting, and those still hold the process's fds."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    return True
        except OSError:
            continue
    return False


def listening_on(port: int) -> bool:
    """Does any socket listen on TCP ``port`` (/proc/net/tcp, tcp6)? Asking by
    bind() instead would also fail when some other test's outgoing connection
    happens to have that port as its ephemeral local port."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                        return True
        except OSError:
            continue
    return False


def http_get(port: int, path: str = "/plaintext", host: str = "127.0.0.1", timeout: float = 5.0):
    """One request on a new connection: (status, headers, body)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        c = Client(s)
        c.send(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return c.response()
