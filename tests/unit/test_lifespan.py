"""The lifespan runner (prefork/lifespan.py) in-process, with raw ASGI apps on
asyncio and uvloop loops, and the ``[[route]] lifespan`` key.
tests/e2e/test_lifespan_e2e.py runs it in real workers."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

import pytest
from starlette.applications import Starlette

from prefork.config import ConfigError, load
from prefork.lifespan import LifespanError, Lifespans, cancel_tasks
from testkit import GOOD, write


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Run a coroutine to its end on a fresh loop of each kind."""
    def run(coro):
        if request.param == "uvloop":
            import uvloop

            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(coro)
        finally:
            loop.close()
    return run


class Route:
    """What asgi.AsgiApp gives the lifespan (lifespan.Mounted)."""

    def __init__(self, app):
        self.app = app
        self.state: dict = {}


def spec_app(log: list, fail: str = "", shutdown_fails: bool = False):
    """A lifespan app that follows the spec, noting what it was told."""
    async def app(scope, receive, send):
        assert scope["type"] == "lifespan" and scope["asgi"]["version"] == "3.0"
        log.append((await receive())["type"])
        if fail:
            await send({"type": "lifespan.startup.failed", "message": fail})
            return
        scope["state"]["db"] = "connected"
        await send({"type": "lifespan.startup.complete"})
        log.append((await receive())["type"])
        await send({"type": "lifespan.shutdown.failed" if shutdown_fails else "lifespan.shutdown.complete",
                    "message": "could not flush"})
        log.append("returned")
    return app


def lifespans_for(*routes_and_modes) -> Lifespans:
    group = Lifespans()
    for route, mode in routes_and_modes:
        group.add(route, mode, "test:app")
    return group


def test_startup_then_shutdown_with_state(run):
    log: list = []
    route = Route(spec_app(log))
    group = lifespans_for((route, "auto"))

    async def main():
        await group.startup()
        assert log == ["lifespan.startup"] and group.started
        assert route.state == {"db": "connected"}  # the route's state is the lifespan's
        await group.shutdown(5)
        return log

    assert run(main()) == ["lifespan.startup", "lifespan.shutdown", "returned"]


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_startup_failed_is_a_lifespan_error_in_every_mode(run, mode):
    group = lifespans_for((Route(spec_app([], fail="no database")), mode))
    with pytest.raises(LifespanError, match="lifespan.startup.failed: no database"):
        run(group.startup())
    assert not group.started


async def raises(scope, receive, send):
    raise RuntimeError("lifespan? never heard of it")


async def returns(scope, receive, send):
    return


async def http_only(scope, receive, send):
    """Treats every scope as HTTP: answers at once."""
    await send({"type": "http.response.start", "status": 200, "headers": []})


async def waits_again(scope, receive, send):
    """Treats every scope as HTTP: reads the body, then waits for a disconnect."""
    await receive()
    await receive()


@pytest.mark.parametrize("app", [raises, returns, http_only, waits_again])
def test_auto_tolerates_an_app_without_lifespan_with_one_log_line(run, app, caplog):
    route = Route(app)
    group = lifespans_for((route, "auto"))

    async def main():
        await group.startup()
        await group.shutdown(5)  # no lifespan.shutdown to wait for: it returns at once
        return group.started

    with caplog.at_level(logging.INFO, logger="prefork.worker"):
        assert run(main()) is True
    lines = [r for r in caplog.records if r.name == "prefork.worker"]
    assert len(lines) == 1 and "appears unsupported" in lines[0].getMessage()
    assert lines[0].levelno == logging.INFO and lines[0].exc_info is None


@pytest.mark.parametrize("app, why", [(raises, "raised RuntimeError"), (returns, "returned"),
                                      (http_only, "raised RuntimeError: unexpected lifespan message"),
                                      (waits_again, "waited for another message")])
def test_on_makes_an_app_without_lifespan_a_failure(run, app, why):
    group = lifespans_for((Route(app), "on"))

    async def main():
        try:
            await group.startup()
        finally:
            await group.cancel()

    with pytest.raises(LifespanError, match=why):
        run(main())


def test_exception_after_the_startup_message_was_answered_is_logged(run, caplog):
    async def app(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        raise ValueError("shutdown broke")

    group = lifespans_for((Route(app), "auto"))

    async def main():
        await group.startup()
        await group.shutdown(5)

    with caplog.at_level(logging.INFO, logger="prefork.worker"):
        run(main())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "ValueError: shutdown broke" in caplog.text


def test_shutdown_failed_is_logged(run, caplog):
    log: list = []
    group = lifespans_for((Route(spec_app(log, shutdown_fails=True)), "on"))

    async def main():
        await group.startup()
        await group.shutdown(5)

    run(main())
    assert "lifespan.shutdown.failed: could not flush" in caplog.text


def test_off_never_calls_the_app(run):
    called = []

    async def app(scope, receive, send):
        called.append(scope)

    route = Route(app)
    group = lifespans_for((route, "off"))
    assert not group

    async def main():
        await group.startup()
        await group.shutdown(1)

    run(main())
    assert called == []


def test_an_app_mounted_twice_has_one_lifespan_one_state_and_the_strictest_mode(run):
    starts: list = []

    async def app(scope, receive, send):
        starts.append((await receive())["type"])
        scope["state"]["n"] = len(starts)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    first, second, other = Route(app), Route(app), Route(spec_app([]))
    group = lifespans_for((first, "off"), (second, "on"), (other, "auto"))
    assert group  # "on" beats "off" for the shared app

    async def main():
        await group.startup()
        await group.shutdown(1)

    run(main())
    assert starts == ["lifespan.startup"]
    assert first.state is second.state and first.state == {"n": 1}
    assert other.state == {"db": "connected"} and other.state is not first.state


def test_a_shutdown_that_never_completes_is_cancelled_at_the_timeout(run, caplog):
    cancelled = []

    async def app(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    group = lifespans_for((Route(app), "on"))

    async def main():
        await group.startup()
        loop = asyncio.get_running_loop()
        began = loop.time()
        await group.shutdown(0.2)
        return loop.time() - began

    took = run(main())
    assert 0.15 < took < 1.0 and cancelled == [True]
    assert "did not complete in 0.2s" in caplog.text


def run_starlette_lifespan(run, caplog, after_yield, timeout: float) -> list[str]:
    """Start and shut down (bounded by ``timeout``) a Starlette app whose
    lifespan awaits ``after_yield()`` on shutdown; the ERROR messages logged."""
    @asynccontextmanager
    async def lifespan(app):
        yield
        await after_yield()

    group = lifespans_for((Route(Starlette(lifespan=lifespan)), "auto"))

    async def main():
        await group.startup()
        await group.shutdown(timeout)

    with caplog.at_level(logging.INFO, logger="prefork.worker"):
        run(main())
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_our_cancel_of_a_stuck_starlette_shutdown_is_a_warning_not_an_app_error(run, caplog):
    """Starlette answers the cancel at the bound with lifespan.shutdown.failed
    carrying the CancelledError: that is our doing, not the app's failure."""
    ran = []

    async def stuck():
        ran.append("shutdown")
        await asyncio.Event().wait()

    errors = run_starlette_lifespan(run, caplog, stuck, 0.2)
    assert ran == ["shutdown"]
    assert "did not complete in 0.2s; cancelled" in caplog.text
    assert errors == []


def test_a_starlette_shutdown_that_fails_on_its_own_is_still_an_error(run, caplog):
    async def failing():
        raise OSError("could not flush the queue")

    errors = run_starlette_lifespan(run, caplog, failing, 1.0)
    assert any("lifespan.shutdown.failed" in e and "could not flush the queue" in e for e in errors), errors


def test_cancel_tasks_waits_the_grace_then_cancels(run):
    async def main():
        quick = asyncio.ensure_future(asyncio.sleep(0.01))
        slow = asyncio.ensure_future(asyncio.sleep(30))
        cancelled = await cancel_tasks({quick, slow}, grace=0.2)
        return cancelled, quick.cancelled(), slow.cancelled()

    assert run(main()) == (1, False, True)


# --- the [[route]] lifespan key -----------------------------------------------------------


def test_lifespan_key_defaults_to_auto_and_takes_on_and_off(tmp_path):
    route = '\n[[route]]\npath = "/"\nasgi = "tests.asgi_apps:raw_app"\n'
    assert load(write(tmp_path, GOOD + route)).routes[0].lifespan == "auto"
    for mode in ("on", "off", "auto"):
        assert load(write(tmp_path, GOOD + route + f'lifespan = "{mode}"\n')).routes[0].lifespan == mode


@pytest.mark.parametrize("route, why", [
    ('asgi = "tests.asgi_apps:raw_app"\nlifespan = "yes"', "expected one of 'auto', 'on', 'off'"),
    ('asgi = "tests.asgi_apps:raw_app"\nlifespan = true', "expected a string"),
    ('handler = "status"\nlifespan = "on"', "needs asgi"),
])
def test_bad_lifespan_key_is_a_config_error_naming_it(tmp_path, route, why):
    path = write(tmp_path, GOOD + f'\n[[route]]\npath = "/"\n{route}\n')
    with pytest.raises(ConfigError, match=rf"route\[0\]\.lifespan.*{why}"):
        load(path)
