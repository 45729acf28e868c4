"""TechEmpower-style benchmark: prefork against uvicorn on the six TechEmpower
test types, with SQLite and with PostgreSQL, driven by wrk.

Usage (from anywhere; paths are relative to this file)::

    python bench/tfb.py [--workers 2] [--duration 10] [--warmup 2]
                        [--tests plaintext,json,db,queries,updates,fortunes]
                        [--backends sqlite,postgresql]
                        [--pg-url postgresql://postgres@127.0.0.1:54329/tfb_bench]
                        [--json FILE] [--no-pin]

Servers ("targets"), each with ``--workers`` worker processes, run one after
the other in this order::

    prefork-sqlite      python -m prefork.cli -c CONFIG, [database] url = sqlite:////TMP/world.db
    uvicorn-sqlite      uvicorn + uvloop + httptools, a raw ASGI app, the same SQLite file
    prefork-postgresql  prefork, [database] url = the --pg-url database
    uvicorn-postgresql  uvicorn, the same PostgreSQL database

Test types (as TechEmpower runs them; TechEmpower sweeps the connection count,
this script runs one level sized for a 2-core box)::

    plaintext  GET /plaintext            256 connections, 16 requests pipelined per write
    json       GET /json                 256 connections, keep-alive
    db         GET /db                   256 connections, keep-alive
    queries    GET /queries?queries=20   256 connections, keep-alive
    updates    GET /updates?queries=20   256 connections, keep-alive
    fortunes   GET /fortunes             256 connections, keep-alive

Every request carries TechEmpower's ``Accept`` header for its test type and
``Connection: keep-alive``.

The uvicorn app (written into the temporary directory) does what prefork's
built-in handlers do (``prefork/apps/db.py``): the same SQL statements, one
query per row for /queries and /updates, /queries' N reads in one read
transaction (SQLite), /updates reading N distinct rows and writing them in
one write transaction ordered by id, the same JSON (``orjson``, compact), the
same random ids, and the same fortunes HTML (``html.escape``, the extra fortune
with id 0, sorted by message).  It keeps one database connection per worker
process: a ``sqlite3`` connection used synchronously on the event loop (WAL,
``synchronous`` as for prefork, 5 s busy timeout), or one psycopg 3
``AsyncConnection`` (autocommit, ``prepare_threshold=0`` as prefork).  On one
shared async connection, concurrent transactions would nest, so /updates holds
a per-process ``asyncio.Lock`` around its transaction; reads never wait for
it.  prefork opens one connection per thread that touches the database: with
SQLite the reactor thread (reads) and the pool threads (updates); with
PostgreSQL only its pool threads (``[server] threads``, 4 by default), so it
holds up to 4 connections per worker against uvicorn's 1.

Databases: the script creates and seeds them itself before any server starts
(World: 10,000 rows, Fortune: the 12 TechEmpower rows; prefork's master finds
them present): the SQLite file in the temporary directory, and the database
named in ``--pg-url`` (``tfb_bench`` by default, created when missing and left
in place).  ``synchronous`` (default ``normal``) is prefork's ``[database]
synchronous`` and the uvicorn app's PRAGMA; PostgreSQL's own ``fsync`` and
``synchronous_commit`` are whatever the cluster has (printed).  If nothing
answers at ``--pg-url``, a throwaway cluster is started with
``.ci/postgres.sh`` in a directory of the script's own and stopped at the end.
Before each PostgreSQL target, ``VACUUM ANALYZE`` World and Fortune; before
each SQLite target, a WAL checkpoint: each server starts from the same state.

Before measuring, each test type is fetched once from each server and
checked: status 200, Content-Type, the exact body for plaintext/json, the JSON
shape and id range for db/queries/updates (``queries=20`` gives 20 rows, and
``queries=0`` / ``queries=foo`` / ``queries=501`` give 1 / 1 / 500),
/updates' new values read back from the database, and /fortunes' 13 rows
(the additional fortune among them) in order and escaped.  A test type that
fails is not measured for that server: ``FAILED`` in the table, the reason
under it.

Each measurement: a ``--warmup`` seconds wrk run, then ``--duration``
seconds of ``wrk -t1 --latency --timeout 8s``.  Before each wrk run the
script waits until no ``wrk`` process is running (another benchmark may be
using the machine), polling /proc every second, for at most ``--wait-max``
seconds in total over the whole run; a run measured while another wrk was
running (seen by a 0.5 s poll during the run, or because the waiting budget
ran out) is measured again after waiting, up to ``--retries`` times (default 1), and
marked ``!`` if it still was.

What the numbers mean:

* req/s is wrk's ``Requests/sec``: responses completed per second, non-2xx
  included (pipelined responses count one each).
* ``pf/uv`` is prefork's req/s over uvicorn's, same test type, same backend.
* CPU% is the server's CPU share during the measured run: the utime+stime
  (plus cutime+cstime: children reaped during the run) of every process in
  the server's session (prefork's master and workers; uvicorn's supervisor
  and workers), read from /proc before and after, over the wall time; 100%
  is one full core.  With pinning the server has one core, so ~100% means
  the server was CPU-bound.  The CPU table also shows the PostgreSQL backend
  processes serving the benchmark database (``postgres: ... DBNAME ...``,
  not pinned: they run on either core), wrk's own CPU (from wait4's
  rusage), and ``other``: the CPU time of every other process on the
  machine (the cores' busy time in /proc/stat, interrupts included since a
  task's stime includes those it took, less the server, the backends and
  wrk), a measure of how shared the machine was.  ``--json`` also has each core's
  busy share and the interrupt and steal time.
* ``~`` after req/s: other processes used >= 20% of a core during the run.
* ``*`` after req/s: wrk used >= 90% of its CPU (client-bound, the server
  might have served more).
* errors: wrk's socket errors (connect, read, write, timeout) plus its
  non-2xx/3xx responses; broken down under the table.  ERROR/WARNING lines
  that the server logged during each run are counted and excerpted too.

The servers are pinned to CPU 0 and wrk to CPU 1 with ``taskset`` unless
``--no-pin``.  Only 127.0.0.1 is targeted (``--pg-url`` must be loopback).
Each server runs in its own session and is stopped by its process group
(SIGTERM, then SIGKILL) in a ``finally``; every wrk has a deadline of
``--duration`` + 30 s.  Helpers are shared with ``bench/http.py`` (loaded
under another name); uvicorn's venv is that script's (``bench/.venv-uvicorn``),
with ``psycopg[binary]`` added when PostgreSQL is benchmarked.  The standard
library only, plus psycopg 3 (prefork's ``postgresql`` extra) for the
PostgreSQL backend.

Exit status: 0 when every server and test ran, verified, and every target
below was met; 1 otherwise; 2 when a tool is missing.  Targets: >= 50,000
responses/s on /json and /db from prefork-sqlite; prefork >= 1.5x uvicorn on
every test type, with each backend.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from prefork_bench.httpbench import LISTEN_BACKLOG
from prefork_bench.net import HOST, Launch, free_port, http_get, log_tail, running_server
from prefork_bench.procs import CLK_TCK, Quiet, all_pids, core_times, process_table, read_stat, top_others
from prefork_bench.report import render_table
from prefork_bench.tools import DEFAULT_VENV, REPO_ROOT, BenchError, ensure_uvicorn_venv, pin, run_checked
from prefork_bench.wrk import CLIENT_BOUND_PERCENT, PIPELINE_LUA, add_client_options, parse_wrk, prepare_client, wait_wrk

SERVERS = ("prefork", "uvicorn")
BACKENDS = ("sqlite", "postgresql")
SHORT = {"prefork": "pf", "uvicorn": "uv", "sqlite": "sqlite", "postgresql": "pg"}
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:54329/tfb_bench"
QUERIES = 20                   # queries=N for /queries and /updates
CONNECTIONS = 256
PIPELINE = 16
WRK_TIMEOUT = 8                # seconds, TechEmpower's wrk --timeout
VERIFY_TIMEOUT = 10.0          # seconds for one verification GET
OTHER_LOAD_MARK = 20.0         # % of a core used by unrelated processes from which a run is marked
TARGET_RPS = 50_000            # /json and /db with prefork-sqlite
TARGET_RATIO = 1.5             # prefork over uvicorn, every test type and backend
LOG_EXCERPT_LINES = 6          # server log lines quoted per run
WORLD_ROWS = 10000             # the World table's rows (TechEmpower's)
ADDITIONAL_FORTUNE = "Additional fortune added at request time."  # what /fortunes adds (TechEmpower's)

ACCEPT_PLAIN = "text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7"
ACCEPT_JSON = "application/json,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7"
ACCEPT_HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

@dataclass(frozen=True)
class TestType:
    name: str
    path: str
    accept: str
    content_type: str
    pipeline: int = 1
    connections: int = CONNECTIONS
    database: bool = False

    @property
    def description(self) -> str:
        how = f"{self.pipeline}-deep pipelining" if self.pipeline > 1 else "keep-alive"
        return f"GET {self.path}, {self.connections} connections, {how}"


TESTS = (
    TestType("plaintext", "/plaintext", ACCEPT_PLAIN, "text/plain", pipeline=PIPELINE),
    TestType("json", "/json", ACCEPT_JSON, "application/json"),
    TestType("db", "/db", ACCEPT_JSON, "application/json", database=True),
    TestType("queries", f"/queries?queries={QUERIES}", ACCEPT_JSON, "application/json", database=True),
    TestType("updates", f"/updates?queries={QUERIES}", ACCEPT_JSON, "application/json", database=True),
    TestType("fortunes", "/fortunes", ACCEPT_HTML, "text/html; charset=utf-8", database=True),
)


@dataclass(frozen=True)
class Target:
    server: str     # prefork or uvicorn
    backend: str    # sqlite or postgresql

    @property
    def name(self) -> str:
        return f"{self.server}-{self.backend}"

    @property
    def short(self) -> str:
        return f"{SHORT[self.server]}-{SHORT[self.backend]}"


@dataclass
class Run:
    """One measured wrk run against one target."""

    requests_per_sec: float
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    connect_errors: int
    read_errors: int
    write_errors: int
    timeout_errors: int
    non_2xx: int
    wall_s: float
    server_cpu_percent: float
    wrk_cpu_percent: float
    pg_backend_cpu_percent: float | None
    cpu_busy_percent: dict[str, float]        # per core, from /proc/stat
    other_cpu_percent: float                  # process CPU (all cores) that was not server, wrk or backends
    interrupt_cpu_percent: float              # irq + softirq time, all cores
    steal_cpu_percent: float
    pg_backends: int | None
    other_top: list[str]                      # the busiest other processes, "comm[pid] N%"
    client_bound: bool
    contended: bool                           # another wrk ran during the measurement
    other_wrk_pids: list[int] = field(default_factory=list)
    attempts: int = 1                         # measurements made (a contended one is repeated)
    server_processes_before: list[int] = field(default_factory=list)
    server_processes_after: list[int] = field(default_factory=list)
    log_counts: dict[str, int] = field(default_factory=dict)
    log_excerpt: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return (self.connect_errors + self.read_errors + self.write_errors
                + self.timeout_errors + self.non_2xx)


@dataclass
class TargetResult:
    runs: dict[str, Run] = field(default_factory=dict)
    verify: dict[str, str] = field(default_factory=dict)       # test -> "ok" or the problem
    failure: str | None = None                                  # the whole target failed
    measure_failures: dict[str, str] = field(default_factory=dict)
    config: str = ""


# --- command line ---------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="TechEmpower test types: prefork against uvicorn, SQLite and PostgreSQL, with wrk.")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per server (default: 2)")
    parser.add_argument("--duration", type=int, default=10,
                        help="seconds of measurement per test type and server (default: 10)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of wrk warm-up before each measurement, 0 for none (default: 2)")
    parser.add_argument("--tests", default=",".join(t.name for t in TESTS),
                        help="comma-separated test types (default: all six)")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated: sqlite, postgresql (default: both)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="comma-separated: prefork, uvicorn (default: both)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL,
                        help=f"PostgreSQL database for the benchmark, created when missing "
                             f"(default: {DEFAULT_PG_URL})")
    parser.add_argument("--synchronous", choices=("normal", "full"), default="normal",
                        help="SQLite synchronous for both servers (default: normal)")
    parser.add_argument("--json", metavar="FILE", help="also write the raw numbers to FILE")
    add_client_options(parser, timeout=False)
    parser.add_argument("--wait-max", type=float, default=900.0,
                        help="seconds, over the whole run, to wait for other wrk processes to "
                             "finish before measuring anyway (default: 900)")
    parser.add_argument("--retries", type=int, default=1,
                        help="measure again, after waiting, when another wrk ran during a "
                             "measurement, at most this many times (default: 1)")
    parser.add_argument("--uvicorn-venv", type=Path, default=DEFAULT_VENV,
                        help=f"venv for uvicorn (default: {DEFAULT_VENV})")
    args = parser.parse_args(argv)
    names = [t.name for t in TESTS]
    chosen = split_choices(parser, "--tests", args.tests, names)
    args.tests = [t for t in TESTS if t.name in chosen]
    args.backends = split_choices(parser, "--backends", args.backends, BACKENDS)
    args.servers = split_choices(parser, "--servers", args.servers, SERVERS)
    if args.workers < 1 or args.duration < 1 or args.warmup < 0 or args.wrk_threads < 1:
        parser.error("--workers, --duration and --wrk-threads must be >= 1, --warmup >= 0")
    parts = urlsplit(args.pg_url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        parser.error("--pg-url: expected postgresql://user@127.0.0.1:port/dbname")
    if parts.hostname not in ("127.0.0.1", "localhost") and not (parts.hostname or "").startswith("127."):
        parser.error("--pg-url: only a loopback host (127.0.0.1) is allowed")
    return args


def split_choices(parser: argparse.ArgumentParser, option: str, text: str, choices) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in choices]
    if unknown or not items:
        parser.error(f"{option}: expected some of {', '.join(choices)}, got {text!r}")
    return list(dict.fromkeys(items))


# --- /proc: processes, CPU time, other wrk runs ------------------------------


def session_cpu(table: dict[int, dict], sid: int) -> dict[int, int]:
    """{pid: CPU ticks, reaped children included} for every process in the server's session."""
    return {pid: st["ticks"] + st["children"] for pid, st in table.items() if st["sid"] == sid}


def pg_backends_cpu(dbname: str) -> dict[int, int]:
    """{pid: CPU ticks} of the PostgreSQL backends connected to dbname (by process title)."""
    out = {}
    needle = f" {dbname} ".encode()
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read()
        except OSError:
            continue
        if title.startswith(b"postgres: ") and needle in title:
            stat = read_stat(pid)
            if stat:
                out[pid] = stat["ticks"]
    return out


def cpu_delta(before: dict[int, int], after: dict[int, int]) -> int:
    """Ticks used between two snapshots (a process that appeared counts from zero)."""
    return sum(ticks - before.get(pid, 0) for pid, ticks in after.items())


def core_usage(before: dict[str, list[int]], after: dict[str, list[int]]) -> tuple[dict[str, float], dict]:
    """Each core's busy share in %, and in ticks summed over the cores: busy time
    (user+nice+system+irq+softirq), interrupts (irq+softirq) and steal."""
    busy, ticks = {}, {"process": 0, "interrupts": 0, "steal": 0}
    for name, now in after.items():
        d = [a - b for a, b in zip(now, before.get(name, [0] * 8))]
        total = max(sum(d), 1)
        busy[name] = round(100 * (total - d[3] - d[4]) / total, 1)
        # A task's stime includes the interrupts taken while it ran; /proc/stat counts them apart.
        ticks["process"] += d[0] + d[1] + d[2] + d[5] + d[6]
        ticks["interrupts"] += d[5] + d[6]
        ticks["steal"] += d[7]
    return busy, ticks


# --- databases --------------------------------------------------------------


SEED = """\
import sys
from prefork.apps.db import DatabaseError, open_backend
try:
    open_backend(sys.argv[1], sys.argv[2]).setup()
except DatabaseError as exc:
    sys.exit(str(exc))
"""


def seed(url: str, synchronous: str = "full") -> None:
    """Create and seed the tables with the server's own code and data (its
    prefork/apps/db.py, as its master does before forking), in a child process:
    this script cannot import the server's HTTP modules, because bench/ comes
    first on its sys.path and bench/http.py hides the standard library's http."""
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", SEED, url, synchronous], cwd=REPO_ROOT,
                          env=dict(os.environ, PYTHONPATH=pythonpath), capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        raise BenchError(f"seeding the database: {done.stderr.strip()[-2000:]}")


def seed_sqlite(path: Path, synchronous: str) -> None:
    seed(f"sqlite:///{path}", synchronous)


def sqlite_checkpoint(path: Path) -> None:
    conn = sqlite3.connect(str(path), timeout=5.0, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def sqlite_fortunes(path: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(str(path), timeout=5.0)
    try:
        return conn.execute("SELECT id, message FROM Fortune").fetchall()
    finally:
        conn.close()


def sqlite_rows(path: Path, ids: list[int]) -> dict[int, int]:
    conn = sqlite3.connect(str(path), timeout=5.0)
    try:
        return {i: conn.execute("SELECT randomNumber FROM World WHERE id = ?", (i,)).fetchone()[0]
                for i in ids}
    finally:
        conn.close()


def import_psycopg():
    try:
        import psycopg
    except ImportError:
        raise BenchError(f"the postgresql backend needs psycopg 3 in {sys.executable} "
                         "(pip install 'psycopg[binary]')") from None
    return psycopg


def pg_admin_url(url: str) -> str:
    return urlsplit(url)._replace(path="/postgres").geturl()


def pg_dbname(url: str) -> str:
    return urlsplit(url).path.strip("/")


def pg_reachable(url: str) -> bool:
    psycopg = import_psycopg()
    try:
        with psycopg.connect(pg_admin_url(url), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def start_pg_cluster(url: str, workdir: Path) -> Path:
    """Start a throwaway cluster with .ci/postgres.sh on the URL's port; return its directory."""
    port = urlsplit(url).port or 5432
    pgdir = Path(tempfile.mkdtemp(prefix="tfb-pg-", dir=workdir))
    for directory in (workdir, pgdir):
        directory.chmod(0o755)       # the postgres user must reach it
    print(f"nothing answers at {HOST}:{port}; starting a PostgreSQL cluster in {pgdir} ...",
          file=sys.stderr)
    env = dict(os.environ, PREFORK_TEST_POSTGRES_PORT=str(port))
    done = subprocess.run(["bash", str(REPO_ROOT / ".ci" / "postgres.sh"), "start", str(pgdir)],
                          env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise BenchError(f".ci/postgres.sh start failed: {done.stderr.strip()[-2000:]}")
    return pgdir


def stop_pg_cluster(pgdir: Path, url: str) -> None:
    env = dict(os.environ, PREFORK_TEST_POSTGRES_PORT=str(urlsplit(url).port or 5432))
    subprocess.run(["bash", str(REPO_ROOT / ".ci" / "postgres.sh"), "stop", str(pgdir)],
                   env=env, capture_output=True, timeout=120)


def prepare_pg(url: str) -> dict[str, str]:
    """Create and seed the benchmark database when missing; return the cluster's settings."""
    psycopg = import_psycopg()
    dbname = pg_dbname(url)
    try:
        with psycopg.connect(pg_admin_url(url), autocommit=True, connect_timeout=5) as admin:
            if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is None:
                print(f"creating PostgreSQL database {dbname} ...", file=sys.stderr)
                admin.execute(f'CREATE DATABASE "{dbname}"')
        seed(url)
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            settings = {name: conn.execute(f"SHOW {name}").fetchone()[0]
                        for name in ("server_version", "fsync", "synchronous_commit", "max_connections")}
            settings["world_rows"] = str(conn.execute("SELECT COUNT(*) FROM World").fetchone()[0])
            return settings
    except psycopg.Error as exc:
        raise BenchError(f"PostgreSQL at {url}: {str(exc).strip()}") from None


def pg_vacuum(url: str) -> None:
    psycopg = import_psycopg()
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("VACUUM ANALYZE World")
        conn.execute("VACUUM ANALYZE Fortune")


def pg_fortunes(url: str) -> list[tuple[int, str]]:
    psycopg = import_psycopg()
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute("SELECT id, message FROM Fortune").fetchall()


def pg_rows(url: str, ids: list[int]) -> dict[int, int]:
    psycopg = import_psycopg()
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return {i: conn.execute("SELECT randomNumber FROM World WHERE id = %s", (i,)).fetchone()[0]
                for i in ids}


# --- the uvicorn app ----------------------------------------------------------

UVICORN_APP = '''\
"""A raw ASGI app doing what prefork's built-in TechEmpower handlers do (bench/tfb.py)."""

import asyncio
import html
import os
import random
import sqlite3
from operator import itemgetter

import orjson

KIND = os.environ["TFB_DB_KIND"]                  # sqlite or postgresql
URL = os.environ["TFB_DB_URL"]                    # a file path for sqlite
SYNCHRONOUS = os.environ.get("TFB_SQLITE_SYNCHRONOUS", "normal")
WORLD_ROWS = 10000
ADDITIONAL_FORTUNE = "Additional fortune added at request time."

PLAINTEXT = b"Hello, World!"
CT_TEXT = b"text/plain"
CT_JSON = b"application/json"
CT_HTML = b"text/html; charset=utf-8"

SELECT_WORLD_SQLITE = "SELECT id, randomNumber FROM World WHERE id = ?"
UPDATE_WORLD_SQLITE = "UPDATE World SET randomNumber = ? WHERE id = ?"
SELECT_WORLD_PG = "SELECT id, randomNumber FROM World WHERE id = %s"
UPDATE_WORLD_PG = "UPDATE World SET randomNumber = %s WHERE id = %s"
SELECT_FORTUNES = "SELECT id, message FROM Fortune"


class SQLiteDB:
    """One sqlite3 connection per worker process, used synchronously on the event loop."""

    def __init__(self, path):
        self.conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={SYNCHRONOUS.upper()}")
        self.errors = (sqlite3.Error,)

    async def world(self, wid):
        return self.conn.execute(SELECT_WORLD_SQLITE, (wid,)).fetchone()

    async def worlds(self, ids):
        conn = self.conn
        cur = conn.cursor()
        if len(ids) == 1:
            return [cur.execute(SELECT_WORLD_SQLITE, (ids[0],)).fetchone()]
        conn.execute("BEGIN")
        try:
            rows = [cur.execute(SELECT_WORLD_SQLITE, (i,)).fetchone() for i in ids]
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        return rows

    async def updates(self, ids, numbers):
        conn = self.conn
        cur = conn.cursor()
        conn.execute("BEGIN IMMEDIATE")
        try:
            worlds = [cur.execute(SELECT_WORLD_SQLITE, (i,)).fetchone() for i in ids]
            new = sorted(zip([w for w, _ in worlds], numbers))
            cur.executemany(UPDATE_WORLD_SQLITE, [(n, i) for i, n in new])
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        return new

    async def fortunes(self):
        return self.conn.execute(SELECT_FORTUNES).fetchall()

    async def reset(self):
        pass


class PostgresDB:
    """One psycopg AsyncConnection per worker process, shared by all its requests."""

    def __init__(self):
        import psycopg
        self.psycopg = psycopg
        self.errors = (psycopg.Error,)
        self.conn = None
        self.update_lock = asyncio.Lock()   # transactions on one shared connection must not nest

    async def connect(self):
        self.conn = await self.psycopg.AsyncConnection.connect(URL, autocommit=True, prepare_threshold=0)

    async def world(self, wid):
        cur = await self.conn.execute(SELECT_WORLD_PG, (wid,))
        return await cur.fetchone()

    async def worlds(self, ids):
        out = []
        async with self.conn.cursor() as cur:
            for i in ids:
                await cur.execute(SELECT_WORLD_PG, (i,))
                out.append(await cur.fetchone())
        return out

    async def updates(self, ids, numbers):
        async with self.update_lock:
            async with self.conn.transaction():
                async with self.conn.cursor() as cur:
                    worlds = []
                    for i in ids:
                        await cur.execute(SELECT_WORLD_PG, (i,))
                        worlds.append(await cur.fetchone())
                    new = sorted(zip([w for w, _ in worlds], numbers))
                    await cur.executemany(UPDATE_WORLD_PG, [(n, i) for i, n in new])
        return new

    async def fortunes(self):
        cur = await self.conn.execute(SELECT_FORTUNES)
        return await cur.fetchall()

    async def reset(self):
        if self.conn is None or self.conn.broken or self.conn.closed:
            try:
                await self.connect()
            except self.psycopg.Error:
                pass


db = None


def queries_param(query):
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == b"queries":
            try:
                n = int(value)
            except ValueError:
                return 1
            return 1 if n < 1 else 500 if n > 500 else n
    return 1


_random = random.random


def dumps(obj):
    return orjson.dumps(obj)


def random_id():
    return int(_random() * WORLD_ROWS) + 1


def rollback(conn):
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def render_fortunes(rows):
    rows = list(rows)
    rows.append((0, ADDITIONAL_FORTUNE))
    rows.sort(key=itemgetter(1))
    cells = "".join([f"<tr><td>{i}</td><td>{html.escape(m)}</td></tr>" for i, m in rows])
    return ("<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>"
            f"<tr><th>id</th><th>message</th></tr>{cells}</table></body></html>").encode()


async def h_plaintext(scope):
    return 200, PLAINTEXT, CT_TEXT


async def h_json(scope):
    return 200, dumps({"message": "Hello, World!"}), CT_JSON


async def h_db(scope):
    wid, number = await db.world(random_id())
    return 200, dumps({"id": wid, "randomNumber": number}), CT_JSON


async def h_queries(scope):
    ids = [random_id() for _ in range(queries_param(scope["query_string"]))]
    return 200, dumps([{"id": w, "randomNumber": n} for w, n in await db.worlds(ids)]), CT_JSON


async def h_updates(scope):
    n = queries_param(scope["query_string"])
    ids = random.sample(range(1, WORLD_ROWS + 1), n)
    new = await db.updates(ids, [random_id() for _ in range(n)])
    return 200, dumps([{"id": w, "randomNumber": n} for w, n in new]), CT_JSON


async def h_fortunes(scope):
    return 200, render_fortunes(await db.fortunes()), CT_HTML


ROUTES = {"/plaintext": h_plaintext, "/json": h_json, "/db": h_db, "/queries": h_queries,
          "/updates": h_updates, "/fortunes": h_fortunes}
DB_ROUTES = {"/db", "/queries", "/updates", "/fortunes"}


async def lifespan(receive, send):
    global db
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                if KIND == "sqlite":
                    db = SQLiteDB(URL)
                else:
                    db = PostgresDB()
                    await db.connect()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "lifespan":
        await lifespan(receive, send)
        return
    if kind != "http":
        return
    handler = ROUTES.get(scope["path"])
    if handler is None:
        status, body, ctype = 404, b"Not Found", CT_TEXT
    elif scope["path"] in DB_ROUTES:
        try:
            status, body, ctype = await handler(scope)
        except db.errors as exc:
            print(f"ERROR database error on {scope['path']}: {exc}", flush=True)
            await db.reset()
            status, body, ctype = 503, b"503 Service Unavailable\\n", CT_TEXT
    else:
        status, body, ctype = await handler(scope)
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
'''


def ensure_uvicorn(venv: Path, need_psycopg: bool) -> Path:
    python = ensure_uvicorn_venv(venv)
    if need_psycopg:
        probe = [str(python), "-c", "import psycopg; assert psycopg.pq.__impl__ in ('binary', 'c')"]
        if subprocess.run(probe, capture_output=True).returncode != 0:
            print(f"installing psycopg[binary] into {venv} ...", file=sys.stderr)
            run_checked([str(python), "-m", "pip", "install", "--quiet", "psycopg[binary]"],
                        "pip install psycopg[binary]")
    return python


# --- launching ------------------------------------------------------------------


def prefork_config(port: int, workers: int, db_url: str, synchronous: str, error_log: Path) -> str:
    return ("[server]\n"
            f"workers = {workers}\n"
            "worker_connections = 10000\n"
            "\n[[listen]]\n"
            f'address = "{HOST}:{port}"\n'
            'protocol = "http"\n'
            "\n[http]\n"
            "keepalive_requests = 10000000\n"
            "\n[database]\n"
            f"url = {json.dumps(db_url)}\n"
            f'synchronous = "{synchronous}"\n'
            "\n[log]\n"
            f"error_log = {json.dumps(str(error_log))}\n")


def db_url_for(backend: str, sqlite_path: Path, args: argparse.Namespace) -> str:
    return f"sqlite:///{sqlite_path}" if backend == "sqlite" else args.pg_url


def prepare_target(target: Target, workdir: Path, port: int, args: argparse.Namespace,
                   sqlite_path: Path, result: TargetResult) -> tuple[Launch, list[Path]]:
    """The launch for one target and the log files to read."""
    if target.server == "prefork":
        error_log = workdir / "error.log"
        config = workdir / "prefork.toml"
        result.config = prefork_config(port, args.workers, db_url_for(target.backend, sqlite_path, args),
                                       args.synchronous, error_log)
        config.write_text(result.config)
        pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        return (Launch(argv=[sys.executable, "-m", "prefork.cli", "-c", str(config)],
                       env=dict(os.environ, PYTHONPATH=pythonpath), cwd=REPO_ROOT, port=port),
                [error_log, workdir / "server.log"])
    python = ensure_uvicorn(args.uvicorn_venv, target.backend == "postgresql")
    (workdir / "app.py").write_text(UVICORN_APP)
    argv = [str(python), "-m", "uvicorn", "app:app", "--app-dir", str(workdir),
            "--host", HOST, "--port", str(port), "--workers", str(args.workers),
            "--loop", "uvloop", "--http", "httptools", "--backlog", str(LISTEN_BACKLOG),
            "--no-access-log", "--log-level", "warning"]
    result.config = " ".join(argv)
    env = dict(os.environ, TFB_DB_KIND=target.backend,
               TFB_DB_URL=str(sqlite_path) if target.backend == "sqlite" else args.pg_url,
               TFB_SQLITE_SYNCHRONOUS=args.synchronous, PYTHONUNBUFFERED="1")
    return Launch(argv=argv, env=env, cwd=workdir, port=port), [workdir / "server.log"]


# --- verification ---------------------------------------------------------------


class Bad(Exception):
    """A verification failure."""


def get_ok(port: int, path: str, content_type: str) -> bytes:
    status, headers, body = http_get(port, path, VERIFY_TIMEOUT)
    if status != 200:
        raise Bad(f"GET {path}: status {status}, body {body[:200]!r}")
    got = headers.get("content-type", "")
    if got.replace(" ", "").lower() != content_type.replace(" ", "").lower():
        raise Bad(f"GET {path}: Content-Type {got!r}, expected {content_type!r}")
    return body


def world_list(path: str, body: bytes, count: int) -> list[tuple[int, int]]:
    try:
        data = json.loads(body)
    except ValueError:
        raise Bad(f"GET {path}: not JSON: {body[:200]!r}") from None
    if not isinstance(data, list) or len(data) != count:
        raise Bad(f"GET {path}: expected a JSON array of {count}, got {body[:200]!r}")
    return [world_object(path, item) for item in data]


def world_object(path: str, item) -> tuple[int, int]:
    if (not isinstance(item, dict) or set(item) != {"id", "randomNumber"}
            or not all(type(item[k]) is int and 1 <= item[k] <= WORLD_ROWS for k in item)):
        raise Bad(f"GET {path}: not a World object with id and randomNumber in 1..{WORLD_ROWS}: {item!r}")
    return item["id"], item["randomNumber"]


def verify_test(test: TestType, port: int, target: Target, args: argparse.Namespace,
                sqlite_path: Path) -> None:
    """Raise Bad saying what is wrong with the server's answer for this test type."""
    body = get_ok(port, test.path, test.content_type)
    if test.name == "plaintext":
        if body != b"Hello, World!":
            raise Bad(f"GET {test.path}: body {body[:200]!r}")
    elif test.name == "json":
        try:
            if json.loads(body) != {"message": "Hello, World!"}:
                raise ValueError
        except ValueError:
            raise Bad(f"GET {test.path}: body {body[:200]!r}") from None
    elif test.name == "db":
        try:
            data = json.loads(body)
        except ValueError:
            raise Bad(f"GET {test.path}: not JSON: {body[:200]!r}") from None
        world_object(test.path, data)
    elif test.name in ("queries", "updates"):
        base = test.path.partition("?")[0]
        rows = world_list(test.path, body, QUERIES)
        if test.name == "updates":
            ids = [i for i, _ in rows]
            if len(set(ids)) != len(ids):
                raise Bad(f"GET {test.path}: ids not distinct: {ids}")
            stored = (sqlite_rows(sqlite_path, ids) if target.backend == "sqlite"
                      else pg_rows(args.pg_url, ids))
            wrong = [(i, n, stored[i]) for i, n in rows if stored[i] != n]
            if wrong:
                raise Bad(f"GET {test.path}: {len(wrong)} of {len(rows)} returned values are not "
                          f"in the database, e.g. (id, returned, stored) {wrong[:3]}")
        for query, count in (("queries=0", 1), ("queries=foo", 1), ("queries=501", 500), ("", 1)):
            path = f"{base}?{query}" if query else base
            world_list(path, get_ok(port, path, test.content_type), count)
    elif test.name == "fortunes":
        text = body.decode("utf-8", errors="replace")
        if ADDITIONAL_FORTUNE not in text:
            raise Bad(f"GET {test.path}: the additional fortune is missing: {text[:300]!r}")
        if "<script>" in text:
            raise Bad(f"GET {test.path}: fortune 11 is not escaped")
        cells = re.findall(r"<tr>\s*<td>\s*(\d+)\s*</td>\s*<td>(.*?)</td>\s*</tr>", text, re.S)
        got = [(int(i), html.unescape(m)) for i, m in cells]
        stored = sqlite_fortunes(sqlite_path) if target.backend == "sqlite" else pg_fortunes(args.pg_url)
        expected = sorted(stored + [(0, ADDITIONAL_FORTUNE)], key=lambda r: r[1])
        if got != expected:
            raise Bad(f"GET {test.path}: rows {got[:3]}... ({len(got)}), expected {len(expected)} "
                      f"rows sorted by message")


# --- measuring --------------------------------------------------------------------


def wrk_argv(test: TestType, port: int, duration: int, args: argparse.Namespace,
             workdir: Path) -> list[str]:
    argv = ["wrk", f"-t{args.wrk_threads}", f"-c{max(test.connections, args.wrk_threads)}",
            f"-d{duration}s", f"--timeout={WRK_TIMEOUT}s", "--latency",
            "-H", f"Accept: {test.accept}", "-H", "Connection: keep-alive"]
    if test.pipeline > 1:
        script = workdir / f"pipeline{test.pipeline}.lua"
        script.write_text(PIPELINE_LUA.substitute(depth=test.pipeline, path=test.path))
        argv += ["-s", str(script)]
    argv.append(f"http://{HOST}:{port}{test.path}")
    return pin(args.wrk_cpus, argv, not args.no_pin)


def run_wrk(argv: list[str], duration: int, out_path: Path) -> tuple[str, float, list[int]]:
    """Run wrk: (its report, its CPU % of one core, pids of other wrk runs seen meanwhile)."""
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    start = time.monotonic()
    usage, others = wait_wrk(proc, duration)
    wall = time.monotonic() - start
    output = out_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"wrk exited with {proc.returncode}: {output.strip()[-1000:]}")
    return output, 100 * (usage.ru_utime + usage.ru_stime) / max(wall, 1e-6), others


class LogWatch:
    """Counts ERROR/WARNING/CRITICAL/Traceback lines a server writes during each run."""

    PATTERN = re.compile(r"\[(ERROR|WARNING|CRITICAL)\]|^(ERROR|WARNING|CRITICAL)\b|Traceback|Exception")

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.offsets = {p: 0 for p in paths}

    def mark(self) -> None:
        self.offsets = {p: (p.stat().st_size if p.exists() else 0) for p in self.paths}

    def since_mark(self) -> tuple[dict[str, int], list[str]]:
        counts: dict[str, int] = {}
        excerpt: list[str] = []
        for path in self.paths:
            if not path.exists():
                continue
            with open(path, "rb") as f:
                f.seek(self.offsets.get(path, 0))
                text = f.read().decode(errors="replace")
            for line in text.splitlines():
                match = self.PATTERN.search(line)
                if not match:
                    continue
                kind = match.group(1) or match.group(2) or ("Traceback" if "Traceback" in line else "Exception")
                counts[kind] = counts.get(kind, 0) + 1
                if len(excerpt) < LOG_EXCERPT_LINES:
                    excerpt.append(f"{path.name}: {line.strip()[:300]}")
        return counts, excerpt


def measure(target: Target, test: TestType, port: int, sid: int, args: argparse.Namespace,
            workdir: Path, quiet: Quiet, logs: LogWatch) -> Run:
    """Warm up, measure; measure again (up to --retries times) if another wrk ran meanwhile."""
    label = f"{target.name}/{test.name}"
    if args.warmup:
        quiet.wait(label)
        run_wrk(wrk_argv(test, port, args.warmup, args, workdir), args.warmup, workdir / "wrk-warmup.txt")
    attempt = 1
    while True:
        clean = quiet.wait(label)
        run = measure_once(target, test, port, sid, args, workdir, logs, label, clean)
        run.attempts = attempt
        if not run.contended or attempt > args.retries or quiet.waited >= quiet.budget:
            return run
        print(f"[{label}] another wrk ran during the measurement: measuring again", file=sys.stderr)
        attempt += 1


def measure_once(target: Target, test: TestType, port: int, sid: int, args: argparse.Namespace,
                 workdir: Path, logs: LogWatch, label: str, clean: bool) -> Run:
    dbname = pg_dbname(args.pg_url) if target.backend == "postgresql" else None
    logs.mark()
    table_before = process_table()
    server_before = session_cpu(table_before, sid)
    pg_before = pg_backends_cpu(dbname) if dbname else {}
    cores_before = core_times()
    wall_before = time.monotonic()
    output, wrk_cpu, others = run_wrk(wrk_argv(test, port, args.duration, args, workdir),
                                      args.duration, workdir / f"wrk-{test.name}.txt")
    wall = time.monotonic() - wall_before
    table_after = process_table()
    server_after = session_cpu(table_after, sid)
    pg_after = pg_backends_cpu(dbname) if dbname else {}
    cores, core_ticks = core_usage(cores_before, core_times())
    time.sleep(0.2)        # let the server flush its log lines about this run
    log_counts, excerpt = logs.since_mark()
    parsed = parse_wrk(output)
    server_ticks = cpu_delta(server_before, server_after)
    pg_ticks = cpu_delta(pg_before, pg_after)
    wrk_ticks = wrk_cpu / 100 * wall * CLK_TCK
    other_ticks = core_ticks["process"] - server_ticks - pg_ticks - wrk_ticks
    others_top = top_others(table_before, table_after,
                            set(server_after) | set(pg_after) | {os.getpid()}, wall)
    run = Run(
        requests_per_sec=parsed.requests_per_sec, requests=parsed.requests,
        p50_ms=parsed.p50_ms, p99_ms=parsed.p99_ms if test.pipeline == 1 else None,
        connect_errors=parsed.connect_errors, read_errors=parsed.read_errors,
        write_errors=parsed.write_errors, timeout_errors=parsed.timeout_errors,
        non_2xx=parsed.non_2xx, wall_s=round(wall, 3),
        server_cpu_percent=round(100 * server_ticks / CLK_TCK / wall, 1),
        wrk_cpu_percent=round(wrk_cpu, 1),
        pg_backend_cpu_percent=round(100 * pg_ticks / CLK_TCK / wall, 1) if dbname else None,
        cpu_busy_percent=cores,
        other_cpu_percent=round(max(0.0, 100 * other_ticks / CLK_TCK / wall), 1),
        interrupt_cpu_percent=round(100 * core_ticks["interrupts"] / CLK_TCK / wall, 1),
        steal_cpu_percent=round(100 * core_ticks["steal"] / CLK_TCK / wall, 1),
        pg_backends=len(pg_after) if dbname else None,
        other_top=others_top,
        client_bound=wrk_cpu >= CLIENT_BOUND_PERCENT * args.wrk_threads,
        contended=bool(others) or not clean, other_wrk_pids=others,
        server_processes_before=sorted(server_before), server_processes_after=sorted(server_after),
        log_counts=log_counts, log_excerpt=excerpt)
    pg = f", PostgreSQL backends {run.pg_backend_cpu_percent:.0f}%" if dbname else ""
    print(f"[{label}] {run.requests_per_sec:,.0f} req/s, errors {run.errors}, server CPU "
          f"{run.server_cpu_percent:.0f}%{pg}, wrk CPU {run.wrk_cpu_percent:.0f}%, cores "
          + " ".join(f"{k} {v:.0f}%" for k, v in cores.items())
          + f", other processes {run.other_cpu_percent:.0f}%"
          + (f" ({', '.join(run.other_top)})" if run.other_top else "")
          + f", irq {run.interrupt_cpu_percent:.0f}%"
          + (f", log {log_counts}" if log_counts else "")
          + (f", CONTENDED (other wrk {others})" if run.contended else ""), file=sys.stderr)
    return run


def bench_target(target: Target, args: argparse.Namespace, workdir: Path, sqlite_path: Path,
                 quiet: Quiet) -> TargetResult:
    result = TargetResult()
    tdir = workdir / target.name
    tdir.mkdir()
    log_path = tdir / "server.log"
    log_files: list[Path] = [log_path]
    try:
        if target.backend == "sqlite":
            sqlite_checkpoint(sqlite_path)
        else:
            pg_vacuum(args.pg_url)
        port = free_port()
        launch, log_files = prepare_target(target, tdir, port, args, sqlite_path, result)
        print(f"[{target.name}] starting on {HOST}:{port}: {' '.join(launch.argv)}", file=sys.stderr)
        with running_server(launch, log_path, args.server_cpus, not args.no_pin) as proc:
            for test in args.tests:
                try:
                    verify_test(test, port, target, args, sqlite_path)
                    result.verify[test.name] = "ok"
                except Exception as exc:   # anything wrong with the answer or while checking it
                    result.verify[test.name] = str(exc) if isinstance(exc, Bad) else f"{type(exc).__name__}: {exc}"
                print(f"[{target.name}] verify {test.name}: {result.verify[test.name]}", file=sys.stderr)
            logs = LogWatch(log_files)
            for test in args.tests:
                if result.verify[test.name] != "ok":
                    continue
                try:
                    result.runs[test.name] = measure(target, test, port, proc.pid, args, tdir, quiet, logs)
                except BenchError as exc:
                    result.measure_failures[test.name] = str(exc)
                    print(f"[{target.name}/{test.name}] FAILED: {exc}", file=sys.stderr)
                if proc.poll() is not None:
                    raise BenchError(f"exited with status {proc.returncode} during {test.name}")
    except Exception as exc:       # BenchError, OSError, a database error: this target failed
        result.failure = f"{type(exc).__name__}: {exc}\n{log_tail(*dict.fromkeys([log_path, *log_files]))}"
        print(f"[{target.name}] FAILED: {result.failure}", file=sys.stderr)
    return result


# --- report -----------------------------------------------------------------------


def cell_rps(result: TargetResult | None, test: TestType) -> str:
    if result is None:
        return "-"
    if result.verify.get(test.name, "ok") != "ok":
        return "FAILED"
    run = result.runs.get(test.name)
    if run is None:
        return "n/a"
    return (f"{run.requests_per_sec:,.0f}" + ("*" if run.client_bound else "")
            + ("!" if run.contended else "")
            + ("~" if run.other_cpu_percent >= OTHER_LOAD_MARK else ""))


def rps(results: dict[str, TargetResult], target: Target, test: TestType) -> float | None:
    result = results.get(target.name)
    run = result.runs.get(test.name) if result else None
    return run.requests_per_sec if run else None


def ratio(results: dict[str, TargetResult], backend: str, test: TestType) -> float | None:
    ours = rps(results, Target("prefork", backend), test)
    theirs = rps(results, Target("uvicorn", backend), test)
    if ours is None or not theirs:
        return None
    return ours / theirs


def main_table(targets: list[Target], args: argparse.Namespace,
               results: dict[str, TargetResult]) -> list[list[str]]:
    ratio_backends = [b for b in args.backends if len(args.servers) == 2]
    header = ["test"] + [t.short for t in targets]
    header += [f"pf/uv {SHORT[b]}" for b in ratio_backends]
    header += [f"CPU {t.short}" for t in targets] + ["errors"]
    rows = [header]
    for test in args.tests:
        row = [test.name] + [cell_rps(results.get(t.name), test) for t in targets]
        for backend in ratio_backends:
            value = ratio(results, backend, test)
            row.append("n/a" if value is None else f"{value:.2f}x")
        for t in targets:
            run = results[t.name].runs.get(test.name) if t.name in results else None
            row.append("n/a" if run is None else f"{run.server_cpu_percent:.0f}%")
        errors = []
        for t in targets:
            run = results[t.name].runs.get(test.name) if t.name in results else None
            if run and run.errors:
                errors.append(f"{t.short} {run.errors}")
        row.append(", ".join(errors) or "-")
        rows.append(row)
    return rows


def cpu_table(targets: list[Target], args: argparse.Namespace,
              results: dict[str, TargetResult]) -> list[list[str]]:
    pg_targets = [t for t in targets if t.backend == "postgresql"]
    header = ["test"] + [f"srv {t.short}" for t in targets] + [f"pgbe {t.short}" for t in pg_targets]
    header += [f"wrk {t.short}" for t in targets] + [f"other {t.short}" for t in targets]
    rows = [header]
    for test in args.tests:
        runs = [results[t.name].runs.get(test.name) if t.name in results else None for t in targets]
        row = [test.name]
        row += ["n/a" if r is None else f"{r.server_cpu_percent:.0f}%" for r in runs]
        row += ["n/a" if r is None or r.pg_backend_cpu_percent is None else f"{r.pg_backend_cpu_percent:.0f}%"
                for t, r in zip(targets, runs) if t.backend == "postgresql"]
        row += ["n/a" if r is None else f"{r.wrk_cpu_percent:.0f}%" for r in runs]
        row += ["n/a" if r is None else f"{r.other_cpu_percent:.0f}%" for r in runs]
        rows.append(row)
    return rows


def targets_report(args: argparse.Namespace, results: dict[str, TargetResult]) -> tuple[list[str], bool]:
    lines = ["Targets:"]
    all_met = True
    if "sqlite" in args.backends and "prefork" in args.servers:
        for name in ("json", "db"):
            test = next((t for t in args.tests if t.name == name), None)
            if test is None:
                continue
            value = rps(results, Target("prefork", "sqlite"), test)
            met = value is not None and value >= TARGET_RPS
            all_met &= met
            shown = "not measured" if value is None else f"{value:,.0f} req/s"
            lines.append(f"  /{name} >= {TARGET_RPS:,} responses/s with prefork-sqlite: {shown}: "
                         f"{'met' if met else 'MISSED'}")
    if len(args.servers) == 2:
        for backend in args.backends:
            for test in args.tests:
                value = ratio(results, backend, test)
                met = value is not None and value >= TARGET_RATIO
                all_met &= met
                shown = "n/a" if value is None else f"{value:.2f}x"
                lines.append(f"  {test.name:<9} prefork >= {TARGET_RATIO}x uvicorn ({backend}): {shown}: "
                             f"{'met' if met else 'MISSED'}")
    return lines, all_met


def report(args: argparse.Namespace, targets: list[Target], results: dict[str, TargetResult],
           pg_settings: dict[str, str] | None, pg_note: str) -> tuple[str, bool]:
    pinning = ("off" if args.no_pin
               else f"servers on CPU {args.server_cpus}, wrk on CPU {args.wrk_cpus}")
    lines = [
        f"TechEmpower test types; {args.workers} workers per server, {args.duration}s per test "
        f"(+{args.warmup}s warm-up), wrk -t{args.wrk_threads} --timeout {WRK_TIMEOUT}s, "
        f"{CONNECTIONS} connections (plaintext {PIPELINE}-deep pipelined), queries={QUERIES}; "
        f"pinning {pinning}",
        f"SQLite: WAL, synchronous = {args.synchronous} (prefork [database] synchronous and the "
        f"uvicorn app's PRAGMA); one file for both servers.",
    ]
    if pg_settings:
        lines.append(f"PostgreSQL {pg_settings.get('server_version')} at {bh_redact(args.pg_url)}: "
                     f"fsync={pg_settings.get('fsync')}, synchronous_commit="
                     f"{pg_settings.get('synchronous_commit')} (the cluster's own settings){pg_note}; "
                     "its backends are not pinned.")
    lines += ["", render_table(main_table(targets, args, results), left=(0, -1)), "",
              "pf = prefork, uv = uvicorn (uvloop, httptools, raw ASGI app), pg = PostgreSQL. "
              "Cells: req/s (wrk Requests/sec). pf/uv: prefork's req/s over uvicorn's.",
              "CPU: the server's process tree (master/supervisor + workers), utime+stime over wall "
              "time; 100% = one core."]
    marks = []
    runs = [r for res in results.values() for r in res.runs.values()]
    if any(r.client_bound for r in runs):
        marks.append(f"*: wrk used >= {CLIENT_BOUND_PERCENT}% of its CPU (client-bound)")
    if any(r.contended for r in runs):
        marks.append("!: another wrk ran during this measurement (not comparable)")
    if any(r.other_cpu_percent >= OTHER_LOAD_MARK for r in runs):
        marks.append(f"~: unrelated processes used >= {OTHER_LOAD_MARK:.0f}% of a core during this "
                     "measurement (see 'other' below): the machine was shared")
    if any(res.verify.get(t.name, "ok") != "ok" for res in results.values() for t in args.tests):
        marks.append("FAILED: wrong answer when verified, not measured (reason below)")
    lines += marks
    lines += ["", "CPU detail (% of one core over the measured run): srv = server process tree, "
              "pgbe = PostgreSQL backends of the benchmark database, wrk = the client, "
              "other = all other processes (busy time in /proc/stat, interrupts included, "
              "minus the three):",
              render_table(cpu_table(targets, args, results), left=(0,))]
    notes, load_notes = [], []
    for t in targets:
        res = results.get(t.name)
        if res is None:
            continue
        for test in args.tests:
            run = res.runs.get(test.name)
            if run is None:
                continue
            if run.errors:
                notes.append(f"  {t.name}/{test.name}: socket errors connect {run.connect_errors}, "
                             f"read {run.read_errors}, write {run.write_errors}, timeout "
                             f"{run.timeout_errors}; non-2xx/3xx {run.non_2xx} "
                             f"(of {run.requests:,} responses)")
            if run.log_counts:
                notes.append(f"  {t.name}/{test.name}: server log during the run: "
                             + ", ".join(f"{k} {v}" for k, v in sorted(run.log_counts.items())))
                notes += [f"      {line}" for line in run.log_excerpt]
            if run.other_cpu_percent >= OTHER_LOAD_MARK:
                load_notes.append(f"  {t.name}/{test.name}: other processes used {run.other_cpu_percent:.0f}% "
                             f"of a core; busiest: {', '.join(run.other_top) or 'short-lived ones'}")
            if set(run.server_processes_before) != set(run.server_processes_after):
                notes.append(f"  {t.name}/{test.name}: the server's processes changed during the run: "
                             f"{run.server_processes_before} -> {run.server_processes_after}")
    lines.append("")
    if notes:
        lines += ["errors, server log lines and process changes:", *notes]
    else:
        lines.append("errors: none (wrk socket errors, non-2xx/3xx responses, server log "
                     "ERROR/WARNING lines, worker changes)")
    if load_notes:
        lines += ["other load on the machine (~):", *load_notes]
    for t in targets:
        res = results.get(t.name)
        if res is None:
            continue
        if res.failure:
            lines.append(f"{t.name} FAILED: {res.failure}")
        for test, reason in res.verify.items():
            if reason != "ok":
                lines.append(f"{t.name} FAILED {test} (verification, not measured): {reason}")
        for test, reason in res.measure_failures.items():
            lines.append(f"{t.name} FAILED {test} (measurement): {reason}")
    target_lines, met = targets_report(args, results)
    seen = [f"{t.short} {run.pg_backends}" for t in targets if t.name in results
            for run in list(results[t.name].runs.values())[-1:] if run.pg_backends is not None]
    if seen:
        lines.append("PostgreSQL connections (backends of the benchmark database at the end of the last "
                     "run): " + ", ".join(seen) + " (prefork: one per pool thread, uvicorn: one per worker)")
    lines += [""] + target_lines
    return "\n".join(lines), met


def bh_redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@")).geturl()


def write_json(path: str, args: argparse.Namespace, targets: list[Target],
               results: dict[str, TargetResult], pg_settings: dict[str, str] | None) -> None:
    data = {
        "workers": args.workers,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "pinned": not args.no_pin,
        "server_cpus": args.server_cpus,
        "wrk_cpus": args.wrk_cpus,
        "wrk_threads": args.wrk_threads,
        "connections": CONNECTIONS,
        "pipeline": PIPELINE,
        "queries": QUERIES,
        "sqlite_synchronous": args.synchronous,
        "postgresql": pg_settings,
        "tests": {t.name: asdict(t) for t in args.tests},
        "targets": {t.name: {"runs": {name: asdict(run) | {"errors": run.errors}
                                      for name, run in results[t.name].runs.items()},
                             "verify": results[t.name].verify,
                             "failure": results[t.name].failure,
                             "measure_failures": results[t.name].measure_failures,
                             "config": results[t.name].config}
                    for t in targets if t.name in results},
        "ratios": {backend: {test.name: ratio(results, backend, test) for test in args.tests}
                   for backend in args.backends},
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


# --- main -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not prepare_client(args, files=CONNECTIONS * 2 + 100):
        return 2
    targets = [Target(server, backend) for backend in args.backends for server in args.servers]
    results: dict[str, TargetResult] = {}
    pg_settings: dict[str, str] | None = None
    pg_note = ""
    pgdir: Path | None = None
    quiet = Quiet(args.wait_max)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="prefork-tfb-") as tmp:
        workdir = Path(tmp)
        sqlite_path = workdir / "world.db"
        try:
            if "sqlite" in args.backends:
                seed_sqlite(sqlite_path, args.synchronous)
            if "postgresql" in args.backends:
                try:
                    if not pg_reachable(args.pg_url):
                        if (urlsplit(args.pg_url).port or 5432) < 1024:
                            raise BenchError(f"nothing answers at {bh_redact(args.pg_url)}")
                        pgdir = start_pg_cluster(args.pg_url, workdir)
                        pg_note = ", a throwaway cluster started by this script"
                    pg_settings = prepare_pg(args.pg_url)
                except (BenchError, subprocess.TimeoutExpired, OSError) as exc:
                    for t in targets:
                        if t.backend == "postgresql":
                            results[t.name] = TargetResult(failure=f"database setup: {exc}")
                    print(f"PostgreSQL FAILED: {exc}", file=sys.stderr)
            for target in targets:
                if target.name in results:
                    continue
                results[target.name] = bench_target(target, args, workdir, sqlite_path, quiet)
        finally:
            if pgdir is not None:
                stop_pg_cluster(pgdir, args.pg_url)
    text, met = report(args, targets, results, pg_settings, pg_note)
    print(text)
    print(f"\n(total {time.monotonic() - started:.0f}s, of which {quiet.waited:.0f}s waiting for other wrk runs)")
    if args.json:
        write_json(args.json, args, targets, results, pg_settings)
    ok = all(not r.failure and not r.measure_failures and all(v == "ok" for v in r.verify.values())
             for r in results.values())
    return 0 if ok and met else 1


if __name__ == "__main__":
    sys.exit(main())
