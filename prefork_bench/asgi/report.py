"""The table, the ratios, the targets and the JSON of ``bench/asgi.py``."""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict, replace
from pathlib import Path

from ..httpreport import format_p99, format_round_ratios, format_rps, median_round, round_ratios
from ..report import render_table
from ..wrk import client_settings, pinning
from .measure import IDLE_SCENARIO, Run, Turn

# (scenario, other server, prefork's req/s over the other's at least)
TARGETS = (("a-hello", "uvicorn", 1.5), ("a-hello", "granian", 1.0), ("b-fastapi", "uvicorn", 1.2))
IDLE_TARGET = "uvicorn"   # prefork's bytes per idle connection at most this server's


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


class Results:
    """Every turn of every round, and what the report reads from them."""

    def __init__(self, args: argparse.Namespace, turns: dict[str, list[Turn]]):
        self.args = args
        self.turns = turns      # server -> its turn in each round, in round order
        self.rounds = {server: [t.runs for t in ts] for server, ts in turns.items()}
        self.median: dict[str, dict[str, Run]] = {}
        for server, runs in self.rounds.items():
            merged = median_round([r for r in runs if r])
            for name, run in merged.items():   # CPU per request: the median of the rounds' own
                cpu = [r[name].cpu_us_per_request for r in runs
                       if name in r and r[name].cpu_us_per_request is not None]
                merged[name] = replace(run, cpu_us_per_request=_median(cpu))
            self.median[server] = merged

    def idle(self, server: str, attr: str = "pss_per_conn") -> float | None:
        return _median([getattr(t.idle, attr) for t in self.turns.get(server, ())
                        if t.idle is not None and getattr(t.idle, attr) is not None])

    def ratio(self, scenario: str, other: str) -> tuple[float | None, list[float]]:
        """prefork's req/s over ``other``'s: the median of the rounds' ratios (a round
        runs the servers back to back, so its ratio moves less with the machine's load
        than a ratio of medians), and those ratios."""
        values = [ours[scenario].requests_per_sec / theirs[scenario].requests_per_sec
                  for ours, theirs in zip(self.rounds.get("prefork", ()), self.rounds.get(other, ()))
                  if scenario in ours and scenario in theirs and theirs[scenario].requests_per_sec]
        return _median(values), values

    def failures(self) -> list[str]:
        return [f"{server} round {i + 1} FAILED: {turn.failure}"
                for server, ts in self.turns.items() for i, turn in enumerate(ts) if turn.failure]


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def table(results: Results) -> str:
    args = results.args
    rows = [["scenario", "server", "req/s", "p99", "CPU us/req", "idle B/conn", "other CPU", "errors"]]
    for scenario in args.scenarios:
        for i, server in enumerate(args.servers):
            run = results.median.get(server, {}).get(scenario.name)
            idle = results.idle(server) if scenario.name == IDLE_SCENARIO and args.idle else None
            rows.append([scenario.name if i == 0 else "", server,
                         format_rps(run) if run else "FAILED",
                         format_p99(run) if run else "-",
                         _fmt(run and run.cpu_us_per_request, ",.1f"),
                         "" if scenario.name != IDLE_SCENARIO else _fmt(idle, ",.0f"),
                         _fmt(run and run.other_cpu_percent, ".0f", "%"),
                         str(run.all_errors) if run else "-"])
    return render_table(rows, left=(0, 1))


def ratio_table(results: Results) -> str:
    args = results.args
    others = [s for s in args.servers if s != "prefork"]
    rows = [["scenario", *[f"prefork/{o}" for o in others]]]
    for scenario in args.scenarios:
        rows.append([scenario.name, *[_fmt(results.ratio(scenario.name, o)[0], ".2f", "x")
                                      for o in others]])
    if args.idle and any(s.name == IDLE_SCENARIO for s in args.scenarios):
        ours = results.idle("prefork")
        rows.append(["idle B/conn", *[_fmt(ours / theirs if ours is not None and theirs else None,
                                           ".2f", "x") for theirs in map(results.idle, others)]])
    return render_table(rows, left=(0,))


def targets(results: Results, wanted: tuple[tuple[str, str, float], ...] = TARGETS
            ) -> tuple[list[str], bool]:
    """One line per target of ``wanted`` (scenario, other server, least ratio) that
    the run can judge, and the idle-memory one; whether all were met."""
    args = results.args
    names = {s.name for s in args.scenarios}
    lines, ok = [], True
    for scenario, other, least in wanted:
        if scenario not in names or other not in args.servers or "prefork" not in args.servers:
            continue
        value, _ = results.ratio(scenario, other)
        met = value is not None and value >= least
        ok &= met
        lines.append(f"  {scenario}: prefork/{other} >= {least:.1f}x: {_fmt(value, '.2f', 'x')} "
                     f"-> {'met' if met else 'MISSED'}")
    if args.idle and IDLE_SCENARIO in names and IDLE_TARGET in args.servers and "prefork" in args.servers:
        ours, theirs = results.idle("prefork"), results.idle(IDLE_TARGET)
        met = ours is not None and theirs is not None and ours <= theirs
        ok &= met
        lines.append(f"  idle bytes per keep-alive connection (PSS): prefork {_fmt(ours, ',.0f')} "
                     f"<= {IDLE_TARGET} {_fmt(theirs, ',.0f')} -> {'met' if met else 'MISSED'}")
    return lines, ok


def report(results: Results, load: str) -> tuple[str, bool]:
    args = results.args
    lines = [
        f"ASGI servers, {args.workers} worker(s) each; {args.duration}s per scenario, median of "
        f"{args.rounds} interleaved round(s); wrk -t{args.wrk_threads}, pinning {pinning(args)}",
        f"machine: {load}",
        "",
        table(results),
        "",
        "req/s: wrk Requests/sec (median round); p99: wrk's 99th percentile latency; CPU us/req: "
        "utime+stime of the server's processes over the run / requests (median of the rounds); "
        f"idle B/conn: the server's PSS (summed over its processes) with {args.idle} idle keep-alive "
        "connections minus without, per connection (median of the rounds); other CPU: the machine's "
        "busy time less the server's and wrk's, % of one core (other processes, softirq). "
        "*: wrk used >= 90% of its CPU.",
        "",
        ratio_table(results),
        "(prefork/X: the median of the rounds' ratios; idle B/conn: prefork's over X's, lower is less memory)",
    ]
    lines += format_round_ratios(round_ratios(results.rounds, args.scenarios))
    target_lines, ok = targets(results)
    if target_lines:
        lines += ["", f"targets: {'MET' if ok else 'NOT MET'}", *target_lines]
    lines += results.failures()
    return "\n".join(lines), ok


def write_json(path: str, results: Results, load: str) -> None:
    args = results.args
    data = {
        "workers": args.workers, "duration_s": args.duration, "rounds": args.rounds,
        "idle_connections": args.idle, "machine": load, **client_settings(args),
        "scenarios": {s.name: asdict(s) for s in args.scenarios},
        "median": {server: {name: asdict(run) for name, run in by.items()}
                   for server, by in results.median.items()},
        "ratios": {o: {s.name: dict(zip(("median", "rounds"), results.ratio(s.name, o)))
                       for s in args.scenarios} for o in args.servers if o != "prefork"},
        "idle_bytes_per_conn": {server: {"pss": results.idle(server),
                                         "rss": results.idle(server, "rss_per_conn")}
                                for server in args.servers},
        "rounds_detail": {server: [{"runs": {n: asdict(r) for n, r in t.runs.items()},
                                    "idle": asdict(t.idle) if t.idle else None,
                                    "failure": t.failure} for t in ts]
                          for server, ts in results.turns.items()},
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
