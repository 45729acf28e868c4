"""``prefork-bench accept``: the accept strategies compared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .client import ClientJob, Clients, percentile
from .connections import auto_sources
from .net import free_port, settled_status, status_rows, stop_process, wait_ready
from .procs import raise_nofile
from .report import fmt_int, fmt_ms

STRATEGIES = {
    # name: (description, server settings)
    "one": ("1 process", {"workers": 1}),
    "threads": ("N threads, 1 process", {"mode": "thread"}),
    "shared": ("N processes, 1 shared socket (EPOLLEXCLUSIVE)", {"accept": "shared"}),
    "reuseport": ("N processes, SO_REUSEPORT socket each", {"accept": "reuseport"}),
}


def accept_config(strategy: str, port: int, workers: int, backlog: int) -> str:
    settings = {"workers": workers, "worker_connections": 10000, "accept": "reuseport", "mode": "process"}
    settings.update(STRATEGIES[strategy][1])
    server = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    return f"""[server]
{server}
pid_file = "prefork.pid"
threads = 0

[[listen]]
address = "127.0.0.1:{port}"
protocol = "http"
backlog = {backlog}

[[route]]
path = "/plaintext"
handler = "plaintext"

[[route]]
path = "/status"
handler = "status"

[log]
access_log = ""
level = "warning"
"""


def run_accept(args: argparse.Namespace) -> int:
    raise_nofile()
    results = []
    for name in args.strategies:
        with tempfile.TemporaryDirectory(prefix="prefork-accept-") as tmp:
            port = free_port()
            Path(tmp, "server.toml").write_text(accept_config(name, port, args.workers, args.backlog))
            argv = [sys.executable, "-m", "prefork.cli", "-c", "server.toml"]
            if args.server_cpus:
                argv = ["taskset", "-c", args.server_cpus] + argv
            log = open(Path(tmp, "server.log"), "wb")
            proc = subprocess.Popen(argv, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_ready(proc, port, 20.0)
                # every worker must be up before the clock starts
                deadline = time.monotonic() + 20
                expected = 1 if name == "one" else args.workers
                while len(status_rows(port)) < expected and time.monotonic() < deadline:
                    proc.poll()
                before = {r["slot"]: r.get("accepted", 0) for r in status_rows(port)}
                print(f"[{name}] {STRATEGIES[name][0]}: {args.duration:g}s of connect + GET + close, "
                      f"{args.clients} client processes x {args.concurrency} in flight", file=sys.stderr)
                result = churn(port, args)
                after = settled_status(port)
            finally:
                stop_process(proc)
                log.close()
            shares = [r.get("accepted", 0) - before.get(r["slot"], 0) for r in after]
            result.update(strategy=name, description=STRATEGIES[name][0],
                          workers=1 if name == "one" else args.workers, per_worker=shares)
            if len(shares) != result["workers"]:
                result["errors"]["status shows a different worker count"] = 1
            results.append(result)
    print(render_accept(results, args))
    out = args.json or "prefork-bench-accept.json"
    Path(out).write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=2) + "\n")
    print(f"\nJSON: {out}")
    png = args.plot or str(Path(out).with_suffix(".png"))
    problem = plot_accept(png, results)
    print(problem or f"plot: {png}")
    return 0 if all(r["completed"] for r in results) else 1


def churn(port: int, args: argparse.Namespace) -> dict:
    request = b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    sources = auto_sources(args.clients * args.concurrency * 2000, [("127.0.0.1", port)])
    jobs = [ClientJob(index=i, count=args.concurrency, first=i * 100003, rate=0.0,
                      targets=[("127.0.0.1", port)], sources=sources, ramp_timeout=0.0, hold=0.0,
                      request_every=0.0, request=request, churn=True, duration=args.duration)
            for i in range(args.clients)]
    started = time.monotonic()
    clients = Clients(jobs, args.client_cpus)
    try:
        while not clients.done() and time.monotonic() < started + args.duration + 30:
            clients.poll(0.25)
    finally:
        if not clients.done():
            clients.kill()
        clients.reap()
    elapsed = max(d.get("t", started) for d in clients.latest.values()) - started if clients.latest else 0
    completed = clients.total("completed")
    lat = clients.hist("lat")
    return {"completed": completed, "seconds": round(elapsed, 2),
            "per_second": completed / elapsed if elapsed else 0.0,
            "ms_per_1000": 1000 * 1000 / (completed / elapsed) if completed and elapsed else None,
            "latency_p50_s": percentile(lat, 0.5), "latency_p99_s": percentile(lat, 0.99),
            "errors": clients.errors(), "fatal": clients.fatal}


def evenness(shares: list[int]) -> str:
    if len(shares) < 2 or not sum(shares):
        return "-"
    mean = sum(shares) / len(shares)
    return f"{min(shares) / mean:.2f}-{max(shares) / mean:.2f}"


def render_accept(results: list[dict], args: argparse.Namespace) -> str:
    header = ["strategy", "workers", "conn/s", "ms per 1,000", "p99", "spread (min-max / mean)",
              "per worker", "errors"]
    rows = [header]
    for r in results:
        errors = sum(r["errors"].values())
        rows.append([r["description"], str(r["workers"]), fmt_int(r["per_second"]),
                     "-" if r["ms_per_1000"] is None else f"{r['ms_per_1000']:.1f}",
                     fmt_ms(r["latency_p99_s"]),
                     evenness(r["per_worker"]),
                     "/".join(f"{s:,}" for s in r["per_worker"]), f"{errors:,}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    base = results[0]["per_second"] if results else 0
    lines += ["", "conn/s: connections that went through connect, GET /plaintext, response, close, per "
              "second;", "spread: the fewest and the most connections one worker accepted, over the mean "
              "(1.00-1.00 is perfectly even)."]
    if base:
        lines.append("relative to the first row: " + ", ".join(
            f"{r['strategy']} {r['per_second'] / base:.2f}x" for r in results))
    return "\n".join(lines)


def plot_accept(path: str, results: list[dict]) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'prefork[bench]'): no plot"
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["strategy"] for r in results]
    a1.bar(names, [r["per_second"] for r in results])
    a1.set_ylabel("new connections per second")
    a1.set_title("accept throughput")
    for i, r in enumerate(results):
        shares = r["per_worker"]
        total = sum(shares) or 1
        bottom = 0.0
        for s in shares:
            a2.bar(i, s / total * 100, bottom=bottom)
            bottom += s / total * 100
    a2.set_xticks(range(len(names)), names)
    a2.set_ylabel("% of connections, by worker")
    a2.set_title("how workers share them")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None
