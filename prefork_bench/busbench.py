"""``prefork-bench bus``: the bus between workers, measured without WebSockets.

The parent is a master (the real ``BusRelay`` on an epoll ``Reactor``) and
forks N workers as the master does (each its own reactor and ``make_bus``
link; or, with ``--redis URL``, each its own ``RedisBus``). Worker 0
publishes; every worker (the publisher too) records each delivery's latency
(CLOCK_MONOTONIC in the payload: one clock for the whole machine) and
reports to the parent through a pipe.

Two runs per worker count: ``latency`` (one message every ``--interval``
seconds: publish-to-delivery latency, p50/p99/max) and ``throughput``
(``--messages`` published in bursts of 64 as fast as the publisher's loop
goes: messages/s per receiver from the first publish to the last delivery,
and how many were lost).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import sys
import time

from prefork.bus import make_bus
from prefork.busrelay import BusRelay
from prefork.config import from_dict
from prefork.reactor import Reactor

STAMP = struct.Struct("!qI")  # monotonic ns, sequence


class _Record:
    def __init__(self, expect: int):
        self.expect = expect
        self.lat: list[int] = []
        self.first = 0
        self.last = 0

    def deliver(self, channel: bytes, payload: bytes, binary: bool) -> None:
        now = time.monotonic_ns()
        if channel != b"bench":
            return
        sent, _ = STAMP.unpack_from(payload)
        self.lat.append(now - sent)
        self.first = self.first or sent
        self.last = now


def _worker(config, link: int, index: int, mode: str, messages: int, size: int, interval: float,
            ready_w: int, start_r: int, out_w: int) -> None:
    reactor = Reactor()
    bus = make_bus(config, reactor, link)
    rec = _Record(messages)
    bus.attach(rec)
    deadline = time.monotonic() + 10
    while getattr(bus, "connected", True) is False and time.monotonic() < deadline:
        reactor.run_once(0.01)  # Redis: subscribed before we say ready
    os.write(ready_w, b"r")
    os.read(start_r, 1)  # the parent's go (the pipe closes)
    pad = b"x" * max(0, size - STAMP.size)
    sent = 0

    def publish_some(_=None):
        nonlocal sent
        burst = 1 if mode == "latency" else 64
        for _ in range(min(burst, messages - sent)):
            bus.publish(b"bench", STAMP.pack(time.monotonic_ns(), sent) + pad, True)
            sent += 1
        if sent < messages:
            reactor.call_later(interval if mode == "latency" else 0, publish_some)

    if index == 0:
        reactor.call_later(0, publish_some)
    end = time.monotonic() + (messages * interval + 20 if mode == "latency" else 60)
    quiet_since = time.monotonic()
    seen = 0
    def tick(_=None):  # so that run_once() below never waits longer than this for its checks
        reactor.call_later(0.05, tick)

    tick()
    while time.monotonic() < end:
        reactor.run_once()  # until the next event or timer (the publisher's, or the tick)
        if len(rec.lat) != seen:
            seen, quiet_since = len(rec.lat), time.monotonic()
        if index == 0 and (sent < messages or bus.unsent):
            continue  # the publisher: until all is published and taken by the relay (or Redis)
        if len(rec.lat) >= messages or time.monotonic() - quiet_since > 2:
            break
    lat = sorted(rec.lat)
    report = {"index": index, "got": len(lat), "first": rec.first, "last": rec.last,
              "p50_us": lat[len(lat) // 2] / 1000 if lat else None,
              "p99_us": lat[int(len(lat) * 0.99)] / 1000 if lat else None,
              "max_us": lat[-1] / 1000 if lat else None,
              "dropped": getattr(bus, "dropped", 0)}
    os.write(out_w, (json.dumps(report) + "\n").encode())
    bus.close()


def run(workers: int, mode: str, messages: int, size: int, interval: float, redis: str) -> dict:
    raw = {"listen": [{"address": "127.0.0.1:1"}]}
    if redis:
        raw["pubsub"] = {"url": redis, "prefix": f"bench{os.getpid()}:"}
    config = from_dict(raw, "<bench>")
    master = Reactor()
    relay = BusRelay(master)
    ready_r, ready_w = os.pipe()
    start_r, start_w = os.pipe()
    out_r, out_w = os.pipe()
    pids = []
    for index in range(workers):
        links = relay.links(0 if redis else 1)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for fd in (start_w, ready_r, out_r):  # the parent's ends: the go is start_w closing
                    os.close(fd)
                fds = relay.drop_in_child(links)
                master.close_after_fork()
                _worker(config, fds[0] if fds else -1, index, mode, messages, size, interval, ready_w, start_r, out_w)
            except BaseException:
                import traceback
                traceback.print_exc()
                code = 1
            os._exit(code)
        relay.attach(links, pid)
        pids.append(pid)
    for _ in range(workers):
        os.read(ready_r, 1)
    os.close(start_w)  # go
    reports: list[dict] = []
    buf = b""
    deadline = time.monotonic() + (messages * interval + 60 if mode == "latency" else 90)
    os.set_blocking(out_r, False)
    while len(reports) < workers and time.monotonic() < deadline:
        master.run_once(0.01)
        try:
            buf += os.read(out_r, 65536)
        except BlockingIOError:
            pass
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            reports.append(json.loads(line))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    relay.close()
    master.close()
    first = min(r["first"] for r in reports if r["first"])
    last = max(r["last"] for r in reports if r["last"])
    seconds = (last - first) / 1e9
    return {"workers": workers, "mode": mode, "bus": "redis" if redis else "local", "size": size,
            "messages": messages, "lost": sum(messages - r["got"] for r in reports),
            "deliveries_per_s": round(sum(r["got"] for r in reports) / seconds) if seconds else None,
            "messages_per_s": round(messages / seconds) if seconds else None,
            "p50_us": max(r["p50_us"] for r in reports), "p99_us": max(r["p99_us"] for r in reports),
            "max_us": max(r["max_us"] for r in reports), "relay_dropped": relay.dropped}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prefork-bench bus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="2,4", help="worker counts (default: 2,4)")
    parser.add_argument("--messages", type=int, default=50000, help="messages per throughput run (default: 50000)")
    parser.add_argument("--latency-messages", type=int, default=2000, help="messages per latency run (default: 2000)")
    parser.add_argument("--interval", type=float, default=0.001, help="seconds between latency publishes")
    parser.add_argument("--size", type=int, default=64, help="payload bytes (default: 64)")
    parser.add_argument("--redis", default="", help="redis://host:port/db: measure the Redis bus instead")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args(argv)
    results = []
    print(f"{'bus':6} {'workers':>7} {'mode':>10} {'msgs/s':>9} {'deliv/s':>9} {'p50 us':>8} {'p99 us':>8} "
          f"{'max us':>8} {'lost':>6}")
    for workers in [int(w) for w in args.workers.split(",")]:
        for mode, count in (("latency", args.latency_messages), ("throughput", args.messages)):
            r = run(workers, mode, count, args.size, args.interval, args.redis)
            results.append(r)
            print(f"{r['bus']:6} {workers:>7} {mode:>10} {r['messages_per_s'] or 0:>9} {r['deliveries_per_s'] or 0:>9} "
                  f"{r['p50_us']:>8.0f} {r['p99_us']:>8.0f} {r['max_us']:>8.0f} {r['lost']:>6}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
