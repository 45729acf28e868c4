"""``prefork-server MODULE:APP`` and its flags (prefork/cliapp.py): each flag
as a change of the raw TOML data, interface detection, errors naming the
flag and the key; a route's root_path; the reloader's fresh modules and
watcher (prefork/reloader.py).

This file: the in-process tests; tests/e2e/test_cliapp_e2e.py runs servers."""

from __future__ import annotations

import functools
import os
import sys

import pytest

from prefork import cliapp, reloader
from prefork.asgi import AsgiApp, build_scope
from prefork.cli import _parser
from prefork.config import ConfigError, from_dict
from prefork.messages import Request
from testkit import conf

APP = "tests.asgi_apps:raw_app"


def args(*argv):
    p = _parser()
    a = p.parse_args(list(argv))
    cliapp.check_arguments(p, a)
    return a


def applied(raw, *argv):
    origin = cliapp.apply(raw, args(*argv))
    return raw, origin


# --- flags -> raw config ------------------------------------------------------------------


def test_an_app_alone_is_the_defaults_with_one_route_at_slash():
    raw, origin = applied({}, APP)
    assert raw == {"listen": [{"address": "127.0.0.1:8000"}], "route": [{"path": "/", "asgi": APP}]}
    assert origin == {"route[0].asgi": "command line"}


def test_each_flag_sets_its_key():
    raw, origin = applied({}, APP, "--bind", "0.0.0.0:9000", "-b", "unix:/tmp/x.sock", "--workers", "3",
                          "--backend", "asyncio", "--pid", "/tmp/p.pid", "--access-log", "-",
                          "--factory", "--root-path", "/pre")
    assert raw["listen"] == [{"address": "0.0.0.0:9000"}, {"address": "unix:/tmp/x.sock"}]
    assert raw["server"] == {"workers": 3, "backend": "asyncio", "pid_file": "/tmp/p.pid"}
    assert raw["log"] == {"access_log": "-"}
    assert raw["route"] == [{"path": "/", "asgi": APP, "asgi_factory": True, "root_path": "/pre"}]
    assert origin["server.workers"] == "command line: --workers"
    assert origin["listen"] == "command line: --bind"
    assert origin["route[0].root_path"] == "command line: --root-path"


def test_workers_auto_and_nonsense_go_to_validation_as_given():
    assert applied({}, APP, "-w", "auto")[0]["server"]["workers"] == "auto"
    assert applied({}, APP, "-w", "many")[0]["server"]["workers"] == "many"


def test_keys_of_other_slices_are_set_in_the_raw_data():
    """http.forwarded_allow and route lifespan are validated by their owners'
    code; here: what the flags put into the raw data."""
    file = {"route": [{"path": "/api/", "asgi": "tests.asgi_apps:fastapi_app"},
                      {"path": "/status", "handler": "status"}]}
    raw, origin = applied(file, APP, "--forwarded-allow-ips", "10.0.0.1, 192.168.0.0/16,,*", "--lifespan", "off")
    assert raw["http"] == {"forwarded_allow": ["10.0.0.1", "192.168.0.0/16", "*"]}
    assert [r.get("lifespan") for r in raw["route"]] == ["off", None, "off"]  # every ASGI route, not handlers
    assert origin["route[2].lifespan"] == "command line: --lifespan"
    assert origin["http.forwarded_allow"] == "command line: --forwarded-allow-ips"


def test_lifespan_and_forwarded_flags_reach_the_checked_config():
    import ipaddress
    config = load("tests.asgi_apps:raw_app", "--lifespan", "on", "--forwarded-allow-ips", "10.0.0.0/8,unix")
    assert [r.lifespan for r in config.routes] == ["on"]
    assert ipaddress.ip_network("10.0.0.0/8") in config.http.forwarded_allow
    with pytest.raises(ConfigError) as e:
        load("tests.asgi_apps:raw_app", "--forwarded-allow-ips", "10.0.0.300")
    assert "--forwarded-allow-ips" in str(e.value) and "forwarded_allow" in str(e.value)


def test_a_file_keeps_its_keys_and_the_flags_win():
    file = {"server": {"workers": 1, "threads": 2}, "listen": [{"address": "127.0.0.1:1", "backlog": 10}],
            "route": [{"path": "/status", "handler": "status"}, {"path": "/", "handler": "plaintext"},
                      {"path": "/json", "handler": "json"}]}
    raw, _ = applied(file, APP, "--workers", "4")
    assert raw["server"] == {"workers": 4, "threads": 2}
    assert raw["listen"] == [{"address": "127.0.0.1:1", "backlog": 10}]  # no --bind: the file's
    assert [r["path"] for r in raw["route"]] == ["/status", "/", "/json"]
    assert raw["route"][1] == {"path": "/", "asgi": APP}  # the app is "/", in place
    raw, _ = applied({"listen": [{"address": "127.0.0.1:1"}]}, "--bind", "127.0.0.1:2")
    assert raw["listen"] == [{"address": "127.0.0.1:2"}] and raw["route"] == []  # no app: the file's routes


@pytest.mark.parametrize("flag", [["--root-path", "/x"], ["--factory"], ["--interface", "asgi"]])
def test_flags_of_the_app_need_an_app(flag, capsys):
    with pytest.raises(SystemExit):
        args(*flag)
    assert flag[0] in capsys.readouterr().err


# --- interface detection (as uvicorn's auto) ------------------------------------------------


class _AsgiObject:
    async def __call__(self, scope, receive, send):
        pass


async def _asgi_with_options(scope, receive, send, extra=None):
    pass


def _wsgi(environ, start_response):
    return []


def test_detect_interface():
    from flask import Flask

    from tests.asgi_apps import fastapi_app, raw_app, starlette_app

    for app in (raw_app, starlette_app, fastapi_app, _AsgiObject(), functools.partial(_asgi_with_options, extra=1)):
        assert cliapp.detect_interface(app) == "asgi", app
    for app in (_wsgi, Flask(__name__), _AsgiObject):  # a class: not an ASGI 3 app
        assert cliapp.detect_interface(app) == "wsgi", app


# --- the loader: checked config, errors naming the flag ------------------------------------------


def load(*argv, path=None):
    return cliapp.Loader(args(*argv), path)(check_fds=False)


def test_loader_without_a_file():
    config = load("tests.asgi_apps:starlette_app", "-w", "2")
    assert config.path == "command line"
    assert str(config.listen[0].address) == "127.0.0.1:8000"
    assert config.server.workers == 2 and config.server.backend in ("uvloop", "asyncio")
    assert [(r.path, r.asgi) for r in config.routes] == [("/", "tests.asgi_apps:starlette_app")]


def error(*argv, path=None) -> str:
    with pytest.raises(ConfigError) as info:
        load(*argv, path=path)
    return str(info.value)


def test_errors_name_the_flag_and_the_key(tmp_path):
    assert error(APP, "-w", "0").startswith("command line: --workers: server.workers: expected an integer")
    assert error(APP, "--backend", "epoll").startswith("command line: --backend: server.backend: 'epoll'")
    assert error(APP, "-b", "nowhere").startswith("command line: --bind: listen[0].address:")
    assert error(APP, "--root-path", "x").startswith("command line: --root-path: route[0].root_path:")
    assert error("tests.asgi_apps:nope").startswith("command line: route[0].asgi: /: ")
    assert "no attribute 'nope'" in error("tests.asgi_apps:nope")
    # a key of the file: the file's name
    path = tmp_path / "c.toml"
    path.write_text('[server]\nthreads = -1\n[[listen]]\naddress = "127.0.0.1:1"\n')
    assert error(APP, "-w", "2", path=str(path)).startswith(f"{path}: server.threads:")
    # the flag's value in a file run: the command line's
    path.write_text('[server]\nthreads = 1\n[[listen]]\naddress = "127.0.0.1:1"\n')
    assert error(APP, "-w", "x", path=str(path)).startswith("command line: --workers: server.workers:")


def test_file_and_flags_combine(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[server]\nworkers = 1\nthreads = 2\n[[listen]]\naddress = "127.0.0.1:1"\n'
                    '[[route]]\npath = "/status"\nhandler = "status"\n')
    config = load(APP, "-w", "3", "-b", "127.0.0.1:2", path=str(path))
    assert (config.path, config.server.workers, config.server.threads) == (str(path), 3, 2)
    assert [str(listen.address) for listen in config.listen] == ["127.0.0.1:2"]
    assert [(r.path, r.handler or r.asgi) for r in config.routes] == [("/status", "status"), ("/", APP)]


def test_wsgi_route_from_the_command_line():
    config = load("tests.wsgi_apps:raw_app", "--interface", "wsgi")
    assert [(r.path, r.wsgi, r.asgi) for r in config.routes] == [("/", "tests.wsgi_apps:raw_app", "")]
    assert config.server.backend == "epoll"  # WSGI runs on every backend, the native reactor included
    config = load("tests.unit.test_cliapp:_wsgi")  # auto: detected as WSGI
    assert config.routes[0].wsgi == "tests.unit.test_cliapp:_wsgi"
    config = load("tests.wsgi_apps:make_raw_app", "--interface", "wsgi", "--factory", "--root-path", "/pre")
    assert (config.routes[0].wsgi_factory, config.routes[0].root_path) == (True, "/pre")
    assert error("tests.wsgi_apps:nope", "--interface", "wsgi").startswith("command line: route[0].wsgi: /: ")
    assert load("tests.wsgi_apps:raw_app", "--interface", "wsgi", "--backend", "uvloop").server.backend == "uvloop"
    with pytest.raises(ConfigError, match=r"server\.threads: 0, but the WSGI app of route\[0\]\.wsgi"):
        from_dict(conf(server={"threads": 0}, route=[{"path": "/", "wsgi": "a:b"}]))


def test_a_factory_without_factory_says_so():
    assert "add --factory" in error("tests.asgi_apps:make_app")
    config = load("tests.asgi_apps:make_app", "--factory")
    assert config.routes[0].asgi_factory is True


# --- root_path ------------------------------------------------------------------------------


def test_root_path_config():
    route = from_dict(conf(route=[{"path": "/", "asgi": APP, "root_path": "/pre/"}])).routes[0]
    assert route.root_path == "/pre"
    for value, fragment in (("pre", "starting with '/'"), ("/é", "ASCII"), (1, "string")):
        with pytest.raises(ConfigError, match=rf"route\[0\]\.root_path: .*{fragment}"):
            from_dict(conf(route=[{"path": "/", "asgi": APP, "root_path": value}]))
    with pytest.raises(ConfigError, match=r"route\[0\]\.root_path: needs asgi or wsgi"):
        from_dict(conf(route=[{"path": "/", "handler": "plaintext", "root_path": "/x"}]))


def _request(target: bytes) -> Request:
    path, _, query = target.partition(b"?")
    return Request(b"GET", target, path.replace(b"%20", b" "), query, "1.1", [(b"Host", b"x")], b"", True,
                   ("127.0.0.1", 5))


def test_root_path_in_the_scope_as_uvicorn():
    """uvicorn --root-path /pre: root_path "/pre", path and raw_path with it in front."""
    scope = build_scope(AsgiApp(None, "/", "/pre"), _request(b"/a%20b?x=1"), None)
    assert (scope["root_path"], scope["path"], scope["raw_path"], scope["query_string"]) == \
        ("/pre", "/pre/a b", b"/pre/a%20b", b"x=1")
    scope = build_scope(AsgiApp(None, "/api/", "/pre"), _request(b"/api/x"), None)  # a mount point too
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("/pre/api", "/pre/api/x", b"/pre/api/x")
    scope = build_scope(AsgiApp(None, "/api/"), _request(b"/api/x"), None)
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("/api", "/api/x", b"/api/x")


# --- reloader ---------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project directory (the cwd) with a package and a module of its own."""
    name = f"proj_{os.getpid()}_{id(tmp_path)}"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("VALUE = 1\n")
    (pkg / "app.py").write_text(f"from {name}.helper import VALUE\n\nasync def app(scope, receive, send):\n"
                                "    pass\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, pkg
    for mod in [m for m in sys.modules if m.partition(".")[0] == name]:
        del sys.modules[mod]


def test_forget_drops_the_project_modules_and_restore_puts_them_back(project):
    name, pkg = project
    config = load(f"{name}.app:app")
    old = sys.modules[f"{name}.helper"]
    assert old.VALUE == 1
    forgotten = reloader.forget(config)
    assert set(forgotten.modules) == {name, f"{name}.app", f"{name}.helper"}
    assert "starlette" in sys.modules and "prefork.config" in sys.modules  # not the project's
    (pkg / "helper.py").write_text("VALUE = 22\n")  # a new size: the cached bytecode is stale
    load(f"{name}.app:app")
    assert sys.modules[f"{name}.helper"].VALUE == 22  # read again
    forgotten.restore()  # the reload was refused: the old code again
    assert sys.modules[f"{name}.helper"] is old


def test_forget_after_a_failed_import_and_restore(project):
    name, pkg = project
    config = load(f"{name}.app:app")
    forgotten = reloader.forget(config)
    (pkg / "app.py").write_text("def broken(:\n")
    assert "SyntaxError" in error(f"{name}.app:app")
    forgotten.restore()
    assert sys.modules[f"{name}.app"].app is not None


def test_watcher_sees_a_changed_file(project):
    name, pkg = project
    config = load(f"{name}.app:app")
    watcher = reloader.Watcher(interval=0)
    watcher.scan(config)
    assert set(watcher.mtimes) == {str(pkg / f) for f in ("__init__.py", "app.py", "helper.py")}
    assert watcher.changed() == ""
    st = os.stat(pkg / "helper.py")
    os.utime(pkg / "helper.py", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert watcher.changed() == str(pkg / "helper.py")
    assert watcher.changed() == ""  # once
    (pkg / "app.py").unlink()
    assert watcher.changed() == str(pkg / "app.py")


def test_watcher_polls_at_most_once_per_interval(project):
    name, pkg = project
    watcher = reloader.Watcher(interval=3600)
    watcher.scan(load(f"{name}.app:app"))
    assert watcher.changed() == ""  # the first poll
    (pkg / "app.py").unlink()
    assert watcher.changed() == ""  # not due yet
