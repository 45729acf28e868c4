"""The tables, the targets and the JSON."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit

from ..report import render_table
from ..wrk import CLIENT_BOUND_PERCENT, client_settings, pinning
from .model import (CONNECTIONS, OTHER_LOAD_MARK, PIPELINE, QUERIES, SHORT, TARGET_RATIO, TARGET_RPS,
                    WRK_TIMEOUT, Target, TargetResult, TestType)


def cell_rps(result: TargetResult | None, test: TestType) -> str:
    if result is None:
        return "-"
    if result.verify.get(test.name, "ok") != "ok":
        return "FAILED"
    run = result.runs.get(test.name)
    if run is None:
        return "n/a"
    return (f"{run.requests_per_sec:,.0f}" + ("*" if run.client_bound else "")
            + ("!" if run.contended else "")
            + ("~" if run.other_cpu_percent >= OTHER_LOAD_MARK else ""))


def rps(results: dict[str, TargetResult], target: Target, test: TestType) -> float | None:
    result = results.get(target.name)
    run = result.runs.get(test.name) if result else None
    return run.requests_per_sec if run else None


def ratio(results: dict[str, TargetResult], backend: str, test: TestType) -> float | None:
    ours = rps(results, Target("prefork", backend), test)
    theirs = rps(results, Target("uvicorn", backend), test)
    if ours is None or not theirs:
        return None
    return ours / theirs


def main_table(targets: list[Target], args: argparse.Namespace,
               results: dict[str, TargetResult]) -> list[list[str]]:
    ratio_backends = [b for b in args.backends if len(args.servers) == 2]
    header = ["test"] + [t.short for t in targets]
    header += [f"pf/uv {SHORT[b]}" for b in ratio_backends]
    header += [f"CPU {t.short}" for t in targets] + ["errors"]
    rows = [header]
    for test in args.tests:
        row = [test.name] + [cell_rps(results.get(t.name), test) for t in targets]
        for backend in ratio_backends:
            value = ratio(results, backend, test)
            row.append("n/a" if value is None else f"{value:.2f}x")
        for t in targets:
            run = results[t.name].runs.get(test.name) if t.name in results else None
            row.append("n/a" if run is None else f"{run.server_cpu_percent:.0f}%")
        errors = []
        for t in targets:
            run = results[t.name].runs.get(test.name) if t.name in results else None
            if run and run.errors:
                errors.append(f"{t.short} {run.errors}")
        row.append(", ".join(errors) or "-")
        rows.append(row)
    return rows


def cpu_table(targets: list[Target], args: argparse.Namespace,
              results: dict[str, TargetResult]) -> list[list[str]]:
    pg_targets = [t for t in targets if t.backend == "postgresql"]
    header = ["test"] + [f"srv {t.short}" for t in targets] + [f"pgbe {t.short}" for t in pg_targets]
    header += [f"wrk {t.short}" for t in targets] + [f"other {t.short}" for t in targets]
    rows = [header]
    for test in args.tests:
        runs = [results[t.name].runs.get(test.name) if t.name in results else None for t in targets]
        row = [test.name]
        row += ["n/a" if r is None else f"{r.server_cpu_percent:.0f}%" for r in runs]
        row += ["n/a" if r is None or r.pg_backend_cpu_percent is None else f"{r.pg_backend_cpu_percent:.0f}%"
                for t, r in zip(targets, runs) if t.backend == "postgresql"]
        row += ["n/a" if r is None else f"{r.wrk_cpu_percent:.0f}%" for r in runs]
        row += ["n/a" if r is None else f"{r.other_cpu_percent:.0f}%" for r in runs]
        rows.append(row)
    return rows


def targets_report(args: argparse.Namespace, results: dict[str, TargetResult]) -> tuple[list[str], bool]:
    lines = ["Targets:"]
    all_met = True
    if "sqlite" in args.backends and "prefork" in args.servers:
        for name in ("json", "db"):
            test = next((t for t in args.tests if t.name == name), None)
            if test is None:
                continue
            value = rps(results, Target("prefork", "sqlite"), test)
            met = value is not None and value >= TARGET_RPS
            all_met &= met
            shown = "not measured" if value is None else f"{value:,.0f} req/s"
            lines.append(f"  /{name} >= {TARGET_RPS:,} responses/s with prefork-sqlite: {shown}: "
                         f"{'met' if met else 'MISSED'}")
    if len(args.servers) == 2:
        for backend in args.backends:
            for test in args.tests:
                value = ratio(results, backend, test)
                met = value is not None and value >= TARGET_RATIO
                all_met &= met
                shown = "n/a" if value is None else f"{value:.2f}x"
                lines.append(f"  {test.name:<9} prefork >= {TARGET_RATIO}x uvicorn ({backend}): {shown}: "
                             f"{'met' if met else 'MISSED'}")
    return lines, all_met


def report(args: argparse.Namespace, targets: list[Target], results: dict[str, TargetResult],
           pg_settings: dict[str, str] | None, pg_note: str) -> tuple[str, bool]:
    lines = [
        f"TechEmpower test types; {args.workers} workers per server, {args.duration}s per test "
        f"(+{args.warmup}s warm-up), wrk -t{args.wrk_threads} --timeout {WRK_TIMEOUT}s, "
        f"{CONNECTIONS} connections (plaintext {PIPELINE}-deep pipelined), queries={QUERIES}; "
        f"pinning {pinning(args)}",
        f"SQLite: WAL, synchronous = {args.synchronous} (prefork [database] synchronous and the "
        f"uvicorn app's PRAGMA); one file for both servers.",
    ]
    if pg_settings:
        lines.append(f"PostgreSQL {pg_settings.get('server_version')} at {bh_redact(args.pg_url)}: "
                     f"fsync={pg_settings.get('fsync')}, synchronous_commit="
                     f"{pg_settings.get('synchronous_commit')} (the cluster's own settings){pg_note}; "
                     "its backends are not pinned.")
    lines += ["", render_table(main_table(targets, args, results), left=(0, -1)), "",
              "pf = prefork, uv = uvicorn (uvloop, httptools, raw ASGI app), pg = PostgreSQL. "
              "Cells: req/s (wrk Requests/sec). pf/uv: prefork's req/s over uvicorn's.",
              "CPU: the server's process tree (master/supervisor + workers), utime+stime over wall "
              "time; 100% = one core."]
    marks = []
    runs = [r for res in results.values() for r in res.runs.values()]
    if any(r.client_bound for r in runs):
        marks.append(f"*: wrk used >= {CLIENT_BOUND_PERCENT}% of its CPU (client-bound)")
    if any(r.contended for r in runs):
        marks.append("!: another wrk ran during this measurement (not comparable)")
    if any(r.other_cpu_percent >= OTHER_LOAD_MARK for r in runs):
        marks.append(f"~: unrelated processes used >= {OTHER_LOAD_MARK:.0f}% of a core during this "
                     "measurement (see 'other' below): the machine was shared")
    if any(res.verify.get(t.name, "ok") != "ok" for res in results.values() for t in args.tests):
        marks.append("FAILED: wrong answer when verified, not measured (reason below)")
    lines += marks
    lines += ["", "CPU detail (% of one core over the measured run): srv = server process tree, "
              "pgbe = PostgreSQL backends of the benchmark database, wrk = the client, "
              "other = all other processes (busy time in /proc/stat, interrupts included, "
              "minus the three):",
              render_table(cpu_table(targets, args, results), left=(0,))]
    notes, load_notes = [], []
    for t in targets:
        res = results.get(t.name)
        if res is None:
            continue
        for test in args.tests:
            run = res.runs.get(test.name)
            if run is None:
                continue
            if run.errors:
                notes.append(f"  {t.name}/{test.name}: socket errors connect {run.connect_errors}, "
                             f"read {run.read_errors}, write {run.write_errors}, timeout "
                             f"{run.timeout_errors}; non-2xx/3xx {run.non_2xx} "
                             f"(of {run.requests:,} responses)")
            if run.log_counts:
                notes.append(f"  {t.name}/{test.name}: server log during the run: "
                             + ", ".join(f"{k} {v}" for k, v in sorted(run.log_counts.items())))
                notes += [f"      {line}" for line in run.log_excerpt]
            if run.other_cpu_percent >= OTHER_LOAD_MARK:
                load_notes.append(f"  {t.name}/{test.name}: other processes used {run.other_cpu_percent:.0f}% "
                             f"of a core; busiest: {', '.join(run.other_top) or 'short-lived ones'}")
            if set(run.server_processes_before) != set(run.server_processes_after):
                notes.append(f"  {t.name}/{test.name}: the server's processes changed during the run: "
                             f"{run.server_processes_before} -> {run.server_processes_after}")
    lines.append("")
    if notes:
        lines += ["errors, server log lines and process changes:", *notes]
    else:
        lines.append("errors: none (wrk socket errors, non-2xx/3xx responses, server log "
                     "ERROR/WARNING lines, worker changes)")
    if load_notes:
        lines += ["other load on the machine (~):", *load_notes]
    for t in targets:
        res = results.get(t.name)
        if res is None:
            continue
        if res.failure:
            lines.append(f"{t.name} FAILED: {res.failure}")
        for test, reason in res.verify.items():
            if reason != "ok":
                lines.append(f"{t.name} FAILED {test} (verification, not measured): {reason}")
        for test, reason in res.measure_failures.items():
            lines.append(f"{t.name} FAILED {test} (measurement): {reason}")
    target_lines, met = targets_report(args, results)
    seen = [f"{t.short} {run.pg_backends}" for t in targets if t.name in results
            for run in list(results[t.name].runs.values())[-1:] if run.pg_backends is not None]
    if seen:
        lines.append("PostgreSQL connections (backends of the benchmark database at the end of the last "
                     "run): " + ", ".join(seen) + " (prefork: one per pool thread, uvicorn: one per worker)")
    lines += [""] + target_lines
    return "\n".join(lines), met


def bh_redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@")).geturl()


def write_json(path: str, args: argparse.Namespace, targets: list[Target],
               results: dict[str, TargetResult], pg_settings: dict[str, str] | None) -> None:
    data = {
        "workers": args.workers,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        **client_settings(args),
        "connections": CONNECTIONS,
        "pipeline": PIPELINE,
        "queries": QUERIES,
        "sqlite_synchronous": args.synchronous,
        "postgresql": pg_settings,
        "tests": {t.name: asdict(t) for t in args.tests},
        "targets": {t.name: {"runs": {name: asdict(run) | {"errors": run.errors}
                                      for name, run in results[t.name].runs.items()},
                             "verify": results[t.name].verify,
                             "failure": results[t.name].failure,
                             "measure_failures": results[t.name].measure_failures,
                             "config": results[t.name].config}
                    for t in targets if t.name in results},
        "ratios": {backend: {test.name: ratio(results, backend, test) for test in args.tests}
                   for backend in args.backends},
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
