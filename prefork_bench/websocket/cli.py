"""``prefork-bench websocket`` and ``bench/websocket.py``: the command line and the rounds."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from ..asgi.cli import interleaved
from ..connections import parse_sources
from ..wrk import split_choices
from .measure import bench_turn, default_sources
from .report import plot, render, write_json
from .servers import SERVERS, Sysctls


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="prefork-bench websocket",
        description="Hold N WebSocket subscribers of one channel (many client processes and 127.0.x.y "
                    "sources), publish a message every S seconds, and report connect rate, fan-out time, "
                    "deliveries per second, lost messages, server CPU and memory per connection; prefork "
                    "against uvicorn + websockets and the websockets library's own server.")
    parser.add_argument("--servers", default="prefork", help=f"comma-separated, of {','.join(SERVERS)} "
                        "(default: prefork)")
    parser.add_argument("--target", default=None,
                        help="127.x.y.z:PORT of a server already running (with pubsub on /ws/ and, for --publish "
                             "post, publish on /publish/): no server is started, --servers and --workers are not used")
    parser.add_argument("--pid-file", help="with --target: the server's pid file, for its CPU and memory")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per server (default: 1)")
    parser.add_argument("--clients", type=int, default=10_000, help="subscribers to hold (default: 10000)")
    parser.add_argument("--rate", type=float, default=10000.0,
                        help="new connections per second (default: 10000)")
    parser.add_argument("--messages", type=int, default=10, help="messages to publish (default: 10)")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between messages (default: 1)")
    parser.add_argument("--size", type=int, default=64, help="message size in bytes (default: 64)")
    parser.add_argument("--channel", default="bench", help="the channel (default: bench)")
    parser.add_argument("--publish", choices=("ws", "post"), default="ws",
                        help="ws: a WebSocket client of the channel sends each message (every server); "
                             "post: POST /publish/<channel> (prefork, uvicorn) (default: ws)")
    parser.add_argument("--idle", type=float, default=3.0,
                        help="seconds to hold the clients idle before publishing: idle CPU, memory (default: 3)")
    parser.add_argument("--drain", type=float, default=10.0,
                        help="seconds to wait for the last deliveries after the last publish (default: 10)")
    parser.add_argument("--ramp-timeout", type=float, default=None,
                        help="seconds to wait for every client (default: clients / rate + 30)")
    parser.add_argument("--processes", type=int, default=0,
                        help="client processes (default: as the fd limit needs)")
    parser.add_argument("--sources", type=parse_sources, default=None,
                        help="source addresses in 127.0.0.0/8: 127.0.0.2-127.0.0.60, a list, or none "
                             "(default: enough 127.0.x.y for the count)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="interleaved rounds, each runs every server once in rotating order (default: 1)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and clients to CPUs")
    parser.add_argument("--server-cpus", default="0", help="CPU list for the servers (default: 0)")
    parser.add_argument("--client-cpus", default="1", help="CPU list for the client processes (default: 1)")
    parser.add_argument("--sysctls", action="store_true",
                        help="raise ip_local_port_range, somaxconn and tcp_max_syn_backlog for the run where "
                             "they fall short (root), and put them back at the end")
    parser.add_argument("--json", metavar="FILE", help="where to write the JSON (default: "
                        "prefork-bench-websocket.json)")
    parser.add_argument("--plot", help="where to write the PNG (default: beside the JSON)")
    args = parser.parse_args(argv)
    args.servers = split_choices(parser, "--servers", args.servers, SERVERS)
    if (args.workers < 1 or args.clients < 1 or args.rate <= 0 or args.messages < 1 or args.every < 0
            or args.size < 0 or args.idle < 0 or args.drain < 0 or args.rounds < 1 or args.processes < 0):
        parser.error("--workers, --clients, --messages, --rounds must be >= 1, --rate > 0, the others >= 0")
    if not args.channel or not args.channel.isascii() or "/" in args.channel or " " in args.channel:
        parser.error("--channel: a non-empty ASCII name without '/' or spaces")
    if args.publish == "post" and "websockets" in args.servers:
        parser.error("--publish post: the websockets server answers GET only; use --publish ws")
    if args.sources is not None and not all(s.startswith("127.") for s in args.sources):
        parser.error("--sources: loopback addresses only (127.0.0.0/8)")
    if args.target is not None:
        host, _, port = args.target.rpartition(":")
        if not host.startswith("127.") or not port.isdigit():
            parser.error(f"--target: a loopback 127.x.y.z:PORT, got {args.target!r}")
        args.target = (host, int(port))
        args.servers = ["target"]
    if args.sources is None:
        args.sources = default_sources(args)
    if args.ramp_timeout is None:
        args.ramp_timeout = args.clients / args.rate + 30
    args.pinning = "off" if args.no_pin else f"servers on CPU {args.server_cpus}, clients on CPU {args.client_cpus}"
    return args


def settings(args: argparse.Namespace) -> dict:
    return {key: getattr(args, key) for key in (
        "servers", "workers", "clients", "rate", "messages", "every", "size", "channel", "publish", "idle",
        "drain", "rounds", "pinning", "target")} | {"sources": len(args.sources), "command": " ".join(sys.argv)}


def ok(result: dict, args: argparse.Namespace) -> bool:
    return ("failure" not in result and not result["fatal"] and not result["errors"] and not result["failed"]
            and result["established"] == args.clients and not result["lost"] and not result["duplicates"]
            and not result["extra"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tuning = Sysctls()
    if args.sysctls:
        try:
            for change in tuning.apply():
                print(f"sysctl {change} (put back at the end)", file=sys.stderr)
        except OSError as error:
            tuning.restore()
            print(f"error: cannot set the sysctls: {error}", file=sys.stderr)
            return 2
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="prefork-ws-") as tmp:
            turns = interleaved(args.servers, args.rounds, tmp,
                                lambda server, workdir: bench_turn(server, args, workdir))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        tuning.restore()
    results = [turn for server in args.servers for turn in turns[server]]
    conf = settings(args)
    conf["wall_s"] = round(time.monotonic() - started, 1)
    print(render(results, conf))
    out = args.json or "prefork-bench-websocket.json"
    write_json(out, results, conf)
    print(f"\nJSON: {out}")
    png = args.plot or os.path.splitext(out)[0] + ".png"
    problem = plot(png, results, f"{args.clients:,} WebSocket subscribers, {args.messages} broadcasts, "
                                 f"{args.workers} worker(s)")
    print(problem or f"plot: {png}")
    return 0 if all(ok(r, args) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
