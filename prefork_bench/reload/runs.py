"""Part 1: wrk under SIGHUP reloads and worker SIGKILLs."""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..httpbench import warm_up
from ..net import HOST, STOP_TIMEOUT
from ..procs import cmdline
from ..report import render_table
from ..server import WORKER_TITLE, PreforkServer
from ..tools import BenchError
from ..wrk import WRK_GRACE, Scenario, WrkResult, parse_wrk, wrk_command

POLL = 0.01                    # seconds between /proc scans while waiting for workers
ERROR_LINES_SHOWN = 8          # unexpected error-log lines shown per row

MODES = (
    Scenario("keepalive", 64, "keep-alive, 64 connections"),
    Scenario("close", 64, "new connection per request, 64 connections", close=True),
)
PLANS = ("reload-only", "reload+kill")



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
