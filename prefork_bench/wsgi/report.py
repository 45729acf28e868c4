"""The tables, the ratios and the targets of ``bench/wsgi.py`` (the tables are
``bench/asgi.py``'s, over this bench's servers and scenarios)."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path

from ..asgi.report import Results, ratio_table, table, targets
from ..httpreport import format_p99, format_round_ratios, format_rps, round_ratios
from ..report import render_table
from ..wrk import pinning
from .slowloris import Held

HELLO, SLOW = "a-hello", "d-slowloris"
# (scenario, other server, prefork's req/s over the other's at least)
TARGETS = ((HELLO, "gunicorn-gthread", 3.0), (HELLO, "granian", 1.0))
SLOW_LEAST = 0.9        # prefork's d-slowloris req/s over its own a-hello req/s, at least


def slow_ratio(results: Results, server: str) -> tuple[float | None, list[float]]:
    """The server's req/s with the slow clients over its req/s without them (its
    a-hello run of the same round): the median of the rounds, and the rounds'."""
    values = [r[SLOW].requests_per_sec / r[HELLO].requests_per_sec
              for r in results.rounds.get(server, ())
              if SLOW in r and HELLO in r and r[HELLO].requests_per_sec]
    return (statistics.median(values) if values else None), values


def slow_table(results: Results, held: dict[str, list[Held]]) -> str:
    rows = [["server", "req/s without", "req/s with", "with/without", "p99 without", "p99 with",
             "slow conns open at end"]]
    for server in results.args.servers:
        by = results.median.get(server, {})
        without, with_ = by.get(HELLO), by.get(SLOW)
        ratio, _ = slow_ratio(results, server)
        ends = [h.open_at_end for h in held.get(server, ())]
        rows.append([server, format_rps(without) if without else "-",
                     format_rps(with_) if with_ else "FAILED",
                     "n/a" if ratio is None else f"{ratio:.2f}x",
                     format_p99(without) if without and without.requests else "-",
                     format_p99(with_) if with_ and with_.requests else "-",
                     f"{statistics.median(ends):,.0f} of {results.args.slow}" if ends else "-"])
    return render_table(rows, left=(0,))


def report(results: Results, held: dict[str, list[Held]], load: str) -> tuple[str, bool]:
    args = results.args
    lines = [
        f"WSGI servers, {args.workers} worker(s) of {args.threads} threads each; {args.duration}s per "
        f"scenario, median of {args.rounds} interleaved round(s); wrk -t{args.wrk_threads}, "
        f"pinning {pinning(args)}",
        f"machine: {load}",
        "",
        table(results),
        "",
        "req/s: wrk Requests/sec (median round); p99: wrk's 99th percentile latency; CPU us/req: "
        "utime+stime of the server's processes over the run / requests (median of the rounds); "
        "other CPU: the machine's busy time less the server's and wrk's, % of one core. "
        "*: wrk used >= 90% of its CPU.",
        "",
        ratio_table(results),
        "(prefork/X: the median of the rounds' ratios)",
    ]
    lines += format_round_ratios(round_ratios(results.rounds, args.scenarios))
    names = {s.name for s in args.scenarios}
    target_lines, ok = targets(results, TARGETS)
    if SLOW in names and HELLO in names:
        lines += ["", f"{SLOW}: GET / with {args.slow} slowloris connections held open (each a "
                  "partial head, one more byte every few seconds) against a-hello, the same "
                  "round without them", slow_table(results, held)]
        if "prefork" in args.servers:
            value, _ = slow_ratio(results, "prefork")
            met = value is not None and value >= SLOW_LEAST
            ok &= met
            target_lines.append(f"  {SLOW}: prefork with/without >= {SLOW_LEAST:.1f}x: "
                                f"{'n/a' if value is None else f'{value:.2f}x'} -> "
                                f"{'met' if met else 'MISSED'}")
    if target_lines:
        lines += ["", f"targets: {'MET' if ok else 'NOT MET'}", *target_lines]
    lines += results.failures()
    return "\n".join(lines), ok


def write_json(path: str, results: Results, held: dict[str, list[Held]], load: str) -> None:
    data = {
        "workers": results.args.workers, "threads": results.args.threads, "machine": load,
        "median": {server: {name: asdict(run) for name, run in by.items()}
                   for server, by in results.median.items()},
        "ratios": {o: {s.name: results.ratio(s.name, o)[0] for s in results.args.scenarios}
                   for o in results.args.servers if o != "prefork"},
        "slowloris": {server: {"with_over_without": slow_ratio(results, server)[0],
                               "held": [asdict(h) for h in held.get(server, ())]}
                      for server in results.args.servers},
        "failures": results.failures(),
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
