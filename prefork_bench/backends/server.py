"""One prefork server per backend, /proc readings of it, and the checks before measuring."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from ..net import HOST, http_get, parse_head
from ..procs import cmdline, read_stat
from ..server import WORKER_TITLE, PreforkServer
from ..tools import BenchError
from ..wrk import STATIC_PREFIX
from .model import (BODY, CHECK_TIMEOUT, DB_PATH, PIPELINE, PLAINTEXT, STATIC_FILE, STATIC_PATH,
                    WORKERS_TIMEOUT, WORLD_ROWS, Mem)


def core_busy(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, dict]:
    """Per core: busy % (not idle/iowait) and the softirq share in %."""
    out = {}
    for name, now in after.items():
        d = [a - b for a, b in zip(now, before.get(name, [0] * 8))]
        total = max(sum(d), 1)
        out[name] = {"busy": round(100 * (total - d[3] - d[4]) / total, 1),
                     "softirq": round(100 * (d[5] + d[6]) / total, 1)}
    return out


def busy_ticks_total() -> int:
    """Busy ticks of all CPUs (user, nice, system, irq, softirq), from /proc/stat.

    Softirq work (loopback TCP) is charged to whichever task it interrupts
    when it runs in task context, and to the irq/softirq columns otherwise,
    so only the sum is comparable with the tasks' own CPU times."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    return v[0] + v[1] + v[2] + v[5] + v[6]


def worker_memory(pid: int) -> Mem:
    rss = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    rollup = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
                rollup[parts[0][:-1]] = int(parts[1])
    if rss is None:
        raise BenchError(f"no VmRSS for pid {pid}")
    return Mem(rss_kb=rss, uss_kb=rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0),
               pss_kb=rollup.get("Pss", 0), smaps_rss_kb=rollup.get("Rss", 0),
               shared_kb=rollup.get("Shared_Clean", 0) + rollup.get("Shared_Dirty", 0),
               fds=len(os.listdir(f"/proc/{pid}/fd")))


def established(port: int) -> int:
    """Established TCP connections whose local (server) port is ``port``."""
    done = subprocess.run(["ss", "-tnH", "state", "established", f"( sport = :{port} )"],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise BenchError(f"ss failed: {done.stderr.strip()}")
    return sum(1 for line in done.stdout.splitlines() if line.strip())


# --- one prefork server ---------------------------------------------------


class Server(PreforkServer):
    """A prefork master we started with one backend, its workers, and how to stop all of them."""

    def __init__(self, backend: str, workers: int, worker_connections: int, workdir: Path,
                 docroot: Path, args: argparse.Namespace):
        super().__init__(workdir, workers, args)
        self.backend = self.label = backend
        self.db_path = workdir / "world.db"
        self.config.write_text(
            "[server]\n"
            f"workers = {workers}\n"
            f'backend = "{backend}"\n'
            f"worker_connections = {worker_connections}\n"
            "\n[[listen]]\n"
            f'address = "{HOST}:{self.port}"\n'
            'protocol = "http"\n'
            "\n[http]\n"
            "keepalive_requests = 10000000\n"
            "keepalive_timeout = 600\n"
            "header_timeout = 600\n"
            "\n[[route]]\n"
            f'path = "{PLAINTEXT}"\n'
            'handler = "plaintext"\n'
            "\n[[route]]\n"
            f'path = "{DB_PATH}"\n'
            'handler = "db"\n'
            "\n[[route]]\n"
            f'path = "{STATIC_PREFIX}"\n'
            'handler = "static"\n'
            "\n[static]\n"
            f"root = {json.dumps(str(docroot))}\n"
            "\n[database]\n"
            f"url = {json.dumps('sqlite:///' + str(self.db_path))}\n"
            'synchronous = "normal"\n'
            "\n[log]\n"
            f"error_log = {json.dumps(str(self.error_log))}\n")

    def start(self) -> None:
        self.launch(f"{self.n} worker(s)")
        deadline = time.monotonic() + WORKERS_TIMEOUT
        while len(self.workers()) != self.n:
            if not self.master_alive():
                raise BenchError(f"the master exited with status {self.proc.returncode}")
            if time.monotonic() >= deadline:
                raise BenchError(f"the master did not reach {self.n} workers "
                                 f"(has {self.workers()})")
            time.sleep(0.05)
        untitled = [pid for pid in self.workers() if not cmdline(pid).startswith(WORKER_TITLE)]
        if untitled:
            print(f"[{self.backend}] note: worker(s) {untitled} not titled {WORKER_TITLE!r}",
                  file=sys.stderr)

    def cpu_ticks(self) -> dict[int, int]:
        """{pid: utime+stime} of the master and its workers (the server's session)."""
        if self.proc is None:
            return {}
        out = {}
        for pid in [self.proc.pid, *self.seen]:
            st = read_stat(pid)
            if st and st["sid"] == self.proc.pid:
                out[pid] = st["ticks"]
        return out

    def context_switches(self) -> tuple[int, int]:
        """(voluntary, involuntary) context switches of the workers seen so far."""
        vol = invol = 0
        for pid in self.seen:
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            vol += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches:"):
                            invol += int(line.split()[1])
        return vol, invol

    def log_problems(self) -> list[str]:
        """WARNING/ERROR/CRITICAL lines of the error log, and tracebacks on its output."""
        lines = []
        for path in (self.error_log, self.output):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                if re.search(r"\[(WARNING|ERROR|CRITICAL)\]|Traceback|Error:", line):
                    lines.append(line.strip())
        return lines

    def keep_logs(self, name: str) -> None:
        if not self.args.keep_logs:
            return
        target = Path(self.args.keep_logs)
        target.mkdir(parents=True, exist_ok=True)
        for path in (self.error_log, self.output):
            if path.exists():
                (target / f"{name}.{path.name}").write_bytes(path.read_bytes())


# --- verification ---------------------------------------------------------


def parse_responses(data: bytes) -> tuple[list[tuple[int, dict[str, str], bytes]], bytes]:
    """Complete Content-Length-framed responses at the start of ``data``, and the rest."""
    out = []
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            return out, data
        status, headers = parse_head(head)
        if "content-length" not in headers:
            raise BenchError(f"response without Content-Length: {head[:300]!r}")
        length = int(headers["content-length"])
        if len(rest) < length:
            return out, data
        out.append((status, headers, rest[:length]))
        data = rest[length:]


def exchange(port: int, paths: list[str], pipelined: bool) -> list[tuple[int, dict, bytes]]:
    """GET every path on one keep-alive connection: all written at once
    (pipelined) or one after the other."""
    responses: list = []
    buf = b""
    with socket.create_connection((HOST, port), timeout=CHECK_TIMEOUT) as sock:
        batches = [paths] if pipelined else [[p] for p in paths]
        for batch in batches:
            sock.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
                                  for p in batch))
            want = len(responses) + len(batch)
            while len(responses) < want:
                data = sock.recv(1 << 16)
                if not data:
                    raise BenchError(f"connection closed after {len(responses)} of "
                                     f"{len(paths)} responses")
                got, buf = parse_responses(buf + data)
                responses += got
    if buf:
        raise BenchError(f"{len(buf)} unexpected bytes after the responses")
    return responses


def check_plaintext(status: int, headers: dict, body: bytes) -> str | None:
    if status != 200:
        return f"status {status}, body {body[:200]!r}"
    if body != BODY:
        return f"body {body[:200]!r}, expected {BODY!r}"
    if not headers.get("content-type", "").startswith("text/plain"):
        return f"Content-Type {headers.get('content-type')!r}"
    return None


def check_db(status: int, headers: dict, body: bytes, db_path: Path) -> str | None:
    if status != 200:
        return f"status {status}, body {body[:200]!r}"
    if not headers.get("content-type", "").startswith("application/json"):
        return f"Content-Type {headers.get('content-type')!r}"
    try:
        obj = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:200]!r}"
    if (not isinstance(obj, dict) or set(obj) != {"id", "randomNumber"}
            or not all(type(obj[k]) is int for k in obj)):
        return f"unexpected JSON {body[:200]!r}"
    if not 1 <= obj["id"] <= WORLD_ROWS:
        return f"id {obj['id']} outside 1..{WORLD_ROWS}"
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5.0)
    try:
        row = conn.execute("SELECT randomNumber FROM World WHERE id = ?", (obj["id"],)).fetchone()
    finally:
        conn.close()
    if row is None or row[0] != obj["randomNumber"]:
        return f"{body!r} but the database has randomNumber {row and row[0]} for that id"
    return None


def check_static(status: int, headers: dict, body: bytes, expected: bytes) -> str | None:
    if status != 200:
        return f"status {status}, body {body[:200]!r}"
    if body != expected:
        return f"wrong body: {len(body)} bytes, expected the file's {len(expected)}"
    return None


def verify(server: Server, docroot: Path) -> dict[str, str]:
    """Each check -> "ok" or what was wrong."""
    expected_static = (docroot / STATIC_FILE).read_bytes()
    port = server.port
    checks: dict[str, str] = {}

    def run(name: str, fn) -> None:
        try:
            problem = fn()
        except (OSError, ValueError, BenchError) as error:
            problem = f"{type(error).__name__}: {error}"
        checks[name] = "ok" if problem is None else problem

    def one(path, check):
        status, headers, body = http_get(port, path, CHECK_TIMEOUT)
        problem = check(status, headers, body)
        return None if problem is None else f"GET {path}: {problem}"

    run("plaintext", lambda: one(PLAINTEXT, check_plaintext))
    run("db", lambda: next(filter(None, (one(DB_PATH, lambda s, h, b: check_db(s, h, b, server.db_path))
                                         for _ in range(3))), None))
    run("static", lambda: one(STATIC_PATH,
                              lambda s, h, b: check_static(s, h, b, expected_static)))

    def keepalive():
        paths = [PLAINTEXT, DB_PATH, STATIC_PATH, PLAINTEXT]
        for path, (status, headers, body) in zip(paths, exchange(port, paths, False)):
            if headers.get("connection", "").lower() == "close":
                return f"GET {path}: the server closed a keep-alive connection"
            problem = (check_plaintext(status, headers, body) if path == PLAINTEXT
                       else check_db(status, headers, body, server.db_path) if path == DB_PATH
                       else check_static(status, headers, body, expected_static))
            if problem:
                return f"GET {path} on a keep-alive connection: {problem}"
        return None

    def pipelining():
        responses = exchange(port, [PLAINTEXT] * PIPELINE, True)
        for index, (status, headers, body) in enumerate(responses):
            problem = check_plaintext(status, headers, body)
            if problem:
                return f"pipelined response {index + 1} of {PIPELINE}: {problem}"
        return None

    run("keepalive", keepalive)
    run("pipelining", pipelining)
    return checks
