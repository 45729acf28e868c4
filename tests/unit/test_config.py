"""Config: typed values, defaults, and errors that name the file and the key.

This file: the in-process tests; tests/e2e/test_config_e2e.py has those with
server processes, subprocesses and sockets."""

import os
from pathlib import Path

import pytest

from prefork.config import ConfigError, load
from testkit import GOOD, write


ROOT = Path(__file__).resolve().parents[2]


def test_shipped_default_config_is_valid():
    cfg = load(str(ROOT / "conf" / "server.toml"))
    assert str(cfg.listen[0].address) == "127.0.0.1:8080"
    assert cfg.listen[0].protocol == "http"
    assert cfg.server.backend == "epoll"


def test_defaults_and_types(tmp_path):
    cfg = load(write(tmp_path, GOOD))
    assert cfg.server.workers == 2
    assert cfg.server.worker_connections == 10000
    assert cfg.http.keepalive_timeout == 75.0
    assert cfg.http.max_body == 1048576
    assert cfg.listen[0].address.port == 8080
    assert cfg.server.threads_sched == "batch"
    assert load(write(tmp_path, GOOD.replace("workers = 2", 'threads_sched = "normal"'))).server.threads_sched \
        == "normal"


def test_workers_auto(tmp_path):
    cfg = load(write(tmp_path, GOOD.replace("workers = 2", 'workers = "auto"')))
    assert cfg.server.workers == (os.cpu_count() or 1)


@pytest.mark.parametrize("addr,family,host,port", [
    ("127.0.0.1:80", "inet", "127.0.0.1", 80),
    ("[::1]:8080", "inet6", "::1", 8080),
    ("8080", "inet", "0.0.0.0", 8080),
    ("unix:/tmp/x.sock", "unix", "", 0),
])
def test_addresses(tmp_path, addr, family, host, port):
    cfg = load(write(tmp_path, f'[[listen]]\naddress = "{addr}"\n'))
    a = cfg.listen[0].address
    assert (a.family, a.host, a.port) == (family, host, port)


@pytest.mark.parametrize("text,key,fragment", [
    ('[server]\nworkers = "many"\n', "server.workers", '"auto"'),
    ("[server]\nworkers = 0\n", "server.workers", "from 1 to"),
    ("[server]\nworker_connections = 1.5\n", "server.worker_connections", "integer"),
    ("[server]\nbogus = 1\n", "server.bogus", "unknown key"),
    ('[server]\nbackend = "kqueue"\n', "server.backend", "'epoll'"),
    ('[server]\nthreads_sched = "fifo"\n', "server.threads_sched", "'batch', 'normal'"),
    ("[http]\nkeepalive_timeout = -1\n", "http.keepalive_timeout", "> 0"),
    ('[http]\nmax_body = "1m"\n', "http.max_body", "integer"),
    ("[nonsense]\n", "nonsense", "unknown key"),
    ('[[listen]]\naddress = "localhost"\n', "listen[0].address", "host:port"),
    ('[[listen]]\naddress = "1.2.3.4:99999"\n', "listen[0].address", "host:port"),
    ('[[listen]]\nprotocol = "http"\n', "listen[0].address", "missing"),
    ('[[listen]]\naddress = "127.0.0.1:1"\nprotocol = "ftp"\n', "listen[0].protocol", "'http'"),
    ('[[listen]]\naddress = "127.0.0.1:1"\n[[listen]]\naddress = "127.0.0.1:1"\n', "listen[1].address", "twice"),
    ('[status]\nallow = ["127.0.0.1", "unix:"]\n', "status.allow[1]", '"unix"'),
])
def test_errors_name_file_and_key(tmp_path, text, key, fragment):
    if "[[listen]]" not in text:
        text += '\n[[listen]]\naddress = "127.0.0.1:8080"\n'
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    msg = str(info.value)
    assert msg.startswith(path + ": ")
    assert info.value.key == key
    assert key in msg
    assert fragment in msg


def test_status_allow_unix_entry(tmp_path):
    assert "unix" not in load(write(tmp_path, '[[listen]]\naddress = "127.0.0.1:1"\n')).status.allow
    text = '[status]\nallow = ["unix", "10.0.0.0/8"]\n[[listen]]\naddress = "127.0.0.1:1"\n'
    assert load(write(tmp_path, text)).status.allow == ("unix", "10.0.0.0/8")


@pytest.mark.parametrize("backend", ["epoll", "uvloop", "asyncio"])
def test_backends_accepted(tmp_path, backend):
    cfg = load(write(tmp_path, GOOD.replace("workers = 2", f'backend = "{backend}"')))
    assert cfg.server.backend == backend


def test_uvloop_backend_without_uvloop_names_the_extra(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'prefork\[uvloop\]'"):
        load(write(tmp_path, GOOD.replace("workers = 2", 'backend = "uvloop"')))


def test_missing_listen(tmp_path):
    with pytest.raises(ConfigError, match=r"\[\[listen\]\]"):
        load(write(tmp_path, "[server]\nworkers = 1\n"))


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "[server\n"))
    with pytest.raises(ConfigError, match="no such file"):
        load(str(tmp_path / "absent.toml"))


def test_load_checked_rejects_a_bad_handler_naming_the_key(tmp_path):
    from prefork.checks import load_checked

    path = write(tmp_path, GOOD + '\n[[route]]\npath = "/x"\nhandler = "examples.nope:handler"\n')
    assert load(path).routes[0].handler == "examples.nope:handler"  # parsed, not resolved
    with pytest.raises(ConfigError, match=r"route\[0\]\.handler.*examples\.nope:handler"):
        load_checked(path)


# --- ASGI routes (issue 15) ---------------------------------------------------------------


def test_asgi_route_is_accepted_and_makes_the_default_backend_uvloop(tmp_path):
    from prefork.checks import load_checked

    path = write(tmp_path, GOOD + '\n[[route]]\npath = "/"\nasgi = "tests.asgi_apps:starlette_app"\n')
    cfg = load_checked(path)
    assert cfg.routes[0].asgi == "tests.asgi_apps:starlette_app" and cfg.routes[0].handler == ""
    assert cfg.server.backend == "uvloop"  # uvloop is installed (a regular dependency)
    # without an ASGI route the default stays epoll
    assert load(write(tmp_path, GOOD)).server.backend == "epoll"


def test_asgi_default_backend_falls_back_to_asyncio_without_uvloop(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a))
    path = write(tmp_path, GOOD + '\n[[route]]\npath = "/"\nasgi = "tests.asgi_apps:raw_app"\n')
    assert load(path).server.backend == "asyncio"


def test_explicit_asgi_backend_is_kept(tmp_path):
    text = GOOD.replace("workers = 2", 'workers = 2\nbackend = "asyncio"')
    path = write(tmp_path, text + '\n[[route]]\npath = "/"\nasgi = "tests.asgi_apps:raw_app"\n')
    assert load(path).server.backend == "asyncio"


def test_epoll_with_an_asgi_route_is_an_error_naming_both_keys(tmp_path):
    text = GOOD.replace("workers = 2", 'workers = 2\nbackend = "epoll"')
    path = write(tmp_path, text + '\n[[route]]\npath = "/status"\nhandler = "status"\n'
                                  '\n[[route]]\npath = "/"\nasgi = "tests.asgi_apps:raw_app"\n')
    with pytest.raises(ConfigError, match=r"server\.backend.*route\[1\]\.asgi"):
        load(path)


@pytest.mark.parametrize("spec, why", [
    ("tests.asgi_apps:nope", "has no attribute"),
    ("tests.no_such_module:app", "cannot import"),
    ("tests.asgi_apps:not_an_app", "not an ASGI app"),
    ("no_colon", "expected 'package.module:app'"),
])
def test_bad_asgi_app_is_a_config_error_naming_the_key(tmp_path, spec, why):
    from prefork.checks import load_checked

    path = write(tmp_path, GOOD + f'\n[[route]]\npath = "/status"\nhandler = "status"\n'
                                  f'\n[[route]]\npath = "/"\nasgi = "{spec}"\n')
    with pytest.raises(ConfigError, match=rf"route\[1\]\.asgi.*{why}"):
        load_checked(path)


def test_asgi_factory_calls_the_callable(tmp_path):
    from prefork.apps import load_asgi
    from prefork.checks import load_checked
    from tests.asgi_apps import raw_app

    path = write(tmp_path, GOOD + '\n[[route]]\npath = "/"\nasgi = "tests.asgi_apps:make_app"\nasgi_factory = true\n')
    cfg = load_checked(path)
    assert cfg.routes[0].asgi_factory is True
    assert load_asgi("tests.asgi_apps:make_app", factory=True) is raw_app
    bad = write(tmp_path, GOOD + '\n[[route]]\npath = "/"\nasgi = "tests.asgi_apps:not_an_app"\nasgi_factory = true\n')
    with pytest.raises(ConfigError, match=r"route\[0\]\.asgi.*not callable"):
        load_checked(bad)


def test_wsgi_apps_are_imported_when_the_config_is_checked(tmp_path):
    from prefork.checks import load_checked

    for route, why in (('wsgi = "tests.wsgi_apps:nope"', "no attribute 'nope'"),
                       ('wsgi = "tests.wsgi_apps:raw_app"\nwsgi_factory = true', "factory .* failed")):
        path = write(tmp_path, GOOD + f'\n[[route]]\npath = "/"\n{route}\n')
        with pytest.raises(ConfigError, match=rf"route\[0\]\.wsgi: /: .*{why}"):
            load_checked(path)
    path = write(tmp_path, GOOD + '\n[[route]]\npath = "/"\nwsgi = "tests.wsgi_apps:make_raw_app"\nwsgi_factory = true\n')
    route = load_checked(path).routes[0]
    assert (route.wsgi, route.wsgi_factory, route.handler) == ("tests.wsgi_apps:make_raw_app", True, "")


@pytest.mark.parametrize("route, key, why", [
    ('handler = "status"\nasgi = "tests.asgi_apps:raw_app"', r"route\[0\]\.handler",
     "exactly one of handler, asgi and wsgi"),
    ('asgi = "tests.asgi_apps:raw_app"\nwsgi = "tests.wsgi_apps:raw_app"', r"route\[0\]\.wsgi",
     "exactly one of handler, asgi and wsgi"),
    ('wsgi = "tests.wsgi_apps:raw_app"\nblocking = true', r"route\[0\]\.blocking", "always runs in the thread pool"),
    ('handler = "status"\nwsgi_factory = true', r"route\[0\]\.wsgi_factory", "needs wsgi"),
    ('wsgi = ""', r"route\[0\]\.wsgi", "package.module:app"),
    ('asgi = "tests.asgi_apps:raw_app"\nblocking = true', r"route\[0\]\.blocking", "loop"),
    ('handler = "status"\nasgi_factory = true', r"route\[0\]\.asgi_factory", "needs asgi"),
    ('asgi = "tests.asgi_apps:raw_app"\nasgi_factory = 1', r"route\[0\]\.asgi_factory", "true or false"),
    ('asgi = ""', r"route\[0\]\.asgi", "package.module:app"),
])
def test_asgi_route_shape_errors(tmp_path, route, key, why):
    path = write(tmp_path, GOOD + f'\n[[route]]\npath = "/"\n{route}\n')
    with pytest.raises(ConfigError, match=rf"{key}.*{why}"):
        load(path)


def test_websocket_section(tmp_path):
    listen = '[[listen]]\naddress = "127.0.0.1:1"\n'
    cfg = load(write(tmp_path, listen))
    assert cfg.websocket.max_message == 1 << 20 and cfg.websocket.origins == ()
    assert cfg.websocket.compression == "off"
    text = ('[websocket]\nmax_message = 4096\nidle_timeout = 0\nping_interval = 5\nping_timeout = 2.5\n'
            'queue = 10000\norigins = ["https://A.example", "http://b.example:8080"]\n'
            'compression = "deflate"\ncompression_level = 1\ncompression_window_bits = 15\n' + listen)
    ws = load(write(tmp_path, text)).websocket
    assert (ws.max_message, ws.idle_timeout, ws.ping_interval, ws.ping_timeout, ws.queue) == (4096, 0, 5, 2.5, 10000)
    assert ws.origins == ("https://a.example", "http://b.example:8080")
    assert (ws.compression, ws.compression_level, ws.compression_window_bits) == ("deflate", 1, 15)


@pytest.mark.parametrize("line, key", [
    ("max_message = 0", "websocket.max_message"),
    ("idle_timeout = -1", "websocket.idle_timeout"),
    ("ping_timeout = 0", "websocket.ping_timeout"),
    ("queue = \"big\"", "websocket.queue"),
    ('origins = ["example.com"]', "websocket.origins[0]"),
    ('origins = "https://a"', "websocket.origins"),
    ("maxmessage = 1", "websocket.maxmessage"),
    ('compression = "gzip"', "websocket.compression"),
    ("compression = true", "websocket.compression"),
    ("compression_level = 0", "websocket.compression_level"),
    ("compression_window_bits = 8", "websocket.compression_window_bits"),
    ("compression_window_bits = 16", "websocket.compression_window_bits"),
])
def test_websocket_errors_name_file_and_key(tmp_path, line, key):
    path = write(tmp_path, f'[websocket]\n{line}\n[[listen]]\naddress = "127.0.0.1:1"\n')
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.key == key and err.value.path == path
