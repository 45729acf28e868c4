"""Which modules the build compiles (setup.py reads ``HOT``), and which of them run compiled.

A module of ``HOT`` runs compiled when its C extension was built beside its source, is
newer than the source (an edited source wins over a stale build), and ``PREFORK_PURE``
is not set. Imports nothing of prefork (setup.py imports it alone)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

# the hot path: reactor, epoll and asyncio drivers, HTTP protocol, dispatcher, the ASGI and
# WSGI adapters (and the WSGI thread pool), the WebSocket protocol and its routes (a broadcast
# to every subscriber)
HOT = (
    "prefork.reactor",
    "prefork.messages",
    "prefork.framing",
    "prefork.driver",
    "prefork.connection",
    "prefork.aio",
    "prefork.protocols.http",
    "prefork.protocols.http_parser",
    "prefork.protocols.http_flow",
    "prefork.protocols.http_stream",
    "prefork.protocols.http_response",
    "prefork.dispatch",
    "prefork.asgi",
    "prefork.asgi_response",
    "prefork.wsgi",
    "prefork.wsgi_environ",
    "prefork.pool",
    "prefork.apps.builtin",
    "prefork.protocols.websocket",
    "prefork.apps.websocket",
)

_ROOT = os.path.dirname(os.path.abspath(__file__))
_EXT = importlib.machinery.EXTENSION_SUFFIXES[0]  # e.g. ".cpython-311-x86_64-linux-gnu.so"


def _paths(name: str) -> tuple[str, str]:
    base = os.path.join(os.path.dirname(_ROOT), *name.split("."))
    return base + ".py", base + _EXT


def _fresh(name: str) -> bool:
    """Whether ``name``'s extension exists and is not older than its source."""
    source, ext = _paths(name)
    try:
        return os.stat(ext).st_mtime >= os.stat(source).st_mtime
    except OSError:
        return False


class SourceFirst:
    """A meta path finder for the modules of ``HOT``: their source, when ``PREFORK_PURE``
    is set or their extension is missing or stale (otherwise the normal finders, which
    prefer an extension to a source, load it)."""

    def __init__(self, pure: bool):
        self.pure = pure

    def find_spec(self, name, path=None, target=None):
        if name not in HOT or (not self.pure and _fresh(name)):
            return None
        source = _paths(name)[0]
        if not os.path.exists(source):
            return None
        return importlib.util.spec_from_file_location(name, source)


def install() -> None:
    """Called once by ``prefork/__init__``: the finder goes first on ``sys.meta_path``."""
    if not any(isinstance(f, SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceFirst(bool(os.environ.get("PREFORK_PURE"))))


def running() -> tuple[int, int]:
    """(modules of HOT loaded compiled, modules of HOT loaded): what ``--version`` reports."""
    loaded = [sys.modules[n] for n in HOT if n in sys.modules]
    compiled = sum(1 for m in loaded if (getattr(m, "__file__", "") or "").endswith(_EXT))
    return compiled, len(loaded)


def describe() -> str:
    """One line for ``--version``: compiled or pure Python, and why."""
    for name in HOT:
        __import__(name)
    compiled, total = running()
    if compiled == total:
        return f"compiled (Cython: {compiled} hot-path modules)"
    if os.environ.get("PREFORK_PURE"):
        return "pure Python (PREFORK_PURE is set)"
    if compiled == 0:
        return "pure Python (no compiled modules were built: Cython or a C compiler was missing)"
    return f"partly compiled ({compiled} of {total} hot-path modules; the rest are missing or older than their source)"
