"""The TechEmpower database test types: /db, /queries, /updates, /fortunes.

Backends, chosen by ``[database] url``:

* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` -- the
  embedded default. WAL mode, a busy timeout so many worker processes can
  write, ``synchronous`` as configured (``full``: an acknowledged update is
  fsynced; ``normal``: it survives any process crash, not a power cut).
* ``postgresql://user:password@host:port/dbname`` -- through psycopg 3 (the
  ``postgresql`` extra), prepared statements.

Each thread that touches the database (the reactor thread and every pool
thread) has its own connection, opened on first use.

Where queries run (measured by ``bench/handoff.py``: a SQLite primary-key
read costs about as much as one pool hand-off, and far less than its
latency): with SQLite, reads (/db, /queries, /fortunes) run inline on the
reactor thread and /updates -- a write that may wait for another process's
lock and for fsync -- runs in the pool. With PostgreSQL every query is a
network round trip, so all four run in the pool.

Any database error answers 503 (with Retry-After) and is logged; the worker
lives on.
"""

from __future__ import annotations

import html
import logging
import os
import random
import sqlite3
import threading
from operator import itemgetter
from urllib.parse import urlsplit

import orjson

from ..config import sqlite_path  # noqa: F401  (its home is config: the privileges check reads it)
from ..messages import Offload, Request, Response

log = logging.getLogger("prefork.worker")

WORLD_ROWS = 10000

# The TechEmpower Fortune table.
FORTUNES = [
    (1, "fortune: No such file or directory"),
    (2, "A computer scientist is someone who fixes things that aren't broken."),
    (3, "After enough decimal places, nobody gives a damn."),
    (4, "A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1"),
    (5, "A computer program does what you tell it to do, not what you want it to do."),
    (6, "Emacs is a nice operating system, but I prefer UNIX. \u2014 Tom Christaensen"),
    (7, "Any program that runs right is obsolete."),
    (8, "A list is only as strong as its weakest link. \u2014 Donald Knuth"),
    (9, "Feature: A bug with seniority."),
    (10, "Computers make very fast, very accurate mistakes."),
    (11, '<script>alert("This should not be displayed in a browser alert box.");</script>'),
    (12, "\u30d5\u30ec\u30fc\u30e0\u30ef\u30fc\u30af\u306e\u30d9\u30f3\u30c1\u30de\u30fc\u30af"),
]
ADDITIONAL_FORTUNE = "Additional fortune added at request time."
SELECT_WORLD = "SELECT id, randomNumber FROM World WHERE id = ?"
_random = random.random


def random_id() -> int:
    """A World id, 1..10000 (random.randint costs three times as much)."""
    return int(_random() * WORLD_ROWS) + 1


def _rollback(conn) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # the error that got us here is the one to report


class DatabaseError(Exception):
    """A database problem, phrased without the password."""


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
    return parts._replace(netloc=netloc).geturl()


class Backend:
    """One connection per thread, opened on first use."""

    kind = ""

    def __init__(self, url: str, synchronous: str = "full", timeout: float = 5.0):
        self.url = url
        self.synchronous = synchronous
        self.timeout = timeout
        self._local = threading.local()

    def conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.connect()
        return conn

    def connect(self):
        raise NotImplementedError

    def reset(self) -> None:
        """Drop this thread's connection (after an error), so the next use reconnects."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass


class SQLite(Backend):
    kind = "sqlite"
    errors = (sqlite3.Error,)

    def __init__(self, url: str, synchronous: str = "full", timeout: float = 5.0):
        super().__init__(url, synchronous, timeout)
        self.path = sqlite_path(url)

    def connect(self):
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        return conn

    def setup(self) -> None:
        """Create and seed the tables once (the master calls this before forking)."""
        directory = os.path.dirname(self.path)
        if directory and not os.path.isdir(directory):
            raise DatabaseError(f"{redact(self.url)}: directory {directory} does not exist")
        try:
            conn = self.connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("CREATE TABLE IF NOT EXISTS World (id INTEGER PRIMARY KEY, randomNumber INTEGER NOT NULL)")
                conn.execute("CREATE TABLE IF NOT EXISTS Fortune (id INTEGER PRIMARY KEY, message TEXT NOT NULL)")
                if conn.execute("SELECT COUNT(*) FROM World").fetchone()[0] == 0:
                    conn.executemany("INSERT INTO World (id, randomNumber) VALUES (?, ?)",
                                     [(i, random.randint(1, WORLD_ROWS)) for i in range(1, WORLD_ROWS + 1)])
                if conn.execute("SELECT COUNT(*) FROM Fortune").fetchone()[0] == 0:
                    conn.executemany("INSERT INTO Fortune (id, message) VALUES (?, ?)", FORTUNES)
                conn.execute("COMMIT")
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise DatabaseError(f"{redact(self.url)}: {exc}") from None

    def world(self, wid: int) -> tuple[int, int]:
        return self.conn().execute(SELECT_WORLD, (wid,)).fetchone()

    def worlds(self, ids: list[int]) -> list[tuple[int, int]]:
        # One read transaction around the N queries: a consistent snapshot,
        # and in WAL mode a third of the cost of N autocommit reads (each of
        # which takes and drops a read lock in the shared-memory index).
        conn = self.conn()
        cur = conn.cursor()
        if len(ids) == 1:
            return [cur.execute(SELECT_WORLD, (ids[0],)).fetchone()]
        conn.execute("BEGIN")
        try:
            rows = [cur.execute(SELECT_WORLD, (i,)).fetchone() for i in ids]
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return rows

    def updates(self, ids: list[int], numbers: list[int]) -> list[tuple[int, int]]:
        """Read each row of ``ids``, give it the new number, write it back: one
        write transaction (taken at once: no upgrade deadlock), rows in id order."""
        conn = self.conn()
        cur = conn.cursor()
        conn.execute("BEGIN IMMEDIATE")
        try:
            worlds = [cur.execute(SELECT_WORLD, (i,)).fetchone() for i in ids]
            new = sorted(zip([w for w, _ in worlds], numbers))
            cur.executemany("UPDATE World SET randomNumber = ? WHERE id = ?", [(n, i) for i, n in new])
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return new

    def fortunes(self) -> list[tuple[int, str]]:
        return self.conn().execute("SELECT id, message FROM Fortune").fetchall()


class PostgreSQL(Backend):
    kind = "postgresql"

    def __init__(self, url: str, synchronous: str = "full", timeout: float = 5.0):
        super().__init__(url, synchronous, timeout)
        try:
            import psycopg
        except ImportError:
            raise DatabaseError("postgresql:// needs psycopg 3: pip install 'prefork[postgresql]'") from None
        self.psycopg = psycopg
        self.errors = (psycopg.Error,)

    def connect(self):
        return self.psycopg.connect(self.url, autocommit=True, prepare_threshold=0,
                                    connect_timeout=max(1, int(self.timeout)))

    def setup(self) -> None:
        try:
            with self.psycopg.connect(self.url, autocommit=False, connect_timeout=max(1, int(self.timeout))) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS World (id INTEGER PRIMARY KEY, randomNumber INTEGER NOT NULL)")
                conn.execute("CREATE TABLE IF NOT EXISTS Fortune (id INTEGER PRIMARY KEY, message TEXT NOT NULL)")
                conn.execute("LOCK TABLE World, Fortune IN EXCLUSIVE MODE")
                if conn.execute("SELECT COUNT(*) FROM World").fetchone()[0] == 0:
                    with conn.cursor() as cur:
                        cur.executemany("INSERT INTO World (id, randomNumber) VALUES (%s, %s)",
                                        [(i, random.randint(1, WORLD_ROWS)) for i in range(1, WORLD_ROWS + 1)])
                if conn.execute("SELECT COUNT(*) FROM Fortune").fetchone()[0] == 0:
                    with conn.cursor() as cur:
                        cur.executemany("INSERT INTO Fortune (id, message) VALUES (%s, %s)", FORTUNES)
                conn.commit()
        except self.psycopg.Error as exc:
            raise DatabaseError(f"{redact(self.url)}: {str(exc).strip()}") from None

    def world(self, wid: int) -> tuple[int, int]:
        return self.conn().execute("SELECT id, randomNumber FROM World WHERE id = %s", (wid,)).fetchone()

    def worlds(self, ids: list[int]) -> list[tuple[int, int]]:
        conn = self.conn()
        with conn.cursor() as cur:
            return [cur.execute("SELECT id, randomNumber FROM World WHERE id = %s", (i,)).fetchone() for i in ids]

    def updates(self, ids: list[int], numbers: list[int]) -> list[tuple[int, int]]:
        conn = self.conn()
        with conn.transaction():
            with conn.cursor() as cur:
                worlds = [cur.execute("SELECT id, randomNumber FROM World WHERE id = %s", (i,)).fetchone()
                          for i in ids]
                new = sorted(zip([w for w, _ in worlds], numbers))  # by id: no deadlocks
                cur.executemany("UPDATE World SET randomNumber = %s WHERE id = %s", [(n, i) for i, n in new])
        return new

    def fortunes(self) -> list[tuple[int, str]]:
        return self.conn().execute("SELECT id, message FROM Fortune").fetchall()


def open_backend(url: str, synchronous: str = "full", timeout: float = 5.0) -> Backend:
    if url.startswith("sqlite:///"):
        return SQLite(url, synchronous, timeout)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgreSQL(url, synchronous, timeout)
    raise DatabaseError(f"unsupported database url {redact(url)!r} (sqlite:///path or postgresql://...)")


# --- the handlers ------------------------------------------------------------------------


def queries_param(query: bytes) -> int:
    """TechEmpower's rule: missing or not a number -> 1; clamped to 1..500."""
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == b"queries":
            try:
                n = int(value)
            except ValueError:
                return 1
            return 1 if n < 1 else 500 if n > 500 else n
    return 1


def _json(obj) -> Response:
    return Response(200, orjson.dumps(obj), b"application/json")  # compact, as TechEmpower's output


def _unavailable() -> Response:
    return Response(503, b"503 Service Unavailable\n", b"text/plain", [(b"Retry-After", b"1")])


def render_fortunes(rows: list[tuple[int, str]]) -> bytes:
    rows = list(rows)
    rows.append((0, ADDITIONAL_FORTUNE))
    rows.sort(key=itemgetter(1))
    cells = "".join([f"<tr><td>{i}</td><td>{html.escape(m)}</td></tr>" for i, m in rows])
    return ("<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>"
            f"<tr><th>id</th><th>message</th></tr>{cells}</table></body></html>").encode()


class Handlers:
    """The four test types over one backend, each inline or offloaded."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.remote = backend.kind != "sqlite"

    def _guard(self, fn, request: Request) -> Response:
        try:
            return fn(request)
        except self.backend.errors as exc:
            log.error("database error on %s: %s", request.path.decode("latin-1"), exc)
            self.backend.reset()
            return _unavailable()

    def _run(self, fn, request: Request, in_pool: bool):
        if in_pool:
            return Offload(lambda req: self._guard(fn, req))
        return self._guard(fn, request)

    def _db(self, request):
        wid, number = self.backend.world(random_id())
        return _json({"id": wid, "randomNumber": number})

    def _queries(self, request):
        ids = [random_id() for _ in range(queries_param(request.query))]
        return _json([{"id": w, "randomNumber": n} for w, n in self.backend.worlds(ids)])

    def _updates(self, request):
        n = queries_param(request.query)
        ids = random.sample(range(1, WORLD_ROWS + 1), n)  # distinct rows
        new = self.backend.updates(ids, [random_id() for _ in range(n)])
        return _json([{"id": w, "randomNumber": number} for w, number in new])

    def _fortunes(self, request):
        return Response(200, render_fortunes(self.backend.fortunes()), b"text/html; charset=utf-8")

    def db(self, request: Request):
        return self._run(self._db, request, self.remote)

    def queries(self, request: Request):
        return self._run(self._queries, request, self.remote)

    def updates(self, request: Request):
        return self._run(self._updates, request, True)

    def fortunes(self, request: Request):
        return self._run(self._fortunes, request, self.remote)


def handlers_for(app) -> Handlers:
    """One Handlers (and so one set of connections) per worker, shared by the four routes."""
    handlers = app.shared.get("db")
    if handlers is None:
        cfg = app.config.database
        handlers = app.shared["db"] = Handlers(open_backend(cfg.url, cfg.synchronous, cfg.timeout))
    return handlers


def make(name: str):
    def factory(app, prefix: str):
        return getattr(handlers_for(app), name)
    return factory
