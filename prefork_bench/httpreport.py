"""The report of ``prefork-bench http``: the table, the rounds, the JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict, replace
from pathlib import Path

from .report import render_table
from .wrk import CLIENT_BOUND_PERCENT, STATIC_SERVERS, Scenario, WrkResult, client_settings, pinning, takes_part

def format_rps(result: WrkResult) -> str:
    return f"{result.requests_per_sec:,.0f}" + ("*" if result.client_bound else "")


def format_p99(result: WrkResult) -> str:
    if result.p99_ms is None or not result.latency_valid:
        return "n/a"
    return f"{result.p99_ms:.2f} ms"


def format_transfer(result: WrkResult) -> str:
    if result.transfer_bytes_per_sec is None:
        return "n/a"
    return f"{result.transfer_bytes_per_sec / (1 << 20):,.1f} MB/s"


def format_ratio(ours: WrkResult | None, theirs: WrkResult | None) -> str:
    if ours is None or theirs is None or not theirs.requests_per_sec:
        return "n/a"
    return f"{ours.requests_per_sec / theirs.requests_per_sec:.2f}x"


def table_rows(servers: list[str], scenarios: list[Scenario],
               results: dict[str, dict[str, WrkResult]],
               scenario_failures: dict[str, dict[str, str]]) -> list[list[str]]:
    others = [s for s in servers if s != "prefork"] if "prefork" in servers else []
    header = ["scenario"]
    for server in servers:
        header += [f"{server} req/s", f"{server} p99"]
    header += [f"prefork/{other}" for other in others] + ["errors"]
    rows = [header]
    for scenario in scenarios:
        cells = {s: results.get(s, {}).get(scenario.name) for s in servers}
        row = [scenario.name]
        for server in servers:
            result = cells[server]
            if not takes_part(server, scenario):
                row += ["-", "-"]
            elif scenario.name in scenario_failures.get(server, {}):
                row += ["FAILED", "-"]
            else:
                row.append("n/a" if result is None else format_rps(result))
                row.append("n/a" if result is None else format_p99(result))
        row += ["-" if not takes_part(other, scenario)
                else format_ratio(cells["prefork"], cells[other]) for other in others]
        errors = [f"{s} {r.all_errors}" for s, r in cells.items() if r and r.all_errors]
        row.append(", ".join(errors) or "-")
        rows.append(row)
    return rows


def error_footnotes(servers: list[str], scenarios: list[Scenario],
                    results: dict[str, dict[str, WrkResult]]) -> list[str]:
    notes = []
    for scenario in scenarios:
        for server in servers:
            result = results.get(server, {}).get(scenario.name)
            if result and result.all_errors:
                notes.append(f"  {scenario.name} {server}: socket errors connect "
                             f"{result.connect_errors}, read {result.read_errors}, write "
                             f"{result.write_errors}, timeout {result.timeout_errors}; "
                             f"non-2xx/3xx {result.non_2xx}")
    return notes


def report(args: argparse.Namespace, results: dict[str, dict[str, WrkResult]],
           failures: dict[str, str], scenario_failures: dict[str, dict[str, str]]) -> str:
    legend = ("req/s: responses per second; p99: 99th percentile latency "
              "(n/a for pipelining, where wrk's percentiles are wrong)")
    if "prefork" in args.servers and len(args.servers) > 1:
        legend += "; prefork/X: prefork's req/s over X's"
    static = [s for s in args.scenarios if s.is_static]
    sitting_out = [server for server in args.servers if server not in STATIC_SERVERS]
    if static and sitting_out:
        legend += f"; -: {', '.join(sitting_out)} not run on static files"
    if static and "nginx" in args.servers:
        legend += ".\nStatic files: nginx with sendfile, tcp_nopush and open_file_cache"
    paths = ", ".join(dict.fromkeys(s.path for s in args.scenarios))
    lines = [
        f"GET {paths}; {args.workers} worker(s) per server, {args.duration}s per scenario"
        + (f", median of {args.rounds} interleaved rounds" if args.rounds > 1 else "") + ", "
        f"wrk -t{args.wrk_threads}, pinning {pinning(args)}",
        "",
        render_table(table_rows(args.servers, args.scenarios, results, scenario_failures)),
        "",
        legend + ".",
    ]
    for scenario in args.scenarios:
        if not scenario.show_transfer:
            continue
        rates = [f"{server} {format_transfer(by_scenario[scenario.name])}"
                 for server, by_scenario in results.items() if scenario.name in by_scenario]
        if rates:
            lines.append(f"{scenario.name} transfer (wrk Transfer/sec, MB = 2^20 bytes): "
                         + ", ".join(rates))
    if any(r.client_bound for by_scenario in results.values() for r in by_scenario.values()):
        lines.append(f"*: wrk used >= {CLIENT_BOUND_PERCENT}% of its CPU, so the client may "
                     "have been the limit, not the server.")
    notes = error_footnotes(args.servers, args.scenarios, results)
    if notes:
        lines += ["errors (wrk socket errors and non-2xx/3xx responses):", *notes]
    else:
        lines.append("errors: none (wrk socket errors and non-2xx/3xx responses)")
    lines += [f"{server} failed: {reason}" for server, reason in failures.items()]
    lines += [f"{server} FAILED {scenario} (static-file check, not measured): {reason}"
              for server, by_scenario in scenario_failures.items()
              for scenario, reason in by_scenario.items()]
    return "\n".join(lines)


def round_ratios(rounds: dict[str, list[dict[str, WrkResult]]],
                 scenarios: list[Scenario]) -> dict[str, dict[str, list[float]]]:
    """prefork's req/s over each other server's, round by round: a round runs
    the servers back to back, so its ratio moves less with the machine's
    drift than a ratio of medians. {other: {scenario: [ratio per round]}}."""
    ours = rounds.get("prefork")
    if not ours:
        return {}
    out: dict[str, dict[str, list[float]]] = {}
    for other, theirs in rounds.items():
        if other == "prefork":
            continue
        for scenario in scenarios:
            ratios = [mine[scenario.name].requests_per_sec / them[scenario.name].requests_per_sec
                      for mine, them in zip(ours, theirs)
                      if scenario.name in mine and scenario.name in them
                      and them[scenario.name].requests_per_sec]
            if len(ratios) > 1:
                out.setdefault(other, {})[scenario.name] = ratios
    return out


def format_round_ratios(ratios: dict[str, dict[str, list[float]]]) -> list[str]:
    lines = []
    for other, by_scenario in ratios.items():
        lines.append(f"prefork/{other} round by round (each round runs the servers back to back):")
        width = max(len(name) for name in by_scenario)
        for name, values in by_scenario.items():
            lines.append(f"  {name.ljust(width)}  " + " ".join(f"{v:.2f}" for v in values)
                         + f"  (median {statistics.median(values):.2f}, min {min(values):.2f})")
    return lines


def median_round(runs: list[dict[str, WrkResult]]) -> dict[str, WrkResult]:
    """Per scenario, the round with the median req/s; errors are summed over
    every round, so none is hidden by the choice."""
    merged: dict[str, WrkResult] = {}
    for name in {name for run in runs for name in run}:
        results = sorted((run[name] for run in runs if name in run), key=lambda r: r.requests_per_sec)
        middle = results[(len(results) - 1) // 2]
        merged[name] = replace(middle, **{field: sum(getattr(r, field) for r in results) for field in
                                          ("connect_errors", "read_errors", "write_errors",
                                           "timeout_errors", "non_2xx")})
    return merged


def write_json(path: str, args: argparse.Namespace, results: dict[str, dict[str, WrkResult]],
               failures: dict[str, str], scenario_failures: dict[str, dict[str, str]],
               round_ratios: dict[str, dict[str, list[float]]] | None = None) -> None:
    data = {
        "workers": args.workers,
        "duration_s": args.duration,
        **client_settings(args),
        "scenarios": {s.name: asdict(s) for s in args.scenarios},
        "results": {server: {name: asdict(r) for name, r in by_scenario.items()}
                    for server, by_scenario in results.items()},
        "failures": failures,
        "scenario_failures": scenario_failures,
        "round_ratios": round_ratios or {},
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
