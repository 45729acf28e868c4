"""``bench/reload.py`` and ``prefork-bench reload``: the command line, the report and the run."""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from ..net import URL_PATH
from ..tools import REPO_ROOT
from ..wrk import add_client_options, client_settings, pinning, prepare_client
from .runs import ERROR_LINES_SHOWN, MODES, PLANS, Row, rows_table, run_row
from .spread import Spread, measure_spread, spread_table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="prefork under SIGHUP reloads and worker SIGKILLs (wrk on GET /plaintext), "
                    "and its connection spread per accept strategy.")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument("--duration", type=int, default=20,
                        help="seconds of wrk per part-1 row (default: 20)")
    parser.add_argument("--reloads", type=int, default=20,
                        help="SIGHUPs per part-1 row (default: 20)")
    parser.add_argument("--kills", type=int, default=5,
                        help="worker SIGKILLs per reload+kill row (default: 5)")
    parser.add_argument("--accept", choices=("reuseport", "shared"), default="reuseport",
                        help="accept strategy for part 1 (default: reuseport)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of wrk warm-up per server, 0 for none (default: 1)")
    parser.add_argument("--settle-timeout", type=float, default=10.0,
                        help="seconds to wait for the full worker count after an event "
                             "(default: 10)")
    parser.add_argument("--spread-connections", type=int, default=400,
                        help="keep-alive connections for part 2 (default: 400)")
    parser.add_argument("--spread-duration", type=int, default=4,
                        help="seconds of wrk per strategy in part 2 (default: 4)")
    parser.add_argument("--skip-spread", action="store_true", help="do not run part 2")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed for choosing the workers to kill")
    parser.add_argument("--json", metavar="FILE", help="also write the raw numbers to FILE")
    add_client_options(parser)
    parser.add_argument("--keep-logs", metavar="DIR",
                        help="copy every server's error log into DIR")
    args = parser.parse_args(argv)
    if (args.workers < 1 or args.duration < 1 or args.reloads < 0 or args.kills < 0
            or args.warmup < 0 or args.wrk_threads < 1 or args.spread_connections < 1
            or args.spread_duration < 2 or args.settle_timeout <= 0):
        parser.error("--workers, --duration, --wrk-threads and --spread-connections must be "
                     ">= 1, --spread-duration >= 2, --reloads, --kills and --warmup >= 0")
    return args


# --- report ---------------------------------------------------------------


def report(args: argparse.Namespace, rows: list[Row], spreads: list[Spread]) -> str:
    lines = [
        f"Part 1: GET {URL_PATH} under reloads and kills; {args.workers} workers, "
        f"accept = {args.accept}, {args.duration}s per row, wrk -t{args.wrk_threads} -c64, "
        f"pinning {pinning(args)}",
        "",
        rows_table(rows),
        "",
        "connect/read/write/timeout: wrk socket errors; non-2xx: non-2xx/3xx responses; "
        "HUP/KILL: signals sent; reloaded: reloads the master completed (error log); "
        "settle max: longest wait for the full worker count after an event.",
        "A SIGKILLed worker's open keep-alive connections are lost by design (read errors "
        "in keepalive reload+kill).",
    ]
    for row in rows:
        name = f"{row.mode} {row.plan}"
        if row.failure:
            lines.append(f"  {name}: FAILED: {row.failure}")
        if row.left_over_workers:
            lines.append(f"  {name}: workers alive after the master stopped (SIGKILLed): "
                         f"{row.left_over_workers}")
        if row.unexpected_log_lines:
            shown = row.unexpected_log_lines[:ERROR_LINES_SHOWN]
            more = len(row.unexpected_log_lines) - len(shown)
            lines.append(f"  {name}: {len(row.unexpected_log_lines)} unexpected warning/error "
                         "line(s) in the error log:")
            lines += [f"    {line}" for line in shown]
            if more:
                lines.append(f"    ... and {more} more")
    if spreads:
        lines += [
            "",
            f"Part 2: connection spread; {args.workers} workers, wrk -c{args.spread_connections} "
            f"keep-alive for {args.spread_duration}s, counted with ss midway",
            "",
            spread_table(spreads),
            "",
            "min/max: least over most loaded worker (1.00 even); CV: stdev/mean (0 even).",
        ]
    missed = [f"{r.mode} {r.plan}" for r in rows if r.target_row and not r.clean]
    if any(r.target_row for r in rows):
        lines.append("")
        lines.append("target (0 errors in reload-only rows, reuseport): "
                     + (f"MISSED in {', '.join(missed)}" if missed else "met"))
    return "\n".join(lines)


def write_json(path: str, args: argparse.Namespace, rows: list[Row],
               spreads: list[Spread]) -> None:
    data = {
        "workers": args.workers,
        "duration_s": args.duration,
        "reloads": args.reloads,
        "kills": args.kills,
        "accept": args.accept,
        **client_settings(args),
        "seed": args.seed,
        "rows": [dict(asdict(r), target_row=r.target_row, clean=r.clean) for r in rows],
        "spread": [dict(asdict(s), counts=s.counts, total=s.total, min_max=s.min_max, cv=s.cv)
                   for s in spreads],
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


# --- main -----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not prepare_client(args, also=(("ss", "iproute2"),)):
        return 2
    if not (REPO_ROOT / "prefork" / "cli.py").exists():
        print(f"error: {REPO_ROOT / 'prefork' / 'cli.py'} does not exist", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    rows: list[Row] = []
    spreads: list[Spread] = []
    with tempfile.TemporaryDirectory(prefix="prefork-reload-") as tmp:
        for mode in MODES:
            for plan in PLANS:
                rows.append(run_row(mode, plan, args, Path(tmp), rng))
        if not args.skip_spread:
            for accept in ("reuseport", "shared"):
                spreads.append(measure_spread(accept, args, Path(tmp)))
    print(report(args, rows, spreads))
    if args.json:
        write_json(args.json, args, rows, spreads)
    return 1 if any(r.target_row and not r.clean for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
