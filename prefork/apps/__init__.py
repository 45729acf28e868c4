"""Applications: the handlers that routes point at, and how routes are built.

A route maps a path (exact, or a prefix when it ends with "/") to a handler:
a built-in name (``plaintext``, ``json``, ``static``, ``status``, ``metrics``,
``db``, ``queries``, ``updates``, ``fortunes``)
or a user's ``"package.module:callable"``. A handler takes a ``Request`` and
returns a ``Response`` — or an ``Offload`` to have part of its work run in the
worker's thread pool. ``websocket_echo`` and ``pubsub`` (a prefix route: ``/ws/<channel>``) are
WebSocket routes, ``publish`` (``POST /publish/<channel>``) publishes to a
channel (``apps/websocket.py``). A route marked ``blocking = true`` runs its handler in the
pool every time. Handlers are imported when the configuration is loaded, so a
bad one is a configuration error naming the route and the callable (``-t``
shows it, a reload with it keeps the old configuration, and no worker ever
crash-loops on it).
"""

from __future__ import annotations

import importlib
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..config import Config, ConfigError, RouteConfig
from ..dispatch import Router
from ..lifespan import Lifespans
from ..messages import Handler
from ..pubsub import Bus


@dataclass
class AppContext:
    """What a handler factory may use: the config and the worker's shared state."""

    config: Config
    scoreboard: Any = None       # prefork.scoreboard.Scoreboard, or None outside a master
    worker: Any = None           # the Worker serving, or None in tests
    shared: dict = field(default_factory=dict)  # per-worker singletons (the database connections)
    lifespans: Lifespans = field(default_factory=Lifespans)  # the ASGI apps' lifespans (build_router adds them)
    bus: Bus | None = None       # what the pubsub routes publish through (None: this process alone)
    clock: Callable[[], float] = time.monotonic  # the reactor's clock (WebSocket deadlines)
    websockets: list = field(default_factory=list)  # the WebSocketContexts of the routes (the worker's stop tells them)


def _builtins() -> dict[str, tuple[Callable[[AppContext, str], Handler], bool]]:
    from . import builtin, db, static, status, websocket

    return {
        "db": (db.make("db"), False),              # each decides: inline for SQLite reads, pool otherwise
        "queries": (db.make("queries"), False),
        "updates": (db.make("updates"), False),
        "fortunes": (db.make("fortunes"), False),
        "plaintext": (lambda app, prefix: builtin.plaintext, False),
        "json": (lambda app, prefix: builtin.json, False),
        "static": (static.make_handler, False),   # cache hits inline; misses offload open/stat
        "status": (status.make_status, False),
        "metrics": (status.make_metrics, False),
        "websocket_echo": (websocket.make_echo, False),
        "pubsub": (websocket.make_pubsub, False),    # on a prefix route: /ws/<channel>
        "publish": (websocket.make_publish, False),  # on a prefix route: POST /publish/<channel>
    }


_WEBSOCKET_HANDLERS = ("websocket_echo", "pubsub", "publish")


def default_routes(config: Config) -> tuple[RouteConfig, ...]:
    """The routes used when the file has no [[route]] tables."""
    routes = [RouteConfig("/plaintext", "plaintext"), RouteConfig("/json", "json"),
              RouteConfig("/status", "status"), RouteConfig("/metrics", "metrics")]
    if config.static.root:
        routes.append(RouteConfig("/static/", "static"))
    if config.database.url:
        routes += [RouteConfig("/db", "db"), RouteConfig("/queries", "queries"),
                   RouteConfig("/updates", "updates"), RouteConfig("/fortunes", "fortunes")]
    return tuple(routes)


def _import(spec: str, expected: str) -> Any:
    """The object ``"package.module:name"`` names; ValueError saying why not."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected {expected}, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module itself failing
        raise ValueError(f"cannot import {module_name!r} for {spec!r}: {type(exc).__name__}: {exc}") from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def load_callable(spec: str) -> Callable[..., Any]:
    """Import ``"package.module:callable"``; raise ValueError saying why not."""
    obj = _import(spec, "a built-in handler or 'package.module:callable'")
    if not callable(obj):
        raise ValueError(f"{spec!r} is not callable")
    try:
        inspect.signature(obj).bind(object())
    except TypeError:
        raise ValueError(f"{spec!r} must accept one argument (the request)") from None
    except ValueError:
        pass  # no signature to inspect (a builtin): trust it
    return obj


def load_asgi(spec: str, factory: bool = False, interface: str = "asgi") -> Callable[..., Any]:
    """Import the ASGI (or WSGI, ``interface``) app ``"package.module:app"``
    (with ``factory``: call that with no arguments for the app); raise
    ValueError saying why not."""
    obj = _import(spec, "'package.module:app'")
    if factory:
        if not callable(obj):
            raise ValueError(f"{spec!r} is not callable ({interface}_factory = true)")
        try:
            obj = obj()
        except Exception as exc:
            raise ValueError(f"the factory {spec!r} failed: {type(exc).__name__}: {exc}") from None
    if not callable(obj):
        raise ValueError(f"{spec!r} is not an {interface.upper()} app (not callable)")
    return obj


def load_wsgi(spec: str, factory: bool = False) -> Callable[..., Any]:
    """Import the WSGI app ``"package.module:app"``, as ``load_asgi``."""
    return load_asgi(spec, factory, "wsgi")


def _route_key(config: Config, i: int, explicit: bool) -> str:
    return f"route[{i}].handler" if explicit else "[[route]] (default routes)"


def check_routes(config: Config) -> None:
    """Resolve every route's handler now; raise ConfigError on the first bad one."""
    builtins = _builtins()
    explicit = bool(config.routes)
    for i, route in enumerate(config.routes or default_routes(config)):
        key = _route_key(config, i, explicit)
        if route.asgi or route.wsgi:  # an app: its import, with the key that names it
            interface = "asgi" if route.asgi else "wsgi"
            spec, factory = (route.asgi, route.asgi_factory) if route.asgi else (route.wsgi, route.wsgi_factory)
            try:
                load_asgi(spec, factory, interface)
            except ValueError as exc:
                raise ConfigError(config.path, f"route[{i}].{interface}", f"{route.path}: {exc}") from None
            continue
        if route.handler in builtins:
            if route.handler == "static" and not config.static.root:
                raise ConfigError(config.path, key, "the static handler needs [static] root")
            if route.handler in ("db", "queries", "updates", "fortunes") and not config.database.url:
                raise ConfigError(config.path, key, f"the {route.handler} handler needs [database] url")
            if route.handler in ("pubsub", "publish") and (not route.path.endswith("/") or route.path == "/"):
                raise ConfigError(config.path, f"route[{i}].path", f"the {route.handler} handler needs a prefix "
                                  f"route such as \"/ws/\" (the rest of the path names the channel), "
                                  f"got {route.path!r}")
            if route.handler in _WEBSOCKET_HANDLERS and route.blocking:
                raise ConfigError(config.path, f"route[{i}].blocking", f"the {route.handler} handler runs on the "
                                  "worker's loop, not in the pool")
            continue
        try:
            load_callable(route.handler)
        except ValueError as exc:
            raise ConfigError(config.path, key, f"{route.path}: {exc}") from None


def build_router(config: Config, app: AppContext) -> Router:
    builtins = _builtins()
    router = Router()
    for route in config.routes or default_routes(config):
        if route.asgi:
            from ..asgi import AsgiApp

            from ..asgi_websocket import CallHandler
            from .websocket import websocket_context

            mounted = AsgiApp(load_asgi(route.asgi, route.asgi_factory), route.path, route.root_path)
            mounted.websocket = websocket_context(app, CallHandler())  # its WebSocket connections
            app.lifespans.add(mounted, route.lifespan, route.asgi)
            router.add(route.path, mounted, True)
            continue
        if route.wsgi:
            from ..wsgi import WsgiApp

            router.add(route.path, WsgiApp(load_wsgi(route.wsgi, route.wsgi_factory), route.path, route.root_path))
            continue
        if route.handler in builtins:
            factory, blocking = builtins[route.handler]
            handler = factory(app, route.path)
        else:
            handler, blocking = load_callable(route.handler), False
        if route.blocking is not None:
            blocking = route.blocking
        router.add(route.path, handler, blocking)
    return router
