"""The four servers' command lines, and their processes as /proc shows them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Protocol

from ..net import HOST, Launch
from ..procs import all_pids, proc_memory, read_stat
from ..tools import REPO_ROOT, repo_env

SERVERS = ("prefork", "uvicorn", "granian", "hypercorn")
APP = "prefork_bench.asgi.apps:app"
BACKLOG = 4096               # the same accept queue for every server
KEEPALIVE_SECONDS = 600      # idle keep-alive connections must outlive the memory readings


class Launcher(Protocol):
    """How to start one server on ``port``, its files in ``workdir``."""

    def __call__(self, python: Path, workdir: Path, port: int,
                 args: argparse.Namespace) -> Launch: ...


def prefork_launch(python: Path, workdir: Path, port: int, server: str, route: str) -> Launch:
    """prefork on ``port`` with the bench's listener, keep-alive and log
    settings; ``server``: the lines of its [server] table, ``route``: the
    app's key of the "/" route (``asgi = ...`` or ``wsgi = ...``)."""
    config = workdir / "prefork.toml"
    config.write_text(
        "[server]\n"
        f"{server}"
        "\n[[listen]]\n"
        f'address = "{HOST}:{port}"\n'
        'protocol = "http"\n'
        f"backlog = {BACKLOG}\n"
        "\n[http]\n"
        "keepalive_requests = 10000000\n"
        f"keepalive_timeout = {KEEPALIVE_SECONDS}\n"
        f"header_timeout = {KEEPALIVE_SECONDS}\n"
        "\n[[route]]\n"
        'path = "/"\n'
        f"{route}\n"
        "\n[log]\n"
        f"error_log = {json.dumps(str(workdir / 'error.log'))}\n")
    return Launch([str(python), "-m", "prefork.cli", "-c", str(config)], repo_env(), REPO_ROOT, port)


def prefork(python: Path, workdir: Path, port: int, args: argparse.Namespace) -> Launch:
    return prefork_launch(python, workdir, port,
                          f'workers = {args.workers}\nbackend = "uvloop"\nworker_connections = 10000\n',
                          f'asgi = "{APP}"')


def uvicorn(python: Path, workdir: Path, port: int, args: argparse.Namespace) -> Launch:
    return Launch([str(python), "-m", "uvicorn", APP, "--host", HOST, "--port", str(port),
                   "--workers", str(args.workers), "--loop", "uvloop", "--http", "httptools",
                   "--backlog", str(BACKLOG), "--timeout-keep-alive", str(KEEPALIVE_SECONDS),
                   "--no-access-log", "--log-level", "warning"], repo_env(), REPO_ROOT, port)


def granian(python: Path, workdir: Path, port: int, args: argparse.Namespace) -> Launch:
    return Launch([str(python), "-m", "granian", "--interface", "asgi", "--host", HOST,
                   "--port", str(port), "--workers", str(args.workers), "--loop", "uvloop",
                   "--http", "1", "--no-ws", "--backlog", str(BACKLOG),
                   "--http1-header-read-timeout", "60000", "--no-access-log",
                   "--log-level", "warning", APP], repo_env(), REPO_ROOT, port)


def hypercorn(python: Path, workdir: Path, port: int, args: argparse.Namespace) -> Launch:
    return Launch([str(python), "-m", "hypercorn", "--bind", f"{HOST}:{port}",
                   "--workers", str(args.workers), "--worker-class", "uvloop",
                   "--backlog", str(BACKLOG), "--keep-alive", str(KEEPALIVE_SECONDS),
                   "--log-level", "warning", APP], repo_env(), REPO_ROOT, port)


LAUNCHERS: dict[str, Launcher] = {"prefork": prefork, "uvicorn": uvicorn, "granian": granian, "hypercorn": hypercorn}


def session(leader: int) -> list[int]:
    """The live processes of the server's session (it was started as the leader of one):
    its master or main process and every worker."""
    out = []
    for pid in all_pids():
        st = read_stat(pid)
        if st is not None and st["sid"] == leader and st["state"] != "Z":
            out.append(pid)
    return out


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    """{pid: utime+stime} of those still alive."""
    out = {}
    for pid in pids:
        st = read_stat(pid)
        if st is not None:
            out[pid] = st["ticks"]
    return out


def memory(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) in bytes, summed over the processes."""
    rss = pss = 0
    for pid in pids:
        r, p = proc_memory(pid)
        rss += r
        pss += p
    return rss, pss
