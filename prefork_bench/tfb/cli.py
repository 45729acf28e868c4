"""``bench/tfb.py`` and ``prefork-bench tfb``: the command line and the run."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from ..procs import Quiet
from ..tools import DEFAULT_VENV, BenchError
from ..wrk import add_client_options, prepare_client, split_choices
from .db import pg_reachable, prepare_pg, seed_sqlite, start_pg_cluster, stop_pg_cluster
from .measure import bench_target
from .model import BACKENDS, CONNECTIONS, DEFAULT_PG_URL, SERVERS, TESTS, Target, TargetResult
from .report import bh_redact, report, write_json


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
