"""The TechEmpower database test types over the wire, on SQLite and PostgreSQL.

PostgreSQL runs when PREFORK_TEST_POSTGRES_URL is set (``.ci/run`` starts a
cluster and sets it, with PREFORK_REQUIRE_POSTGRES=1 so it can never be
skipped there).

This file: the tests with server processes, subprocesses and sockets;
tests/unit/test_db.py has the in-process ones."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid

import pytest

from conftest import ROOT, free_port, make_config, pid_alive, wait_until
from testkit import EXPECTED_FORTUNES


PG_URL = os.environ.get("PREFORK_TEST_POSTGRES_URL", "")


def _pg_schema_url(schema):
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """(url, reader): the server's database URL and a function reading World rows directly."""
    if request.param == "sqlite":
        path = tmp_path / "world.db"

        def read(ids):
            with sqlite3.connect(path) as conn:
                return dict(conn.execute(f"SELECT id, randomNumber FROM World WHERE id IN "
                                         f"({','.join('?' * len(ids))})", ids).fetchall())
        yield f"sqlite:///{path}", read
        return
    if not PG_URL:
        if os.environ.get("PREFORK_REQUIRE_POSTGRES"):
            pytest.fail("PREFORK_TEST_POSTGRES_URL is not set but PostgreSQL is required here")
        pytest.skip("PREFORK_TEST_POSTGRES_URL not set")
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]  # a schema per test: tests run in parallel
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = _pg_schema_url(schema)

    def read(ids):
        with psycopg.connect(url) as conn:
            return dict(conn.execute("SELECT id, randomNumber FROM World WHERE id = ANY(%s)", (ids,)).fetchall())
    yield url, read
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


ROUTES = """
[[route]]
path = "/db"
handler = "db"
[[route]]
path = "/queries"
handler = "queries"
[[route]]
path = "/updates"
handler = "updates"
[[route]]
path = "/fortunes"
handler = "fortunes"
"""


def start_db_server(start_server, url, workers=2, extra_db=""):
    return start_server(server=f"workers = {workers}", names=("http",),
                        extra=ROUTES + f'\n[database]\nurl = "{url}"\n{extra_db}\n')


def get(srv, path):
    from conftest import http_get
    return http_get(srv.port, path)


def check_headers(headers, ctype):
    assert headers["server"] == "prefork"
    assert headers["date"].endswith("GMT")
    assert headers["content-type"] == ctype
    assert int(headers["content-length"]) > 0


def test_db_and_queries(start_server, database):
    url, _ = database
    srv = start_db_server(start_server, url)
    status, headers, body = get(srv, "/db")
    assert status == 200
    check_headers(headers, "application/json")
    row = json.loads(body)
    assert set(row) == {"id", "randomNumber"} and 1 <= row["id"] <= 10000 and 1 <= row["randomNumber"] <= 10000
    for query, n in (("", 1), ("?queries=", 1), ("?queries=abc", 1), ("?queries=0", 1), ("?queries=-3", 1),
                     ("?queries=7", 7), ("?queries=500", 500), ("?queries=501", 500), ("?queries=100000", 500)):
        status, headers, body = get(srv, "/queries" + query)
        assert status == 200
        check_headers(headers, "application/json")
        rows = json.loads(body)
        assert isinstance(rows, list) and len(rows) == n, query
        assert all(set(r) == {"id", "randomNumber"} for r in rows)


def test_updates_are_written_and_visible(start_server, database):
    url, read = database
    srv = start_db_server(start_server, url)
    status, headers, body = get(srv, "/updates?queries=20")
    assert status == 200
    check_headers(headers, "application/json")
    rows = json.loads(body)
    assert len(rows) == 20 and len({r["id"] for r in rows}) == 20
    stored = read([r["id"] for r in rows])  # read by another process, after the 200
    assert stored == {r["id"]: r["randomNumber"] for r in rows}
    assert len(json.loads(get(srv, "/updates?queries=0")[2])) == 1
    assert len(json.loads(get(srv, "/updates?queries=900")[2])) == 500


def test_fortunes_byte_for_byte(start_server, database):
    url, _ = database
    srv = start_db_server(start_server, url)
    status, headers, body = get(srv, "/fortunes")
    assert status == 200
    check_headers(headers, "text/html; charset=utf-8")
    assert body == EXPECTED_FORTUNES
    assert int(headers["content-length"]) == len(EXPECTED_FORTUNES)


def test_acknowledged_updates_survive_kill_9(start_server, database):
    url, read = database
    srv = start_db_server(start_server, url)
    acknowledged = {}
    for _ in range(10):
        for r in json.loads(get(srv, "/updates?queries=5")[2]):
            acknowledged[r["id"]] = r["randomNumber"]
    everyone = [srv.pid] + srv.workers()
    for pid in everyone:
        os.kill(pid, signal.SIGKILL)
    srv.proc.wait(10)
    wait_until(lambda: not any(pid_alive(p) for p in everyone), what="every process gone")
    assert read(list(acknowledged)) == acknowledged


def test_database_down_at_start_is_a_clear_error(tmp_path):
    port = free_port()
    for url, expect in (("postgresql://prefork:hunter2@127.0.0.1:1/nowhere", "postgresql://prefork:***@127.0.0.1:1"),
                        (f"sqlite:///{tmp_path}/missing-dir/w.db", "does not exist")):
        path = tmp_path / "c.toml"
        path.write_text(make_config({"http": port}) + f'\n[database]\nurl = "{url}"\n')
        res = subprocess.run([sys.executable, "-m", "prefork.cli", "-c", str(path)], cwd=ROOT, capture_output=True,
                             text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
        assert res.returncode == 1
        assert expect in res.stderr
        assert "hunter2" not in res.stderr


def test_locked_database_gives_503_and_worker_lives(start_server, tmp_path):
    db_path = tmp_path / "w.db"
    srv = start_db_server(start_server, f"sqlite:///{db_path}", workers=1, extra_db="timeout = 0.3")
    [worker] = srv.wait_workers(1)
    assert get(srv, "/updates?queries=2")[0] == 200
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another writer holds the lock
    try:
        status, headers, body = get(srv, "/updates?queries=2")
        assert status == 503 and headers["retry-after"] == "1"
        assert b"Traceback" not in body and str(db_path).encode() not in body
        assert get(srv, "/db")[0] == 200  # WAL: reads go on
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert get(srv, "/updates?queries=2")[0] == 200
    assert srv.workers() == [worker]
    assert "database error" in srv.log()


def _cluster(action: str, directory, port: int) -> str:
    done = subprocess.run(["bash", str(ROOT / ".ci" / "postgres.sh"), action, str(directory)], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PREFORK_TEST_POSTGRES_PORT=str(port)))
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_postgres_gone_gives_503_and_comes_back(start_server, tmp_path_factory):
    """The database server goes away while prefork serves: requests get 503
    (never a dead worker), and once it is back they are answered again."""
    import glob
    import tempfile
    if not glob.glob("/usr/lib/postgresql/*/bin/pg_ctl") or os.getuid() != 0:
        if os.environ.get("PREFORK_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required here, but its server or root is missing")
        pytest.skip("needs the PostgreSQL server binaries and root (to run it as the postgres user)")
    directory = tempfile.mkdtemp(prefix="prefork-pg-gone-", dir="/tmp")
    os.chmod(directory, 0o755)
    port = free_port()
    url = _cluster("start", directory, port).strip().split("=", 1)[1]
    try:
        srv = start_db_server(start_server, url, workers=1, extra_db="timeout = 1")
        [worker] = srv.wait_workers(1)
        assert get(srv, "/db")[0] == 200
        _cluster("stop", directory, port)
        for _ in range(5):
            status, headers, _ = get(srv, "/db")
            assert status == 503 and headers["retry-after"] == "1"
        assert srv.wait_workers(1) == [worker]  # the same worker, alive
        assert "ERROR" in srv.log() and "not-a-secret" not in srv.log()  # logged, password redacted
        _cluster("start", directory, port)
        wait_until(lambda: get(srv, "/db")[0] == 200, timeout=20, what="/db to answer again")
    finally:
        _cluster("stop", directory, port)
        import shutil
        shutil.rmtree(directory, ignore_errors=True)
