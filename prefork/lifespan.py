"""ASGI lifespan (lifespan spec 2.0), per worker, and the end of the app tasks.

Each worker runs the ``lifespan`` scope of every ASGI app it serves (an app
object mounted by several routes gets one lifespan and one ``state``) on its
asyncio loop: ``lifespan.startup`` before the worker accepts or tells the
master it is ready, ``lifespan.shutdown`` when it stops gracefully (QUIT, and
so on retirement after a reload), after its connections are done, bounded by
``shutdown_timeout``. A fast stop (TERM/INT) sends ``lifespan.shutdown`` too,
after its connections are cut and its calls cancelled, bounded by a second
(``systemctl stop`` sends TERM, and an app's pools and buffers expect their
shutdown, as under uvicorn). A shutdown still running at its bound is
cancelled; what the app says about that cancel (Starlette sends
``lifespan.shutdown.failed`` with the CancelledError) is not logged as an
error of the app: the warning about the bound says what happened.

The mode is the route's ``lifespan`` key: ``"auto"`` (an app that raises on
the lifespan scope, or returns, before sending anything does not support it:
one log line, and it is served without), ``"on"`` (that is a failure), or
``"off"``. ``lifespan.startup.failed``, or a failure in ``"on"``, is a
``LifespanError``: the worker exits with its boot-failure code.

``scope["state"]`` of the lifespan is the dict the app's route
(``asgi.AsgiApp``) copies into every request scope. This module imports
nothing else of prefork: the worker drives it, ``apps`` registers the routes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

log = logging.getLogger("prefork.worker")

CANCEL_WAIT = 1.0  # seconds a cancelled task may take to unwind before it is left behind
_ASGI = {"version": "3.0", "spec_version": "2.0"}
_STRICTNESS = {"off": 0, "auto": 1, "on": 2}


class Mounted(Protocol):
    """What a route gives the lifespan (``asgi.AsgiApp``): the ASGI app and
    the per-worker state each request scope gets a copy of."""

    app: Any
    state: dict


class LifespanError(Exception):
    """An app's lifespan startup failed: the worker must not serve."""


class Lifespan:
    """The lifespan of one ASGI app on one worker: its task and the messages each way."""

    def __init__(self, app: Any, mode: str, name: str):
        self.app = app
        self.mode = mode
        self.name = name
        self.state: dict = {}
        self.task: asyncio.Task | None = None
        self.sent = False         # the app has sent a lifespan message
        self.supported = True     # False once "auto" found it unsupported
        self.cancelling = False   # the task is being cancelled by us: its complaints are ours
        self._inbox: asyncio.Queue | None = None
        self._started: asyncio.Future | None = None
        self._stopped: asyncio.Future | None = None

    # --- the app's side -----------------------------------------------------------------

    async def _receive(self) -> dict:
        if not self.sent and not self._started.done() and self._inbox.empty():
            # asked for a second message without answering lifespan.startup: an
            # app that treats every scope as HTTP (it waits here until cancelled)
            self._no_lifespan("waited for another message instead of answering lifespan.startup")
            await asyncio.get_running_loop().create_future()
        return await self._inbox.get()

    async def _send(self, message: dict) -> None:
        kind = message["type"]
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            if self._started.done():
                raise RuntimeError(f"{kind} sent after the startup was over")
            if kind == "lifespan.startup.complete":
                self._started.set_result(None)
            else:
                self._started.set_exception(
                    LifespanError(f"{self.name}: lifespan.startup.failed: {message.get('message', '')}"))
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            if not self._stopped.done():
                if kind == "lifespan.shutdown.failed" and not self.cancelling:
                    log.error("%s: lifespan.shutdown.failed: %s", self.name, message.get("message", ""))
                self._stopped.set_result(None)
        else:
            raise RuntimeError(f"unexpected lifespan message {kind!r}")
        self.sent = True

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": dict(_ASGI), "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except Exception as exc:
            self._ended(exc)
        else:
            self._ended(None)

    def _ended(self, exc: Exception | None) -> None:
        if not self._started.done():
            if exc is not None and (self.sent or self.mode != "auto"):
                log.error("%s: exception in the lifespan startup", self.name, exc_info=exc)
            self._no_lifespan(f"raised {type(exc).__name__}: {exc}" if exc is not None else "returned")
        elif exc is not None and not self.cancelling:
            log.error("%s: exception in the lifespan", self.name, exc_info=exc)
        if not self._stopped.done():
            self._stopped.set_result(None)

    def _no_lifespan(self, how: str) -> None:
        """The startup ended without an answer: in "auto" an app that has sent
        nothing does not support lifespan (one line, and it is served);
        otherwise the startup failed."""
        if self.mode == "auto" and not self.sent:
            self.supported = False
            log.info("ASGI 'lifespan' protocol appears unsupported by %s (it %s)", self.name, how)
            self._started.set_result(None)
        else:
            self._started.set_exception(LifespanError(f"{self.name}: the lifespan {how} before "
                                                      "lifespan.startup.complete"))

    # --- the worker's side --------------------------------------------------------------

    async def startup(self) -> None:
        """Send ``lifespan.startup`` and wait for the answer; LifespanError if it failed."""
        loop = asyncio.get_running_loop()
        self._inbox = asyncio.Queue()
        self._started = loop.create_future()
        self._stopped = loop.create_future()
        self._inbox.put_nowait({"type": "lifespan.startup"})
        self.task = loop.create_task(self._main())
        await self._started

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def shutdown(self, timeout: float) -> None:
        """Send ``lifespan.shutdown`` and wait for the answer up to ``timeout``
        seconds; then the task is cancelled if it still runs."""
        if not self.running:
            return
        if self.supported and self._started.done() and self._started.exception() is None:
            self._inbox.put_nowait({"type": "lifespan.shutdown"})
            try:
                await asyncio.wait_for(asyncio.shield(self._stopped), max(timeout, 0.0))
            except asyncio.TimeoutError:
                log.warning("%s: the lifespan shutdown did not complete in %.1fs; cancelled", self.name, timeout)
        await self.cancel()

    async def cancel(self) -> None:
        """Cancel the lifespan task (after the shutdown, or in place of it)."""
        if self.running:
            self.cancelling = True
            await cancel_tasks({self.task})


class Lifespans:
    """The lifespans of one worker's ASGI apps, one per app object."""

    def __init__(self) -> None:
        self._by_app: dict[int, Lifespan] = {}
        self.started = False  # every startup completed

    def add(self, mounted: Mounted, mode: str, name: str) -> None:
        """Register a route's app; a route of an app already registered shares
        its lifespan and state (the strictest mode of its routes applies)."""
        found = self._by_app.get(id(mounted.app))
        if found is None:
            found = self._by_app[id(mounted.app)] = Lifespan(mounted.app, mode, name)
        elif _STRICTNESS[mode] > _STRICTNESS[found.mode]:
            found.mode = mode
        mounted.state = found.state

    def __bool__(self) -> bool:
        return any(lifespan.mode != "off" for lifespan in self._by_app.values())

    async def startup(self) -> None:
        """Every app's startup, in route order; the first failure raises LifespanError."""
        for lifespan in self._by_app.values():
            if lifespan.mode != "off":
                await lifespan.startup()
        self.started = True

    async def shutdown(self, timeout: float) -> None:
        """Every app's shutdown at once, bounded by ``timeout`` seconds."""
        await asyncio.gather(*(lifespan.shutdown(timeout) for lifespan in self._by_app.values()))

    async def cancel(self) -> None:
        """Cancel every lifespan still running (what it says about that is not an app error)."""
        await asyncio.gather(*(lifespan.cancel() for lifespan in self._by_app.values()))


async def cancel_tasks(tasks: set[asyncio.Task], grace: float = 0.0) -> int:
    """Wait up to ``grace`` seconds for ``tasks`` to end, cancel those still
    running and give them ``CANCEL_WAIT`` to unwind. Returns how many were cancelled."""
    pending = {task for task in tasks if not task.done()}
    if pending and grace > 0:
        _, pending = await asyncio.wait(pending, timeout=grace)
    for task in pending:
        task.cancel()
    if pending:
        _, stuck = await asyncio.wait(pending, timeout=CANCEL_WAIT)
        if stuck:
            log.warning("%d task(s) ignored cancellation; left behind", len(stuck))
    return len(pending)
