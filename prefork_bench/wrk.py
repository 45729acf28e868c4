"""wrk: the scenarios of ``prefork-bench http``, its command lines, running it, reading its report.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template

from .net import HOST, STOP_TIMEOUT, URL_PATH
from .procs import raise_nofile, wrk_pids
from .tools import BenchError, ensure_program, pin

BODY = "Hello, World!"
STATIC_PREFIX = "/static/"
STATIC_FILES = {"4k.bin": 4096, "1m.bin": 1 << 20}   # name -> size in bytes
STATIC_SERVERS = ("prefork", "nginx")                 # who takes part in the static scenarios
SERVERS = ("prefork", "nginx", "uvicorn")
WRK_GRACE = 30.0               # seconds wrk may overrun --duration before it is killed
POLL_OTHERS = 0.5              # seconds between scans for other wrk processes during a run
CLIENT_BOUND_PERCENT = 90      # wrk CPU (per thread) from which a run is marked client-bound


PIPELINE_LUA = Template("""\
-- Pipelining: every write carries $depth requests; wrk counts each response.
local batch

function init(args)
   local requests = {}
   for i = 1, $depth do
      requests[i] = wrk.format("GET", "$path")
   end
   batch = table.concat(requests)
end

function request()
   return batch
end
""")


@dataclass(frozen=True)
class Scenario:
    name: str
    connections: int
    description: str
    close: bool = False         # send "Connection: close": one connection per request
    pipeline: int = 1           # requests written at once per connection
    path: str = URL_PATH        # what every request fetches
    static_file: str = ""       # the file under STATIC_PREFIX this scenario fetches, if any
    show_transfer: bool = False  # a bandwidth test: report wrk's Transfer/sec too

    @property
    def is_static(self) -> bool:
        return bool(self.static_file)


def _static(name: str, connections: int, file: str, description: str,
            show_transfer: bool = False) -> Scenario:
    return Scenario(name, connections, description, path=STATIC_PREFIX + file,
                    static_file=file, show_transfer=show_transfer)


SCENARIOS = (
    Scenario("keepalive-64", 64, "keep-alive, 64 connections"),
    Scenario("keepalive-1000", 1000, "keep-alive, 1000 connections"),
    Scenario("close-64", 64, "new connection per request, 64 connections", close=True),
    Scenario("pipeline16-64", 64, "16-deep pipelining, 64 connections", pipeline=16),
    _static("static4k-64", 64, "4k.bin", "keep-alive, 64 connections, GET /static/4k.bin"),
    _static("static1m-16", 16, "1m.bin", "keep-alive, 16 connections, GET /static/1m.bin",
            show_transfer=True),
)


def takes_part(server: str, scenario: Scenario) -> bool:
    """Whether a server is measured in a scenario (uvicorn sits out the static ones)."""
    return not scenario.is_static or server in STATIC_SERVERS


@dataclass
class WrkResult:
    requests_per_sec: float
    requests: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeout_errors: int = 0
    non_2xx: int = 0
    latency_valid: bool = True  # False where wrk's percentiles are known to be wrong
    transfer_bytes_per_sec: float | None = None  # wrk's Transfer/sec, in bytes
    wrk_cpu_percent: float | None = None  # wrk's CPU time over the run, % of one core
    client_bound: bool = False  # wrk was (nearly) saturated: the limit may be the client

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeout_errors

    @property
    def all_errors(self) -> int:
        return self.socket_errors + self.non_2xx


# --- the client side ---------------------------------------------------------------


def add_client_options(parser: argparse.ArgumentParser, wrk_cpus: str = "wrk", timeout: bool = True) -> None:
    """--no-pin, --server-cpus, --wrk-cpus, --wrk-threads and (with ``timeout``)
    --wrk-timeout: where the servers and wrk run, and how wrk runs."""
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin servers and wrk to CPUs with taskset")
    parser.add_argument("--server-cpus", default="0",
                        help="taskset CPU list for the servers (default: 0)")
    parser.add_argument("--wrk-cpus", default="1",
                        help=f"taskset CPU list for {wrk_cpus} (default: 1)")
    parser.add_argument("--wrk-threads", type=int, default=1,
                        help="wrk threads (default: 1, one per wrk CPU)")
    if timeout:
        parser.add_argument("--wrk-timeout", type=int, default=5,
                            help="seconds before wrk counts a request as timed out (default: 5)")


def pinning(args: argparse.Namespace) -> str:
    """The pinning of add_client_options, for a report's heading."""
    return "off" if args.no_pin else f"servers on CPU {args.server_cpus}, wrk on CPU {args.wrk_cpus}"


def client_settings(args: argparse.Namespace) -> dict:
    """The settings of add_client_options, for a report's JSON."""
    return {"pinned": not args.no_pin, "server_cpus": args.server_cpus, "wrk_cpus": args.wrk_cpus,
            "wrk_threads": args.wrk_threads}


def split_choices(parser: argparse.ArgumentParser, option: str, text: str,
                  choices: tuple[str, ...] | list[str]) -> list[str]:
    """A comma-separated option's items, in order, each once; a parser error when
    one is not among ``choices`` or there is none."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in choices]
    if unknown or not items:
        parser.error(f"{option}: expected some of {', '.join(choices)}, got {text!r}")
    return list(dict.fromkeys(items))


def prepare_client(args: argparse.Namespace, files: int = 0, also: tuple[tuple[str, str], ...] = ()) -> bool:
    """Raise the fd limit (a warning when it stays under ``files``) and make sure
    of wrk, of the ``also`` programs ((name, apt package) pairs) and, unless
    --no-pin, of taskset. False, after saying why on stderr, when one is missing."""
    nofile = raise_nofile()
    if nofile < files:
        print(f"warning: only {nofile} open files allowed", file=sys.stderr)
    try:
        ensure_program("wrk", "wrk")
        for name, package in also:
            ensure_program(name, package)
        if not args.no_pin:
            ensure_program("taskset", "util-linux")
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return False
    return True


# --- running wrk ------------------------------------------------------------------


def write_pipeline_script(workdir: Path, depth: int) -> Path:
    path = workdir / f"pipeline{depth}.lua"
    path.write_text(PIPELINE_LUA.substitute(depth=depth, path=URL_PATH))
    return path


def wrk_command(scenario: Scenario, port: int, duration: int, args: argparse.Namespace,
                workdir: Path) -> list[str]:
    argv = ["wrk", f"-t{args.wrk_threads}", f"-c{max(scenario.connections, args.wrk_threads)}",
            f"-d{duration}s", f"--timeout={args.wrk_timeout}s", "--latency"]
    if scenario.close:
        argv += ["-H", "Connection: close"]
    if scenario.pipeline > 1:
        argv += ["-s", str(write_pipeline_script(workdir, scenario.pipeline))]
    argv.append(f"http://{HOST}:{port}{scenario.path}")
    return pin(args.wrk_cpus, argv, not args.no_pin)


def wait_wrk(proc: subprocess.Popen, duration: float, poll: float = 0.05) -> tuple[resource.struct_rusage, list[int]]:
    """Wait for a wrk child to finish, noting the other wrk processes seen
    meanwhile (a scan every POLL_OTHERS); killed by PID past duration +
    WRK_GRACE. Returns (its rusage, the others' pids)."""
    others: set[int] = set()
    deadline = time.monotonic() + duration + WRK_GRACE
    next_scan = 0.0
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return usage, sorted(others)
            now = time.monotonic()
            if now >= deadline:
                raise BenchError(f"wrk did not finish within {duration + WRK_GRACE:.0f}s")
            if now >= next_scan:
                others.update(wrk_pids(exclude=proc.pid))
                next_scan = now + POLL_OTHERS
            time.sleep(poll)  # polled: wait4 with WNOHANG, between the scans for others
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
                proc.wait(timeout=STOP_TIMEOUT)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(argv: list[str], duration: int) -> tuple[str, float]:
    """Run wrk: (its report, the CPU it used in percent of one core).

    wrk is the only child reaped while a server runs, so the growth of the
    children's CPU time over the run is wrk's.
    """
    cpu_before, wall_before = children_cpu_seconds(), time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + WRK_GRACE)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {duration + WRK_GRACE:.0f}s") from None
    cpu_percent = (100 * (children_cpu_seconds() - cpu_before)
                   / max(time.monotonic() - wall_before, 1e-6))
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}: "
                         f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout, cpu_percent


_BYTE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}  # wrk's: binary
_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise BenchError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _TIME_UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Read the numbers out of wrk's --latency report."""
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", output, re.M)
    total = re.search(r"^\s*(\d+) requests in ", output, re.M)
    if not rps or not total:
        raise BenchError(f"unexpected wrk output:\n{output}")
    percentiles = dict(re.findall(r"^\s*(50|90|99)%\s+(\S+)\s*$", output, re.M))
    latency = {p: parse_duration_ms(v) for p, v in percentiles.items()}
    result = WrkResult(requests_per_sec=float(rps.group(1)), requests=int(total.group(1)),
                       p50_ms=latency.get("50"), p90_ms=latency.get("90"),
                       p99_ms=latency.get("99"))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    if errors:
        (result.connect_errors, result.read_errors,
         result.write_errors, result.timeout_errors) = map(int, errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        result.non_2xx = int(non_2xx.group(1))
    transfer = re.search(r"^Transfer/sec:\s*([\d.]+)([KMGT]?B)\s*$", output, re.M)
    if transfer:
        result.transfer_bytes_per_sec = float(transfer.group(1)) * _BYTE_UNITS[transfer.group(2)]
    return result
