"""One server's turn: start it, ramp the subscribers up, hold them idle a
moment (idle CPU, memory per connection), publish, wait for the fan-out,
stop the clients and the server (by PID), and return the numbers."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from ..client import Clients, percentile
from ..connections import auto_sources
from ..net import HOST, free_port, log_tail, running_server
from ..procs import CLK_TCK, Watcher, descendants, proc_cpu_ticks, raise_nofile, read_pid_file
from ..report import fmt_bytes
from ..tools import BenchError
from .clients import WsJob, ws_child_main
from .deliveries import Published, merge, summarize
from .frames import message
from .servers import LAUNCHERS, Publisher

FD_MARGIN = 64                 # fds a client process keeps for itself
SAMPLE_EVERY = 1.0             # seconds between the parent's samples


def plan_jobs(args: argparse.Namespace, host: str, port: int, per_process: int,
              stop: tuple[int, int]) -> list[WsJob]:
    processes = args.processes or max(1, math.ceil(args.clients / per_process))
    base, extra = divmod(args.clients, processes)
    deadline = args.ramp_timeout + args.idle + args.messages * args.every + args.drain + 60
    jobs, first = [], 0
    for i in range(processes):
        n = base + (i < extra)
        jobs.append(WsJob(index=i, count=n, first=first, rate=args.rate / processes, host=host, port=port,
                          path=f"/ws/{args.channel}", sources=args.sources, ramp_timeout=args.ramp_timeout,
                          deadline=deadline, stop_r=stop[0], stop_w=stop[1]))
        first += n
    return jobs


def server_ticks(pid: int | None) -> int:
    """CPU ticks of the server's processes (0 without a pid: no server figures)."""
    return ticks(descendants(pid)) if pid is not None else 0


def ticks(pids: list[int]) -> int:
    return sum(t for t in map(proc_cpu_ticks, pids) if t is not None)


class Turn:
    """The parent's side of one run against a started server (``pid``)."""

    def __init__(self, label: str, pid: int | None, host: str, port: int, args: argparse.Namespace):
        self.label, self.pid, self.host, self.port, self.args = label, pid, host, port, args
        self.started = time.monotonic()
        self.watcher = Watcher(pid, [])
        self.samples: list[dict] = [dict(self.watcher.baseline, t=0.0, open=0, delivered=0, phase="ramp")]
        self.published: list[Published] = []
        self.phase = "ramp"
        self.tty = sys.stderr.isatty()
        self.last_print = 0.0
        self.publisher: Publisher | None = None

    # the loop's pieces
    def delivered(self, clients: Clients) -> dict:
        got, dup, foreign = merge(list(clients.latest.values()))
        return summarize(self.published, got, dup, foreign)

    def sample(self, clients: Clients) -> None:
        now = time.monotonic()
        s = self.watcher.sample()
        d = self.delivered(clients)
        s.update(t=round(now - self.started, 2), open=clients.total("open"), delivered=d["delivered"],
                 lost_so_far=d["expected"] - d["delivered"], published=len(self.published), phase=self.phase,
                 errors=sum(clients.errors().values()))
        self.samples.append(s)
        line = (f"[{self.label}] {s['open']:,}/{self.args.clients:,} open | {self.phase} | published "
                f"{s['published']}/{self.args.messages} | delivered {s['delivered']:,} | not yet "
                f"{s['lost_so_far']:,} | err {s['errors']:,} | server CPU {s.get('server_cpu', 0):.0f}% "
                f"RSS {fmt_bytes(s.get('server_rss'))} | mem {s.get('mem_used', 0):.0f}%")
        if self.tty:
            print("\r" + line.ljust(150), end="", file=sys.stderr, flush=True)
        elif now - self.last_print >= 5:
            print(line, file=sys.stderr, flush=True)
            self.last_print = now

    def wait(self, clients: Clients, until: float, done=lambda: False) -> None:
        """Read the clients' reports and sample once a second until ``until`` or ``done()``."""
        next_sample = self.samples[-1]["t"] + self.started + SAMPLE_EVERY
        while not clients.done():
            now = time.monotonic()
            if now >= until or done():
                return
            if now >= next_sample:
                self.sample(clients)
                next_sample = now + SAMPLE_EVERY
            clients.poll(max(0.0, min(0.05, until - now, next_sample - now)))
            if self.publisher is not None:
                self.publisher.pump()

    # the run
    def run(self) -> dict:
        args = self.args
        per_process = raise_nofile() - FD_MARGIN
        stop = os.pipe()
        jobs = plan_jobs(args, self.host, self.port, per_process, stop)
        clients = Clients(jobs, args.client_cpus if not args.no_pin else None, child=ws_child_main)
        os.close(stop[0])
        self.watcher.client_pids = clients.pids
        marks: dict[str, float] = {}
        try:
            ramp_end = self.started + args.ramp_timeout
            self.wait(clients, ramp_end, lambda: len(clients.latest) == len(jobs) and all(
                d.get("phase") != "ramp" for d in clients.latest.values()))
            ramped = [d.get("ramp_done_at", 0) for d in clients.latest.values()]
            marks["ramp_s"] = (max(ramped) if ramped and all(ramped) else time.monotonic()) - self.started
            self.publisher = Publisher(self.host, self.port, args.channel, args.publish)
            self.phase = "idle"
            self.sample(clients)
            t_idle, ticks_idle = time.monotonic(), server_ticks(self.pid)
            self.wait(clients, t_idle + args.idle)
            marks["idle_cpu"] = self.cpu_share(ticks_idle, t_idle)
            self.phase = "publish"
            t_pub, ticks_pub, client_pub = time.monotonic(), server_ticks(self.pid), ticks(clients.pids)
            for seq in range(args.messages):
                expected = clients.total("open")
                sent = time.monotonic()
                self.publisher.publish(message(seq, sent, args.size))
                self.published.append(Published(seq, sent, expected))
                self.wait(clients, sent + args.every if seq < args.messages - 1 else sent)
            self.phase = "drain"
            self.wait(clients, time.monotonic() + args.drain,
                      lambda: (lambda d: d["delivered"] >= d["expected"])(self.delivered(clients)))
            t_end, ticks_end = time.monotonic(), server_ticks(self.pid)
            marks["publish_cpu_s"] = (ticks_end - ticks_pub) / CLK_TCK
            marks["publish_window_s"] = t_end - t_pub
            marks["publish_cpu"] = self.cpu_share(ticks_pub, t_pub)
            marks["client_cpu"] = 100.0 * (ticks(clients.pids) - client_pub) / CLK_TCK / (t_end - t_pub) / (
                os.cpu_count() or 1)
            self.sample(clients)
        finally:
            os.close(stop[1])          # EOF on the stop pipe: every client reports and goes
            if self.publisher is not None:
                self.publisher.close()
            clients.reap()
            if self.tty:
                print(file=sys.stderr)
        return self.result(clients, jobs, marks)

    def cpu_share(self, ticks0: int, t0: float) -> float | None:
        """The server's CPU since (ticks0, t0), in percent of the whole machine."""
        if self.pid is None:
            return None
        spent = (server_ticks(self.pid) - ticks0) / CLK_TCK
        return 100.0 * spent / max(time.monotonic() - t0, 1e-6) / (os.cpu_count() or 1)

    def result(self, clients: Clients, jobs: list[WsJob], marks: dict) -> dict:
        args = self.args
        d = self.delivered(clients)
        established = clients.total("established")
        base = self.watcher.baseline
        idle = [s for s in self.samples if s.get("phase") == "idle" and "server_rss" in s]
        per_conn = None
        if idle and established and "server_rss" in base:
            top = max(idle, key=lambda s: s["server_rss"])
            per_conn = {"rss": (top["server_rss"] - base["server_rss"]) / established,
                        "pss": (top["server_pss"] - base["server_pss"]) / established}
        ramp_s = marks.get("ramp_s")
        clat = clients.hist("clat")
        processes = max((s.get("server_processes", 0) for s in self.samples), default=None)
        workers = args.workers
        if args.target is not None and processes:
            workers = max(1, processes - 1)  # a running server's: its processes less the master
        d.update({
            "server": self.label, "workers": workers, "clients": args.clients,
            "client_processes": len(jobs), "source_addresses": len(args.sources),
            "established": established, "failed": clients.total("failed"), "dropped": clients.total("dropped"),
            "errors": clients.errors(), "fatal": clients.fatal, "pings": clients.total("pings"),
            "ramp_s": ramp_s, "connect_rate": established / ramp_s if ramp_s else None,
            "connect_p50_s": percentile(clat, 0.5), "connect_p99_s": percentile(clat, 0.99),
            "server_cpu_idle": marks.get("idle_cpu"), "server_cpu_publish": marks.get("publish_cpu"),
            "client_cpu_publish": marks.get("client_cpu"),
            "server_cpu_us_per_delivery": (marks["publish_cpu_s"] * 1e6 / d["delivered"])
            if d["delivered"] and self.pid is not None else None,
            "server_processes": processes,
            "server_rss_peak": max((s.get("server_rss", 0) for s in self.samples), default=None),
            "server_pss_peak": max((s.get("server_pss", 0) for s in self.samples), default=None),
            "server_bytes_per_connection": per_conn,
            "mem_used_peak_percent": max((s.get("mem_used", 0) for s in self.samples), default=None),
            "samples": self.samples,
        })
        return d


def bench_turn(server: str, args: argparse.Namespace, workdir: Path) -> dict:
    """Start ``server`` (pinned when asked), run a ``Turn`` against it, stop it;
    with ``--target``, run against the server already there (its CPU and
    memory from ``--pid-file``, when given)."""
    if args.target is not None:
        try:
            return Turn("target", read_pid_file(args.pid_file), *args.target, args).run()
        except (BenchError, OSError) as error:
            print(f"\n[target] failed: {error}", file=sys.stderr)
            return {"server": "target", "failure": str(error)}
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    launch = LAUNCHERS[server](workdir, port, args)
    log = workdir / "server.log"
    try:
        with running_server(launch, log, args.server_cpus, not args.no_pin) as proc:
            return Turn(server, proc.pid, HOST, port, args).run()
    except (BenchError, OSError) as error:
        print(f"\n[{server}] failed: {error}\n{log_tail(log, workdir / 'error.log')}", file=sys.stderr)
        return {"server": server, "failure": str(error)}


def default_sources(args: argparse.Namespace) -> list[str]:
    return auto_sources(args.clients, [(HOST, 1)])
