"""Part 1: wrk against each backend."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from ..procs import CLK_TCK, Quiet, core_times, process_table, top_others
from ..tools import BenchError
from ..wrk import CLIENT_BOUND_PERCENT, Scenario, parse_wrk, wait_wrk, wrk_command
from .model import BackendResult, POLL_WAIT, Run, SCENARIOS, THROUGHPUT_WORKER_CONNECTIONS
from .server import Server, busy_ticks_total, core_busy, verify


def run_wrk(argv: list[str], duration: int, server: Server, workdir: Path,
            label: str) -> tuple[str, dict]:
    """Run wrk to completion: (its report, measurements of the run)."""
    out_path, err_path = workdir / "wrk.out", workdir / "wrk.err"
    server_before = server.cpu_ticks()
    cores_before = core_times()
    switches_before = server.context_switches()
    total_before = busy_ticks_total()
    tasks_before = process_table()
    self_before = os.times()
    wall_before = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    rusage, others = wait_wrk(proc, duration, POLL_WAIT)
    wall = max(time.monotonic() - wall_before, 1e-6)
    self_after = os.times()
    own_ticks = ((self_after.user + self_after.system) - (self_before.user + self_before.system)) * CLK_TCK
    server_after = server.cpu_ticks()
    switches_after = server.context_switches()
    cores = core_busy(cores_before, core_times())
    per_process = {pid: ticks - server_before.get(pid, 0) for pid, ticks in server_after.items()}
    server_ticks = sum(per_process.values())
    wrk_ticks = (rusage.ru_utime + rusage.ru_stime) * CLK_TCK
    other_ticks = busy_ticks_total() - total_before - server_ticks - wrk_ticks - own_ticks
    busiest = top_others(tasks_before, process_table(), {*server_after, os.getpid(), proc.pid}, wall)
    output = out_path.read_text(errors="replace")
    if proc.returncode != 0:
        error = err_path.read_text(errors="replace").strip()
        raise BenchError(f"wrk exited with {proc.returncode}: {error or output.strip()}")
    return output, {
        "wall_s": round(wall, 3),
        "wrk_cpu_percent": round(100 * wrk_ticks / CLK_TCK / wall, 1),
        "server_cpu_percent": round(100 * server_ticks / CLK_TCK / wall, 1),
        "other_cpu_percent": round(max(0.0, 100 * other_ticks / CLK_TCK / wall), 1),
        "other_wrk_pids": others,
        "server_cpu_by_pid": {pid: round(100 * t / CLK_TCK / wall, 1)
                              for pid, t in per_process.items()},
        "cores": cores,
        "other_top": busiest,
        "context_switches": [a - b for a, b in zip(switches_after, switches_before)],
    }


def measure(server: Server, scenario, args: argparse.Namespace, workdir: Path,
            quiet: Quiet) -> Run:
    label = f"{server.backend}] [{scenario.name}"
    quiet_ok = quiet.wait(label)
    print(f"[{server.backend}] {scenario.name}: {scenario.description}, {args.duration}s",
          file=sys.stderr)
    argv = wrk_command(scenario, server.port, args.duration, args, workdir)
    output, info = run_wrk(argv, args.duration, server, workdir, label)
    parsed = parse_wrk(output)
    run = Run(requests_per_sec=parsed.requests_per_sec, requests=parsed.requests,
              p50_ms=parsed.p50_ms, p99_ms=parsed.p99_ms, latency_valid=scenario.pipeline == 1,
              connect_errors=parsed.connect_errors, read_errors=parsed.read_errors,
              write_errors=parsed.write_errors, timeout_errors=parsed.timeout_errors,
              non_2xx=parsed.non_2xx, wall_s=info["wall_s"],
              wrk_cpu_percent=info["wrk_cpu_percent"],
              server_cpu_percent=info["server_cpu_percent"],
              other_cpu_percent=info["other_cpu_percent"],
              client_bound=info["wrk_cpu_percent"] >= CLIENT_BOUND_PERCENT * args.wrk_threads,
              contended=bool(info["other_wrk_pids"]) or not quiet_ok,
              other_wrk_pids=info["other_wrk_pids"],
              server_cpu_by_pid=info["server_cpu_by_pid"], cores=info["cores"],
              context_switches=info["context_switches"], other_top=info["other_top"])
    p99 = f"{run.p99_ms:.2f} ms" if run.latency_valid and run.p99_ms is not None else "n/a"
    print(f"[{server.backend}] {scenario.name}: {run.requests_per_sec:,.0f} req/s, p99 {p99}, "
          f"errors {run.errors}, CPU server {run.server_cpu_percent:.0f}% wrk "
          f"{run.wrk_cpu_percent:.0f}% other {run.other_cpu_percent:.0f}%"
          + (f" [{', '.join(run.other_top)}]" if run.other_top else "") + " (per process "
          + "/".join(f"{v:.0f}" for v in run.server_cpu_by_pid.values()) + "; cores busy "
          + ", ".join(f"{k} {v['busy']:.0f}% (softirq {v['softirq']:.0f}%)"
                      for k, v in run.cores.items())
          + "; worker context switches per 1000 responses: "
          + ", ".join(f"{kind} {1000 * n / max(run.requests, 1):.1f}" for kind, n
                      in zip(("voluntary", "involuntary"), run.context_switches)) + ")"
          + (f", other wrk {run.other_wrk_pids}" if run.other_wrk_pids else ""), file=sys.stderr)
    return run


# --- part 1: throughput ---------------------------------------------------


def bench_backend(backend: str, args: argparse.Namespace, workdir: Path, docroot: Path,
                  quiet: Quiet, result: BackendResult) -> None:
    server_dir = workdir / f"{backend}-throughput"
    server_dir.mkdir()
    server = Server(backend, args.workers, THROUGHPUT_WORKER_CONNECTIONS, server_dir, docroot,
                    args)
    try:
        server.start()
        result.checks = verify(server, docroot)
        for name, outcome in result.checks.items():
            print(f"[{backend}] check {name}: {outcome}", file=sys.stderr)
        if args.warmup and result.checks.get("plaintext") == "ok":
            print(f"[{backend}] warm-up {args.warmup}s", file=sys.stderr)
            warm = Scenario("warmup", 64, "keep-alive, 64 connections")
            run_wrk(wrk_command(warm, server.port, args.warmup, args, server_dir),
                    args.warmup, server, server_dir, backend)
        for test in SCENARIOS:
            scenario = test.scenario
            bad = [f"{need}: {result.checks.get(need)}" for need in test.needs
                   if result.checks.get(need) != "ok"]
            if bad:
                result.failed[scenario.name] = "; ".join(bad)
                print(f"[{backend}] {scenario.name}: FAILED, not measured: {'; '.join(bad)}",
                      file=sys.stderr)
                continue
            try:
                result.runs[scenario.name] = measure(server, scenario, args, server_dir, quiet)
            except BenchError as error:
                result.failed[scenario.name] = str(error)
                print(f"[{backend}] {scenario.name} FAILED: {error}", file=sys.stderr)
            if not server.master_alive():
                raise BenchError(f"the master exited with status {server.proc.returncode} "
                                 f"during {scenario.name}")
            live = server.workers()
            if len(live) != server.n:
                print(f"[{backend}] note: {len(live)} workers after {scenario.name} "
                      f"(expected {server.n}); seen so far {sorted(server.seen)}",
                      file=sys.stderr)
        if len(server.seen) != server.n:
            result.log_lines.append(f"(bench) {len(server.seen)} distinct worker pids seen "
                                    f"for {server.n} slots: a worker died and was respawned")
    except (BenchError, OSError) as error:
        result.failure = str(error)
        print(f"[{backend}] FAILED: {server.failure_text(error)}", file=sys.stderr)
    finally:
        server.stop()
        result.left_over_workers = server.left_over
        result.log_lines += server.log_problems()
        server.keep_logs(f"{backend}-throughput")
