"""Part 2: established connections per worker, per accept strategy."""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..report import render_table
from ..tools import BenchError
from ..wrk import Scenario, WrkResult
from .runs import Prefork, WrkRun, keep_log, wrk_argv


@dataclass
class Spread:
    accept: str
    per_worker: dict[int, int] = field(default_factory=dict)   # worker pid -> connections
    other: int = 0               # established sockets on the port not owned by a worker
    wrk: WrkResult | None = None
    failure: str | None = None

    @property
    def counts(self) -> list[int]:
        return [self.per_worker[pid] for pid in sorted(self.per_worker)]

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def min_max(self) -> float | None:
        counts = self.counts
        return min(counts) / max(counts) if counts and max(counts) else None

    @property
    def cv(self) -> float | None:
        counts = self.counts
        if not counts or not statistics.fmean(counts):
            return None
        return statistics.pstdev(counts) / statistics.fmean(counts)


def established_by_pid(port: int) -> dict[int, int]:
    """Established server-side TCP connections on the port, per owning pid
    (-1 for sockets ss shows no owner for)."""
    done = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise BenchError(f"ss failed: {done.stderr.strip()}")
    counts: dict[int, int] = {}
    for line in done.stdout.splitlines():
        if not line.strip():
            continue
        pids = set(map(int, re.findall(r"pid=(\d+)", line))) or {-1}
        for pid in pids:
            counts[pid] = counts.get(pid, 0) + 1
    return counts


def measure_spread(accept: str, args: argparse.Namespace, workdir: Path) -> Spread:
    spread = Spread(accept)
    spread_dir = workdir / f"spread-{accept}"
    spread_dir.mkdir()
    server = Prefork(spread_dir, args.workers, accept, args)
    scenario = Scenario("spread", args.spread_connections,
                        f"keep-alive, {args.spread_connections} connections")
    wrk: WrkRun | None = None
    try:
        server.start()
        workers = server.workers(include_zombies=False)
        print(f"[prefork] spread {accept}: {scenario.description}, {args.spread_duration}s",
              file=sys.stderr)
        wrk = WrkRun(wrk_argv(scenario, server.port, args.spread_duration, args, spread_dir),
                     args.spread_duration, spread_dir)
        # Sample once every connection is up, or at the latest midway.
        t0 = time.monotonic()
        while True:
            time.sleep(0.2)
            counts = established_by_pid(server.port)
            if (sum(counts.values()) >= args.spread_connections
                    or time.monotonic() - t0 >= args.spread_duration / 2 or not wrk.running()):
                break
        time.sleep(max(0.0, min(0.5, args.spread_duration / 2 - (time.monotonic() - t0))))
        counts = established_by_pid(server.port)
        workers = set(workers) | set(server.workers(include_zombies=False))
        spread.per_worker = {pid: counts.get(pid, 0) for pid in workers}
        spread.other = sum(n for pid, n in counts.items() if pid not in workers)
        spread.wrk = wrk.result()
    except (BenchError, OSError) as error:
        spread.failure = str(error)
        print(f"[prefork] spread {accept} FAILED: {server.failure_text(error)}", file=sys.stderr)
    finally:
        if wrk is not None:
            wrk.stop()
        server.stop()
        keep_log(server, args, spread_dir.name)
    return spread


def spread_table(spreads: list[Spread]) -> str:
    header = ["accept", "connections per worker", "total", "min/max", "CV", "req/s", "errors"]
    table = [header]
    for s in spreads:
        if s.failure is not None or not s.per_worker:
            table.append([s.accept, "n/a", "n/a", "n/a", "n/a", "n/a", s.failure or "n/a"])
            continue
        per = " / ".join(map(str, s.counts))
        if s.other:
            per += f" (+{s.other} not a worker's)"
        ratio = "n/a" if s.min_max is None else f"{s.min_max:.2f}"
        cv = "n/a" if s.cv is None else f"{s.cv:.2f}"
        rps = "n/a" if s.wrk is None else f"{s.wrk.requests_per_sec:,.0f}"
        errors = "n/a" if s.wrk is None else str(s.wrk.all_errors)
        table.append([s.accept, per, str(s.total), ratio, cv, rps, errors])
    return render_table(table, left=(0, 1))
