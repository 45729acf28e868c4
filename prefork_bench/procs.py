"""The bench's own process setup, and processes and the machine as /proc shows them.
"""

from __future__ import annotations

import ctypes
import os
import re
import resource
import signal
import sys
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- this process -----------------------------------------------------------------


def raise_nofile() -> int:
    """Raise the soft fd limit to the hard one (children inherit it); returns
    the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def parse_cpus(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


# --- other processes and the machine ----------------------------------------------


def read_pid_file(path: str | None) -> int | None:
    if not path:
        return None
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it (/proc/PID/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def proc_cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


def proc_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes; PSS splits shared pages fairly between processes."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def meminfo() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                name, _, rest = line.partition(":")
                out[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def machine_cpu() -> tuple[int, int]:
    """(busy, total) ticks over all CPUs."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


class Watcher:
    """CPU shares (percent of the whole machine) and memory, once a second."""

    def __init__(self, server_pid: int | None, client_pids: list[int]):
        self.server_pid = server_pid
        self.client_pids = client_pids
        self.ncpu = os.cpu_count() or 1
        self._ticks: dict[int, int] = {}
        self._client_ticks: dict[int, int] = {}
        self._machine = machine_cpu()
        self._t = time.monotonic()
        self.sample(prime=True)

    def _delta(self, pids: list[int], memo: dict[int, int]) -> int:
        spent = 0
        for pid in pids:
            ticks = proc_cpu_ticks(pid)
            if ticks is None:
                continue
            spent += ticks - memo.get(pid, ticks)
            memo[pid] = ticks
        return spent

    def sample(self, prime: bool = False) -> dict:
        now = time.monotonic()
        elapsed = max(now - self._t, 1e-6)
        self._t = now
        out: dict = {}
        if self.server_pid is not None:
            pids = descendants(self.server_pid)
            spent = self._delta(pids, self._ticks)
            rss = pss = 0
            for pid in pids:
                r, p = proc_memory(pid)
                rss += r
                pss += p
            out.update(server_processes=len(pids), server_cpu=100.0 * spent / CLK_TCK / elapsed / self.ncpu,
                       server_rss=rss, server_pss=pss)
        spent = self._delta(self.client_pids, self._client_ticks)
        out["client_cpu"] = 100.0 * spent / CLK_TCK / elapsed / self.ncpu
        busy, total = machine_cpu()
        b0, t0 = self._machine
        self._machine = (busy, total)
        out["machine_cpu"] = 100.0 * (busy - b0) / max(total - t0, 1)
        mem = meminfo()
        if mem.get("MemTotal"):
            out["mem_used"] = 100.0 * (mem["MemTotal"] - mem.get("MemAvailable", 0)) / mem["MemTotal"]
            out["mem_used_bytes"] = mem["MemTotal"] - mem.get("MemAvailable", 0)
        if prime:
            self.baseline = out
        return out


# --- every process: what else runs beside a benchmark ------------------------------


def read_stat(pid: int) -> dict | None:
    """A process's /proc/PID/stat: state, ppid, pgid, sid, ticks (own utime+stime),
    children (its reaped children's cutime+cstime), start (starttime: tells a pid's
    process from a later reuse) and comm; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    comm = data[data.find("(") + 1:data.rfind(")")]
    rest = data.rpartition(")")[2].split()   # the comm may hold spaces and parentheses
    try:
        # rest[0] is field 3 (state): ppid 4, pgrp 5, session 6, utime 14, stime 15,
        # cutime 16, cstime 17, starttime 22
        return {"state": rest[0], "ppid": int(rest[1]), "pgid": int(rest[2]), "sid": int(rest[3]),
                "ticks": int(rest[11]) + int(rest[12]), "children": int(rest[13]) + int(rest[14]),
                "start": int(rest[19]), "comm": comm}
    except (IndexError, ValueError):
        return None


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def process_table() -> dict[int, dict]:
    """read_stat() of every process."""
    table = {}
    for pid in all_pids():
        stat = read_stat(pid)
        if stat:
            table[pid] = stat
    return table


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def core_times() -> dict[str, list[int]]:
    """{"cpuN": [user, nice, system, idle, iowait, irq, softirq, steal]} in ticks, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if re.match(r"cpu\d+ ", line):
                name, *values = line.split()
                out[name] = [int(v) for v in values[:8]]
    return out


def top_others(before: dict[int, dict], after: dict[int, dict], exclude: set[int], wall: float,
               count: int = 3) -> list[str]:
    """The busiest processes outside the benchmark over a run (own CPU time, from two
    process_table()s), "comm[pid] N%"."""
    used = []
    for pid, stat in after.items():
        if pid in exclude:
            continue
        delta = stat["ticks"] - (before[pid]["ticks"] if pid in before else 0)
        percent = 100 * delta / CLK_TCK / wall
        if percent >= 5:
            used.append((percent, pid, stat["comm"]))
    return [f"{comm}[{pid}] {percent:.0f}%" for percent, pid, comm in sorted(used, reverse=True)[:count]]


def wrk_pids(exclude: int | None = None) -> list[int]:
    """Processes named exactly 'wrk' (as ``pgrep -x wrk``), other than ``exclude``."""
    found = []
    for pid in all_pids():
        if pid == exclude:
            continue
        try:
            with open(f"/proc/{pid}/comm", "rb") as f:
                if f.read().strip() == b"wrk":
                    found.append(pid)
        except OSError:
            continue
    return found


class Quiet:
    """Waits for other wrk runs to finish, within a budget for the whole benchmark."""

    def __init__(self, budget: float):
        self.budget = budget
        self.waited = 0.0

    def wait(self, label: str) -> bool:
        """True when no other wrk runs; False when the budget ran out first."""
        start = time.monotonic()
        announced = False
        try:
            while others := wrk_pids():
                if self.waited + (time.monotonic() - start) >= self.budget:
                    print(f"[{label}] waiting budget ({self.budget:.0f}s) used up; another wrk "
                          f"(pid {', '.join(map(str, others))}) is running: measuring anyway",
                          file=sys.stderr)
                    return False
                if not announced:
                    print(f"[{label}] another wrk is running (pid {', '.join(map(str, others))}); "
                          "waiting for it to finish ...", file=sys.stderr)
                    announced = True
                time.sleep(1.0)  # other wrk runs have no fd to wait on
            return True
        finally:
            spent = time.monotonic() - start
            self.waited += spent
            if spent >= 1.0:
                print(f"[{label}] waited {spent:.0f}s for other wrk runs", file=sys.stderr)
