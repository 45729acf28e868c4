"""``bench/backends.py`` and ``prefork-bench backends``: the command line and the run."""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

from ..httpbench import make_docroot
from ..procs import Quiet
from ..wrk import add_client_options, prepare_client, split_choices
from .idle import idle_client, measure_idle
from .model import BACKENDS, BackendResult
from .report import report, write_json
from .throughput import bench_backend


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="prefork's epoll reactor against its uvloop and asyncio backends: "
                    "req/s with wrk and memory per idle keep-alive connection.")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes for the throughput part (default: 2)")
    parser.add_argument("--duration", type=int, default=5,
                        help="seconds of measurement per scenario (default: 5)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of wrk warm-up per server, 0 for none (default: 1)")
    parser.add_argument("--idle", type=int, default=15000,
                        help="idle keep-alive connections for the memory part, 0 to skip "
                             "(default: 15000)")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help=f"comma-separated, run in this order (default: {','.join(BACKENDS)})")
    parser.add_argument("--json", metavar="FILE", help="also write the raw numbers to FILE")
    add_client_options(parser, wrk_cpus="wrk and the idle client")
    parser.add_argument("--wait-max", type=float, default=600.0,
                        help="seconds, over the whole run, to wait for other wrk processes "
                             "to finish before measuring anyway (default: 600)")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy every server's logs into DIR")
    # internal: the idle-connection client process
    parser.add_argument("--idle-client", nargs=2, type=int, metavar=("PORT", "N"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.idle_client:
        return args
    args.backends = split_choices(parser, "--backends", args.backends, BACKENDS)
    if args.workers < 1 or args.duration < 1 or args.warmup < 0 or args.wrk_threads < 1:
        parser.error("--workers, --duration and --wrk-threads must be >= 1, --warmup >= 0")
    if args.idle < 0:
        parser.error("--idle must be >= 0")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if args.idle and hard != resource.RLIM_INFINITY and args.idle + 100 + 64 > hard:
        parser.error(f"--idle {args.idle}: the worker and the client need about "
                     f"{args.idle + 164} open files each, the hard limit is {hard}")
    return args


# --- main -----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.idle_client:
        return idle_client(*args.idle_client)
    if not prepare_client(args, also=(("ss", "iproute2"),)):
        return 2
    quiet = Quiet(args.wait_max)
    results = {b: BackendResult() for b in args.backends}
    with tempfile.TemporaryDirectory(prefix="prefork-backends-") as tmp:
        workdir = Path(tmp)
        docroot = make_docroot(workdir)
        for backend in args.backends:
            bench_backend(backend, args, workdir, docroot, quiet, results[backend])
        if args.idle:
            for backend in args.backends:
                measure_idle(backend, args, workdir, docroot, quiet, results[backend])
    text, ok = report(args, results)
    print(text)
    if args.json:
        write_json(args.json, args, results)
    everything_ran = all(not r.failure and not r.failed and (not args.idle or (r.idle and not r.idle.failure))
                         for r in results.values())
    return 0 if ok and everything_ran else 1


if __name__ == "__main__":
    sys.exit(main())
