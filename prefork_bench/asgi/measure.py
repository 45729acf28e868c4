"""One server's turn in a round: start it, check its answers, measure memory per
idle keep-alive connection, then wrk in every scenario with the server's CPU."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ContextManager

from ..backends.idle import open_keepalive
from ..backends.model import (MEM_POLL, MEM_STABLE_KB, MEM_STABLE_READINGS, MEM_STABLE_TIMEOUT,
                              WARM_CONNECTIONS, WARM_SEQUENTIAL)
from ..backends.server import busy_ticks_total, established, exchange
from ..httpreport import format_p99
from ..net import free_port, http_get, log_tail, running_server
from ..procs import CLK_TCK, Quiet
from ..tools import BenchError
from ..wrk import CLIENT_BOUND_PERCENT, Scenario, WrkResult, parse_wrk, run_wrk, wrk_command
from .answers import BODY, STREAM_PIECE, STREAM_PIECES, item_json
from .servers import LAUNCHERS, Launcher, cpu_ticks, memory, session

ITEM_ID = 42
SCENARIOS = (
    Scenario("a-hello", 64, "raw ASGI hello world", path="/"),
    Scenario("b-fastapi", 64, "FastAPI JSON with a path parameter", path=f"/items/{ITEM_ID}"),
    Scenario("c-stream", 64, "Starlette 1 MiB streaming response", path="/stream",
             show_transfer=True),
    Scenario("d-keepalive", 1000, "hello world, 1000 keep-alive connections", path="/"),
)
IDLE_SCENARIO = "d-keepalive"   # the scenario whose row shows bytes per idle connection
CHECK_TIMEOUT = 10.0
IDLE_OPEN_TIMEOUT = 60.0


@dataclass
class Run(WrkResult):
    """A wrk run, and what the server's processes spent on it."""

    server_cpu_percent: float | None = None     # of one core, over the run
    cpu_us_per_request: float | None = None     # server CPU time / requests
    other_cpu_percent: float | None = None      # the machine's busy time less server and wrk


@dataclass
class Idle:
    connections: int = 0
    before: tuple[int, int] = (0, 0)    # server (RSS, PSS), bytes
    after: tuple[int, int] = (0, 0)
    stable: bool = True

    @property
    def rss_per_conn(self) -> float | None:
        return (self.after[0] - self.before[0]) / self.connections if self.connections else None

    @property
    def pss_per_conn(self) -> float | None:
        return (self.after[1] - self.before[1]) / self.connections if self.connections else None


@dataclass
class Turn:
    """One server in one round."""

    runs: dict[str, Run] = field(default_factory=dict)
    idle: Idle | None = None
    failure: str | None = None


# --- checks -----------------------------------------------------------------------


def check(port: int, path: str) -> str | None:
    """What is wrong with the answer to GET path, or None."""
    status, headers, body = http_get(port, path, CHECK_TIMEOUT)
    if status != 200:
        return f"GET {path}: status {status}, body {body[:200]!r}"
    if path.startswith("/items/"):
        if not headers.get("content-type", "").startswith("application/json"):
            return f"GET {path}: Content-Type {headers.get('content-type')!r}"
        if json.loads(body) != item_json(ITEM_ID):
            return f"GET {path}: {body[:200]!r}"
    elif path == "/stream":
        if body != b"x" * (STREAM_PIECE * STREAM_PIECES):
            return f"GET {path}: {len(body)} bytes, not the {STREAM_PIECE * STREAM_PIECES} expected"
    elif body != BODY:
        return f"GET {path}: body {body[:200]!r}"
    return None


# --- memory per idle connection ------------------------------------------------------


def stable_memory(leader: int) -> tuple[tuple[int, int], bool]:
    """The server's (RSS, PSS) once MEM_STABLE_READINGS readings in a row agree
    within MEM_STABLE_KB; (the last reading, whether it settled)."""
    readings: list[tuple[int, int]] = []
    deadline = time.monotonic() + MEM_STABLE_TIMEOUT
    while True:
        readings.append(memory(session(leader)))
        window = readings[-MEM_STABLE_READINGS:]
        if len(window) == MEM_STABLE_READINGS and all(
                max(r[i] for r in window) - min(r[i] for r in window) <= MEM_STABLE_KB * 1024
                for i in (0, 1)):
            return readings[-1], True
        if time.monotonic() >= deadline:
            return readings[-1], False
        time.sleep(MEM_POLL)  # memory has no fd to wait on


def wait_established(port: int, count: int, timeout: float) -> int:
    """Poll ss until the server side has ``count`` established connections (or the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        now = established(port)
        if now == count or time.monotonic() >= deadline:
            return now
        time.sleep(0.1)  # ss has no fd to wait on


def measure_idle(leader: int, port: int, count: int) -> Idle:
    """Warm the server up (64 connections with a request each, 50 requests on one),
    read its memory, open ``count`` keep-alive connections that have each had a
    response, read it again."""
    socks, failures = open_keepalive(port, WARM_CONNECTIONS, time.monotonic() + CHECK_TIMEOUT)
    for sock in socks:
        sock.close()
    if failures:
        raise BenchError(f"warm-up connections failed: {dict(failures)}")
    exchange(port, ["/"] * WARM_SEQUENTIAL, False)
    wait_established(port, 0, 10.0)
    idle = Idle()
    idle.before, stable_before = stable_memory(leader)
    socks, failures = open_keepalive(port, count, time.monotonic() + IDLE_OPEN_TIMEOUT)
    try:
        if failures:
            raise BenchError(f"{sum(failures.values())} of {count} idle connections failed: "
                             f"{dict(failures)}")
        held = wait_established(port, len(socks), 30.0)
        if held != len(socks):
            raise BenchError(f"{held} of {len(socks)} connections established on the server side")
        idle.after, stable_after = stable_memory(leader)
        if established(port) != len(socks):
            raise BenchError("the server closed idle connections while its memory was read")
        idle.connections = len(socks)
        idle.stable = stable_before and stable_after
    finally:
        for sock in socks:
            sock.close()
    return idle


# --- wrk ------------------------------------------------------------------------------


def progress_line(name: str, scenario: str, run: Run) -> str:
    """What a run is said to have done, as it ends."""
    return (f"[{name}] {scenario}: {run.requests_per_sec:,.0f} req/s, p99 {format_p99(run)}, "
            f"{run.cpu_us_per_request or 0:.1f} us CPU/req, server {run.server_cpu_percent}% "
            f"wrk {run.wrk_cpu_percent}% other {run.other_cpu_percent}%, errors {run.all_errors}")


def measure(name: str, scenario: Scenario, port: int, leader: int, args: argparse.Namespace,
            workdir: Path, duration: int) -> Run:
    """wrk on the scenario; the server's processes' CPU time over the run."""
    pids = session(leader)
    before, busy_before = cpu_ticks(pids), busy_ticks_total()
    wall_before = time.monotonic()
    output, wrk_cpu = run_wrk(wrk_command(scenario, port, duration, args, workdir), duration)
    wall = max(time.monotonic() - wall_before, 1e-6)
    after, busy_after = cpu_ticks(pids), busy_ticks_total()
    server_ticks = sum(after[pid] - before[pid] for pid in after if pid in before)
    result = parse_wrk(output)
    run = Run(**vars(result))
    run.wrk_cpu_percent = round(wrk_cpu, 1)
    run.client_bound = wrk_cpu >= CLIENT_BOUND_PERCENT * args.wrk_threads
    run.server_cpu_percent = round(100 * server_ticks / CLK_TCK / wall, 1)
    run.cpu_us_per_request = (server_ticks / CLK_TCK * 1e6 / result.requests
                              if result.requests else None)
    other = (busy_after - busy_before) / CLK_TCK - server_ticks / CLK_TCK - wrk_cpu / 100 * wall
    run.other_cpu_percent = round(max(0.0, 100 * other / wall), 1)
    return run


def _nothing(scenario: Scenario, port: int) -> ContextManager[object]:
    return contextlib.nullcontext()


def bench_turn(name: str, python: Path, args: argparse.Namespace, workdir: Path,
               quiet: Quiet, launchers: Mapping[str, Launcher] = LAUNCHERS,
               check_answer: Callable[[int, str], str | None] = check,
               during: Callable[[Scenario, int], ContextManager[object]] = _nothing) -> Turn:
    """Start the server (``launchers[name]``), check its answer to every scenario's
    path (``check_answer``), measure idle memory, then every scenario, each inside
    ``during(scenario, port)`` (warm-up and measured run: e.g. slow clients held open);
    always stop it."""
    turn = Turn()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "server.log"
    try:
        port = free_port()
        launch = launchers[name](python, workdir, port, args)
        print(f"[{name}] starting on port {port}: {' '.join(launch.argv)}", file=sys.stderr)
        with running_server(launch, log_path, args.server_cpus, not args.no_pin) as proc:
            for scenario in args.scenarios:
                problem = check_answer(port, scenario.path)
                if problem:
                    raise BenchError(problem)
            if any(s.name == IDLE_SCENARIO for s in args.scenarios) and args.idle:
                quiet.wait(f"{name}] [idle")
                turn.idle = measure_idle(proc.pid, port, args.idle)
                print(f"[{name}] idle: {turn.idle.connections} connections, "
                      f"{turn.idle.pss_per_conn:,.0f} B/conn PSS, "
                      f"{turn.idle.rss_per_conn:,.0f} B/conn RSS", file=sys.stderr)
            for scenario in args.scenarios:
                with during(scenario, port):
                    if args.warmup:
                        measure(name, scenario, port, proc.pid, args, workdir, args.warmup)
                    quiet.wait(f"{name}] [{scenario.name}")
                    run = turn.runs[scenario.name] = measure(name, scenario, port, proc.pid, args,
                                                             workdir, args.duration)
                print(progress_line(name, scenario.name, run), file=sys.stderr)
                if proc.poll() is not None:
                    raise BenchError(f"exited with status {proc.returncode} during {scenario.name}")
    except (BenchError, OSError, ValueError) as error:
        turn.failure = f"{error}\n{log_tail(log_path, workdir / 'error.log')}"
        print(f"[{name}] FAILED: {turn.failure}", file=sys.stderr)
    return turn
