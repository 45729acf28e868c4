"""The benchmark databases: seeding with the server's own code, reading back, a throwaway PostgreSQL cluster."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from ..net import HOST
from ..tools import REPO_ROOT, BenchError, repo_env


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
    run as ``python bench/tfb.py``, this process cannot import the server's HTTP
    modules, because bench/ comes first on its sys.path and bench/http.py hides
    the standard library's http."""
    done = subprocess.run([sys.executable, "-c", SEED, url, synchronous], cwd=REPO_ROOT,
                          env=repo_env(), capture_output=True, text=True,
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
