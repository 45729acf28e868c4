"""Faults under load: what a client of prefork sees when things go wrong.

    python bench/faults.py [--duration 10] [--workers 2] [--connections 64] [--max-requests 2000] [--max-rss 100] [--no-pin]

For each scenario a fresh ``prefork-server`` (``--workers`` workers,
``worker_timeout = 2``) serves ``GET /plaintext`` to wrk (keep-alive,
``--connections`` connections) for ``--duration`` seconds (``recycle rss``:
at least 26 s, see below); at a third of the run the fault is injected:

    reload x20     20 SIGHUPs to the master, spread over the middle third
    asgi reload x20  the same against an ASGI app (``prefork_bench.faultapp``, Starlette
                   with a lifespan) at ``GET /``: each generation's workers start it up
                   before they take over, and the old ones shut it down
    kill worker    SIGKILL to one worker
    stop worker    SIGSTOP to one worker: past worker_timeout the master aborts it
    kill master    SIGKILL to the master: every worker must exit by itself
    recycle        no fault: [server] max_requests = --max-requests (jitter a
                   tenth of it), so workers are recycled again and again (/plaintext)
    recycle asgi   the same on the ASGI app of "asgi reload x20" (backend uvloop)
    recycle rss    no fault: [server] max_rss = --max-rss (MiB) and wrk on that app's
                   ``GET /leak``, a deliberate leak of 6 MiB a second of a worker's life
                   (``prefork_bench.faultapp``): from a fresh worker of about 27 MiB,
                   the default 100 MiB is passed about 12 s after it starts, past the
                   recycler's 10 s "young worker" back-off, so this one runs wrk for
                   at least 26 s (two recycles a slot); "young" counts recycles that
                   tripped that rule (target 0)

and the table shows wrk's requests, socket errors and non-2xx responses, the
workers recycled (the master's "replacing it" lines), and the recovery time:
for a worker fault, from the fault until a replacement worker in that slot
answers (the master respawns it); for the master, from the kill until no
process of the server is left and the port is free again. Target: 0 errors
for reloads and recycles (and at least one recycle, none of them "young");
otherwise errors only on the connections the lost worker held (at most about
``connections / workers``).

Servers are pinned to CPU 0 and wrk to CPU 1 with taskset (``--no-pin`` to
turn that off). Only processes this script started are signalled, by PID.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from prefork_bench.procs import cmdline, descendants
from prefork_bench.net import free_port, http_get, stop_process, wait_ready
from prefork_bench.report import render_table
from prefork_bench.tools import REPO_ROOT, ensure_program, pin
from prefork_bench.wrk import parse_wrk, run_wrk

SCENARIOS = ("reload x20", "asgi reload x20", "kill worker", "stop worker", "kill master", "recycle", "recycle asgi",
             "recycle rss")
LOSSLESS = ("reload x20", "asgi reload x20", "recycle", "recycle asgi", "recycle rss")  # not one failed request allowed
RELOADS = ("reload x20", "asgi reload x20")
RSS_RUN = 26  # seconds of wrk at least for "recycle rss": a worker passes max_rss at about 12 s of age
# what the server serves and wrk asks for: a built-in handler, or the ASGI app (issue 15)
ROUTES = {"builtin": ("/plaintext", '[[route]]\npath = "/plaintext"\nhandler = "plaintext"\n'),
          "asgi": ("/", '[[route]]\npath = "/"\nasgi = "prefork_bench.faultapp:app"\n'),
          "leak": ("/leak", '[[route]]\npath = "/"\nasgi = "prefork_bench.faultapp:app"\n')}


def target(name: str) -> tuple[str, str]:
    """The path wrk requests and the [[route]] table of scenario ``name``."""
    return ROUTES["leak" if name == "recycle rss" else "asgi" if "asgi" in name else "builtin"]


def duration_of(name: str, args: argparse.Namespace) -> int:
    """Seconds of wrk for scenario ``name``."""
    return max(args.duration, RSS_RUN) if name == "recycle rss" else args.duration


def recycle_limits(name: str, args: argparse.Namespace) -> str:
    """The [server] lines that make scenario ``name`` recycle workers ("" if it does not)."""
    if name == "recycle rss":
        return f"max_rss = {args.max_rss}\n"
    if name.startswith("recycle"):
        return f"max_requests = {args.max_requests}\nmax_requests_jitter = {args.max_requests // 10}\n"
    return ""


def workers_of(master: int) -> list[int]:
    return [p for p in descendants(master)[1:] if "worker process" in cmdline(p)]


def serves(port: int, path: str = "/plaintext") -> bool:
    try:
        return http_get(port, path, 1.0)[0] == 200
    except OSError:
        return False


def established(pid: int, port: int) -> int:
    """Connections to ``port`` that process ``pid`` holds (ss -tnp)."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if f"pid={pid}," in line)


def port_free(port: int) -> bool:
    """No socket listens on ``port`` any more (/proc/net/tcp: state 0A is LISTEN)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                if any(line.split()[3] == "0A" and int(line.split()[1].rsplit(":", 1)[1], 16) == port for line in f):
                    return False
        except OSError:
            continue
    return True


def wait_for(condition, timeout: float, step: float = 0.01) -> float | None:
    """Seconds until ``condition()`` held (polled), or None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(step)  # polling a condition that has no fd to wait on  # noqa
    return None


def inject(name: str, master: int, port: int, duration: float, result: dict) -> None:
    time.sleep(duration / 3)  # the fault comes a third of the way into the run  # noqa: a schedule, not readiness
    before = workers_of(master)
    if name in RELOADS:
        for _ in range(20):
            os.kill(master, signal.SIGHUP)
            time.sleep(duration / 3 / 20)  # noqa: spread over the middle third
        result["recovery"] = wait_for(lambda: len(workers_of(master)) == len(before)
                                      and not set(workers_of(master)) & set(before), 20)
    elif name in ("kill worker", "stop worker"):
        victim = before[0]
        result["victim_connections"] = established(victim, port)
        os.kill(victim, signal.SIGKILL if name == "kill worker" else signal.SIGSTOP)
        result["recovery"] = wait_for(lambda: len(workers_of(master)) == len(before)
                                      and victim not in workers_of(master) and serves(port), 20)
    elif name == "kill master":
        pids = descendants(master)
        os.kill(master, signal.SIGKILL)
        result["recovery"] = wait_for(lambda: not any(os.path.exists(f"/proc/{p}") and cmdline(p) for p in pids)
                                      and port_free(port), 20)
        result["orphans"] = [p for p in pids if os.path.exists(f"/proc/{p}") and cmdline(p)]
        for p in result["orphans"]:
            os.kill(p, signal.SIGKILL)


def run_scenario(name: str, args: argparse.Namespace, workdir: Path) -> dict:
    port = free_port()
    path, route = target(name)
    config = workdir / "server.toml"
    recycle = name.startswith("recycle")
    server = recycle_limits(name, args)
    duration = duration_of(name, args)
    config.write_text(f"""[server]
workers = {args.workers}
worker_timeout = 2
pid_file = "{workdir / 'prefork.pid'}"
{server}
[[listen]]
address = "127.0.0.1:{port}"
protocol = "http"

{route}
[log]
access_log = ""
error_log = "{workdir / 'error.log'}"
""")
    argv = pin(args.server_cpus, [sys.executable, "-m", "prefork.cli", "-c", str(config)], not args.no_pin)
    # the server (and the app) of this checkout, whatever is installed
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH")))))
    proc = subprocess.Popen(argv, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    result: dict = {"scenario": name}
    try:
        wait_ready(proc, port, 20)
        master = proc.pid  # taskset execs the server: same pid
        wait_for(lambda: len(workers_of(master)) == args.workers, 20)
        wrk = pin(args.wrk_cpus, ["wrk", "-t1", f"-c{args.connections}", f"-d{duration}s",
                                  "--timeout=5s", f"http://127.0.0.1:{port}{path}"], not args.no_pin)
        fault = threading.Thread(target=inject, args=(name, master, port, args.duration, result))
        if not recycle:
            fault.start()
        output, _ = run_wrk(wrk, duration)
        if not recycle:
            fault.join()
        parsed = parse_wrk(output)
        result.update(requests=parsed.requests, errors=parsed.socket_errors, non_2xx=parsed.non_2xx,
                      read_errors=parsed.read_errors, connect_errors=parsed.connect_errors)
        log = (workdir / "error.log").read_text()
        result["recycles"] = log.count(": replacing it")
        result["young"] = log.count("after it started: if a worker starts that big")
        result["crashes"] = log.count("; respawning") + log.count("could not start")
    finally:
        stop_process(proc)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--max-requests", type=int, default=2000, help="[server] max_requests of the recycle runs")
    parser.add_argument("--max-rss", type=int, default=100, help="[server] max_rss (MiB) of the recycle rss run")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--wrk-cpus", default="1")
    args = parser.parse_args(argv)
    ensure_program("wrk", "wrk")
    rows = [["scenario", "requests", "errors (read/connect)", "non-2xx", "lost worker held", "recycles", "recovery",
             "target"]]
    ok = True
    for name in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}: expected some of {', '.join(SCENARIOS)}")
        what = (f"max_rss {args.max_rss} MiB" if name == "recycle rss"
                else f"max_requests {args.max_requests}" if name.startswith("recycle")
                else f"fault at {args.duration / 3:.1f}s")
        print(f"[{name}] {duration_of(name, args)}s of wrk, {what}", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="prefork-faults-") as tmp:
            r = run_scenario(name, args, Path(tmp))
        # reloads lose nothing; a lost worker, at most the connections it held
        limit = 0 if name in LOSSLESS else r.get("victim_connections", args.connections)
        if name.startswith("recycle"):
            met = r["errors"] + r["non_2xx"] == 0 and r["recycles"] > 0 and not r["crashes"] and not r["young"]
        elif name == "kill master":
            met = r.get("recovery") is not None and not r.get("orphans")
        else:
            met = r["errors"] + r["non_2xx"] <= limit and r.get("recovery") is not None
        ok &= met
        recovery = "-" if r.get("recovery") is None else f"{r['recovery'] * 1000:.0f} ms"
        rows.append([name, f"{r['requests']:,}", f"{r['errors']:,} ({r['read_errors']}/{r['connect_errors']})",
                     f"{r['non_2xx']:,}", str(r.get("victim_connections", "-")), str(r["recycles"]) + (f" ({r['young']} young)" if r["young"] else ""), recovery,
                     "met" if met else "MISSED"])
    print(render_table(rows))
    print("\nrecovery: worker faults, until a replacement in that slot answers; the master, until no process "
          "of the server is left and the port is free. target: reloads lose nothing; a lost worker costs at "
          "most its own connections; recycling (max_requests, max_rss) loses nothing, every worker replaced by a "
          "successor in its slot that was ready first, none for max_rss before it was 10 s old. After the master is killed the server is gone, so wrk's errors for the rest of "
          "the run are expected there; that row's target is that every worker exits and nothing holds the port.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
