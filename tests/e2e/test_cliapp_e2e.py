"""``prefork-server MODULE:APP`` as real processes: an app without a config
file (TCP and unix sockets, Starlette and FastAPI over httpx, on uvloop and
asyncio), ``-t`` with an app, ``-c`` plus flags, ``-s`` without a file, and
new code on HUP and with ``--reload`` (a broken file keeps the old generation).

tests/unit/test_cliapp.py has the in-process tests (flags -> raw config)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, children, free_port, listening_on, wait_for_port, wait_until


class AppServer:
    """``python -m prefork.cli ARGS`` in ``cwd``; its stderr (the error log of a run without -c) in a file."""

    def __init__(self, tmp_path: Path, *argv: str, cwd: Path = ROOT, port: int = 0):
        self.log_path = tmp_path / f"stderr-{len(list(tmp_path.glob('stderr-*')))}.log"
        self.argv = argv
        self.cwd = cwd
        self.port = port
        self.proc: subprocess.Popen | None = None

    def start(self) -> "AppServer":
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "prefork.cli", *self.argv], stdout=log,
                                         stderr=subprocess.STDOUT, env=env, cwd=self.cwd)
        if self.port:
            try:
                wait_for_port(self.port, self.proc)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text()

    def workers(self) -> list[int]:
        return children(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            workers = self.workers()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for pid in workers:  # never leave a worker behind
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def run(tmp_path):
    servers: list[AppServer] = []

    def start(*argv: str, cwd: Path = ROOT, port: int = 0) -> AppServer:
        srv = AppServer(tmp_path, *argv, cwd=cwd, port=port)
        servers.append(srv)
        return srv.start()

    yield start
    for srv in servers:
        srv.stop()


def cli(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "prefork.cli", *argv], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=60)


@pytest.mark.parametrize("backend", ["uvloop", "asyncio"])
def test_an_app_without_a_config_file(run, tmp_path, backend):
    port = free_port()
    sock = str(tmp_path / "app.sock")
    srv = run("tests.asgi_apps:starlette_app", "--bind", f"127.0.0.1:{port}", "--bind", f"unix:{sock}",
              "--workers", "2", "--backend", backend, "--root-path", "/pre", port=port)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        r = client.get("/items/3", params={"q": "x"})
        assert (r.status_code, r.json()) == (200, {"id": 3, "q": "x"})
        assert client.get("/").json() == {"hello": "starlette", "root_path": "/pre", "path": "/pre/",
                                          "server": ["127.0.0.1", port]}
        assert client.get("/status").status_code == 404  # only the app: no built-in routes
    with httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://x", timeout=10) as client:
        assert client.get("/items/4").json() == {"id": 4, "q": None}
        # ASGI spec: on a unix socket the server is [path, None]
        assert client.get("/").json()["server"] == [sock, None]
    assert len(wait_until(lambda: len(srv.workers()) == 2 and srv.workers(), what="2 workers")) == 2
    assert f"backend = {backend}" in srv.log()


@pytest.mark.parametrize("interface", ["auto", "wsgi"])
def test_a_wsgi_app_without_a_config_file(run, interface):
    """A Flask app from the command line (auto-detected as WSGI): the native
    epoll reactor (the default without an ASGI route), a mount point from
    --root-path in SCRIPT_NAME."""
    port = free_port()
    srv = run("tests.wsgi_apps:flask_app", "--bind", f"127.0.0.1:{port}", "--interface", interface,
              "--root-path", "/pre", port=port)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        r = client.get("/json", params={"q": "1"})
        assert r.json() == {"hello": "flask", "args": {"q": "1"}, "root": "/pre", "path": "/json"}
    assert "backend = epoll" in srv.log()


def test_check_with_an_app_good_and_bad():
    ok = cli("-t", "tests.asgi_apps:fastapi_app")
    assert ok.returncode == 0, ok.stderr
    assert "test is successful" in ok.stderr
    for spec, fragment in (("tests.no_such_module:app", "cannot import 'tests.no_such_module'"),
                           ("tests.asgi_apps:nope", "has no attribute 'nope'"),
                           ("tests.asgi_apps:not_an_app", "not callable")):
        bad = cli("-t", spec)
        assert bad.returncode == 1, spec
        assert "command line: route[0].asgi: /: " in bad.stderr and fragment in bad.stderr, bad.stderr
        assert "test failed" in bad.stderr
    bad = cli("-t", "tests.asgi_apps:raw_app", "--workers", "0")
    assert bad.returncode == 1 and "command line: --workers: server.workers:" in bad.stderr


def test_a_config_file_with_flags_over_it(run, tmp_path):
    file_port, port = free_port(), free_port()
    path = tmp_path / "server.toml"
    path.write_text(textwrap.dedent(f"""\
        [server]
        workers = 1
        [[listen]]
        address = "127.0.0.1:{file_port}"
        [[route]]
        path = "/status"
        handler = "status"
        [[route]]
        path = "/"
        handler = "plaintext"
        [log]
        error_log = "{tmp_path / 'error.log'}"
        """))
    assert cli("-t", "-c", str(path), "tests.asgi_apps:fastapi_app").returncode == 0
    srv = run("-c", str(path), "tests.asgi_apps:fastapi_app", "--workers", "2", "--bind", f"127.0.0.1:{port}",
              "--backend", "asyncio", port=port)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        r = client.get("/users/7", params={"verbose": "true"})
        assert (r.status_code, r.json()) == (200, {"user_id": 7, "verbose": True})  # the app replaced "/"
        assert client.get("/status").status_code == 200  # the file's other route stays
    assert not listening_on(file_port)  # --bind replaced the file's listeners
    first = wait_until(lambda: len(srv.workers()) == 2 and srv.workers(), what="2 workers (--workers over 1)")
    assert "backend = asyncio" in (tmp_path / "error.log").read_text()  # the file's [log] still applies
    # a reload reads the file again and applies the same flags over it
    path.write_text(path.read_text().replace('handler = "status"', 'handler = "status"\n[[route]]\n'
                                                                   'path = "/json"\nhandler = "json"'))
    os.kill(srv.proc.pid, signal.SIGHUP)
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/json", timeout=5).status_code == 200, what="/json")
    assert httpx.get(f"http://127.0.0.1:{port}/users/1", timeout=5).json() == {"user_id": 1, "verbose": False}
    wait_until(lambda: len(srv.workers()) == 2 and not set(srv.workers()) & set(first), what="2 new workers")
    assert not listening_on(file_port)


def test_signal_without_a_file_needs_pid(run, tmp_path):
    res = cli("-s", "reload", "tests.asgi_apps:raw_app")
    assert res.returncode == 1 and "--pid" in res.stderr
    res = cli("-s", "reload", "--pid", str(tmp_path / "none.pid"))
    assert res.returncode == 1 and "none.pid" in res.stderr
    port = free_port()
    pid = tmp_path / "app.pid"
    srv = run("tests.asgi_apps:raw_app", "-b", f"127.0.0.1:{port}", "--pid", str(pid), port=port)
    wait_until(pid.exists, what="pid file")
    assert cli("-s", "reopen", "--pid", str(pid)).returncode == 0
    wait_until(lambda: "received SIGUSR1" in srv.log(), what="USR1 at the master")
    assert cli("-s", "quit", "--pid", str(pid)).returncode == 0
    assert srv.proc.wait(15) == 0


# --- new code on reload ---------------------------------------------------------------------


APP = """\
from helper import WORD


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": (%r + " " + WORD).encode()})
"""


@pytest.fixture
def project(tmp_path):
    """A project directory: the app module and a helper module it imports."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "appmod.py").write_text(APP % "one")
    (root / "helper.py").write_text('WORD = "a"\n')
    return root


def answer(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text
    except httpx.HTTPError:
        return ""


def edit(path: Path, text: str) -> None:
    """Replace the file whole (a watcher never sees it half-written)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def changes_show(srv, project: Path, port: int, trigger) -> None:
    """Each change (the app, then only the module it imports) answers after
    ``trigger``; a syntax error keeps the old generation answering and is
    logged naming the key and the module; fixed, it answers. (Each version
    has a new size: Python's bytecode cache checks the size and the mtime in
    seconds.)"""
    edit(project / "appmod.py", APP % "second")
    trigger()
    wait_until(lambda: answer(port) == "second a", what="the changed app")
    edit(project / "helper.py", 'WORD = "bee"\n')
    trigger()
    wait_until(lambda: answer(port) == "second bee", what="the changed helper module")
    assert "reload failed" not in srv.log()
    edit(project / "appmod.py", "async def app(:\n")
    trigger()
    wait_until(lambda: "reload failed" in srv.log(), what="the failed reload in the log")
    log = srv.log()
    assert "route[0].asgi" in log and "appmod" in log and "SyntaxError" in log, log
    assert answer(port) == "second bee"  # the old generation
    edit(project / "appmod.py", APP % "third")
    trigger()
    wait_until(lambda: answer(port) == "third bee", what="the fixed app")
    assert srv.proc.poll() is None


def test_hup_runs_the_changed_code(run, project):
    port = free_port()
    srv = run("appmod:app", "-b", f"127.0.0.1:{port}", "-w", "2", cwd=project, port=port)
    assert answer(port) == "one a"
    changes_show(srv, project, port, lambda: os.kill(srv.proc.pid, signal.SIGHUP))


def test_reload_flag_runs_the_changed_code(run, project):
    port = free_port()
    srv = run("appmod:app", "-b", f"127.0.0.1:{port}", "--reload", cwd=project, port=port)
    assert answer(port) == "one a"
    changes_show(srv, project, port, lambda: None)
    assert "--reload: " in srv.log() and "appmod.py changed" in srv.log()
