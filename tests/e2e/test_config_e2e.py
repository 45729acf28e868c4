"""Config: typed values, defaults, and errors that name the file and the key.

This file: the tests with server processes, subprocesses and sockets;
tests/unit/test_config.py has the in-process ones."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefork.config import load
from testkit import GOOD, write


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("backend", ["uvloop", "asyncio"])
def test_check_says_what_an_asyncio_backend_does_differently(tmp_path, backend):
    """No feature differs silently: -t names what works otherwise on this backend."""
    (tmp_path / "www").mkdir()
    text = GOOD.replace("workers = 2", f'backend = "{backend}"\naccept = "shared"') + \
        f'\n[static]\nroot = "{tmp_path / "www"}"\n'
    path = write(tmp_path, text)
    assert len(load(path).notes) == 2
    done = subprocess.run([sys.executable, "-m", "prefork.cli", "-t", "-c", str(path)], capture_output=True,
                          text=True, timeout=30, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0
    assert "EPOLLEXCLUSIVE" in done.stderr and "sendfile" in done.stderr
    epoll = write(tmp_path, GOOD.replace("workers = 2", 'accept = "shared"'))
    assert load(epoll).notes == ()


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "prefork.cli", *args], capture_output=True, text=True,
                          env=env, timeout=30)


def test_cli_test_flag_good_and_bad(tmp_path):
    ok = run_cli("-t", "-c", write(tmp_path, GOOD))
    assert ok.returncode == 0, ok.stderr
    assert "test is successful" in ok.stderr
    bad_path = write(tmp_path, GOOD + "\n[http]\nmax_headers = 0\n")
    bad = run_cli("-t", "-c", bad_path)
    assert bad.returncode == 1
    assert bad_path in bad.stderr and "http.max_headers" in bad.stderr
    assert "test failed" in bad.stderr


def test_cli_bad_config_exits_before_binding(tmp_path):
    from conftest import free_port
    import socket
    port = free_port()
    path = write(tmp_path, f'[server]\nworkers = "x"\n[[listen]]\naddress = "127.0.0.1:{port}"\n')
    res = run_cli("-c", path)
    assert res.returncode == 1
    assert "server.workers" in res.stderr and path in res.stderr
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_cli_version():
    res = run_cli("--version")
    assert res.returncode == 0
    assert res.stdout.startswith("prefork-server ")


def test_loading_a_config_imports_nothing_above_config(tmp_path):
    """config.load reads and validates on its own: no apps, protocols or worker
    are imported (the handler and open-file checks are checks.load_checked's)."""
    path = write(tmp_path, GOOD + '\n[[route]]\npath = "/x"\nhandler = "examples.nope:handler"\n')
    code = ("import sys; from prefork.config import load; load(sys.argv[1]); "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('prefork'))))")
    res = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=30)
    assert res.returncode == 0, res.stderr
    loaded = set(res.stdout.split())
    assert "prefork.config" in loaded
    assert not loaded & {"prefork.apps", "prefork.protocols", "prefork.worker", "prefork.checks"}, loaded


def test_import_contracts_hold():
    """The layers in pyproject.toml (.ci/run runs lint-imports too)."""
    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    res = subprocess.run([str(lint)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:]
