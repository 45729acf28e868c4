"""``bench/asgi.py`` and ``prefork-bench asgi``: the command line and the rounds."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..procs import Quiet
from ..tools import ASGI_VENV, BenchError, ensure_asgi_python
from ..wrk import add_client_options, prepare_client, split_choices
from .measure import IDLE_SCENARIO, SCENARIOS, Turn, bench_turn
from .report import Results, report, write_json
from .servers import SERVERS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="prefork-bench asgi",
        description="prefork against uvicorn, granian and hypercorn on the same ASGI app: "
                    "req/s, p99, server CPU per request, memory per idle keep-alive connection.")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per server (default: 1)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds: each runs every server once, in rotating order "
                             "(default: 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per scenario (default: 5)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of wrk before each measured run, 0 for none (default: 1)")
    parser.add_argument("--connections", type=int, default=64,
                        help="wrk connections in scenarios a, b and c (default: 64)")
    parser.add_argument("--keepalive-connections", type=int, default=1000,
                        help="wrk connections in scenario d, and the idle connections held for "
                             "the memory reading, 0 to skip that reading (default: 1000)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated (default: {','.join(SERVERS)})")
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS),
                        help="comma-separated scenario names (default: all)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers to FILE")
    parser.add_argument("--venv", type=Path, default=ASGI_VENV,
                        help="venv for the servers when this Python lacks one of them "
                             f"(default: {ASGI_VENV})")
    parser.add_argument("--wait-max", type=float, default=300.0,
                        help="seconds, over the whole run, to wait for other wrk processes to "
                             "finish before measuring anyway (default: 300)")
    add_client_options(parser)
    args = parser.parse_args(argv)
    args.servers = split_choices(parser, "--servers", args.servers, SERVERS)
    chosen = split_choices(parser, "--scenarios", args.scenarios, [s.name for s in SCENARIOS])
    if (args.workers < 1 or args.rounds < 1 or args.duration < 1 or args.warmup < 0
            or args.connections < 1 or args.keepalive_connections < 0 or args.wrk_threads < 1):
        parser.error("--workers, --rounds, --duration, --connections and --wrk-threads must be >= 1, "
                     "--warmup and --keepalive-connections >= 0")
    args.idle = args.keepalive_connections
    args.scenarios = [replace(s, connections=args.keepalive_connections or s.connections)
                      if s.name == IDLE_SCENARIO else replace(s, connections=args.connections)
                      for s in SCENARIOS if s.name in chosen]
    return args


def interleaved(servers: list[str], rounds: int, tmp: str,
                turn: Callable[[str, Path], Turn]) -> dict[str, list[Turn]]:
    """Run ``turn(server, workdir)`` for every server in each of ``rounds``
    rounds, the order rotating by one each round; each server's turns."""
    turns: dict[str, list[Turn]] = {server: [] for server in servers}
    for number in range(rounds):
        shift = number % len(servers)
        order = servers[shift:] + servers[:shift]
        print(f"round {number + 1} of {rounds}: {', '.join(order)}", file=sys.stderr)
        for server in order:
            turns[server].append(turn(server, Path(tmp) / f"round{number}" / server))
    return turns


def machine_load(before: tuple[float, ...], turns: dict[str, list[Turn]]) -> str:
    """The machine's load over the run, and what other processes used during the runs."""
    others = [run.other_cpu_percent for ts in turns.values() for t in ts for run in t.runs.values()
              if run.other_cpu_percent is not None]
    after = os.getloadavg()
    text = (f"{os.cpu_count()} CPUs; load average {before[0]:.2f} at the start, {after[0]:.2f} at the end")
    if others:
        text += (f"; other processes busy {statistics.median(others):.0f}% of a core in the median "
                 f"run (max {max(others):.0f}%)")
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not prepare_client(args, files=max(s.connections for s in args.scenarios) + args.idle + 200,
                          also=(("ss", "iproute2"),)):
        return 2
    try:
        python = ensure_asgi_python(args.venv)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    quiet = Quiet(args.wait_max)
    with tempfile.TemporaryDirectory(prefix="prefork-asgi-") as tmp:
        turns = interleaved(args.servers, args.rounds, tmp,
                            lambda server, workdir: bench_turn(server, python, args, workdir, quiet))
    results = Results(args, turns)
    load = machine_load(load_before, turns)
    text, ok = report(results, load)
    print(text)
    if args.json:
        write_json(args.json, results, load)
    return 0 if ok and not results.failures() else 1


if __name__ == "__main__":
    sys.exit(main())
