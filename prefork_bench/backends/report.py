"""The table, the target and the JSON."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from ..report import render_table
from ..wrk import CLIENT_BOUND_PERCENT, client_settings, pinning
from .model import (BASE, LOG_EXCERPT_LINES, MEM_STABLE_TIMEOUT, OTHER_LOAD_MARK, SCENARIOS, TARGET_SCENARIO,
                    BackendResult, Run)


def format_run(run: Run) -> str:
    marks = ("*" if run.client_bound else "") + ("!" if run.contended else "") \
        + ("~" if run.noisy else "")
    return f"{run.requests_per_sec:,.0f}{marks}"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base <= 0 or value < 0:
        return "n/a"
    return f"{value / base:.2f}x"


def table(args: argparse.Namespace, results: dict[str, BackendResult]) -> str:
    backends = args.backends
    others = [b for b in backends if b != BASE] if BASE in backends else []
    header = ["scenario", *[f"{b} req/s" for b in backends],
              *[f"{b}/{BASE}" for b in others], "errors"]
    rows = [header]
    for test in SCENARIOS:
        name = test.scenario.name
        row = [name]
        for b in backends:
            r = results[b]
            run = r.runs.get(name)
            row.append(format_run(run) if run else "FAILED" if name in r.failed else "n/a")
        base = results.get(BASE)
        base_run = base.runs.get(name) if base else None
        for b in others:
            run = results[b].runs.get(name)
            row.append(ratio(run and run.requests_per_sec,
                             base_run and base_run.requests_per_sec))
        errors = [f"{b} {results[b].runs[name].errors}" for b in backends
                  if name in results[b].runs and results[b].runs[name].errors]
        row.append(", ".join(errors) or "-")
        rows.append(row)
    if args.idle:
        for label, attr in (("RSS", "rss_per_conn"), ("USS", "uss_per_conn")):
            row = [f"idle-{args.idle} B/conn {label}"]
            values = {}
            for b in backends:
                idle = results[b].idle
                value = getattr(idle, attr) if idle and idle.failure is None else None
                values[b] = value
                row.append("FAILED" if idle and idle.failure else
                           "n/a" if value is None else
                           f"{value:,.0f}" + ("!" if idle.contended else "")
                           + ("?" if not idle.stable else ""))
            for b in others:
                row.append(ratio(values.get(b), values.get(BASE)))
            failed = [f"{b} {results[b].idle.requested - results[b].idle.opened}" for b in backends
                      if results[b].idle and results[b].idle.failure is None
                      and results[b].idle.opened < results[b].idle.requested]
            row.append(", ".join(failed) or "-")
            rows.append(row)
    return render_table(rows)


def target_lines(args: argparse.Namespace, results: dict[str, BackendResult]) -> tuple[list[str], bool]:
    if BASE not in results or "uvloop" not in results:
        return ["target: not evaluated (needs the epoll and uvloop backends)"], False
    ok = True
    lines = []
    e_run = results[BASE].runs.get(TARGET_SCENARIO)
    u_run = results["uvloop"].runs.get(TARGET_SCENARIO)
    if e_run is None or u_run is None:
        lines.append(f"  speed ({TARGET_SCENARIO}): not measured -> MISSED")
        ok = False
    else:
        met = e_run.requests_per_sec >= u_run.requests_per_sec
        ok &= met
        lines.append(f"  speed ({TARGET_SCENARIO}): epoll {e_run.requests_per_sec:,.0f} req/s vs "
                     f"uvloop {u_run.requests_per_sec:,.0f} req/s "
                     f"({e_run.requests_per_sec / u_run.requests_per_sec:.2f}x) -> "
                     f"{'met' if met else 'MISSED'}")
    if args.idle:
        e_idle, u_idle = results[BASE].idle, results["uvloop"].idle
        for label, attr in (("RSS", "rss_per_conn"), ("USS", "uss_per_conn")):
            e = getattr(e_idle, attr) if e_idle and e_idle.failure is None else None
            u = getattr(u_idle, attr) if u_idle and u_idle.failure is None else None
            if e is None or u is None:
                lines.append(f"  memory per idle connection ({label}): not measured -> MISSED")
                ok = False
                continue
            met = e <= u
            ok &= met
            lines.append(f"  memory per idle connection ({label}): epoll {e:,.0f} B vs uvloop "
                         f"{u:,.0f} B -> {'met' if met else 'MISSED'}")
    else:
        lines.append("  memory per idle connection: not measured (--idle 0)")
        ok = False
    head = ("target (epoll >= uvloop req/s on keep-alive /plaintext, and <= uvloop bytes per "
            f"idle connection): {'MET' if ok else 'NOT MET'}")
    return [head, *lines], ok


def report(args: argparse.Namespace, results: dict[str, BackendResult]) -> tuple[str, bool]:
    lines = [
        f"prefork backends; {args.workers} worker(s) per server, {args.duration}s per scenario, "
        f"wrk -t{args.wrk_threads}, pinning {pinning(args)}"
        + (f"; idle rows: 1 worker, {args.idle} idle keep-alive connections" if args.idle else ""),
        "",
        table(args, results),
        "",
        f"req/s: wrk Requests/sec; X/{BASE}: X's req/s (idle rows: bytes per connection) over "
        f"{BASE}'s; B/conn: the worker's memory growth over the connections held, RSS (VmRSS) "
        "or USS (Private_Clean+Private_Dirty).",
    ]
    if args.idle:
        lines.append("RSS also counts pages the worker still shares with its master (inherited at "
                     "fork): a write into one (new objects in inherited free heap) makes a private "
                     "copy without changing RSS, so USS is the closer measure of new memory.")
    all_runs = [run for r in results.values() for run in r.runs.values()]
    if any(run.client_bound for run in all_runs):
        lines.append(f"*: wrk used >= {CLIENT_BOUND_PERCENT}% of its CPU (client-bound).")
    if any(run.contended for run in all_runs) or any(
            r.idle and r.idle.contended for r in results.values()):
        lines.append("!: another wrk process ran during the measurement.")
    if any(run.noisy for run in all_runs):
        lines.append(f"~: other processes (or softirq not charged to the server or wrk) used "
                     f">= {OTHER_LOAD_MARK:.0f}% of a core during the run.")
    if any(r.idle and r.idle.failure is None and not r.idle.stable for r in results.values()):
        lines.append("?: the worker's memory had not settled within "
                     f"{MEM_STABLE_TIMEOUT:.0f}s (the last reading is used).")
    # errors
    notes = []
    for test in SCENARIOS:
        name = test.scenario.name
        for b in args.backends:
            run = results[b].runs.get(name)
            if run and run.errors:
                notes.append(f"  {name} {b}: socket errors connect {run.connect_errors}, read "
                             f"{run.read_errors}, write {run.write_errors}, timeout "
                             f"{run.timeout_errors}; non-2xx/3xx {run.non_2xx}")
    for b in args.backends:
        idle = results[b].idle
        if idle and idle.failure is None and idle.opened < idle.requested:
            notes.append(f"  idle {b}: {idle.requested - idle.opened} of {idle.requested} "
                         f"connections failed: {idle.failures}")
    if notes:
        lines += ["errors (wrk socket errors and non-2xx/3xx responses; idle: connections "
                  "that failed):", *notes]
    else:
        lines.append("errors: none (wrk socket errors, non-2xx/3xx responses, idle connections)")
    # memory details
    if args.idle:
        lines.append("idle details (worker memory before -> after the connections; after they "
                     "were closed):")
        for b in args.backends:
            idle = results[b].idle
            if idle is None:
                continue
            if idle.failure:
                lines.append(f"  {b}: FAILED: {idle.failure}")
                continue
            lines.append(
                f"  {b}: pid {idle.worker_pid}, RSS {idle.before.rss_kb / 1024:,.1f} -> "
                f"{idle.after.rss_kb / 1024:,.1f} MiB, USS {idle.before.uss_kb / 1024:,.1f} -> "
                f"{idle.after.uss_kb / 1024:,.1f} MiB, shared {idle.before.shared_kb / 1024:,.1f} -> "
                f"{idle.after.shared_kb / 1024:,.1f} MiB, fds {idle.before.fds} -> {idle.after.fds}; "
                f"{idle.opened} opened in {idle.open_seconds:.1f}s, {idle.established} "
                "established (ss); after close: "
                + (f"RSS {idle.after_close.rss_kb / 1024:,.1f} MiB, fds {idle.after_close.fds}"
                   if idle.after_close else "n/a")
                + (", still answers" if idle.alive_after_close else
                   ", NOT answering" if idle.alive_after_close is False else ""))
    # failures, logs
    for b in args.backends:
        r = results[b]
        if r.failure:
            lines.append(f"{b} FAILED: {r.failure}")
        for name, why in r.failed.items():
            lines.append(f"{b} {name} FAILED (not measured): {why}")
        bad_checks = {k: v for k, v in r.checks.items() if v != "ok"}
        for name, why in bad_checks.items():
            lines.append(f"{b} check {name} failed: {why}")
        for what, left in (("throughput", r.left_over_workers), ("idle", r.idle_left_over_workers)):
            if left:
                lines.append(f"{b} ({what}): workers alive after the master stopped "
                             f"(SIGKILLed): {left}")
        for what, log_lines in (("throughput", r.log_lines), ("idle", r.idle_log_lines)):
            if log_lines:
                lines.append(f"{b} ({what} server): {len(log_lines)} warning/error line(s) "
                             "in its logs:")
                lines += [f"    {line[:300]}" for line in log_lines[:LOG_EXCERPT_LINES]]
                if len(log_lines) > LOG_EXCERPT_LINES:
                    lines.append(f"    ... and {len(log_lines) - LOG_EXCERPT_LINES} more")
    targets, ok = target_lines(args, results)
    lines += ["", *targets]
    return "\n".join(lines), ok


def write_json(path: str, args: argparse.Namespace, results: dict[str, BackendResult]) -> None:
    data = {
        "workers": args.workers,
        "duration_s": args.duration,
        "idle_connections": args.idle,
        **client_settings(args),
        "scenarios": {t.scenario.name: asdict(t.scenario) for t in SCENARIOS},
        "results": {},
    }
    for b, r in results.items():
        entry = asdict(r)
        if r.idle:
            entry["idle"]["rss_bytes_per_conn"] = r.idle.rss_per_conn
            entry["idle"]["uss_bytes_per_conn"] = r.idle.uss_per_conn
        data["results"][b] = entry
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
