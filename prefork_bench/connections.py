"""``prefork-bench connections``: open, hold and exercise many connections.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import sys
import time
from pathlib import Path

from .client import ClientJob, Clients, percentile
from .procs import Watcher, raise_nofile, read_pid_file
from .report import fmt_bytes, fmt_int, fmt_ms, plot, progress_line, render_rows

FD_MARGIN = 64                 # fds a client process keeps for itself
SAMPLE_EVERY = 1.0             # seconds between the parent's samples


# --- arguments --------------------------------------------------------------------


def parse_targets(text: str) -> list[tuple[str, int]]:
    targets = []
    for item in text.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise argparse.ArgumentTypeError(f"--target: expected HOST:PORT[,HOST:PORT...], got {item!r}")
        targets.append((host, int(port)))
    return targets


def parse_sources(text: str) -> list[str]:
    """"127.0.0.2-127.0.0.60", "127.0.0.2,127.0.0.3", or "none" (no bind)."""
    if text == "none":
        return []
    sources = []
    for item in text.split(","):
        first, sep, last = item.strip().partition("-")
        try:
            lo = int.from_bytes(socket.inet_aton(first), "big")
            hi = int.from_bytes(socket.inet_aton(last), "big") if sep else lo
        except OSError:
            raise argparse.ArgumentTypeError(f"--sources: {item!r} is not an IPv4 address or range") from None
        if hi < lo or hi - lo > 1 << 20:
            raise argparse.ArgumentTypeError(f"--sources: bad range {item!r}")
        sources += [socket.inet_ntoa(i.to_bytes(4, "big")) for i in range(lo, hi + 1)]
    return sources


def port_range() -> int:
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return hi - lo + 1
    except (OSError, ValueError):
        return 28232  # the kernel's default range


def auto_sources(count: int, targets: list[tuple[str, int]]) -> list[str]:
    """Enough loopback source addresses for ``count`` connections, with room to spare."""
    if not all(host.startswith("127.") for host, _ in targets):
        return []
    # connect() slows down badly as a source's ports fill up (the kernel scans
    # for a free one), so each source is kept to a quarter of its port range
    needed = max(2, math.ceil(count / (0.25 * port_range() * len(targets))))
    return [f"127.0.{(i >> 8) & 255}.{i & 255}" for i in range(2, 2 + needed)]


# --- the run ----------------------------------------------------------------------


def plan_jobs(args: argparse.Namespace, per_process: int) -> list[ClientJob]:
    processes = args.processes or max(1, math.ceil(args.count / per_process))
    base, extra = divmod(args.count, processes)
    request = (f"GET {args.path} HTTP/1.1\r\nHost: {args.target[0][0]}\r\n\r\n").encode()
    jobs, first = [], 0
    for i in range(processes):
        n = base + (i < extra)
        jobs.append(ClientJob(index=i, count=n, first=first, rate=args.rate / processes, targets=args.target,
                              sources=args.sources, ramp_timeout=args.ramp_timeout, hold=args.hold,
                              request_every=args.request_every, request=request))
        first += n
    return jobs


def run_connections(args: argparse.Namespace) -> int:
    hard = raise_nofile()
    per_process = hard - FD_MARGIN
    if args.sources is None:
        args.sources = auto_sources(args.count, args.target)
    if args.ramp_timeout is None:
        args.ramp_timeout = args.count / args.rate + 30
    jobs = plan_jobs(args, per_process)
    if any(job.count > per_process for job in jobs):
        print(f"error: {max(j.count for j in jobs):,} connections per process, but a process may open "
              f"only {per_process:,} (hard limit {hard:,}): use more --processes", file=sys.stderr)
        return 2
    pid_file = args.pid_file or ("prefork.pid" if Path("prefork.pid").exists() else None)
    server_pid = read_pid_file(pid_file)
    if pid_file and server_pid is None:
        print(f"warning: cannot read a pid from {pid_file}: no server figures", file=sys.stderr)
    print(f"prefork-bench connections: {args.count:,} to {', '.join(f'{h}:{p}' for h, p in args.target)} "
          f"from {len(jobs)} processes, {len(args.sources) or 'no'} source addresses, "
          f"{args.rate:,.0f}/s, hold {args.hold:g}s"
          + (f", a request every {args.request_every:g}s" if args.request_every else ""), file=sys.stderr)
    started = time.monotonic()
    clients = Clients(jobs, args.client_cpus)
    watcher = Watcher(server_pid, clients.pids)
    samples: list[dict] = [dict(watcher.baseline, t=0.0, established=0, responses=0, responses_per_s=0.0,
                                errors=0, phase="ramp")]
    last_responses, last_t = 0, started
    tty = sys.stderr.isatty()
    last_print = 0.0
    hard_stop = started + args.ramp_timeout + args.hold + 60
    interrupted = False
    try:
        next_sample = started + SAMPLE_EVERY
        while not clients.done():
            clients.poll(max(0.0, min(0.25, next_sample - time.monotonic())))
            now = time.monotonic()
            if now >= hard_stop:
                print("\nclients did not finish in time: stopping them", file=sys.stderr)
                clients.kill()
                break
            if now < next_sample:
                continue
            next_sample = now + SAMPLE_EVERY
            sample = watcher.sample()
            responses = clients.total("responses")
            phases = {d.get("phase") for d in clients.latest.values()}
            summary = {"established_now": clients.total("open"), "errors": sum(clients.errors().values()),
                       "responses_per_s": (responses - last_responses) / (now - last_t),
                       "phase": "ramp" if "ramp" in phases else "hold" if "hold" in phases else "drain"}
            last_responses, last_t = responses, now
            sample.update(t=round(now - started, 2), established=summary["established_now"],
                          responses=responses, responses_per_s=summary["responses_per_s"],
                          errors=summary["errors"], phase=summary["phase"])
            samples.append(sample)
            if tty:
                print("\r" + progress_line(summary, sample, args.count), end="", file=sys.stderr, flush=True)
            elif now - last_print >= 5:
                print(progress_line(summary, sample, args.count), file=sys.stderr, flush=True)
                last_print = now
    except KeyboardInterrupt:
        interrupted = True
        clients.kill()
    finally:
        clients.reap()
    if tty:
        print(file=sys.stderr)
    result = summarize(args, jobs, clients, samples, watcher, started)
    result["interrupted"] = interrupted
    print(render_connections(result))
    out = args.json or "prefork-bench-connections.json"
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON: {out}")
    png = args.plot or str(Path(out).with_suffix(".png"))
    problem = plot(png, samples, f"{args.count:,} connections"
                   + (f", a request every {args.request_every:g}s" if args.request_every else ""))
    print(problem or f"plot: {png}")
    ok = (not interrupted and not clients.fatal and result["established_max"] >= args.count
          and not result["errors"])
    return 0 if ok else 1


def summarize(args, jobs, clients: Clients, samples: list[dict], watcher: Watcher, started: float) -> dict:
    hold = [s for s in samples if s.get("phase") == "hold"]
    ramp_done = [d.get("ramp_done_at", 0) for d in clients.latest.values() if d.get("ramp_done_at")]
    established = clients.total("established")
    ramp_seconds = None
    if ramp_done:
        first_t0 = started
        ramp_seconds = max(ramp_done) - first_t0
    peak = max(samples, key=lambda s: s["established"], default={})
    base = watcher.baseline
    per_conn = None
    if peak.get("established") and "server_rss" in peak and "server_rss" in base:
        per_conn = {"rss": (peak["server_rss"] - base["server_rss"]) / peak["established"],
                    "pss": (peak["server_pss"] - base["server_pss"]) / peak["established"]}
    hold_responses = None
    if len(hold) >= 2:
        hold_responses = (hold[-1]["responses"] - hold[0]["responses"]) / (hold[-1]["t"] - hold[0]["t"])

    def avg(key, rows):
        values = [r[key] for r in rows if key in r]
        return sum(values) / len(values) if values else None

    def peak_of(key):
        values = [s[key] for s in samples if key in s]
        return max(values) if values else None

    lat, clat = clients.hist("lat"), clients.hist("clat")
    return {
        "command": " ".join(sys.argv),
        "target_connections": args.count,
        "targets": [f"{h}:{p}" for h, p in args.target],
        "client_processes": len(jobs),
        "source_addresses": len(args.sources),
        "rate": args.rate,
        "hold_s": args.hold,
        "request_every_s": args.request_every,
        "started": clients.total("started"),
        "established": established,
        "established_max": max((s["established"] for s in samples), default=0),
        "failed": clients.total("failed"),
        "dropped": clients.total("dropped"),
        "errors": clients.errors(),
        "fatal": clients.fatal,
        "ramp_s": ramp_seconds,
        "connect_s_per_1000": (ramp_seconds / (established / 1000)) if ramp_seconds and established else None,
        "connect_p50_s": percentile(clat, 0.5),
        "connect_p99_s": percentile(clat, 0.99),
        "requests_sent": clients.total("sent"),
        "responses": clients.total("responses"),
        "non_2xx": clients.total("non2xx"),
        "hold_responses_per_s": hold_responses,
        "latency_p50_s": percentile(lat, 0.5),
        "latency_p99_s": percentile(lat, 0.99),
        "latency_max_s": percentile(lat, 1.0),
        "server_cpu_hold_avg": avg("server_cpu", hold),
        "server_cpu_peak": peak_of("server_cpu"),
        "client_cpu_hold_avg": avg("client_cpu", hold),
        "machine_cpu_hold_avg": avg("machine_cpu", hold),
        "server_processes": peak.get("server_processes"),
        "server_rss_peak": peak_of("server_rss"),
        "server_pss_peak": peak_of("server_pss"),
        "server_bytes_per_connection": per_conn,
        "mem_used_peak_percent": peak_of("mem_used"),
        "mem_used_peak_bytes": peak_of("mem_used_bytes"),
        "samples": samples,
    }


def render_connections(r: dict) -> str:
    pct = (lambda v: "-" if v is None else f"{v:.1f}%")
    errors = ", ".join(f"{k} {v:,}" for k, v in sorted(r["errors"].items())) or "none"
    per = r["server_bytes_per_connection"]
    rows = [
        ("target connections", fmt_int(r["target_connections"])),
        ("established (peak open)", f"{fmt_int(r['established'])} ({fmt_int(r['established_max'])})"),
        ("failed / dropped", f"{fmt_int(r['failed'])} / {fmt_int(r['dropped'])}"),
        ("errors", errors),
        ("client processes / sources", f"{r['client_processes']} / {r['source_addresses']}"),
        ("ramp time", "-" if r["ramp_s"] is None else f"{r['ramp_s']:.1f} s"),
        ("connect time per 1,000", "-" if r["connect_s_per_1000"] is None
         else f"{r['connect_s_per_1000'] * 1000:.1f} ms"),
        ("connect latency p50 / p99", f"{fmt_ms(r['connect_p50_s'])} / {fmt_ms(r['connect_p99_s'])}"),
        ("requests / responses / non-2xx", f"{fmt_int(r['requests_sent'])} / {fmt_int(r['responses'])} / "
                                             f"{fmt_int(r['non_2xx'])}"),
        ("responses/s while holding", fmt_int(r["hold_responses_per_s"])),
        ("latency p50 / p99 / max", f"{fmt_ms(r['latency_p50_s'])} / {fmt_ms(r['latency_p99_s'])} / "
                                      f"{fmt_ms(r['latency_max_s'])}"),
        ("server CPU, holding (peak)", f"{pct(r['server_cpu_hold_avg'])} ({pct(r['server_cpu_peak'])}) "
                                         "of all CPUs"),
        ("client CPU / machine CPU, holding", f"{pct(r['client_cpu_hold_avg'])} / {pct(r['machine_cpu_hold_avg'])}"),
        ("server processes", fmt_int(r["server_processes"])),
        ("server RSS / PSS, peak", f"{fmt_bytes(r['server_rss_peak'])} / {fmt_bytes(r['server_pss_peak'])}"),
        ("server memory per connection", "-" if not per else
         f"{per['rss']:,.0f} B RSS, {per['pss']:,.0f} B PSS"),
        ("machine memory used, peak", f"{pct(r['mem_used_peak_percent'])} ({fmt_bytes(r['mem_used_peak_bytes'])})"),
    ]
    return render_rows(rows)
