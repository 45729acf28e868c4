"""Reload benchmark: does prefork drop requests while it reloads, loses
workers, or spreads connections unevenly?  Driven by wrk.

Usage (from anywhere; paths are relative to this file)::

    python bench/reload.py [--workers 2] [--duration 20] [--reloads 20] [--kills 5]
                           [--accept reuseport|shared] [--spread-connections 400]
                           [--spread-duration 4] [--seed N] [--json FILE] [--no-pin]

Part 1, reloads and kills under load.  For each mode

    keepalive   keep-alive, 64 connections
    close       a new TCP connection per request (``Connection: close``),
                64 concurrent connections

and each of two event plans

    reload-only      ``--reloads`` SIGHUPs to the master, nothing else
    reload+kill      the same SIGHUPs plus ``--kills`` SIGKILLs, each to a
                     random current worker (one that is not retiring)

a fresh prefork (``accept = "reuseport"`` unless ``--accept`` says otherwise,
``--workers`` workers) is started, warmed up with a short keep-alive wrk run,
and then wrk runs for ``--duration`` seconds on ``GET /plaintext`` while the
events are sent spread evenly over that time (event *i* of *n* at
``(i + 0.5) * duration / n``).  After every event the script polls ``/proc``
until the master again has exactly ``--workers`` children and none of them is
a worker from before the event (the retired or killed one has been reaped),
with a deadline of ``--settle-timeout`` seconds.  The table shows per row:

* ``requests``: wrk's completed responses over the measured run; ``req/s``
  the same per second.
* ``connect``, ``read``, ``write``, ``timeout``: wrk's socket errors.
  ``connect``: a connect() failed (refused or reset: nobody accepted).
  ``read``: reading a response failed or the connection was closed before a
  complete response arrived (wrk then reconnects).  ``write``: sending a
  request failed.  ``timeout``: no response within ``--wrk-timeout``
  seconds.  A SIGKILLed worker's own established keep-alive connections are
  necessarily lost, so ``reload+kill`` rows in keepalive mode show some read
  errors by design (at most about one per connection the victim held).
* ``non-2xx``: responses whose status was not 2xx or 3xx.
* ``HUP``/``KILL``: signals actually sent (an event whose time falls after
  wrk has finished is skipped and counted in ``skipped``).
* ``reloaded``: "reload complete" lines in the server's error log, i.e.
  reloads the master finished (should equal ``HUP``).
* ``settle max``: the longest time, after an event, until the master had its
  full worker count again; ``unsettled``: events after which that did not
  happen within ``--settle-timeout``.  (The master respawns a worker that
  died less than 5 s after it started only after its crash-loop back-off,
  which it checks every 0.25 s, so a kill of a young worker settles in
  0.1 to 0.6 s; ``--json`` has every event's time.)
* ``target``: ``ok`` when the row has no error at all, ``MISSED`` when a
  reload-only row of the reuseport strategy has any socket error or non-2xx
  response (the benchmark's target: reloads lose nothing), ``-`` otherwise.

Part 2, connection spread.  For ``accept = "reuseport"`` and ``accept =
"shared"`` in turn, a fresh prefork is started and wrk holds
``--spread-connections`` keep-alive connections for ``--spread-duration``
seconds.  Midway, ``ss -tnpH state established '( sport = :PORT )'`` counts
the established server-side connections per worker pid.  The table shows the
connections per worker (workers in pid order), their
total, ``min/max`` (the least loaded worker's count over the most loaded's:
1.00 is perfectly even, 0.00 means a worker got nothing) and ``CV`` (the
coefficient of variation, population standard deviation over mean: 0 is
perfectly even).

Every server runs from a generated config in a temporary directory, is
pinned to CPU 0 (wrk to CPU 1) with ``taskset`` unless ``--no-pin``, and is
stopped in a ``finally``: SIGTERM to the master by PID, SIGKILL if it has
not exited after a timeout, then every worker pid ever seen (and anything
left in the master's process group) is checked and SIGKILLed by PID if
still alive.  Only 127.0.0.1 is targeted.  ``wrk`` (and ``ss``, ``taskset``)
are installed with apt-get when missing.  Helpers are shared with
``bench/http.py``.  The standard library only.

Exit status: 0 when the target was met, 1 when a reload-only reuseport row
had errors or could not be measured, 2 when a tool is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prefork_bench.httpbench import warm_up
from prefork_bench.net import HOST, STOP_TIMEOUT, URL_PATH
from prefork_bench.procs import cmdline
from prefork_bench.report import render_table
from prefork_bench.server import PreforkServer
from prefork_bench.tools import REPO_ROOT, BenchError
from prefork_bench.wrk import (WRK_GRACE, Scenario, WrkResult, add_client_options, parse_wrk, prepare_client,
                               wrk_command)

POLL = 0.01                    # seconds between /proc scans while waiting for workers
WORKER_TITLE = "prefork-server: worker process"
ERROR_LINES_SHOWN = 8          # unexpected error-log lines shown per row

MODES = (
    Scenario("keepalive", 64, "keep-alive, 64 connections"),
    Scenario("close", 64, "new connection per request, 64 connections", close=True),
)
PLANS = ("reload-only", "reload+kill")


# --- command line ---------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="prefork under SIGHUP reloads and worker SIGKILLs (wrk on GET /plaintext), "
                    "and its connection spread per accept strategy.")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument("--duration", type=int, default=20,
                        help="seconds of wrk per part-1 row (default: 20)")
    parser.add_argument("--reloads", type=int, default=20,
                        help="SIGHUPs per part-1 row (default: 20)")
    parser.add_argument("--kills", type=int, default=5,
                        help="worker SIGKILLs per reload+kill row (default: 5)")
    parser.add_argument("--accept", choices=("reuseport", "shared"), default="reuseport",
                        help="accept strategy for part 1 (default: reuseport)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of wrk warm-up per server, 0 for none (default: 1)")
    parser.add_argument("--settle-timeout", type=float, default=10.0,
                        help="seconds to wait for the full worker count after an event "
                             "(default: 10)")
    parser.add_argument("--spread-connections", type=int, default=400,
                        help="keep-alive connections for part 2 (default: 400)")
    parser.add_argument("--spread-duration", type=int, default=4,
                        help="seconds of wrk per strategy in part 2 (default: 4)")
    parser.add_argument("--skip-spread", action="store_true", help="do not run part 2")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed for choosing the workers to kill")
    parser.add_argument("--json", metavar="FILE", help="also write the raw numbers to FILE")
    add_client_options(parser)
    parser.add_argument("--keep-logs", metavar="DIR",
                        help="copy every server's error log into DIR")
    args = parser.parse_args(argv)
    if (args.workers < 1 or args.duration < 1 or args.reloads < 0 or args.kills < 0
            or args.warmup < 0 or args.wrk_threads < 1 or args.spread_connections < 1
            or args.spread_duration < 2 or args.settle_timeout <= 0):
        parser.error("--workers, --duration, --wrk-threads and --spread-connections must be "
                     ">= 1, --spread-duration >= 2, --reloads, --kills and --warmup >= 0")
    return args


# --- one prefork server ---------------------------------------------------


class Prefork(PreforkServer):
    """A prefork master we started with one accept strategy, its workers, and how to stop all of them."""

    def __init__(self, workdir: Path, workers: int, accept: str, args: argparse.Namespace):
        super().__init__(workdir, workers, args)
        self.accept = accept
        self.pid_file = workdir / "prefork.pid"
        self.config.write_text(
            "[server]\n"
            f"workers = {workers}\n"
            f'accept = "{accept}"\n'
            f'pid_file = "{self.pid_file}"\n'
            "worker_connections = 10000\n"
            "\n[[listen]]\n"
            f'address = "{HOST}:{self.port}"\n'
            'protocol = "http"\n'
            "\n[http]\n"
            "keepalive_requests = 1000000\n"
            "\n[log]\n"
            f'error_log = "{self.error_log}"\n')

    # life cycle

    def start(self) -> None:
        self.launch(f"{self.n} workers, accept = {self.accept}")
        if not self.wait_workers(set(), self.args.settle_timeout)[0]:
            raise BenchError(f"the master did not reach {self.n} workers "
                             f"(has {len(self.workers(include_zombies=True))})")
        try:
            file_pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            file_pid = None
        if file_pid != self.proc.pid:
            raise BenchError(f"pid file says {file_pid}, but the master is {self.proc.pid}")

    def wait_workers(self, stale: set[int], timeout: float) -> tuple[bool, float]:
        """Poll until the master has exactly ``n`` children, none of them in
        ``stale`` (zombies count: a worker is gone once the master reaped it).
        Returns (settled, seconds waited)."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            if not self.master_alive():
                raise BenchError(f"the master exited with status {self.proc.returncode}")
            pids = set(self.workers(include_zombies=True))
            if len(pids) == self.n and not pids & stale:
                return True, time.monotonic() - started
            if time.monotonic() >= deadline:
                return False, time.monotonic() - started
            time.sleep(POLL)

    def signal_master(self, sig: int) -> None:
        if not self.master_alive():
            raise BenchError(f"the master exited with status {self.proc.returncode}")
        os.kill(self.proc.pid, sig)

    def error_log_text(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except OSError:
            return ""


# --- wrk in the background ------------------------------------------------


class WrkRun:
    """wrk in the background (so that signals can be sent meanwhile), with its
    report in a file; ``stop()`` kills it by PID if it is still running."""

    def __init__(self, argv: list[str], duration: int, workdir: Path):
        self.duration = duration
        self.out_path = workdir / "wrk.out"
        self.err_path = workdir / "wrk.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self.deadline = time.monotonic() + duration + WRK_GRACE

    def running(self) -> bool:
        return self.proc.poll() is None

    def result(self) -> WrkResult:
        try:
            self.proc.wait(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.stop()
            raise BenchError(f"wrk did not finish within {self.duration + WRK_GRACE:.0f}s") from None
        output = self.out_path.read_text(errors="replace")
        if self.proc.returncode != 0:
            error = self.err_path.read_text(errors="replace").strip()
            raise BenchError(f"wrk exited with {self.proc.returncode}: {error or output.strip()}")
        return parse_wrk(output)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=STOP_TIMEOUT)


def wrk_argv(scenario, port: int, duration: int, args: argparse.Namespace,
             workdir: Path) -> list[str]:
    return wrk_command(scenario, port, duration, args, workdir)


# --- part 1: reloads and kills --------------------------------------------


@dataclass
class Row:
    mode: str
    plan: str
    accept: str
    wrk: WrkResult | None = None
    reloads_sent: int = 0
    kills_sent: int = 0
    skipped: int = 0
    reloads_completed: int = 0
    settle_max_s: float = 0.0
    settle_mean_s: float = 0.0
    unsettled: int = 0
    killed_pids: list[int] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)   # per event: at_s, kind, pids, settle_s
    left_over_workers: list[int] = field(default_factory=list)
    unexpected_log_lines: list[str] = field(default_factory=list)
    failure: str | None = None

    @property
    def target_row(self) -> bool:
        return self.plan == "reload-only" and self.accept == "reuseport"

    @property
    def clean(self) -> bool:
        return self.failure is None and self.wrk is not None and self.wrk.all_errors == 0


def schedule(reloads: int, kills: int, duration: float) -> list[tuple[float, str]]:
    """Events spread evenly over the run, the kills spread evenly among them."""
    n = reloads + kills
    kinds = ["hup"] * n
    for j in range(kills):
        kinds[int((j + 0.5) * n / kills)] = "kill"
    return [((i + 0.5) * duration / n, kind) for i, kind in enumerate(kinds)]


def run_row(mode, plan: str, args: argparse.Namespace, workdir: Path,
            rng: random.Random) -> Row:
    row = Row(mode.name, plan, args.accept)
    row_dir = workdir / f"{mode.name}-{plan.replace('+', '-')}"
    row_dir.mkdir()
    server = Prefork(row_dir, args.workers, args.accept, args)
    kills = args.kills if plan == "reload+kill" else 0
    settles: list[float] = []
    wrk: WrkRun | None = None
    try:
        server.start()
        warm_up("prefork", server.port, args, row_dir)
        server.wait_workers(set(), args.settle_timeout)
        events = schedule(args.reloads, kills, args.duration)
        print(f"[prefork] {mode.name} {plan}: {mode.description}, {args.duration}s, "
              f"{args.reloads} HUP, {kills} KILL", file=sys.stderr)
        wrk = WrkRun(wrk_argv(mode, server.port, args.duration, args, row_dir), args.duration,
                     row_dir)
        t0 = time.monotonic()
        for at, kind in events:
            delay = t0 + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            # an event this late would no longer fall inside the measured run
            if not wrk.running() or time.monotonic() - t0 > args.duration - 0.1:
                row.skipped += 1
                continue
            sent_at = time.monotonic() - t0
            before = set(server.workers(include_zombies=False))
            if kind == "hup":
                server.signal_master(signal.SIGHUP)
                row.reloads_sent += 1
                stale = before
            else:
                titled = [pid for pid in sorted(before) if cmdline(pid).startswith(WORKER_TITLE)]
                victim = rng.choice(titled or sorted(before))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
                row.kills_sent += 1
                row.killed_pids.append(victim)
                stale = {victim}
            settled, waited = server.wait_workers(stale, args.settle_timeout)
            settles.append(waited)
            row.events.append({"at_s": round(sent_at, 3), "kind": kind, "stale": sorted(stale),
                               "settled": settled, "settle_s": round(waited, 4)})
            if not settled:
                row.unsettled += 1
                print(f"[prefork] after {kind}: workers {server.workers(include_zombies=True)} "
                      f"(stale {sorted(stale)}) not settled in {args.settle_timeout:.0f}s",
                      file=sys.stderr)
        row.wrk = wrk.result()
        if not server.master_alive():
            raise BenchError(f"the master exited with status {server.proc.returncode}")
        if not server.wait_workers(set(), args.settle_timeout)[0]:
            row.unsettled += 1
    except (BenchError, OSError) as error:
        row.failure = str(error)
        print(f"[prefork] {mode.name} {plan} FAILED: {server.failure_text(error)}",
              file=sys.stderr)
    finally:
        if wrk is not None:
            wrk.stop()
        server.stop()
        row.left_over_workers = server.left_over
        keep_log(server, args, row_dir.name)
    if settles:
        row.settle_max_s = max(settles)
        row.settle_mean_s = sum(settles) / len(settles)
    log_text = server.error_log_text()
    row.reloads_completed = log_text.count("reload complete: generation")
    row.unexpected_log_lines = unexpected_errors(log_text, row.killed_pids)
    if row.wrk is not None:
        r = row.wrk
        print(f"[prefork] {mode.name} {plan}: {r.requests} requests, socket errors connect "
              f"{r.connect_errors} read {r.read_errors} write {r.write_errors} timeout "
              f"{r.timeout_errors}, non-2xx {r.non_2xx}; {row.reloads_sent} HUP "
              f"({row.reloads_completed} completed), {row.kills_sent} KILL", file=sys.stderr)
    return row


def unexpected_errors(log_text: str, killed: list[int]) -> list[str]:
    """WARNING/ERROR/CRITICAL lines of the error log, except the master's
    report of the workers this script SIGKILLed (and tracebacks' lines)."""
    expected = [re.compile(rf"worker process {pid} \(slot \d+\) was killed by signal 9")
                for pid in killed]
    lines = []
    for line in log_text.splitlines():
        if not re.search(r"\[(WARNING|ERROR|CRITICAL)\]", line):
            continue
        if any(p.search(line) for p in expected):
            continue
        lines.append(line)
    return lines


def keep_log(server: Prefork, args: argparse.Namespace, name: str) -> None:
    if args.keep_logs and server.error_log.exists():
        target = Path(args.keep_logs)
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{name}.error.log").write_bytes(server.error_log.read_bytes())


def rows_table(rows: list[Row]) -> str:
    header = ["mode", "plan", "requests", "req/s", "connect", "read", "write", "timeout",
              "non-2xx", "HUP", "KILL", "skipped", "reloaded", "settle max", "unsettled",
              "target"]
    table = [header]
    for row in rows:
        r = row.wrk
        if r is None:
            numbers = ["n/a"] * 7
        else:
            numbers = [str(r.requests), f"{r.requests_per_sec:,.0f}", str(r.connect_errors),
                       str(r.read_errors), str(r.write_errors), str(r.timeout_errors),
                       str(r.non_2xx)]
        if row.target_row:
            target = "ok" if row.clean else "MISSED"
        else:
            target = "ok" if row.clean else "-"
        table.append([row.mode, row.plan, *numbers, str(row.reloads_sent), str(row.kills_sent),
                      str(row.skipped), str(row.reloads_completed),
                      f"{row.settle_max_s * 1000:.0f} ms", str(row.unsettled), target])
    return render_table(table, left=(0, 1, -1))


# --- part 2: connection spread --------------------------------------------


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


# --- report ---------------------------------------------------------------


def report(args: argparse.Namespace, rows: list[Row], spreads: list[Spread]) -> str:
    pinning = ("off" if args.no_pin
               else f"servers on CPU {args.server_cpus}, wrk on CPU {args.wrk_cpus}")
    lines = [
        f"Part 1: GET {URL_PATH} under reloads and kills; {args.workers} workers, "
        f"accept = {args.accept}, {args.duration}s per row, wrk -t{args.wrk_threads} -c64, "
        f"pinning {pinning}",
        "",
        rows_table(rows),
        "",
        "connect/read/write/timeout: wrk socket errors; non-2xx: non-2xx/3xx responses; "
        "HUP/KILL: signals sent; reloaded: reloads the master completed (error log); "
        "settle max: longest wait for the full worker count after an event.",
        "A SIGKILLed worker's open keep-alive connections are lost by design (read errors "
        "in keepalive reload+kill).",
    ]
    for row in rows:
        name = f"{row.mode} {row.plan}"
        if row.failure:
            lines.append(f"  {name}: FAILED: {row.failure}")
        if row.left_over_workers:
            lines.append(f"  {name}: workers alive after the master stopped (SIGKILLed): "
                         f"{row.left_over_workers}")
        if row.unexpected_log_lines:
            shown = row.unexpected_log_lines[:ERROR_LINES_SHOWN]
            more = len(row.unexpected_log_lines) - len(shown)
            lines.append(f"  {name}: {len(row.unexpected_log_lines)} unexpected warning/error "
                         "line(s) in the error log:")
            lines += [f"    {line}" for line in shown]
            if more:
                lines.append(f"    ... and {more} more")
    if spreads:
        lines += [
            "",
            f"Part 2: connection spread; {args.workers} workers, wrk -c{args.spread_connections} "
            f"keep-alive for {args.spread_duration}s, counted with ss midway",
            "",
            spread_table(spreads),
            "",
            "min/max: least over most loaded worker (1.00 even); CV: stdev/mean (0 even).",
        ]
    missed = [f"{r.mode} {r.plan}" for r in rows if r.target_row and not r.clean]
    if any(r.target_row for r in rows):
        lines.append("")
        lines.append("target (0 errors in reload-only rows, reuseport): "
                     + (f"MISSED in {', '.join(missed)}" if missed else "met"))
    return "\n".join(lines)


def write_json(path: str, args: argparse.Namespace, rows: list[Row],
               spreads: list[Spread]) -> None:
    data = {
        "workers": args.workers,
        "duration_s": args.duration,
        "reloads": args.reloads,
        "kills": args.kills,
        "accept": args.accept,
        "pinned": not args.no_pin,
        "server_cpus": args.server_cpus,
        "wrk_cpus": args.wrk_cpus,
        "wrk_threads": args.wrk_threads,
        "seed": args.seed,
        "rows": [dict(asdict(r), target_row=r.target_row, clean=r.clean) for r in rows],
        "spread": [dict(asdict(s), counts=s.counts, total=s.total, min_max=s.min_max, cv=s.cv)
                   for s in spreads],
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


# --- main -----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not prepare_client(args, also=(("ss", "iproute2"),)):
        return 2
    if not (REPO_ROOT / "prefork" / "cli.py").exists():
        print(f"error: {REPO_ROOT / 'prefork' / 'cli.py'} does not exist", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    rows: list[Row] = []
    spreads: list[Spread] = []
    with tempfile.TemporaryDirectory(prefix="prefork-reload-") as tmp:
        for mode in MODES:
            for plan in PLANS:
                rows.append(run_row(mode, plan, args, Path(tmp), rng))
        if not args.skip_spread:
            for accept in ("reuseport", "shared"):
                spreads.append(measure_spread(accept, args, Path(tmp)))
    print(report(args, rows, spreads))
    if args.json:
        write_json(args.json, args, rows, spreads)
    return 1 if any(r.target_row and not r.clean for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
