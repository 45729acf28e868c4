"""A prefork server the benchmarks start from this checkout: its master, its
workers, and how to stop all of them (by PID, never by name)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .net import HOST, READY_TIMEOUT, STOP_TIMEOUT, free_port, log_tail, wait_ready
from .procs import all_pids, read_stat
from .tools import REPO_ROOT, BenchError, pin, repo_env

WORKER_TITLE = "prefork-server: worker process"   # a worker's process title (/proc/PID/cmdline)
ORPHAN_GRACE = 2.0             # seconds a worker may outlive its stopped master before SIGKILL


def alive(pid: int, start: int) -> bool:
    """The process is still the same one (its starttime) and not yet a zombie."""
    st = read_stat(pid)
    return st is not None and st["start"] == start and st["state"] != "Z"


class PreforkServer:
    """A prefork master we started, its workers, and how to stop all of them.

    A subclass writes ``self.config`` (the port is ``self.port``) and calls
    ``launch()`` from its ``start()``. ``args`` has ``server_cpus`` and ``no_pin``.
    """

    label = "prefork"             # what the lines on stderr start with

    def __init__(self, workdir: Path, workers: int, args: argparse.Namespace):
        self.workdir = workdir
        self.n = workers
        self.args = args
        self.port = free_port()
        self.config = workdir / "prefork.toml"
        self.error_log = workdir / "error.log"
        self.output = workdir / "server.log"
        self.proc: subprocess.Popen | None = None
        self.seen: dict[int, int] = {}      # every worker pid ever seen -> its starttime
        self.left_over: list[int] = []      # workers still alive after the master stopped

    def launch(self, what: str) -> None:
        """Start the master in a session of its own, from this checkout, and wait until it answers."""
        if not (REPO_ROOT / "prefork" / "cli.py").exists():
            raise BenchError(f"{REPO_ROOT / 'prefork' / 'cli.py'} does not exist")
        argv = [sys.executable, "-m", "prefork.cli", "-c", str(self.config)]
        print(f"[{self.label}] starting on {HOST}:{self.port}, {what}", file=sys.stderr)
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                pin(self.args.server_cpus, argv, not self.args.no_pin), cwd=REPO_ROOT,
                env=repo_env(), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_ready(self.proc, self.port, READY_TIMEOUT)

    def master_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def workers(self, include_zombies: bool = False) -> list[int]:
        """The master's children (pids), remembered in ``seen``."""
        if not self.master_alive():
            return []
        pids = []
        for pid in all_pids():
            st = read_stat(pid)
            if st and st["ppid"] == self.proc.pid:
                self.seen.setdefault(pid, st["start"])
                if include_zombies or st["state"] != "Z":
                    pids.append(pid)
        return sorted(pids)

    def stop(self) -> None:
        """SIGTERM the master by PID (SIGKILL on timeout), then make sure none
        of its workers is left: SIGKILL each survivor by PID."""
        if self.proc is None:
            return
        self.workers(include_zombies=True)               # a last look at the children
        master = self.proc.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(master, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_TIMEOUT)

        def survivors() -> dict[int, int]:
            found = {pid: start for pid, start in self.seen.items() if alive(pid, start)}
            # Also anything still in the master's session or process group: a
            # pid stays reserved while it names a live group.
            for pid in all_pids():
                st = read_stat(pid)
                if st and master in (st["sid"], st["pgid"]) and pid != master and st["state"] != "Z":
                    found.setdefault(pid, st["start"])
            return found

        deadline = time.monotonic() + ORPHAN_GRACE
        left = survivors()
        while left and time.monotonic() < deadline:
            time.sleep(0.05)  # orphans have no fd to wait on
            left = survivors()
        for pid, start in left.items():
            if alive(pid, start):
                print(f"[{self.label}] worker {pid} outlived its master; SIGKILL", file=sys.stderr)
                self.left_over.append(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def failure_text(self, error: Exception) -> str:
        return f"{error}\n{log_tail(self.output, self.error_log)}"
