"""Measuring one target: wrk runs, the CPU of the server, its database backends and everyone else."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from ..net import HOST, free_port, log_tail, running_server
from ..procs import CLK_TCK, Quiet, all_pids, core_times, process_table, read_stat, top_others
from ..tools import BenchError, pin
from ..wrk import CLIENT_BOUND_PERCENT, PIPELINE_LUA, parse_wrk, wait_wrk
from .db import pg_dbname, pg_vacuum, sqlite_checkpoint
from .model import LOG_EXCERPT_LINES, Run, Target, TargetResult, TestType, WRK_TIMEOUT
from .servers import prepare_target
from .verify import Bad, verify_test


def session_cpu(table: dict[int, dict], sid: int) -> dict[int, int]:
    """{pid: CPU ticks, reaped children included} for every process in the server's session."""
    return {pid: st["ticks"] + st["children"] for pid, st in table.items() if st["sid"] == sid}


def pg_backends_cpu(dbname: str) -> dict[int, int]:
    """{pid: CPU ticks} of the PostgreSQL backends connected to dbname (by process title)."""
    out = {}
    needle = f" {dbname} ".encode()
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read()
        except OSError:
            continue
        if title.startswith(b"postgres: ") and needle in title:
            stat = read_stat(pid)
            if stat:
                out[pid] = stat["ticks"]
    return out


def cpu_delta(before: dict[int, int], after: dict[int, int]) -> int:
    """Ticks used between two snapshots (a process that appeared counts from zero)."""
    return sum(ticks - before.get(pid, 0) for pid, ticks in after.items())


def core_usage(before: dict[str, list[int]], after: dict[str, list[int]]) -> tuple[dict[str, float], dict]:
    """Each core's busy share in %, and in ticks summed over the cores: busy time
    (user+nice+system+irq+softirq), interrupts (irq+softirq) and steal."""
    busy, ticks = {}, {"process": 0, "interrupts": 0, "steal": 0}
    for name, now in after.items():
        d = [a - b for a, b in zip(now, before.get(name, [0] * 8))]
        total = max(sum(d), 1)
        busy[name] = round(100 * (total - d[3] - d[4]) / total, 1)
        # A task's stime includes the interrupts taken while it ran; /proc/stat counts them apart.
        ticks["process"] += d[0] + d[1] + d[2] + d[5] + d[6]
        ticks["interrupts"] += d[5] + d[6]
        ticks["steal"] += d[7]
    return busy, ticks


# --- measuring --------------------------------------------------------------------


def wrk_argv(test: TestType, port: int, duration: int, args: argparse.Namespace,
             workdir: Path) -> list[str]:
    argv = ["wrk", f"-t{args.wrk_threads}", f"-c{max(test.connections, args.wrk_threads)}",
            f"-d{duration}s", f"--timeout={WRK_TIMEOUT}s", "--latency",
            "-H", f"Accept: {test.accept}", "-H", "Connection: keep-alive"]
    if test.pipeline > 1:
        script = workdir / f"pipeline{test.pipeline}.lua"
        script.write_text(PIPELINE_LUA.substitute(depth=test.pipeline, path=test.path))
        argv += ["-s", str(script)]
    argv.append(f"http://{HOST}:{port}{test.path}")
    return pin(args.wrk_cpus, argv, not args.no_pin)


def run_wrk(argv: list[str], duration: int, out_path: Path) -> tuple[str, float, list[int]]:
    """Run wrk: (its report, its CPU % of one core, pids of other wrk runs seen meanwhile)."""
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    start = time.monotonic()
    usage, others = wait_wrk(proc, duration)
    wall = time.monotonic() - start
    output = out_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"wrk exited with {proc.returncode}: {output.strip()[-1000:]}")
    return output, 100 * (usage.ru_utime + usage.ru_stime) / max(wall, 1e-6), others


class LogWatch:
    """Counts ERROR/WARNING/CRITICAL/Traceback lines a server writes during each run."""

    PATTERN = re.compile(r"\[(ERROR|WARNING|CRITICAL)\]|^(ERROR|WARNING|CRITICAL)\b|Traceback|Exception")

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.offsets = {p: 0 for p in paths}

    def mark(self) -> None:
        self.offsets = {p: (p.stat().st_size if p.exists() else 0) for p in self.paths}

    def since_mark(self) -> tuple[dict[str, int], list[str]]:
        counts: dict[str, int] = {}
        excerpt: list[str] = []
        for path in self.paths:
            if not path.exists():
                continue
            with open(path, "rb") as f:
                f.seek(self.offsets.get(path, 0))
                text = f.read().decode(errors="replace")
            for line in text.splitlines():
                match = self.PATTERN.search(line)
                if not match:
                    continue
                kind = match.group(1) or match.group(2) or ("Traceback" if "Traceback" in line else "Exception")
                counts[kind] = counts.get(kind, 0) + 1
                if len(excerpt) < LOG_EXCERPT_LINES:
                    excerpt.append(f"{path.name}: {line.strip()[:300]}")
        return counts, excerpt


def measure(target: Target, test: TestType, port: int, sid: int, args: argparse.Namespace,
            workdir: Path, quiet: Quiet, logs: LogWatch) -> Run:
    """Warm up, measure; measure again (up to --retries times) if another wrk ran meanwhile."""
    label = f"{target.name}/{test.name}"
    if args.warmup:
        quiet.wait(label)
        run_wrk(wrk_argv(test, port, args.warmup, args, workdir), args.warmup, workdir / "wrk-warmup.txt")
    attempt = 1
    while True:
        clean = quiet.wait(label)
        run = measure_once(target, test, port, sid, args, workdir, logs, label, clean)
        run.attempts = attempt
        if not run.contended or attempt > args.retries or quiet.waited >= quiet.budget:
            return run
        print(f"[{label}] another wrk ran during the measurement: measuring again", file=sys.stderr)
        attempt += 1


def measure_once(target: Target, test: TestType, port: int, sid: int, args: argparse.Namespace,
                 workdir: Path, logs: LogWatch, label: str, clean: bool) -> Run:
    dbname = pg_dbname(args.pg_url) if target.backend == "postgresql" else None
    logs.mark()
    table_before = process_table()
    server_before = session_cpu(table_before, sid)
    pg_before = pg_backends_cpu(dbname) if dbname else {}
    cores_before = core_times()
    wall_before = time.monotonic()
    output, wrk_cpu, others = run_wrk(wrk_argv(test, port, args.duration, args, workdir),
                                      args.duration, workdir / f"wrk-{test.name}.txt")
    wall = time.monotonic() - wall_before
    table_after = process_table()
    server_after = session_cpu(table_after, sid)
    pg_after = pg_backends_cpu(dbname) if dbname else {}
    cores, core_ticks = core_usage(cores_before, core_times())
    time.sleep(0.2)        # let the server flush its log lines about this run
    log_counts, excerpt = logs.since_mark()
    parsed = parse_wrk(output)
    server_ticks = cpu_delta(server_before, server_after)
    pg_ticks = cpu_delta(pg_before, pg_after)
    wrk_ticks = wrk_cpu / 100 * wall * CLK_TCK
    other_ticks = core_ticks["process"] - server_ticks - pg_ticks - wrk_ticks
    others_top = top_others(table_before, table_after,
                            set(server_after) | set(pg_after) | {os.getpid()}, wall)
    run = Run(
        requests_per_sec=parsed.requests_per_sec, requests=parsed.requests,
        p50_ms=parsed.p50_ms, p99_ms=parsed.p99_ms if test.pipeline == 1 else None,
        connect_errors=parsed.connect_errors, read_errors=parsed.read_errors,
        write_errors=parsed.write_errors, timeout_errors=parsed.timeout_errors,
        non_2xx=parsed.non_2xx, wall_s=round(wall, 3),
        server_cpu_percent=round(100 * server_ticks / CLK_TCK / wall, 1),
        wrk_cpu_percent=round(wrk_cpu, 1),
        pg_backend_cpu_percent=round(100 * pg_ticks / CLK_TCK / wall, 1) if dbname else None,
        cpu_busy_percent=cores,
        other_cpu_percent=round(max(0.0, 100 * other_ticks / CLK_TCK / wall), 1),
        interrupt_cpu_percent=round(100 * core_ticks["interrupts"] / CLK_TCK / wall, 1),
        steal_cpu_percent=round(100 * core_ticks["steal"] / CLK_TCK / wall, 1),
        pg_backends=len(pg_after) if dbname else None,
        other_top=others_top,
        client_bound=wrk_cpu >= CLIENT_BOUND_PERCENT * args.wrk_threads,
        contended=bool(others) or not clean, other_wrk_pids=others,
        server_processes_before=sorted(server_before), server_processes_after=sorted(server_after),
        log_counts=log_counts, log_excerpt=excerpt)
    pg = f", PostgreSQL backends {run.pg_backend_cpu_percent:.0f}%" if dbname else ""
    print(f"[{label}] {run.requests_per_sec:,.0f} req/s, errors {run.errors}, server CPU "
          f"{run.server_cpu_percent:.0f}%{pg}, wrk CPU {run.wrk_cpu_percent:.0f}%, cores "
          + " ".join(f"{k} {v:.0f}%" for k, v in cores.items())
          + f", other processes {run.other_cpu_percent:.0f}%"
          + (f" ({', '.join(run.other_top)})" if run.other_top else "")
          + f", irq {run.interrupt_cpu_percent:.0f}%"
          + (f", log {log_counts}" if log_counts else "")
          + (f", CONTENDED (other wrk {others})" if run.contended else ""), file=sys.stderr)
    return run


def bench_target(target: Target, args: argparse.Namespace, workdir: Path, sqlite_path: Path,
                 quiet: Quiet) -> TargetResult:
    result = TargetResult()
    tdir = workdir / target.name
    tdir.mkdir()
    log_path = tdir / "server.log"
    log_files: list[Path] = [log_path]
    try:
        if target.backend == "sqlite":
            sqlite_checkpoint(sqlite_path)
        else:
            pg_vacuum(args.pg_url)
        port = free_port()
        launch, log_files = prepare_target(target, tdir, port, args, sqlite_path, result)
        print(f"[{target.name}] starting on {HOST}:{port}: {' '.join(launch.argv)}", file=sys.stderr)
        with running_server(launch, log_path, args.server_cpus, not args.no_pin) as proc:
            for test in args.tests:
                try:
                    verify_test(test, port, target, args, sqlite_path)
                    result.verify[test.name] = "ok"
                except Exception as exc:   # anything wrong with the answer or while checking it
                    result.verify[test.name] = str(exc) if isinstance(exc, Bad) else f"{type(exc).__name__}: {exc}"
                print(f"[{target.name}] verify {test.name}: {result.verify[test.name]}", file=sys.stderr)
            logs = LogWatch(log_files)
            for test in args.tests:
                if result.verify[test.name] != "ok":
                    continue
                try:
                    result.runs[test.name] = measure(target, test, port, proc.pid, args, tdir, quiet, logs)
                except BenchError as exc:
                    result.measure_failures[test.name] = str(exc)
                    print(f"[{target.name}/{test.name}] FAILED: {exc}", file=sys.stderr)
                if proc.poll() is not None:
                    raise BenchError(f"exited with status {proc.returncode} during {test.name}")
    except Exception as exc:       # BenchError, OSError, a database error: this target failed
        result.failure = f"{type(exc).__name__}: {exc}\n{log_tail(*dict.fromkeys([log_path, *log_files]))}"
        print(f"[{target.name}] FAILED: {result.failure}", file=sys.stderr)
    return result
