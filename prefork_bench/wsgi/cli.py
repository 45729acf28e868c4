"""``bench/wsgi.py`` and ``prefork-bench wsgi``: the command line and the rounds
(each server's turn is ``bench/asgi.py``'s, over this bench's servers and checks)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import ContextManager

from ..asgi.answers import BODY, item_json
from ..asgi.cli import interleaved, machine_load
from ..asgi.measure import CHECK_TIMEOUT, ITEM_ID, bench_turn
from ..asgi.report import Results
from ..net import http_get
from ..procs import Quiet
from ..tools import BenchError, _venv_path, ensure_venv, has_modules
from ..wrk import Scenario, add_client_options, prepare_client, split_choices
from .report import SLOW, report, write_json
from .servers import LAUNCHERS, PACKAGES, SERVERS
from .slowloris import Held, slowloris

WSGI_VENV = _venv_path("wsgi")
SCENARIOS = (
    Scenario("a-hello", 64, "raw WSGI hello world", path="/"),
    Scenario("b-flask", 64, "Flask JSON with a path parameter", path=f"/flask/items/{ITEM_ID}"),
    Scenario("c-django", 64, "Django JSON view with a path parameter",
             path=f"/django/items/{ITEM_ID}"),
    Scenario(SLOW, 64, "hello world with slowloris connections held open", path="/"),
)


def check(port: int, path: str) -> str | None:
    """What is wrong with the answer to GET path, or None."""
    status, headers, body = http_get(port, path, CHECK_TIMEOUT)
    if status != 200:
        return f"GET {path}: status {status}, body {body[:200]!r}"
    if path.startswith(("/flask/", "/django/")):
        if not headers.get("content-type", "").startswith("application/json"):
            return f"GET {path}: Content-Type {headers.get('content-type')!r}"
        if json.loads(body) != item_json(ITEM_ID):
            return f"GET {path}: {body[:200]!r}"
    elif body != BODY:
        return f"GET {path}: body {body[:200]!r}"
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="prefork-bench wsgi",
        description="prefork against gunicorn (gthread, sync) and granian on the same WSGI app: "
                    "req/s, p99, server CPU per request, and throughput under slowloris clients.")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per server (default: 1)")
    parser.add_argument("--threads", type=int, default=4,
                        help="threads per worker: prefork's [server] threads, gunicorn's --threads, "
                             "granian's --blocking-threads (default: 4)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per scenario (default: 5)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of wrk before each measured run, 0 for none (default: 1)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default: 64)")
    parser.add_argument("--slow", type=int, default=1000,
                        help=f"slowloris connections held open in {SLOW} (default: 1000)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated (default: {','.join(SERVERS)})")
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS),
                        help="comma-separated scenario names (default: all)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers to FILE")
    parser.add_argument("--venv", type=Path, default=WSGI_VENV,
                        help=f"venv for the servers when this Python lacks one (default: {WSGI_VENV})")
    parser.add_argument("--wait-max", type=float, default=300.0,
                        help="seconds, over the whole run, to wait for other wrk processes to "
                             "finish before measuring anyway (default: 300)")
    add_client_options(parser)
    args = parser.parse_args(argv)
    args.servers = split_choices(parser, "--servers", args.servers, SERVERS)
    chosen = split_choices(parser, "--scenarios", args.scenarios, [s.name for s in SCENARIOS])
    if (min(args.workers, args.threads, args.rounds, args.duration, args.connections, args.slow,
            args.wrk_threads) < 1 or args.warmup < 0):
        parser.error("--workers, --threads, --rounds, --duration, --connections, --slow and "
                     "--wrk-threads must be >= 1, --warmup >= 0")
    args.idle = 0       # bench/asgi.py's idle-memory reading: not in this bench
    args.scenarios = [replace(s, connections=args.connections) for s in SCENARIOS if s.name in chosen]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not prepare_client(args, files=args.connections + args.slow + 200):
        return 2
    try:
        python = (Path(sys.executable) if has_modules(sys.executable, PACKAGES)
                  else ensure_venv(args.venv, PACKAGES))
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    quiet = Quiet(args.wait_max)
    held: dict[str, list[Held]] = {server: [] for server in args.servers}
    # the slow clients outlive the warm-up and the run, not much more
    limit = args.warmup + args.duration + args.wait_max + 60

    def during(server: str) -> Callable[[Scenario, int], ContextManager[object]]:
        @contextlib.contextmanager
        def hold(scenario: Scenario, port: int) -> Iterator[object]:
            if scenario.name != SLOW:
                yield None
                return
            with slowloris(port, args.slow, limit) as slow:
                print(f"[{server}] slowloris: {slow.opened} open, {slow.failed} failed",
                      file=sys.stderr)
                yield slow
            held[server].append(slow)
            print(f"[{server}] slowloris: {slow.open_at_end} still open at the end", file=sys.stderr)
        return hold

    with tempfile.TemporaryDirectory(prefix="prefork-wsgi-") as tmp:
        turns = interleaved(args.servers, args.rounds, tmp,
                            lambda server, workdir: bench_turn(server, python, args, workdir, quiet,
                                                               LAUNCHERS, check, during(server)))
    results = Results(args, turns)
    load = machine_load(load_before, turns)
    text, ok = report(results, held, load)
    print(text)
    if args.json:
        write_json(args.json, results, held, load)
    return 0 if ok and not results.failures() else 1


if __name__ == "__main__":
    sys.exit(main())
