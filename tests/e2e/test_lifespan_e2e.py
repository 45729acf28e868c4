"""ASGI lifespan per worker and stopping with ASGI calls open, over real
processes (issue 15, points 3 and 5), on uvloop and asyncio: startup before
the first request (its state in the request scope), shutdown on QUIT and on
the old generation after HUP, a failed startup stopping the first start and
rolling a reload back, apps without lifespan support, a shutdown that hangs,
a streaming response cut at the graceful deadline, a fast stop cancelling.

The apps are in tests/asgi_lifespan_apps.py; they leave marker files
(``<what>-<worker pid>``) in the test's directory ($PREFORK_TEST_MARKERS).
tests/unit/test_lifespan.py has the runner's in-process tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import httpx
import pytest

from conftest import Client, http_get, pid_alive, wait_until

APPS = "tests.asgi_lifespan_apps"


@pytest.fixture(params=["uvloop", "asyncio"])
def backend(request):
    return request.param


@pytest.fixture
def markers(tmp_path):
    path = tmp_path / "markers"
    path.mkdir()
    return path


@pytest.fixture
def serve(start_server, markers):
    """Start a server with one ASGI route at "/" (``app`` of asgi_lifespan_apps)."""
    def start(app: str, lifespan: str = "", server: str = "", wait: bool = True):
        route = f'\n[[route]]\npath = "/"\nasgi = "{APPS}:{app}"\n' + (f'lifespan = "{lifespan}"\n' if lifespan else "")
        return start_server(server=server, names=("http",), extra=route,
                            env=dict(os.environ, PREFORK_TEST_MARKERS=str(markers)), wait=wait)
    return start


def marked(markers, what: str) -> set[int]:
    """The worker pids that left a ``what`` marker."""
    return {int(p.name.rsplit("-", 1)[1]) for p in markers.glob(f"{what}-*")}


def exits(srv, timeout: float = 15.0) -> int:
    srv.proc.wait(timeout)
    return srv.proc.returncode


def test_startup_runs_before_the_first_request_and_its_state_reaches_each_request(serve, markers):
    srv = serve("marker_app", server="workers = 2")
    # the first request goes out at once: it waits in the accept queue until a worker has started up
    status, _, body = http_get(srv.port, "/state")
    assert status == 200
    state = json.loads(body)
    assert state["resource"] == "ready" and state["pid"] in marked(markers, "startup")
    workers = srv.wait_workers(2)
    wait_until(lambda: marked(markers, "startup") == set(workers), what="a startup in each worker")
    for _ in range(4):  # each request gets a copy: what one request adds is not in the next one's
        assert "touched" not in json.loads(http_get(srv.port, "/state")[2])


def test_shutdown_runs_on_quit(serve, markers):
    srv = serve("marker_app", server="workers = 2")
    workers = srv.wait_workers(2)
    wait_until(lambda: marked(markers, "startup") == set(workers), what="startups")
    assert not marked(markers, "shutdown")
    srv.proc.send_signal(signal.SIGQUIT)
    assert exits(srv) == 0
    assert marked(markers, "shutdown") == set(workers)


def test_shutdown_runs_in_the_old_generation_after_hup(serve, markers):
    srv = serve("marker_app", server="workers = 2")
    old = srv.wait_workers(2)
    wait_until(lambda: marked(markers, "startup") == set(old), what="startups")
    os.kill(srv.pid, signal.SIGHUP)
    new = srv.wait_workers(2, exclude=set(old))
    wait_until(lambda: marked(markers, "shutdown") == set(old), what="the old generation's shutdowns")
    assert set(new) <= marked(markers, "startup")
    assert not marked(markers, "shutdown") & set(new)
    assert json.loads(http_get(srv.port, "/state")[2])["pid"] in new


def test_failed_startup_stops_the_first_start(serve, markers, tmp_path):
    (markers / "fail-startup").touch()
    srv = serve("marker_app", wait=False)  # it may be gone before its port is polled
    assert exits(srv) == 3  # EXIT_BOOT_ERROR: the server does not start
    log = srv.log()
    assert "cannot start" in log and "lifespan.startup.failed: no database" in log
    assert "could not start" in log  # the master's reason for stopping
    assert log.count("started worker process") == 1  # not respawned in a loop


def test_failed_startup_on_reload_keeps_the_old_generation(serve, markers):
    srv = serve("marker_app", server="workers = 2")
    old = srv.wait_workers(2)
    wait_until(lambda: marked(markers, "startup") == set(old), what="startups")
    (markers / "fail-startup").touch()
    os.kill(srv.pid, signal.SIGHUP)
    try:
        wait_until(lambda: "keeping the previous configuration" in srv.log(), what="the reload rolled back")
    except TimeoutError:
        raise AssertionError(srv.log()) from None
    assert "lifespan.startup.failed: no database" in srv.log()
    assert srv.proc.poll() is None
    wait_until(lambda: sorted(srv.workers()) == sorted(old), what="only the old workers left")
    assert json.loads(http_get(srv.port, "/state")[2])["pid"] in old
    assert not marked(markers, "shutdown")  # the old generation was never told to stop


def test_startup_exception_with_lifespan_on_stops_the_start(serve):
    srv = serve("raising_startup_app", lifespan="on", wait=False)  # it may be gone before its port is polled
    assert exits(srv) == 3
    log = srv.log()
    assert "RuntimeError: cannot reach the database" in log and "cannot start" in log


def test_app_without_lifespan_is_served_in_auto_with_one_log_line(serve):
    srv = serve("no_lifespan_app", server="workers = 2")
    for _ in range(3):
        assert http_get(srv.port, "/")[2] == b"no lifespan here"
    srv.wait_workers(2)
    wait_until(lambda: srv.log().count("appears unsupported") == 2, what="one line per worker")
    srv.proc.send_signal(signal.SIGQUIT)
    assert exits(srv) == 0
    assert srv.log().count("appears unsupported") == 2  # no second line at shutdown
    assert "Traceback" not in srv.log()


def test_app_without_lifespan_fails_the_start_in_on(serve):
    srv = serve("no_lifespan_app", lifespan="on", wait=False)  # it may be gone before its port is polled
    assert exits(srv) == 3
    assert "only http is supported" in srv.log()


def test_lifespan_off_never_calls_the_lifespan(serve, markers):
    srv = serve("marker_app", lifespan="off")
    assert json.loads(http_get(srv.port, "/state")[2]) == {}
    srv.proc.send_signal(signal.SIGQUIT)
    assert exits(srv) == 0
    assert not marked(markers, "startup") and not marked(markers, "shutdown")


def test_a_shutdown_that_hangs_is_bounded_by_shutdown_timeout(serve, markers):
    srv = serve("hanging_shutdown_app", server="shutdown_timeout = 1.5")
    [worker] = srv.wait_workers(1)
    assert http_get(srv.port, "/")[2] == b"ok"
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGQUIT)
    assert exits(srv) == 0
    took = time.monotonic() - started
    assert marked(markers, "shutdown-begun") == {worker}
    assert 1.2 < took < 4.0, took  # the worker's own bound, not the master's SIGKILL (1.5 + 3 s)
    log = srv.log()
    assert "did not complete in 1.5s" in log and "SIGKILL" not in log


def test_a_stream_open_at_quit_gets_disconnect_and_is_closed_at_the_deadline(serve, markers):
    srv = serve("marker_app", server="shutdown_timeout = 1.5")
    [worker] = srv.wait_workers(1)
    sock = srv.connect(timeout=10)
    try:
        sock.sendall(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"data: 1\n" not in data:
            data += sock.recv(65536)
        srv.proc.send_signal(signal.SIGQUIT)
        quit_at = time.monotonic()
        received = 0
        while True:  # the stream goes on until the deadline, then the connection closes
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += len(chunk)
        closed_after = time.monotonic() - quit_at
    finally:
        sock.close()
    assert 1.2 < closed_after < 3.5, closed_after
    assert received > 0  # in-flight calls run on during the graceful stop
    assert exits(srv) == 0
    assert marked(markers, "disconnect") == {worker}
    assert (markers / f"disconnect-{worker}").read_text() == "http.disconnect"
    assert marked(markers, "stream-ended") == {worker}
    assert marked(markers, "shutdown") == {worker}  # the lifespan shutdown after the calls


def test_an_in_flight_request_finishes_during_a_graceful_stop(serve, markers):
    srv = serve("marker_app", server="shutdown_timeout = 10")
    [worker] = srv.wait_workers(1)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        c = Client(sock)
        c.send(b"GET /sleep?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: marked(markers, "sleeping") == {worker}, what="the app sleeping")
        srv.proc.send_signal(signal.SIGQUIT)
        status, headers, body = c.response()
        assert (status, body) == (200, b"woke")
        assert headers["connection"] == "close"  # draining: no keep-alive
        assert c.closed()
    assert exits(srv) == 0
    assert not marked(markers, "cancelled")
    assert marked(markers, "shutdown") == {worker}


def test_a_background_task_after_the_response_finishes_during_a_graceful_stop(serve, markers):
    srv = serve("marker_app", server="shutdown_timeout = 10")
    [worker] = srv.wait_workers(1)
    status, _, body = http_get(srv.port, "/background")
    assert (status, body) == (202, b"accepted")
    srv.proc.send_signal(signal.SIGQUIT)  # the connection is closed, the call still runs
    assert exits(srv) == 0
    assert marked(markers, "background-done") == {worker}  # waited for, not cancelled
    assert marked(markers, "shutdown") == {worker}
    assert "cancelled" not in srv.log()


def test_a_task_the_app_started_itself_does_not_hold_up_a_graceful_stop(serve, markers):
    srv = serve("spawning_app", server="shutdown_timeout = 10")
    [worker] = srv.wait_workers(1)
    assert http_get(srv.port, "/")[2] == b"ok"
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGQUIT)
    assert exits(srv) == 0
    assert time.monotonic() - started < 5.0  # not the 10 s of shutdown_timeout
    assert marked(markers, "shutdown") == {worker}  # the lifespan shutdown still ran


def test_fast_stop_cancels_a_long_app_task(serve, markers):
    srv = serve("marker_app")
    [worker] = srv.wait_workers(1)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b"GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: marked(markers, "sleeping") == {worker}, what="the app sleeping")
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert exits(srv) in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 3.0
    assert marked(markers, "cancelled") == {worker}
    assert marked(markers, "shutdown") == {worker}  # after the call is cancelled, the lifespan shutdown runs
    wait_until(lambda: not pid_alive(worker), what="the worker gone")


def test_fast_stop_runs_a_fastapi_shutdown_and_logs_no_error(start_server, markers):
    """TERM (what systemctl stop sends) still runs the app's shutdown: its
    resources are closed, and nothing is logged as an app failure."""
    route = f'\n[[route]]\npath = "/"\nasgi = "{APPS}:fastapi_lifespan_app"\n'
    srv = start_server(server="workers = 2", names=("http",), extra=route,
                       env=dict(os.environ, PREFORK_TEST_MARKERS=str(markers)))
    workers = srv.wait_workers(2)
    wait_until(lambda: marked(markers, "fastapi-startup") == set(workers), what="startups")
    assert httpx.get(f"http://127.0.0.1:{srv.port}/items/1", timeout=10).json()["name"] == "pen"
    srv.proc.send_signal(signal.SIGTERM)
    assert exits(srv) == 0
    assert marked(markers, "fastapi-shutdown") == set(workers)
    assert "ERROR" not in srv.log() and "Traceback" not in srv.log()


def test_fast_stop_bounds_a_stuck_starlette_shutdown_without_an_error(start_server, markers):
    route = f'\n[[route]]\npath = "/"\nasgi = "{APPS}:starlette_stuck_shutdown_app"\n'
    srv = start_server(server="shutdown_timeout = 30", names=("http",), extra=route,
                       env=dict(os.environ, PREFORK_TEST_MARKERS=str(markers)))
    [worker] = srv.wait_workers(1)
    assert http_get(srv.port, "/")[2] == b"ok"
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    assert exits(srv) == 0
    assert time.monotonic() - started < 4.0  # a second for the shutdown, not shutdown_timeout's 30
    assert marked(markers, "starlette-shutdown-begun") == {worker}
    log = srv.log()
    assert "did not complete in 1.0s; cancelled" in log
    assert "ERROR" not in log and "Traceback" not in log, log


def test_quit_during_the_startup_lets_it_finish_then_shuts_down_without_serving(serve, markers):
    """QUIT while a worker's lifespan startup runs (here: the startup itself
    asks the master to stop): the startup completes, the worker never
    serves, the lifespan shutdown runs and all exit at once -- not at
    shutdown_timeout (CI once saw a worker whose startup ended as the QUIT
    came serve on until then), and not with the startup cancelled."""
    srv = serve("stop_during_startup_app", wait=False)
    started = time.monotonic()
    assert exits(srv) == 0
    assert time.monotonic() - started < 10.0  # the startup's second, not shutdown_timeout's 30
    worker = marked(markers, "begun")
    assert len(worker) == 1
    assert marked(markers, "startup") == worker and marked(markers, "shutdown") == worker
    assert not marked(markers, "served")
    log = srv.log()
    assert "not serving" in log and "ERROR" not in log, log


def test_quit_during_a_startup_that_hangs_cancels_it_at_shutdown_timeout(serve, markers):
    (markers / "hang-startup").touch()
    srv = serve("stop_during_startup_app", server="shutdown_timeout = 2", wait=False)
    started = time.monotonic()
    assert exits(srv) == 0
    assert 1.5 < time.monotonic() - started < 8.0
    assert marked(markers, "begun") and not marked(markers, "startup") and not marked(markers, "shutdown")
    log = srv.log()
    assert "did not finish by shutdown_timeout; cancelled" in log and "ERROR" not in log, log


def test_fastapi_lifespan_resource_used_by_a_route(start_server, markers):
    route = f'\n[[route]]\npath = "/"\nasgi = "{APPS}:fastapi_lifespan_app"\n'
    srv = start_server(server="workers = 2", names=("http",), extra=route,
                       env=dict(os.environ, PREFORK_TEST_MARKERS=str(markers)))
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
        r = client.get("/items/1")
        assert r.status_code == 200
        body = r.json()
        assert body["name"] == "pen" and body["worker_pid"] in marked(markers, "fastapi-startup")
        assert client.get("/items/2").json()["name"] == "ink"
        assert client.get("/items/3").json()["name"] is None
    workers = srv.wait_workers(2)
    wait_until(lambda: marked(markers, "fastapi-startup") == set(workers), what="startups")
    srv.proc.send_signal(signal.SIGQUIT)
    assert exits(srv) == 0
    assert marked(markers, "fastapi-shutdown") == set(workers)
