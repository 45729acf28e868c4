"""``prefork-server package.module:app`` and the flags that override a
configuration, as ``uvicorn main:app`` and ``gunicorn main:app`` run an app.

The flags become changes of the raw TOML data *before* it is validated: the
config file's (``-c``), or the built-in defaults' when there is none. So the
same checks apply to a flag as to a key, and an error names the key and where
its value came from ("command line: --workers: server.workers: ..."). A
``Loader`` does it again on every reload (HUP, ``--reload``): the file is
read again, the flags still win.
"""

from __future__ import annotations

import argparse
import inspect
from typing import Any

from .apps import load_asgi
from .checks import checked
from .config import Config, ConfigError, from_dict, read

DEFAULT_BIND = "127.0.0.1:8000"  # uvicorn's
COMMAND_LINE = "command line"    # the "file" of a run without -c


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("app", nargs="?", metavar="MODULE:APP",
                   help="run this app ('package.module:app') at '/' (no -c: without a config file)")
    g = p.add_argument_group("app and overrides (they win over the -c file)")
    g.add_argument("-b", "--bind", action="append", metavar="ADDRESS",
                   help=f"listen on HOST:PORT, [V6]:PORT, PORT or unix:/PATH; repeatable (default {DEFAULT_BIND})")
    g.add_argument("-w", "--workers", metavar="N|auto", help="worker processes (server.workers)")
    g.add_argument("--interface", choices=("auto", "asgi", "wsgi"), default="auto",
                   help="how to call the app (auto: ASGI 3 when it is a coroutine function, else WSGI)")
    g.add_argument("--factory", action="store_true", help="MODULE:APP is a callable returning the app")
    g.add_argument("--root-path", metavar="PATH", help="the prefix a proxy strips (the scope's root_path)")
    g.add_argument("--access-log", metavar="PATH", help="access log file, '-' for stderr (log.access_log)")
    g.add_argument("--lifespan", choices=("auto", "on", "off"), help="lifespan of every ASGI route")
    g.add_argument("--forwarded-allow-ips", metavar="LIST",
                   help="comma-separated addresses/networks of trusted proxies (http.forwarded_allow)")
    g.add_argument("--backend", help="epoll, uvloop or asyncio (server.backend)")
    g.add_argument("--pid", metavar="PATH", help="pid file (server.pid_file; -s finds the master by it)")
    g.add_argument("--reload", action="store_true",
                   help="development: start a new generation when the app's source files change")


def check_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flags that need an app."""
    for flag, given in (("--root-path", args.root_path is not None), ("--factory", args.factory),
                        ("--interface", args.interface != "auto")):
        if given and not args.app:
            p.error(f"{flag} goes with an app (MODULE:APP)")


def detect_interface(app: Any) -> str:
    """"asgi" or "wsgi", as uvicorn's auto: an ASGI 3 app is a coroutine
    function, or an object whose ``__call__`` is one."""
    if inspect.isclass(app):
        return "wsgi"
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(getattr(app, "__call__", None)):
        return "asgi"
    return "wsgi"


def _takes_no_arguments(obj: Any) -> bool:
    try:
        inspect.signature(obj).bind()
    except (TypeError, ValueError):
        return False
    return inspect.isfunction(obj)


def apply(raw: dict, args: argparse.Namespace) -> dict[str, str]:
    """Change the TOML data ``raw`` in place by the flags in ``args``; return
    {key: where its value came from} for the keys changed (error messages)."""
    origin: dict[str, str] = {}

    def section(name: str) -> dict:
        table = raw.setdefault(name, {})
        if not isinstance(table, dict):  # the file's own mistake: let validation name it
            raise ConfigError(COMMAND_LINE, f"[{name}]", "expected a table, to apply the flags to")
        return table

    def put(name: str, key: str, value: Any, flag: str) -> None:
        section(name)[key] = value
        origin[f"{name}.{key}"] = f"{COMMAND_LINE}: {flag}"

    if args.bind:
        raw["listen"] = [{"address": address} for address in args.bind]
        origin["listen"] = f"{COMMAND_LINE}: --bind"
    elif args.app and "listen" not in raw:
        raw["listen"] = [{"address": DEFAULT_BIND}]
    if args.workers is not None:
        put("server", "workers", int(args.workers) if args.workers.isdigit() else args.workers, "--workers")
    if args.backend is not None:
        put("server", "backend", args.backend, "--backend")
    if args.pid is not None:
        put("server", "pid_file", args.pid, "--pid")
    if args.access_log is not None:
        put("log", "access_log", args.access_log, "--access-log")
    if args.forwarded_allow_ips is not None:
        put("http", "forwarded_allow", [a.strip() for a in args.forwarded_allow_ips.split(",") if a.strip()],
            "--forwarded-allow-ips")
    routes = raw.setdefault("route", [])
    if args.app and isinstance(routes, list):
        # the app is "/": in place of the file's route for "/", if any
        i = next((i for i, r in enumerate(routes) if isinstance(r, dict) and r.get("path") == "/"), len(routes))
        routes[i:i + 1] = [_app_route(args, i, origin)]
    if args.lifespan is not None and isinstance(routes, list):
        for i, route in enumerate(routes):
            if isinstance(route, dict) and "asgi" in route:
                route["lifespan"] = args.lifespan
                origin[f"route[{i}].lifespan"] = f"{COMMAND_LINE}: --lifespan"
    return origin


def _app_route(args: argparse.Namespace, i: int, origin: dict[str, str]) -> dict:
    interface = args.interface
    if interface == "auto":
        try:
            app = load_asgi(args.app, args.factory)
        except ValueError:
            app = None  # "asgi": the config's check of the route names the problem
        interface = "asgi" if app is None else detect_interface(app)
        if interface == "wsgi" and not args.factory and _takes_no_arguments(app):
            raise ConfigError(COMMAND_LINE, f"route[{i}].wsgi", f"/: {args.app!r} is a function of no arguments, "
                                                                "not an app: if it returns the app, add --factory")
    route: dict[str, Any] = {"path": "/", interface: args.app}
    origin[f"route[{i}].{interface}"] = COMMAND_LINE
    if args.factory:
        route[f"{interface}_factory"] = True
        origin[f"route[{i}].{interface}_factory"] = f"{COMMAND_LINE}: --factory"
    if args.root_path is not None:
        route["root_path"] = args.root_path
        origin[f"route[{i}].root_path"] = f"{COMMAND_LINE}: --root-path"
    return route


def _source(exc: ConfigError, origin: dict[str, str]) -> str:
    """Where the value of the key ``exc`` names came from ("" for the file)."""
    for key, where in origin.items():
        if exc.key == key or exc.key.startswith((key + ".", key + "[")):
            return where
    return ""


class Loader:
    """The configuration of this command line: ``-c`` (or the defaults) with
    the flags applied, checked. Called at start and on every reload."""

    def __init__(self, args: argparse.Namespace, path: str | None):
        self.args = args
        self.path = path  # None: no file, the built-in defaults

    def __call__(self, check_fds: bool = True) -> Config:
        raw = read(self.path) if self.path else {}
        name = self.path or COMMAND_LINE
        origin: dict[str, str] = {}
        try:
            origin = apply(raw, self.args)
            return checked(from_dict(raw, name), check_fds)
        except ConfigError as exc:
            where = _source(exc, origin)
            if not where or where == exc.path:
                raise
            raise ConfigError(where, exc.key, exc.message) from None
