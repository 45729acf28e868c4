"""``prefork-bench``: the load client.

``connections``  open N TCP connections to one or more targets, spread over as
                 many processes as the fd limit requires and over many loopback
                 source addresses (so ephemeral ports never run out), hold them,
                 optionally send one HTTP request per connection every S
                 seconds, and report what the client and the server did.
``accept``       compare the accept strategies: one process, N threads of one
                 process, N processes on one shared socket (EPOLLEXCLUSIVE), N
                 processes with a SO_REUSEPORT socket each.
``http``         the wrk throughput runs of ``bench/http.py`` (prefork against
                 nginx and uvicorn).
``tfb``          the TechEmpower test types of ``bench/tfb.py`` (prefork against
                 uvicorn, SQLite and PostgreSQL).
``backends``     ``bench/backends.py``: prefork's epoll, uvloop and asyncio
                 backends, req/s and bytes per idle connection.
``reload``       ``bench/reload.py``: errors under reloads and worker kills, and
                 the connection spread per accept strategy.
``asgi``         ``bench/asgi.py``: prefork against uvicorn, granian and hypercorn
                 on the same ASGI app (FastAPI, Starlette, raw).
``wsgi``         ``bench/wsgi.py``: prefork against gunicorn and granian on the
                 same WSGI app (raw, Flask, Django) and under slowloris clients.
``bus``          the bus between workers (``busbench``): publish-to-delivery
                 latency and messages/s across 2 and 4 workers, or through Redis.
``websocket``    ``bench/websocket.py``: N WebSocket subscribers of one channel,
                 a broadcast every S seconds (fan-out time, loss, CPU, memory),
                 prefork against uvicorn + websockets and the websockets server.

Every run is bounded in time and stops by itself; the client processes are
children of this one and die with it (PR_SET_PDEATHSIG).

The modules: ``connections`` and ``accept`` (the subcommands) over ``client``
(the client processes and their epoll loops), ``procs`` (this process's limits,
/proc readers, the server and machine sampler) and ``report``; ``httpbench``
(the ``http`` subcommand) over ``wrk``, ``net``, ``tools`` and ``httpreport``;
the packages ``tfb``, ``backends``, ``reload``, ``asgi`` and ``wsgi`` (the subcommands of
the same names) over those.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .accept import STRATEGIES, run_accept
from .connections import parse_sources, parse_targets, run_connections

# subcommands that are whole programs with options of their own (bench/*.py): name -> module, help
PROGRAMS = {
    "http": ("httpbench", "wrk throughput: prefork against nginx and uvicorn (bench/http.py)"),
    "tfb": ("tfb.cli", "TechEmpower test types: prefork against uvicorn (bench/tfb.py)"),
    "backends": ("backends.cli", "prefork's epoll, uvloop and asyncio backends (bench/backends.py)"),
    "reload": ("reload.cli", "errors under reloads and kills, connection spread (bench/reload.py)"),
    "asgi": ("asgi.cli", "prefork against uvicorn, granian, hypercorn on one ASGI app (bench/asgi.py)"),
    "wsgi": ("wsgi.cli", "prefork against gunicorn (gthread, sync) and granian on one WSGI app "
                         "(bench/wsgi.py)"),
    "proto": ("protobench", "microseconds per request through the HTTP protocol alone, no sockets"),
    "wsframing": ("wsproto_bench", "WebSocket framing compared: wsproto, websockets, own (CPU per message, "
                                   "bytes per idle connection)"),
    "wsidle": ("wsidle", "a worker's memory per idle WebSocket connection (epoll, RSS/PSS delta)"),
    "bus": ("busbench", "the bus between workers (and through Redis): publish-to-delivery latency, messages/s"),
    "websocket": ("websocket.cli", "N WebSocket subscribers, a broadcast every S seconds: fan-out, loss, CPU, "
                                   "memory; prefork against uvicorn and websockets (bench/websocket.py)"),
}


def run_program(name: str, rest: list[str]) -> int:
    module = importlib.import_module(f".{PROGRAMS[name][0]}", __package__)
    return module.main(rest)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="prefork-bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("connections", help="open, hold and exercise many connections")
    c.add_argument("--target", type=parse_targets, default=parse_targets("127.0.0.1:8080"),
                   help="HOST:PORT[,HOST:PORT...] (default: 127.0.0.1:8080)")
    c.add_argument("--count", type=int, required=True, help="connections to open")
    c.add_argument("--rate", type=float, default=10000.0, help="new connections per second (default: 10000)")
    c.add_argument("--hold", type=float, default=30.0, help="seconds to hold them once open (default: 30)")
    c.add_argument("--request-every", type=float, default=0.0, metavar="SECONDS",
                   help="send one request per connection every SECONDS while holding (default: none)")
    c.add_argument("--path", default="/plaintext", help="the request's path (default: /plaintext)")
    c.add_argument("--sources", type=parse_sources, default=None,
                   help="source addresses: 127.0.0.2-127.0.0.60, a list, or none "
                        "(default: enough 127.0.x.y for the count)")
    c.add_argument("--processes", type=int, default=0, help="client processes (default: as the fd limit needs)")
    c.add_argument("--ramp-timeout", type=float, default=None,
                   help="seconds to wait for every connection (default: count / rate + 30)")
    c.add_argument("--pid-file", help="the server's pid file, to measure its CPU and memory "
                                      "(default: ./prefork.pid when present)")
    c.add_argument("--client-cpus", help="taskset-style CPU list for the client processes")
    c.add_argument("--json", help="where to write the JSON (default: prefork-bench-connections.json)")
    c.add_argument("--plot", help="where to write the PNG (default: beside the JSON)")

    a = sub.add_parser("accept", help="compare the accept strategies")
    a.add_argument("--workers", type=int, default=2, help="threads or processes (default: 2)")
    a.add_argument("--duration", type=float, default=5.0, help="seconds per strategy (default: 5)")
    a.add_argument("--clients", type=int, default=2, help="client processes (default: 2)")
    a.add_argument("--concurrency", type=int, default=32, help="connections in flight per client (default: 32)")
    a.add_argument("--strategies", default=",".join(STRATEGIES),
                   help=f"comma-separated, in this order (default: {','.join(STRATEGIES)})")
    a.add_argument("--backlog", type=int, default=4096, help="listen backlog (default: 4096)")
    a.add_argument("--server-cpus", default=None, help="taskset CPU list for the server (e.g. 0)")
    a.add_argument("--client-cpus", default=None, help="CPU list for the clients (e.g. 1)")
    a.add_argument("--json", help="where to write the JSON (default: prefork-bench-accept.json)")
    a.add_argument("--plot", help="where to write the PNG (default: beside the JSON)")

    for name, (_, text) in PROGRAMS.items():
        sub.add_parser(name, help=text, add_help=False)
    args, rest = parser.parse_known_args(argv)
    args.rest = rest
    if args.command not in PROGRAMS and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "connections":
        if args.count < 1 or args.rate <= 0 or args.hold < 0 or args.request_every < 0:
            parser.error("--count and --rate must be > 0, --hold and --request-every >= 0")
    if args.command == "accept":
        items = [s.strip() for s in args.strategies.split(",") if s.strip()]
        unknown = [s for s in items if s not in STRATEGIES]
        if not items or unknown:
            parser.error(f"--strategies: expected some of {', '.join(STRATEGIES)}, got {args.strategies!r}")
        args.strategies = items
        if args.workers < 1 or args.clients < 1 or args.concurrency < 1 or args.duration <= 0:
            parser.error("--workers, --clients, --concurrency and --duration must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "connections":
        return run_connections(args)
    if args.command == "accept":
        return run_accept(args)
    return run_program(args.command, args.rest)


if __name__ == "__main__":
    sys.exit(main())
