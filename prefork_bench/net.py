"""Talking to a server under test: free ports, one-off GETs, readiness, starting and
stopping it, its /status.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .tools import BenchError, pin

HOST = "127.0.0.1"
URL_PATH = "/plaintext"
READY_TIMEOUT = 60.0           # seconds for a server to answer its first request
STOP_TIMEOUT = 10.0            # seconds between SIGTERM and SIGKILL
LOG_TAIL_CHARS = 3000          # how much of a failed server's output to show


@dataclass(frozen=True)
class Launch:
    """How to start one server: its command line, environment, directory and port."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int


# --- one request ------------------------------------------------------------------


def free_port() -> int:
    """A port the kernel had free a moment ago (bind to port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def http_get(port: int, path: str, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """One GET over a fresh connection: (status, headers lower-cased, body).

    A raw socket, not http.client: ``python bench/http.py`` puts bench/ first
    on sys.path, where ``import http`` finds that script.  The
    request says ``Connection: close`` and the response is read to EOF; the
    body is cut to Content-Length, or de-chunked.
    """
    request = (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
               "Connection: close\r\n\r\n").encode()
    chunks = []
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(request)
        while data := sock.recv(1 << 16):
            chunks.append(data)
    raw = b"".join(chunks)
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise BenchError(f"GET {path}: incomplete response head ({len(raw)} bytes)")
    status, headers = parse_head(head, f"GET {path}: ")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = dechunk(body)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if len(body) < length:
            raise BenchError(f"GET {path}: connection closed after {len(body)} of "
                             f"{length} body bytes")
        body = body[:length]
    return status, headers, body


def parse_head(head: bytes, what: str = "") -> tuple[int, dict[str, str]]:
    """A response head (without its blank line): (status, headers by lower-cased name)."""
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise BenchError(f"{what}bad status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line[1]), headers


def dechunk(data: bytes) -> bytes:
    out, pos = [], 0
    while True:
        line_end = data.index(b"\r\n", pos)
        size = int(data[pos:line_end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[line_end + 2:line_end + 2 + size])
        pos = line_end + 2 + size + 2


def http_ok(port: int, timeout: float) -> bool:
    """True when GET /plaintext on the port answers with status 200."""
    request = f"GET {URL_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(request.encode())
            head = sock.recv(64)
    except OSError:
        return False
    return head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))


# --- a server's process -----------------------------------------------------------


def wait_ready(proc: subprocess.Popen, port: int, timeout: float) -> None:
    """Poll the port until the server answers, it exits, or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"exited with status {proc.returncode} before answering")
        if http_ok(port, timeout=1.0):
            return
        time.sleep(0.05)
    raise BenchError(f"did not answer GET {URL_PATH} on port {port} within {timeout:.0f}s")


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM a child by PID, SIGKILL it after ``timeout`` seconds; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (its own session), SIGKILL on timeout."""
    for sig, timeout in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
            break
        except subprocess.TimeoutExpired:
            continue
    # Workers of a leader that exited first still share its process group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_server(launch: Launch, log_path: Path, cpus: str,
                   pin_cpus: bool) -> Iterator[subprocess.Popen]:
    """Start a server in its own session, wait until it answers, always stop it."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(pin(cpus, launch.argv, pin_cpus), cwd=launch.cwd,
                                env=launch.env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(proc, launch.port, READY_TIMEOUT)
        yield proc
    finally:
        stop_process_group(proc)


def log_tail(*paths: Path) -> str:
    parts = []
    for path in paths:
        if path.exists() and path.stat().st_size:
            text = path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
            parts.append(f"--- {path.name} ---\n{text.rstrip()}")
    return "\n".join(parts) or "(no output)"


# --- prefork's /status ------------------------------------------------------------


def status_rows(port: int) -> list[dict]:
    """Per-worker lines of /status: [{"slot", "pid", "accepted", ...}]."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    rows, threads = [], []
    for line in data.decode("latin-1").splitlines():
        if line.startswith("reactor thread "):  # mode = "thread": a line per reactor
            words = line.replace(":", "").split()
            threads.append({"slot": int(words[2]), "accepted": int(words[words.index("accepted") + 1])})
        elif line.startswith("worker "):
            words = line.replace(":", "").split()
            row = {words[i]: int(words[i + 1]) for i in range(0, len(words) - 1, 2) if words[i + 1].isdigit()}
            row["slot"] = int(words[1])
            rows.append(row)
    return threads or rows


def settled_status(port: int, timeout: float = 5.0) -> list[dict]:
    """/status once the counters stop moving: workers publish theirs once a
    second, so two reads a tick apart that agree are the final numbers."""
    rows = status_rows(port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(1.1)  # one worker tick: the counters' refresh period  # noqa: not a readiness check
        again = status_rows(port)
        if [r.get("accepted") for r in again] == [r.get("accepted") for r in rows]:
            return again
        rows = again
    return rows
