"""The WSGI servers' command lines (every one: 1 process per worker, THREADS threads)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..asgi.servers import BACKLOG, KEEPALIVE_SECONDS, Launcher, prefork_launch
from ..net import HOST, Launch
from ..tools import REPO_ROOT, repo_env

SERVERS = ("prefork", "gunicorn-gthread", "gunicorn-sync", "granian")
APP = "prefork_bench.wsgi.apps:app"
PACKAGES = ("gunicorn", "granian", "flask", "django")
WORKER_CONNECTIONS = 10000


def prefork(python: Path, workdir: Path, port: int, args: argparse.Namespace) -> Launch:
    return prefork_launch(python, workdir, port,
                          f'workers = {args.workers}\nbackend = "epoll"\nthreads = {args.threads}\n'
                          f"worker_connections = {WORKER_CONNECTIONS}\n",
                          f'wsgi = "{APP}"')


def _gunicorn(worker: str, python: Path, port: int, args: argparse.Namespace) -> Launch:
    return Launch([str(python), "-m", "gunicorn", "-k", worker, "--threads", str(args.threads),
                   "--workers", str(args.workers), "--bind", f"{HOST}:{port}",
                   "--backlog", str(BACKLOG), "--keep-alive", str(KEEPALIVE_SECONDS),
                   "--worker-connections", str(WORKER_CONNECTIONS),
                   "--log-level", "warning", APP], repo_env(), REPO_ROOT, port)


def gunicorn_gthread(python: Path, workdir: Path, port: int, args: argparse.Namespace) -> Launch:
    return _gunicorn("gthread", python, port, args)


def gunicorn_sync(python: Path, workdir: Path, port: int, args: argparse.Namespace) -> Launch:
    return _gunicorn("sync", python, port, args)


def granian(python: Path, workdir: Path, port: int, args: argparse.Namespace) -> Launch:
    return Launch([str(python), "-m", "granian", "--interface", "wsgi", "--host", HOST,
                   "--port", str(port), "--workers", str(args.workers),
                   "--blocking-threads", str(args.threads), "--http", "1", "--no-ws",
                   "--backlog", str(BACKLOG), "--http1-header-read-timeout", "60000",
                   "--no-access-log", "--log-level", "warning", APP], repo_env(), REPO_ROOT, port)


LAUNCHERS: dict[str, Launcher] = {"prefork": prefork, "gunicorn-gthread": gunicorn_gthread,
                                  "gunicorn-sync": gunicorn_sync, "granian": granian}
