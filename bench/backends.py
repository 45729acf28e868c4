"""Backend benchmark: prefork's own epoll reactor against uvloop and the
standard-library asyncio loop, the same server otherwise, driven by wrk.

Usage (from anywhere; paths are relative to this file)::

    python bench/backends.py [--workers 2] [--duration 5] [--idle 15000]
                             [--json FILE] [--no-pin]

``[server] backend`` selects the event loop of prefork's workers: ``epoll``
(prefork's reactor), ``uvloop`` or ``asyncio``.  Everything else -- the
sans-IO HTTP code, the handlers, the accept path -- is the same, so this
benchmark isolates the cost of the loop and of the asyncio.Protocol adapter.

Part 1, throughput.  For each backend in turn a fresh prefork with
``--workers`` workers is started from a generated config (routes
``/plaintext``, ``/db`` on a SQLite file the master seeds, ``/static/`` on a
document root with a 4 KiB file; keep-alive limits and timeouts high enough
never to interfere), checked, warmed up with a 1 s wrk run, and measured with
``--duration`` seconds of ``wrk -t1 --latency`` per scenario:

    keepalive-1000   GET /plaintext, keep-alive, 1000 connections
    pipeline16-64    GET /plaintext, 64 connections, 16 requests written at
                     once per connection (the Lua script of bench/http.py)
    close-64         GET /plaintext, a new TCP connection per request
                     (``Connection: close``), 64 connections
    db-64            GET /db (one SQLite primary-key read), keep-alive, 64
    static4k-64      GET /static/4k.bin, keep-alive, 64 connections

The checks before measuring: /plaintext answers 200 ``Hello, World!``
text/plain; /db answers 200 application/json ``{"id": N, "randomNumber": M}``
with N in 1..10000 and M equal to the row in the SQLite file (read by this
script); /static/4k.bin answers 200 with the file's bytes; the three on one
keep-alive connection one after the other; and 16 pipelined /plaintext
requests in one write get 16 correct responses.  A scenario whose check
failed is not measured (``FAILED`` in the table, the reason under it).

Part 2, bytes per idle connection.  For each backend a fresh prefork with
``workers = 1`` and ``worker_connections = --idle + 100`` is started.  After
warm-up (64 connections with one request each, closed again, and 50
requests on one keep-alive connection) the worker's memory is read: RSS
(``VmRSS`` of /proc/PID/status) and USS (``Private_Clean + Private_Dirty`` of
/proc/PID/smaps_rollup), polled until it is stable.  Then a client process
of this script's own (``--idle-client``, pinned with wrk's CPU, its soft
RLIMIT_NOFILE raised to the hard limit) opens ``--idle`` TCP connections,
non-blocking, in batches of 500, sends one ``GET /plaintext`` on each and
reads the response, so every connection has been through a full request and
sits idle in keep-alive.  Once the client reports, the script checks with
``ss`` that the server side has that many established connections, polls the
worker's memory until it is stable again, and reports
(after - before) / connections, RSS-based and USS-based, in bytes.  The
client then closes everything and exits (it is killed by PID if it does not;
it also exits by itself if this script dies).  The worker's open-fd count
before and after is shown as a cross-check of the connections it holds.

What the numbers mean:

* req/s is wrk's ``Requests/sec``: responses completed per second over the
  run, non-2xx included; in the pipelined scenario every response counts.
* ``uvloop/epoll`` and ``asyncio/epoll``: that backend's req/s over epoll's
  (below 1.00x: epoll served more).  For the idle rows the same ratio of
  bytes per connection (above 1.00x: that backend uses more memory than
  epoll per idle connection).
* ``*`` after req/s: wrk used >= 90% of its CPU (client-bound: the server
  might have served more).  ``!``: another wrk process ran during the
  measurement (the script waits for other wrk runs to finish before each
  measurement, up to ``--wait-max`` seconds in total).  ``~``: something
  else used >= 20% of a core during the run: the machine's busy time
  (/proc/stat user+nice+system+irq+softirq) less this server, wrk and this
  script -- other processes, or softirq work not charged to any of them
  (about 5-10% on loopback even when the machine is otherwise quiet).  The
  log lines (stderr) and ``--json`` name the busiest other processes, and
  show each core's busy and softirq share, the server's CPU per process and
  the workers' context switches per 1000 responses.
* RSS vs USS: RSS also counts the pages a worker still shares with its
  master (inherited at fork).  A write into one -- new objects placed in
  free heap space inherited from the master -- makes a private copy, which
  grows USS but not RSS; so RSS can understate the new memory, and USS is
  the closer measure.  ``!`` on an idle row: another wrk ran meanwhile (CPU
  contention does not change memory much); ``?``: the worker's memory had
  not settled within 30 s.
* errors: wrk's socket errors (connect, read, write, timeout) and non-2xx/3xx
  responses, broken down under the table; for the idle rows, connections
  that failed to open or to get a correct response.  WARNING/ERROR/CRITICAL
  lines in each server's error log are counted and quoted under the table.

Target: the epoll backend serves at least as many req/s as uvloop on
keep-alive /plaintext (keepalive-1000), and uses no more memory per idle
connection (RSS- and USS-based).

Servers are pinned to CPU 0 and wrk (and the idle client) to CPU 1 with
``taskset`` unless ``--no-pin``.  Only 127.0.0.1 is targeted.  Each server
runs in its own session and is stopped in a ``finally``: SIGTERM to the
master by PID, SIGKILL after a timeout, then every worker PID ever seen is
checked and SIGKILLed by PID if it outlived its master (reported).  Helpers
are shared with ``bench/http.py`` (loaded under another name).  The standard
library only (uvloop must be importable for the uvloop backend).

Exit status: 0 when everything ran and verified and the target was met, 1
otherwise, 2 when a tool is missing.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import json
import os
import re
import resource
import selectors
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prefork_bench.httpbench import make_docroot
from prefork_bench.net import HOST, STOP_TIMEOUT, URL_PATH, http_get, http_ok, parse_head
from prefork_bench.procs import (CLK_TCK, Quiet, cmdline, core_times, process_table, raise_nofile, read_stat,
                                 top_others, wrk_pids)
from prefork_bench.report import render_table
from prefork_bench.server import PreforkServer
from prefork_bench.tools import BenchError, pin
from prefork_bench.wrk import BODY as HELLO
from prefork_bench.wrk import (CLIENT_BOUND_PERCENT, STATIC_PREFIX, Scenario, add_client_options, parse_wrk,
                               prepare_client, wait_wrk, wrk_command)

BACKENDS = ("epoll", "uvloop", "asyncio")
BASE = "epoll"
PLAINTEXT = URL_PATH
BODY = HELLO.encode()
DB_PATH = "/db"
STATIC_FILE = "4k.bin"
STATIC_PATH = STATIC_PREFIX + STATIC_FILE
WORLD_ROWS = 10000
PIPELINE = 16
THROUGHPUT_WORKER_CONNECTIONS = 19000
WORKER_TITLE = "prefork-server: worker process"

WORKERS_TIMEOUT = 30.0              # seconds for the master to have all its workers
CHECK_TIMEOUT = 10.0                # seconds for one verification exchange
POLL_WAIT = 0.02                    # seconds between checks whether wrk has exited
OTHER_LOAD_MARK = 20.0              # % of a core used by unrelated processes that marks a run

IDLE_BATCH = 500                    # connections opened at once by the idle client
IDLE_OPEN_TIMEOUT = 180.0           # seconds for the client to open and exercise all of them
IDLE_CLIENT_LIFETIME = 900.0        # the client exits by itself after this long
MEM_POLL = 0.25                     # seconds between memory readings
MEM_STABLE_READINGS = 5             # this many readings in a row within MEM_STABLE_KB
MEM_STABLE_KB = 16
MEM_STABLE_TIMEOUT = 30.0
WARM_CONNECTIONS = 64
WARM_SEQUENTIAL = 50
LOG_EXCERPT_LINES = 6


@dataclass(frozen=True)
class Test:
    scenario: object     # Scenario
    needs: tuple[str, ...]   # the checks that must pass before it is measured


SCENARIOS = (
    Test(Scenario("keepalive-1000", 1000, "GET /plaintext, keep-alive, 1000 connections"),
         ("plaintext",)),
    Test(Scenario("pipeline16-64", 64, "GET /plaintext, 16-deep pipelining, 64 connections",
                  pipeline=PIPELINE), ("plaintext", "pipelining")),
    Test(Scenario("close-64", 64, "GET /plaintext, new connection per request, "
                  "64 connections", close=True), ("plaintext",)),
    Test(Scenario("db-64", 64, "GET /db, keep-alive, 64 connections", path=DB_PATH),
         ("db",)),
    Test(Scenario("static4k-64", 64, "GET /static/4k.bin, keep-alive, 64 connections",
                  path=STATIC_PATH, static_file=STATIC_FILE), ("static",)),
)
TARGET_SCENARIO = "keepalive-1000"


@dataclass
class Run:
    """One measured wrk run."""

    requests_per_sec: float
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    latency_valid: bool
    connect_errors: int
    read_errors: int
    write_errors: int
    timeout_errors: int
    non_2xx: int
    wall_s: float
    wrk_cpu_percent: float
    server_cpu_percent: float
    other_cpu_percent: float
    client_bound: bool
    contended: bool
    other_wrk_pids: list[int] = field(default_factory=list)
    server_cpu_by_pid: dict[int, float] = field(default_factory=dict)   # % per server process
    cores: dict[str, dict] = field(default_factory=dict)   # per core: busy %, softirq %
    context_switches: list[int] = field(default_factory=list)   # workers': voluntary, involuntary
    other_top: list[str] = field(default_factory=list)   # the busiest other processes

    @property
    def errors(self) -> int:
        return (self.connect_errors + self.read_errors + self.write_errors
                + self.timeout_errors + self.non_2xx)

    @property
    def noisy(self) -> bool:
        return self.other_cpu_percent >= OTHER_LOAD_MARK


@dataclass
class Mem:
    rss_kb: int          # VmRSS (/proc/PID/status)
    uss_kb: int          # Private_Clean + Private_Dirty (/proc/PID/smaps_rollup)
    pss_kb: int
    smaps_rss_kb: int    # Rss of smaps_rollup (a page-table walk; VmRSS is a counter)
    shared_kb: int       # Shared_Clean + Shared_Dirty: resident pages shared (with the master)
    fds: int


@dataclass
class Idle:
    requested: int
    opened: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    open_seconds: float = 0.0
    established: int | None = None       # ss count on the server side, before closing
    worker_pid: int | None = None
    before: Mem | None = None
    after: Mem | None = None
    after_close: Mem | None = None
    stable: bool = True
    alive_after_close: bool | None = None
    contended: bool = False
    failure: str | None = None

    @property
    def rss_per_conn(self) -> float | None:
        if self.before is None or self.after is None or not self.opened:
            return None
        return (self.after.rss_kb - self.before.rss_kb) * 1024 / self.opened

    @property
    def uss_per_conn(self) -> float | None:
        if self.before is None or self.after is None or not self.opened:
            return None
        return (self.after.uss_kb - self.before.uss_kb) * 1024 / self.opened


@dataclass
class BackendResult:
    runs: dict[str, Run] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)      # check -> "ok" or the problem
    failed: dict[str, str] = field(default_factory=dict)      # scenario -> why not measured
    failure: str | None = None                                # the whole server failed
    log_lines: list[str] = field(default_factory=list)        # warnings/errors it logged
    left_over_workers: list[int] = field(default_factory=list)
    idle: Idle | None = None
    idle_log_lines: list[str] = field(default_factory=list)
    idle_left_over_workers: list[int] = field(default_factory=list)


# --- command line ---------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="prefork's epoll reactor against its uvloop and asyncio backends: "
                    "req/s with wrk and memory per idle keep-alive connection.")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes for the throughput part (default: 2)")
    parser.add_argument("--duration", type=int, default=5,
                        help="seconds of measurement per scenario (default: 5)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of wrk warm-up per server, 0 for none (default: 1)")
    parser.add_argument("--idle", type=int, default=15000,
                        help="idle keep-alive connections for the memory part, 0 to skip "
                             "(default: 15000)")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help=f"comma-separated, run in this order (default: {','.join(BACKENDS)})")
    parser.add_argument("--json", metavar="FILE", help="also write the raw numbers to FILE")
    add_client_options(parser, wrk_cpus="wrk and the idle client")
    parser.add_argument("--wait-max", type=float, default=600.0,
                        help="seconds, over the whole run, to wait for other wrk processes "
                             "to finish before measuring anyway (default: 600)")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy every server's logs into DIR")
    # internal: the idle-connection client process
    parser.add_argument("--idle-client", nargs=2, type=int, metavar=("PORT", "N"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.idle_client:
        return args
    items = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not items or any(b not in BACKENDS for b in items):
        parser.error(f"--backends: expected some of {', '.join(BACKENDS)}, got {args.backends!r}")
    args.backends = list(dict.fromkeys(items))
    if args.workers < 1 or args.duration < 1 or args.warmup < 0 or args.wrk_threads < 1:
        parser.error("--workers, --duration and --wrk-threads must be >= 1, --warmup >= 0")
    if args.idle < 0:
        parser.error("--idle must be >= 0")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if args.idle and hard != resource.RLIM_INFINITY and args.idle + 100 + 64 > hard:
        parser.error(f"--idle {args.idle}: the worker and the client need about "
                     f"{args.idle + 164} open files each, the hard limit is {hard}")
    return args


# --- /proc ----------------------------------------------------------------


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


# --- wrk --------------------------------------------------------------------


def run_wrk(argv: list[str], duration: int, server: Server, workdir: Path,
            label: str) -> tuple[str, dict]:
    """Run wrk to completion: (its report, measurements of the run)."""
    out_path, err_path = workdir / "wrk.out", workdir / "wrk.err"
    server_before = server.cpu_ticks()
    cores_before = core_times()
    switches_before = server.context_switches()
    total_before = busy_ticks_total()
    tasks_before = process_table()
    self_before = os.times()
    wall_before = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    rusage, others = wait_wrk(proc, duration, POLL_WAIT)
    wall = max(time.monotonic() - wall_before, 1e-6)
    self_after = os.times()
    own_ticks = ((self_after.user + self_after.system) - (self_before.user + self_before.system)) * CLK_TCK
    server_after = server.cpu_ticks()
    switches_after = server.context_switches()
    cores = core_busy(cores_before, core_times())
    per_process = {pid: ticks - server_before.get(pid, 0) for pid, ticks in server_after.items()}
    server_ticks = sum(per_process.values())
    wrk_ticks = (rusage.ru_utime + rusage.ru_stime) * CLK_TCK
    other_ticks = busy_ticks_total() - total_before - server_ticks - wrk_ticks - own_ticks
    busiest = top_others(tasks_before, process_table(), {*server_after, os.getpid(), proc.pid}, wall)
    output = out_path.read_text(errors="replace")
    if proc.returncode != 0:
        error = err_path.read_text(errors="replace").strip()
        raise BenchError(f"wrk exited with {proc.returncode}: {error or output.strip()}")
    return output, {
        "wall_s": round(wall, 3),
        "wrk_cpu_percent": round(100 * wrk_ticks / CLK_TCK / wall, 1),
        "server_cpu_percent": round(100 * server_ticks / CLK_TCK / wall, 1),
        "other_cpu_percent": round(max(0.0, 100 * other_ticks / CLK_TCK / wall), 1),
        "other_wrk_pids": others,
        "server_cpu_by_pid": {pid: round(100 * t / CLK_TCK / wall, 1)
                              for pid, t in per_process.items()},
        "cores": cores,
        "other_top": busiest,
        "context_switches": [a - b for a, b in zip(switches_after, switches_before)],
    }


def measure(server: Server, scenario, args: argparse.Namespace, workdir: Path,
            quiet: Quiet) -> Run:
    label = f"{server.backend}] [{scenario.name}"
    quiet_ok = quiet.wait(label)
    print(f"[{server.backend}] {scenario.name}: {scenario.description}, {args.duration}s",
          file=sys.stderr)
    argv = wrk_command(scenario, server.port, args.duration, args, workdir)
    output, info = run_wrk(argv, args.duration, server, workdir, label)
    parsed = parse_wrk(output)
    run = Run(requests_per_sec=parsed.requests_per_sec, requests=parsed.requests,
              p50_ms=parsed.p50_ms, p99_ms=parsed.p99_ms, latency_valid=scenario.pipeline == 1,
              connect_errors=parsed.connect_errors, read_errors=parsed.read_errors,
              write_errors=parsed.write_errors, timeout_errors=parsed.timeout_errors,
              non_2xx=parsed.non_2xx, wall_s=info["wall_s"],
              wrk_cpu_percent=info["wrk_cpu_percent"],
              server_cpu_percent=info["server_cpu_percent"],
              other_cpu_percent=info["other_cpu_percent"],
              client_bound=info["wrk_cpu_percent"] >= CLIENT_BOUND_PERCENT * args.wrk_threads,
              contended=bool(info["other_wrk_pids"]) or not quiet_ok,
              other_wrk_pids=info["other_wrk_pids"],
              server_cpu_by_pid=info["server_cpu_by_pid"], cores=info["cores"],
              context_switches=info["context_switches"], other_top=info["other_top"])
    p99 = f"{run.p99_ms:.2f} ms" if run.latency_valid and run.p99_ms is not None else "n/a"
    print(f"[{server.backend}] {scenario.name}: {run.requests_per_sec:,.0f} req/s, p99 {p99}, "
          f"errors {run.errors}, CPU server {run.server_cpu_percent:.0f}% wrk "
          f"{run.wrk_cpu_percent:.0f}% other {run.other_cpu_percent:.0f}%"
          + (f" [{', '.join(run.other_top)}]" if run.other_top else "") + " (per process "
          + "/".join(f"{v:.0f}" for v in run.server_cpu_by_pid.values()) + "; cores busy "
          + ", ".join(f"{k} {v['busy']:.0f}% (softirq {v['softirq']:.0f}%)"
                      for k, v in run.cores.items())
          + "; worker context switches per 1000 responses: "
          + ", ".join(f"{kind} {1000 * n / max(run.requests, 1):.1f}" for kind, n
                      in zip(("voluntary", "involuntary"), run.context_switches)) + ")"
          + (f", other wrk {run.other_wrk_pids}" if run.other_wrk_pids else ""), file=sys.stderr)
    return run


# --- part 1: throughput ---------------------------------------------------


def bench_backend(backend: str, args: argparse.Namespace, workdir: Path, docroot: Path,
                  quiet: Quiet, result: BackendResult) -> None:
    server_dir = workdir / f"{backend}-throughput"
    server_dir.mkdir()
    server = Server(backend, args.workers, THROUGHPUT_WORKER_CONNECTIONS, server_dir, docroot,
                    args)
    try:
        server.start()
        result.checks = verify(server, docroot)
        for name, outcome in result.checks.items():
            print(f"[{backend}] check {name}: {outcome}", file=sys.stderr)
        if args.warmup and result.checks.get("plaintext") == "ok":
            print(f"[{backend}] warm-up {args.warmup}s", file=sys.stderr)
            warm = Scenario("warmup", 64, "keep-alive, 64 connections")
            run_wrk(wrk_command(warm, server.port, args.warmup, args, server_dir),
                    args.warmup, server, server_dir, backend)
        for test in SCENARIOS:
            scenario = test.scenario
            bad = [f"{need}: {result.checks.get(need)}" for need in test.needs
                   if result.checks.get(need) != "ok"]
            if bad:
                result.failed[scenario.name] = "; ".join(bad)
                print(f"[{backend}] {scenario.name}: FAILED, not measured: {'; '.join(bad)}",
                      file=sys.stderr)
                continue
            try:
                result.runs[scenario.name] = measure(server, scenario, args, server_dir, quiet)
            except BenchError as error:
                result.failed[scenario.name] = str(error)
                print(f"[{backend}] {scenario.name} FAILED: {error}", file=sys.stderr)
            if not server.master_alive():
                raise BenchError(f"the master exited with status {server.proc.returncode} "
                                 f"during {scenario.name}")
            live = server.workers()
            if len(live) != server.n:
                print(f"[{backend}] note: {len(live)} workers after {scenario.name} "
                      f"(expected {server.n}); seen so far {sorted(server.seen)}",
                      file=sys.stderr)
        if len(server.seen) != server.n:
            result.log_lines.append(f"(bench) {len(server.seen)} distinct worker pids seen "
                                    f"for {server.n} slots: a worker died and was respawned")
    except (BenchError, OSError) as error:
        result.failure = str(error)
        print(f"[{backend}] FAILED: {server.failure_text(error)}", file=sys.stderr)
    finally:
        server.stop()
        result.left_over_workers = server.left_over
        result.log_lines += server.log_problems()
        server.keep_logs(f"{backend}-throughput")


# --- part 2: memory per idle connection ------------------------------------


def open_keepalive(port: int, n: int, deadline: float,
                   batch: int = IDLE_BATCH) -> tuple[list[socket.socket], collections.Counter]:
    """Open n connections, non-blocking, ``batch`` at a time; on each send one
    GET /plaintext and read the whole response.  Returns the sockets that got
    a correct response (now idle keep-alive) and a count of failures by kind."""
    request = f"GET {PLAINTEXT} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    done: list[socket.socket] = []
    failures: collections.Counter = collections.Counter()
    sel = selectors.DefaultSelector()

    def fail(sock: socket.socket, why: str) -> None:
        failures[why] += 1
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(sock)
        sock.close()

    try:
        for start in range(0, n, batch):
            pending: dict[socket.socket, list] = {}     # sock -> [phase, buffer]
            for _ in range(min(batch, n - start)):
                try:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                except OSError as error:
                    failures[f"socket(): {errno.errorcode.get(error.errno, error)}"] += 1
                    continue
                sock.setblocking(False)
                code = sock.connect_ex((HOST, port))
                if code not in (0, errno.EINPROGRESS):
                    fail(sock, f"connect: {errno.errorcode.get(code, code)}")
                    continue
                pending[sock] = ["connect", b""]
                sel.register(sock, selectors.EVENT_WRITE)
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    for sock in list(pending):
                        fail(sock, "timed out")
                    pending.clear()
                    break
                for key, _ in sel.select(timeout=min(1.0, left)):
                    sock = key.fileobj
                    state = pending[sock]
                    try:
                        if state[0] == "connect":
                            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                            if code:
                                del pending[sock]
                                fail(sock, f"connect: {errno.errorcode.get(code, code)}")
                                continue
                            if sock.send(request) != len(request):
                                del pending[sock]
                                fail(sock, "short send")
                                continue
                            state[0] = "read"
                            sel.modify(sock, selectors.EVENT_READ)
                            continue
                        data = sock.recv(4096)
                    except OSError as error:
                        del pending[sock]
                        fail(sock, f"{type(error).__name__}: "
                                   f"{errno.errorcode.get(error.errno, error)}")
                        continue
                    if not data:
                        del pending[sock]
                        fail(sock, "closed before a complete response")
                        continue
                    state[1] += data
                    try:
                        responses, rest = parse_responses(state[1])
                    except BenchError as error:
                        del pending[sock]
                        fail(sock, str(error)[:80])
                        continue
                    if not responses:
                        continue
                    del pending[sock]
                    status, headers, body = responses[0]
                    problem = check_plaintext(status, headers, body)
                    if problem or rest or len(responses) > 1:
                        fail(sock, f"bad response: {problem or 'extra bytes'}"[:80])
                    elif headers.get("connection", "").lower() == "close":
                        fail(sock, "server said Connection: close")
                    else:
                        sel.unregister(sock)
                        done.append(sock)
    except BaseException:
        for sock in done:
            sock.close()
        raise
    finally:
        sel.close()
    return done, failures


def idle_client(port: int, n: int) -> int:
    """The idle-connection client (a process of its own): open n keep-alive
    connections, report on stdout as one JSON line, hold them until a line
    (or EOF) on stdin, or until IDLE_CLIENT_LIFETIME; then close them and exit."""
    raise_nofile()
    started = time.monotonic()
    socks, failures = open_keepalive(port, n, started + IDLE_OPEN_TIMEOUT)
    report = {"opened": len(socks), "failed": sum(failures.values()),
              "failures": dict(failures), "seconds": round(time.monotonic() - started, 2)}
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    with selectors.DefaultSelector() as sel:
        sel.register(sys.stdin, selectors.EVENT_READ)
        sel.select(timeout=max(1.0, IDLE_CLIENT_LIFETIME - (time.monotonic() - started)))
    for sock in socks:
        sock.close()
    return 0


def stable_memory(pid: int, timeout: float = MEM_STABLE_TIMEOUT) -> tuple[Mem, bool]:
    """Poll the worker's memory until MEM_STABLE_READINGS readings in a row
    are within MEM_STABLE_KB (RSS and USS); (last reading, whether it settled)."""
    readings: list[Mem] = []
    deadline = time.monotonic() + timeout
    while True:
        readings.append(worker_memory(pid))
        window = readings[-MEM_STABLE_READINGS:]
        if len(window) == MEM_STABLE_READINGS and all(
                max(getattr(m, k) for m in window) - min(getattr(m, k) for m in window)
                <= MEM_STABLE_KB for k in ("rss_kb", "uss_kb")):
            return readings[-1], True
        if time.monotonic() >= deadline:
            return readings[-1], False
        time.sleep(MEM_POLL)


def read_line(stream, timeout: float) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout=timeout):
            raise BenchError(f"the idle client reported nothing within {timeout:.0f}s")
    return stream.readline().decode(errors="replace")


def measure_idle(backend: str, args: argparse.Namespace, workdir: Path, docroot: Path,
                 quiet: Quiet, result: BackendResult) -> None:
    idle = result.idle = Idle(requested=args.idle)
    server_dir = workdir / f"{backend}-idle"
    server_dir.mkdir()
    server = Server(backend, 1, args.idle + 100, server_dir, docroot, args)
    client: subprocess.Popen | None = None
    try:
        server.start()
        idle.worker_pid = pid = server.workers()[0]
        problem = check_plaintext(*http_get(server.port, PLAINTEXT, CHECK_TIMEOUT))
        if problem:
            raise BenchError(f"GET {PLAINTEXT}: {problem}")
        # warm-up: the accept path, a request on many connections, and keep-alive
        socks, failures = open_keepalive(server.port, WARM_CONNECTIONS,
                                         time.monotonic() + CHECK_TIMEOUT)
        for sock in socks:
            sock.close()
        if failures:
            raise BenchError(f"warm-up connections failed: {dict(failures)}")
        exchange(server.port, [PLAINTEXT] * WARM_SEQUENTIAL, False)
        idle.contended = not quiet.wait(f"{backend}] [idle")
        deadline = time.monotonic() + 10
        while established(server.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        idle.before, stable_before = stable_memory(pid)
        print(f"[{backend}] idle: worker {pid} before: RSS {idle.before.rss_kb} kB, USS "
              f"{idle.before.uss_kb} kB, {idle.before.fds} fds; opening {args.idle} "
              "connections ...", file=sys.stderr)
        argv = [sys.executable, str(Path(__file__).resolve()), "--idle-client",
                str(server.port), str(args.idle)]
        client = subprocess.Popen(pin(args.wrk_cpus, argv, not args.no_pin),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=open(server_dir / "client.err", "wb"))
        line = read_line(client.stdout, IDLE_OPEN_TIMEOUT + 30)
        if not line.strip():
            err = (server_dir / "client.err").read_text(errors="replace")[-2000:]
            raise BenchError(f"the idle client exited with {client.poll()}: {err}")
        report = json.loads(line)
        idle.opened, idle.failed = report["opened"], report["failed"]
        idle.failures, idle.open_seconds = report["failures"], report["seconds"]
        print(f"[{backend}] idle: client opened {idle.opened} in {idle.open_seconds}s, "
              f"{idle.failed} failed {idle.failures or ''}", file=sys.stderr)
        deadline = time.monotonic() + 30
        while True:
            idle.established = established(server.port)
            if idle.established >= idle.opened or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        idle.after, stable_after = stable_memory(pid)
        idle.stable = stable_before and stable_after
        idle.contended = idle.contended or bool(wrk_pids())
        if not server.master_alive() or pid not in server.workers():
            raise BenchError("the worker did not survive the idle connections")
        print(f"[{backend}] idle: {idle.established} established on the server side; "
              f"worker after: RSS {idle.after.rss_kb} kB, USS {idle.after.uss_kb} kB, "
              f"{idle.after.fds} fds -> {idle.rss_per_conn:,.0f} B/conn RSS, "
              f"{idle.uss_per_conn:,.0f} B/conn USS", file=sys.stderr)
    except (BenchError, OSError, ValueError, KeyError, IndexError) as error:
        idle.failure = str(error)
        print(f"[{backend}] idle FAILED: {server.failure_text(error)}", file=sys.stderr)
    finally:
        if client is not None:
            with contextlib.suppress(OSError):
                client.stdin.write(b"close\n")
                client.stdin.flush()
            try:
                client.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print(f"[{backend}] idle client {client.pid} did not exit; SIGKILL",
                      file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(client.pid, signal.SIGKILL)
                client.wait(timeout=STOP_TIMEOUT)
            for stream in (client.stdin, client.stdout):
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            if idle.failure is None and server.master_alive():
                deadline = time.monotonic() + 30
                while established(server.port) and time.monotonic() < deadline:
                    time.sleep(0.2)
                idle.alive_after_close = http_ok(server.port, CHECK_TIMEOUT)
                with contextlib.suppress(OSError):
                    idle.after_close = worker_memory(idle.worker_pid)
        finally:
            server.stop()
            result.idle_left_over_workers = server.left_over
            result.idle_log_lines = server.log_problems()
            server.keep_logs(f"{backend}-idle")


# --- report ---------------------------------------------------------------


def format_run(run: Run) -> str:
    marks = ("*" if run.client_bound else "") + ("!" if run.contended else "") \
        + ("~" if run.noisy else "")
    return f"{run.requests_per_sec:,.0f}{marks}"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base <= 0 or value < 0:
        return "n/a"
    return f"{value / base:.2f}x"


def table(args: argparse.Namespace, results: dict[str, BackendResult]) -> str:
    backends = args.backends
    others = [b for b in backends if b != BASE] if BASE in backends else []
    header = ["scenario", *[f"{b} req/s" for b in backends],
              *[f"{b}/{BASE}" for b in others], "errors"]
    rows = [header]
    for test in SCENARIOS:
        name = test.scenario.name
        row = [name]
        for b in backends:
            r = results[b]
            run = r.runs.get(name)
            row.append(format_run(run) if run else "FAILED" if name in r.failed else "n/a")
        base = results.get(BASE)
        base_run = base.runs.get(name) if base else None
        for b in others:
            run = results[b].runs.get(name)
            row.append(ratio(run and run.requests_per_sec,
                             base_run and base_run.requests_per_sec))
        errors = [f"{b} {results[b].runs[name].errors}" for b in backends
                  if name in results[b].runs and results[b].runs[name].errors]
        row.append(", ".join(errors) or "-")
        rows.append(row)
    if args.idle:
        for label, attr in (("RSS", "rss_per_conn"), ("USS", "uss_per_conn")):
            row = [f"idle-{args.idle} B/conn {label}"]
            values = {}
            for b in backends:
                idle = results[b].idle
                value = getattr(idle, attr) if idle and idle.failure is None else None
                values[b] = value
                row.append("FAILED" if idle and idle.failure else
                           "n/a" if value is None else
                           f"{value:,.0f}" + ("!" if idle.contended else "")
                           + ("?" if not idle.stable else ""))
            for b in others:
                row.append(ratio(values.get(b), values.get(BASE)))
            failed = [f"{b} {results[b].idle.requested - results[b].idle.opened}" for b in backends
                      if results[b].idle and results[b].idle.failure is None
                      and results[b].idle.opened < results[b].idle.requested]
            row.append(", ".join(failed) or "-")
            rows.append(row)
    return render_table(rows)


def target_lines(args: argparse.Namespace, results: dict[str, BackendResult]) -> tuple[list[str], bool]:
    if BASE not in results or "uvloop" not in results:
        return ["target: not evaluated (needs the epoll and uvloop backends)"], False
    ok = True
    lines = []
    e_run = results[BASE].runs.get(TARGET_SCENARIO)
    u_run = results["uvloop"].runs.get(TARGET_SCENARIO)
    if e_run is None or u_run is None:
        lines.append(f"  speed ({TARGET_SCENARIO}): not measured -> MISSED")
        ok = False
    else:
        met = e_run.requests_per_sec >= u_run.requests_per_sec
        ok &= met
        lines.append(f"  speed ({TARGET_SCENARIO}): epoll {e_run.requests_per_sec:,.0f} req/s vs "
                     f"uvloop {u_run.requests_per_sec:,.0f} req/s "
                     f"({e_run.requests_per_sec / u_run.requests_per_sec:.2f}x) -> "
                     f"{'met' if met else 'MISSED'}")
    if args.idle:
        e_idle, u_idle = results[BASE].idle, results["uvloop"].idle
        for label, attr in (("RSS", "rss_per_conn"), ("USS", "uss_per_conn")):
            e = getattr(e_idle, attr) if e_idle and e_idle.failure is None else None
            u = getattr(u_idle, attr) if u_idle and u_idle.failure is None else None
            if e is None or u is None:
                lines.append(f"  memory per idle connection ({label}): not measured -> MISSED")
                ok = False
                continue
            met = e <= u
            ok &= met
            lines.append(f"  memory per idle connection ({label}): epoll {e:,.0f} B vs uvloop "
                         f"{u:,.0f} B -> {'met' if met else 'MISSED'}")
    else:
        lines.append("  memory per idle connection: not measured (--idle 0)")
        ok = False
    head = ("target (epoll >= uvloop req/s on keep-alive /plaintext, and <= uvloop bytes per "
            f"idle connection): {'MET' if ok else 'NOT MET'}")
    return [head, *lines], ok


def report(args: argparse.Namespace, results: dict[str, BackendResult]) -> tuple[str, bool]:
    pinning = ("off" if args.no_pin
               else f"servers on CPU {args.server_cpus}, wrk on CPU {args.wrk_cpus}")
    lines = [
        f"prefork backends; {args.workers} worker(s) per server, {args.duration}s per scenario, "
        f"wrk -t{args.wrk_threads}, pinning {pinning}"
        + (f"; idle rows: 1 worker, {args.idle} idle keep-alive connections" if args.idle else ""),
        "",
        table(args, results),
        "",
        f"req/s: wrk Requests/sec; X/{BASE}: X's req/s (idle rows: bytes per connection) over "
        f"{BASE}'s; B/conn: the worker's memory growth over the connections held, RSS (VmRSS) "
        "or USS (Private_Clean+Private_Dirty).",
    ]
    if args.idle:
        lines.append("RSS also counts pages the worker still shares with its master (inherited at "
                     "fork): a write into one (new objects in inherited free heap) makes a private "
                     "copy without changing RSS, so USS is the closer measure of new memory.")
    all_runs = [run for r in results.values() for run in r.runs.values()]
    if any(run.client_bound for run in all_runs):
        lines.append(f"*: wrk used >= {CLIENT_BOUND_PERCENT}% of its CPU (client-bound).")
    if any(run.contended for run in all_runs) or any(
            r.idle and r.idle.contended for r in results.values()):
        lines.append("!: another wrk process ran during the measurement.")
    if any(run.noisy for run in all_runs):
        lines.append(f"~: other processes (or softirq not charged to the server or wrk) used "
                     f">= {OTHER_LOAD_MARK:.0f}% of a core during the run.")
    if any(r.idle and r.idle.failure is None and not r.idle.stable for r in results.values()):
        lines.append("?: the worker's memory had not settled within "
                     f"{MEM_STABLE_TIMEOUT:.0f}s (the last reading is used).")
    # errors
    notes = []
    for test in SCENARIOS:
        name = test.scenario.name
        for b in args.backends:
            run = results[b].runs.get(name)
            if run and run.errors:
                notes.append(f"  {name} {b}: socket errors connect {run.connect_errors}, read "
                             f"{run.read_errors}, write {run.write_errors}, timeout "
                             f"{run.timeout_errors}; non-2xx/3xx {run.non_2xx}")
    for b in args.backends:
        idle = results[b].idle
        if idle and idle.failure is None and idle.opened < idle.requested:
            notes.append(f"  idle {b}: {idle.requested - idle.opened} of {idle.requested} "
                         f"connections failed: {idle.failures}")
    if notes:
        lines += ["errors (wrk socket errors and non-2xx/3xx responses; idle: connections "
                  "that failed):", *notes]
    else:
        lines.append("errors: none (wrk socket errors, non-2xx/3xx responses, idle connections)")
    # memory details
    if args.idle:
        lines.append("idle details (worker memory before -> after the connections; after they "
                     "were closed):")
        for b in args.backends:
            idle = results[b].idle
            if idle is None:
                continue
            if idle.failure:
                lines.append(f"  {b}: FAILED: {idle.failure}")
                continue
            lines.append(
                f"  {b}: pid {idle.worker_pid}, RSS {idle.before.rss_kb / 1024:,.1f} -> "
                f"{idle.after.rss_kb / 1024:,.1f} MiB, USS {idle.before.uss_kb / 1024:,.1f} -> "
                f"{idle.after.uss_kb / 1024:,.1f} MiB, shared {idle.before.shared_kb / 1024:,.1f} -> "
                f"{idle.after.shared_kb / 1024:,.1f} MiB, fds {idle.before.fds} -> {idle.after.fds}; "
                f"{idle.opened} opened in {idle.open_seconds:.1f}s, {idle.established} "
                "established (ss); after close: "
                + (f"RSS {idle.after_close.rss_kb / 1024:,.1f} MiB, fds {idle.after_close.fds}"
                   if idle.after_close else "n/a")
                + (", still answers" if idle.alive_after_close else
                   ", NOT answering" if idle.alive_after_close is False else ""))
    # failures, logs
    for b in args.backends:
        r = results[b]
        if r.failure:
            lines.append(f"{b} FAILED: {r.failure}")
        for name, why in r.failed.items():
            lines.append(f"{b} {name} FAILED (not measured): {why}")
        bad_checks = {k: v for k, v in r.checks.items() if v != "ok"}
        for name, why in bad_checks.items():
            lines.append(f"{b} check {name} failed: {why}")
        for what, left in (("throughput", r.left_over_workers), ("idle", r.idle_left_over_workers)):
            if left:
                lines.append(f"{b} ({what}): workers alive after the master stopped "
                             f"(SIGKILLed): {left}")
        for what, log_lines in (("throughput", r.log_lines), ("idle", r.idle_log_lines)):
            if log_lines:
                lines.append(f"{b} ({what} server): {len(log_lines)} warning/error line(s) "
                             "in its logs:")
                lines += [f"    {line[:300]}" for line in log_lines[:LOG_EXCERPT_LINES]]
                if len(log_lines) > LOG_EXCERPT_LINES:
                    lines.append(f"    ... and {len(log_lines) - LOG_EXCERPT_LINES} more")
    targets, ok = target_lines(args, results)
    lines += ["", *targets]
    return "\n".join(lines), ok


def write_json(path: str, args: argparse.Namespace, results: dict[str, BackendResult]) -> None:
    data = {
        "workers": args.workers,
        "duration_s": args.duration,
        "idle_connections": args.idle,
        "pinned": not args.no_pin,
        "server_cpus": args.server_cpus,
        "wrk_cpus": args.wrk_cpus,
        "wrk_threads": args.wrk_threads,
        "scenarios": {t.scenario.name: asdict(t.scenario) for t in SCENARIOS},
        "results": {},
    }
    for b, r in results.items():
        entry = asdict(r)
        if r.idle:
            entry["idle"]["rss_bytes_per_conn"] = r.idle.rss_per_conn
            entry["idle"]["uss_bytes_per_conn"] = r.idle.uss_per_conn
        data["results"][b] = entry
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


# --- main -----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.idle_client:
        return idle_client(*args.idle_client)
    if not prepare_client(args, also=(("ss", "iproute2"),)):
        return 2
    quiet = Quiet(args.wait_max)
    results = {b: BackendResult() for b in args.backends}
    with tempfile.TemporaryDirectory(prefix="prefork-backends-") as tmp:
        workdir = Path(tmp)
        docroot = make_docroot(workdir)
        for backend in args.backends:
            bench_backend(backend, args, workdir, docroot, quiet, results[backend])
        if args.idle:
            for backend in args.backends:
                measure_idle(backend, args, workdir, docroot, quiet, results[backend])
    text, ok = report(args, results)
    print(text)
    if args.json:
        write_json(args.json, args, results)
    everything_ran = all(not r.failure and not r.failed and (not args.idle or (r.idle and not r.idle.failure))
                         for r in results.values())
    return 0 if ok and everything_ran else 1


if __name__ == "__main__":
    sys.exit(main())
