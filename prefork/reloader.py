"""Fresh application code on reload, and ``--reload``'s watcher.

The master imports the apps when it checks a configuration, and the workers
fork from it: a reload that found the app modules still in ``sys.modules``
would start the new generation on the old code. So before a reload reads
the configuration, the master forgets the *project's* modules — those whose
source is under the directory the server started in or under the root of a
route's package, and not in the standard library, a site-packages or
prefork itself — and puts them back if the reload is refused (a respawned
worker of the old generation then runs the code it was started with).

``Watcher`` (``--reload``, for development): the master polls the mtimes of
those modules' files about once a second and takes the HUP path on a change.
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import time
from types import ModuleType

from .config import Config

INTERVAL = 1.0  # seconds between two polls of the watched files
_OWN = ("prefork",)


def _app_modules(config: Config) -> list[str]:
    """The top-level modules the routes name ("pkg" of "pkg.mod:app")."""
    names = []
    for route in config.routes:
        spec = route.asgi or route.handler
        if ":" in spec:
            names.append(spec.partition(":")[0].partition(".")[0])
    return names


def project_dirs(config: Config) -> tuple[str, ...]:
    """The start directory and the directory each route's top-level package was imported from."""
    dirs = [] if os.getcwd() == "/" else [os.getcwd()]
    for name in _app_modules(config):
        module = sys.modules.get(name)
        paths = list(getattr(module, "__path__", ()))  # a package (or a namespace package)
        if not paths and getattr(module, "__file__", None):
            paths = [module.__file__]
        dirs += [os.path.dirname(os.path.abspath(p)) for p in paths]
    return tuple(dict.fromkeys(d for d in dirs if d != "/"))


def _not_project() -> tuple[str, ...]:
    """Where third-party and standard modules live, even inside a project (a ./.venv)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    paths.update(v for k, v in sysconfig.get_paths().items() if k in ("stdlib", "platstdlib", "purelib", "platlib"))
    return tuple(os.path.join(p, "") for p in paths if p)


def project_modules(dirs: tuple[str, ...]) -> dict[str, ModuleType]:
    """The modules in ``sys.modules`` whose source file is under one of ``dirs``."""
    inside = tuple(os.path.join(d, "") for d in dirs)
    outside = _not_project()
    found = {}
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] in _OWN:
            continue
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py"):  # an extension module cannot be read again
            continue
        path = os.path.abspath(path)
        if (path.startswith(inside) and not path.startswith(outside)
                and "site-packages" not in path and "dist-packages" not in path):
            found[name] = module
    return found


class Forgotten:
    """The project's modules a reload dropped from ``sys.modules``."""

    __slots__ = ("dirs", "modules")

    def __init__(self, dirs: tuple[str, ...], modules: dict[str, ModuleType]):
        self.dirs = dirs
        self.modules = modules

    def restore(self) -> None:
        """Put them back (and drop the project's modules imported since): the reload was refused."""
        for name in project_modules(self.dirs):
            del sys.modules[name]
        sys.modules.update(self.modules)


def forget(config: Config) -> Forgotten:
    """Drop the project's modules from ``sys.modules``, so that the next
    import reads the files again."""
    dirs = project_dirs(config)
    dropped = project_modules(dirs)
    for name in dropped:
        del sys.modules[name]
    importlib.invalidate_caches()  # new files in the project are found too
    return Forgotten(dirs, dropped)


class Watcher:
    """The project's source files and their mtimes, polled at most once per ``interval``."""

    def __init__(self, interval: float = INTERVAL):
        self.interval = interval
        self.mtimes: dict[str, int | None] = {}
        self.next_poll = 0.0

    def scan(self, config: Config) -> None:
        """Watch the source of every project module imported now (files seen before stay watched)."""
        for module in project_modules(project_dirs(config)).values():
            path = os.path.abspath(module.__file__)
            if path not in self.mtimes:
                self.mtimes[path] = _mtime(path)

    def changed(self) -> str:
        """A file whose mtime changed since the last poll ("" for none, or when not due yet)."""
        now = time.monotonic()
        if now < self.next_poll:
            return ""
        self.next_poll = now + self.interval
        found = ""
        for path, before in self.mtimes.items():
            now_mtime = _mtime(path)
            if now_mtime != before:
                self.mtimes[path] = now_mtime
                found = found or path
        return found


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None  # removed (a change too, once)
