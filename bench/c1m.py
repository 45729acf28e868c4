"""A million concurrent connections to prefork-server, measured; writes docs/BENCHMARKS.md.

    python bench/c1m.py [--count 1000000] [--rate 10000] [--hold 600] [--hold2 120]
                        [--apply-sysctls] [--out docs]

Two runs, each against a freshly started ``prefork-server -c conf/c1m.toml``
(56 workers x 19,800 connections), each driven by ``prefork-bench
connections`` from this same machine over many 127.0.0.x source addresses:

1. ``--count`` connections held ``--hold`` seconds, each sending one
   ``GET /plaintext`` every 60 s;
2. the same number held ``--hold2`` seconds, each sending one every 20 s
   (50,000 responses/s across a million connections).

First the limits doctor (``prefork-server --check-limits``) says what the
machine lacks; ``--apply-sysctls`` sets the sysctls it needs (root only):
fs.file-max, the ephemeral port range, somaxconn, tcp_max_syn_backlog and
nf_conntrack_max (with its hash size). Everything started here is stopped by
PID at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prefork_bench import cli
from prefork_bench.connections import render_connections
from prefork_bench.net import status_rows, stop_process, wait_ready
from prefork_bench.procs import meminfo, raise_nofile
from prefork_bench.tools import REPO_ROOT as REPO

CONFIG = REPO / "conf" / "c1m.toml"
END = "<!-- the end of bench/c1m.py's part: what follows is kept when it writes the page again -->\n"
PORT = 8080
SYSCTLS = {
    "fs.file-max": "3000000",
    "net.ipv4.ip_local_port_range": "1024 65535",
    "net.core.somaxconn": "65535",
    "net.ipv4.tcp_max_syn_backlog": "65535",
    "net.netfilter.nf_conntrack_max": "2500000",
}
CONNTRACK_HASHSIZE = Path("/sys/module/nf_conntrack/parameters/hashsize")


def sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def apply_sysctls(saved: dict[Path, str]) -> list[str]:
    """Set what the runs need; ``saved`` gets the values they replace."""
    done = []
    for name, value in SYSCTLS.items():
        path = sysctl_path(name)
        if not path.exists():
            continue
        saved[path] = path.read_text()
        path.write_text(value)
        done.append(f"sysctl -w {name}=\"{value}\"")
    if CONNTRACK_HASHSIZE.exists():
        saved[CONNTRACK_HASHSIZE] = CONNTRACK_HASHSIZE.read_text()
        CONNTRACK_HASHSIZE.write_text("1048576")
        done.append(f"echo 1048576 > {CONNTRACK_HASHSIZE}")
    return done


def restore_sysctls(saved: dict[Path, str]) -> None:
    """Put the machine back as it was: a wide ephemeral port range, for one, lets
    outgoing connections take ports that servers here want to listen on."""
    for path, value in saved.items():
        try:
            path.write_text(value)
        except OSError as exc:
            print(f"warning: cannot restore {path}: {exc}", file=sys.stderr)


def current_sysctls() -> dict[str, str]:
    out = {}
    for name in [*SYSCTLS, "net.ipv4.tcp_mem"]:
        try:
            out[name] = " ".join(sysctl_path(name).read_text().split())
        except OSError:
            out[name] = "absent"
    return out


def check_limits(count: int) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "prefork.cli", "--check-limits", "--connections", str(count),
                           "-c", str(CONFIG)], capture_output=True, text=True, cwd=REPO)
    return done.returncode, done.stdout + done.stderr


class Server:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.log = open(workdir / "server.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "prefork.cli", "-c", str(CONFIG)], cwd=workdir,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.pid_file = workdir / "prefork-c1m.pid"

    def wait_ready(self, workers: int, timeout: float = 120.0) -> None:
        wait_ready(self.proc, PORT, timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(status_rows(PORT)) >= workers and self.pid_file.exists():
                return
            try:
                self.proc.wait(0.2)  # a pause that also notices the server dying
                raise RuntimeError(f"the server exited with status {self.proc.returncode}")
            except subprocess.TimeoutExpired:
                pass
        raise RuntimeError("not every worker came up")

    def stop(self) -> None:
        stop_process(self.proc, 120)
        self.log.close()


def run(label: str, args: argparse.Namespace, hold: float, every: float, out: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="prefork-c1m-") as tmp:
        server = Server(Path(tmp))
        try:
            server.wait_ready(56)
            argv = ["connections", "--target", f"127.0.0.1:{PORT}", "--count", str(args.count),
                    "--rate", str(args.rate), "--hold", str(hold), "--request-every", str(every),
                    "--pid-file", str(server.pid_file), "--json", str(out / f"{label}.json"),
                    "--plot", str(out / f"{label}.png")]
            print(f"\n=== {label}: prefork-bench {' '.join(argv)}", flush=True)
            code = cli.main(argv)
        finally:
            server.stop()
            log = (Path(tmp) / "server.log").read_text(errors="replace")
            if log.strip():  # warnings and errors only (level = "warning"): keep them beside the numbers
                (out / f"{label}-server.log").write_text(log)
    result = json.loads((out / f"{label}.json").read_text())
    result["exit_status"] = code
    result["argv"] = "prefork-bench " + " ".join(argv)
    return result


def verdict(r: dict, want_rps: float | None) -> list[str]:
    lines = []
    ok_conn = r["established_max"] >= r["target_connections"]
    lines.append(f"- connections held: {r['established_max']:,} of {r['target_connections']:,} "
                 f"({'met' if ok_conn else 'NOT met'})")
    errors = sum(r["errors"].values()) + r["failed"] + r["dropped"]
    lines.append(f"- errors: {errors:,} ({'met' if not errors else 'NOT met'}: "
                 f"{', '.join(f'{k} {v:,}' for k, v in r['errors'].items()) or 'none'})")
    cpu = r["server_cpu_hold_avg"]
    if cpu is not None:
        lines.append(f"- server CPU while holding: {cpu:.1f}% of both cores on average, peak "
                     f"{r['server_cpu_peak']:.1f}% ({'met' if cpu < 60 else 'NOT met'}: < 60%)")
    mem = r["mem_used_peak_percent"]
    if mem is not None:
        lines.append(f"- machine memory used at peak: {mem:.1f}% ({'met' if mem < 80 else 'NOT met'}: < 80%)")
    if want_rps:
        rps = r["hold_responses_per_s"] or 0
        met = rps >= want_rps * 0.98
        lines.append(f"- responses/s while holding: {rps:,.0f} ({'met' if met else 'NOT met'}: "
                     f"{want_rps:,.0f} wanted)")
        if not met:
            lines.append("  " + limit_reached(r, rps, want_rps))
    per = r.get("server_bytes_per_connection")
    if per:
        lines.append(f"- server memory per connection: {per['rss']:,.0f} B RSS, {per['pss']:,.0f} B PSS "
                     f"(user memory of all workers, from a fresh server; target ≤ 512 B)")
    return lines


def limit_reached(r: dict, rps: float, want: float) -> str:
    """Which limit stopped a run short of its responses/s, and by how much."""
    machine = r.get("machine_cpu_hold_avg") or 0
    server = r.get("server_cpu_hold_avg") or 0
    client = r.get("client_cpu_hold_avg") or 0
    short = f"{rps:,.0f} of {want:,.0f} ({(1 - rps / want) * 100:.0f}% short)"
    if machine >= 90:
        return (f"What stopped it: the CPUs. {short}; the machine was {machine:.0f}% busy while holding — "
                f"server {server:.0f}%, load client {client:.0f}%, the rest kernel time (loopback TCP for both "
                f"ends, softirqs). The server itself stayed under 60%; the client processes, which must run on "
                f"the same 2 cores here, took the rest. A client on another machine would leave the server "
                f"both cores. The latency figures of this run are mostly the client's own backlog: a "
                f"response waits in its socket until the starved client process gets to read it.")
    return (f"What stopped it: {short} with the machine {machine:.0f}% busy (server {server:.0f}%, "
            f"client {client:.0f}%).")


def write_doc(args, out: Path, limits: str, sysctls: dict, applied: list[str], runs: list[tuple]) -> Path:
    uname = platform.uname()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU")
    mem = meminfo().get("MemTotal", 0)
    argv = [a for a in args.argv if a != "--report-only"]
    if args.report_only and "--apply-sysctls" not in argv:
        argv.insert(0, "--apply-sysctls")
    doc = [
        "# Benchmarks: a million connections",
        "",
        f"Produced by `python bench/c1m.py {' '.join(argv)}` on {time.strftime('%Y-%m-%d')}"
        + (" (this page re-rendered from the runs' JSON with `--report-only`)" if args.report_only else "")
        + ", "
        f"on this machine: {os.cpu_count()} cores ({cpu}), {mem / 2**30:.1f} GiB, Linux {uname.release}, "
        f"Python {platform.python_version()}.",
        "Server: `prefork-server -c conf/c1m.toml` (56 worker processes x 19,800 connections, "
        "SO_REUSEPORT, epoll backend). Client: `prefork-bench connections` on the same machine, "
        "many processes and 127.0.x.y source addresses. Both share the same 2 cores, so every CPU figure "
        "below is a share of the whole machine, and the client's own share is shown beside the server's.",
        "",
        "To reproduce (as root, for the sysctls):",
        "",
        "```sh",
        "pip install -e '.[bench]'",
        f"python bench/c1m.py {' '.join(argv)}",
        "```",
        "",
        "## The machine's limits",
        "",
        "`prefork-server --check-limits -c conf/c1m.toml --connections "
        f"{args.count}` at the start of the run:",
        "",
        "```",
        limits.rstrip(),
        "```",
        "",
        "Sysctls set for the runs" + (" (by `--apply-sysctls`):" if applied else ":"),
        "",
        "```",
        *(applied or [f"{k} = {v}" for k, v in sysctls.items()]),
        "```",
        "",
    ]
    for title, label, result, want in runs:
        doc += [f"## {title}", "", f"`{result['argv']}`", "", "```",
                render_connections(result), "```", "", "Against the targets:", "",
                *verdict(result, want), "", f"![{title}](benchmarks/{label}.png)", ""]
    doc += ["## What the numbers mean", "",
            "- *connect time per 1,000*: the ramp's wall time divided by thousands of connections "
            "established (it follows `--rate`); *connect latency*: from `connect()` to writable, per connection.",
            "- *server CPU*: user + system time of the master and every worker (found from the pid file), "
            "over wall time, as a share of all cores; sampled once a second.",
            "- *server memory per connection*: (RSS, or PSS, of all server processes at the peak minus "
            "before the first connection) / connections open. PSS shares the pages the workers inherit "
            "from the master fairly between them, so it does not count shared pages 56 times.",
            "- *machine memory used*: MemTotal - MemAvailable; it includes the kernel's socket memory "
            "for both ends of every connection (the client runs here too).",
            "", "Raw numbers, a sample a second: `docs/benchmarks/*.json` (and the server's warnings, when it "
            "logged any, beside them).", ""]
    path = out.parent / "BENCHMARKS.md" if out.name == "benchmarks" else out / "BENCHMARKS.md"
    path.write_text(keep_others("\n".join(doc), path.read_text() if path.exists() else ""))
    return path


def keep_others(mine: str, old: str) -> str:
    """The page with this script's part (``mine``) new and the other
    benchmarks' sections after ``END`` (the WebSocket and bus ones) kept."""
    at = old.find(END)
    return mine + "\n" + END + (old[at + len(END):] if at >= 0 else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--hold", type=float, default=600, help="seconds held in run 1 (default: 600)")
    parser.add_argument("--hold2", type=float, default=120, help="seconds held in run 2 (default: 120)")
    parser.add_argument("--apply-sysctls", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--skip", default="", help="comma-separated runs to skip: 60s,20s")
    parser.add_argument("--report-only", action="store_true",
                        help="only write BENCHMARKS.md again, from the JSON of the last runs")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    raise_nofile()
    out = args.out / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    code, limits = check_limits(args.count)
    print(limits)
    saved: dict[Path, str] = {}
    applied = apply_sysctls(saved) if args.apply_sysctls and not args.report_only else []
    for line in applied:
        print("applied:", line)
    sysctls = current_sysctls()
    setup = out / "setup.json"  # what the runs saw, for --report-only later
    if args.report_only:
        if setup.exists():
            seen = json.loads(setup.read_text())
            limits, sysctls, applied = seen["limits"], seen["sysctls"], seen["applied"]
    else:
        setup.write_text(json.dumps({"limits": limits, "sysctls": sysctls, "applied": applied}, indent=2) + "\n")
    try:
        return measure(args, out, limits, sysctls, applied)
    finally:
        restore_sysctls(saved)


def measure(args: argparse.Namespace, out: Path, limits: str, sysctls: dict, applied: list[str]) -> int:
    try:
        socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
        print(f"error: something already listens on 127.0.0.1:{PORT}", file=sys.stderr)
        return 2
    except OSError:
        pass
    runs = []
    skip = set(args.skip.split(","))
    if args.report_only:
        for label, every, hold, want in (("c1m-60s", 60, args.hold, None), ("c1m-20s", 20, args.hold2, args.count / 20)):
            path = out / f"{label}.json"
            if label[4:] in skip or not path.exists():
                continue
            result = json.loads(path.read_text())
            result["argv"] = result.get("argv") or (
                f"prefork-bench connections --target 127.0.0.1:{PORT} --count {result['target_connections']} "
                f"--rate {result['rate']:g} --hold {result['hold_s']:g} --request-every {every}")
            runs.append((f"{result['target_connections']:,} connections, a request each every {every} s, "
                         f"held {result['hold_s']:g} s", label, result, want))
        path = write_doc(args, out, limits, sysctls, applied, runs)
        print(f"\nwrote {path}")
        return 0
    if "60s" not in skip:
        runs.append((f"{args.count:,} connections, a request each every 60 s, held {args.hold:g} s", "c1m-60s",
                     run("c1m-60s", args, args.hold, 60, out), None))
    if "20s" not in skip:
        runs.append((f"{args.count:,} connections, a request each every 20 s, held {args.hold2:g} s", "c1m-20s",
                     run("c1m-20s", args, args.hold2, 20, out), args.count / 20))
    path = write_doc(args, out, limits, sysctls, applied, runs)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
