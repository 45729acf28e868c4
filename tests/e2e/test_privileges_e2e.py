"""Least privilege: [server] user/group. The master keeps root (it binds and
opens), the workers drop to the user before serving; what that user cannot
read or write is a start-up error naming the key, the path and the user.

This file: the tests with server processes, subprocesses and sockets;
tests/unit/test_privileges.py has the in-process ones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, free_port, http_get, make_config, wait_until
from prefork.config import ConfigError, from_dict
from testkit import NOBODY, ROOT_ONLY, conf, reachable_tmp_dir


@pytest.fixture
def tmp_path():
    yield from reachable_tmp_dir()


@ROOT_ONLY
def test_database_directory_must_be_writable_by_the_user(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(data, 0o755)  # root may write here, nobody may not
    url = f"sqlite:///{data}/w.db"
    with pytest.raises(ConfigError, match=r"database\.url.*not writable by user 'nobody'"):
        from_dict(conf(server={"user": "nobody"}, database={"url": url}), "f.toml")
    path = tmp_path / "s.toml"
    path.write_text(f'[server]\nuser = "nobody"\n[[listen]]\naddress = "127.0.0.1:1"\n'
                    f'[database]\nurl = "{url}"\n')
    done = subprocess.run([sys.executable, "-m", "prefork.cli", "-t", "-c", str(path)], capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=30)
    assert done.returncode == 1 and "database.url" in done.stderr and "nobody" in done.stderr


@ROOT_ONLY
def test_workers_run_as_the_user_and_master_stays_root(tmp_path):
    os.chmod(tmp_path, 0o777)  # nobody's database lives here
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "hello.txt").write_text("hello\n")
    for p in (docroot, docroot / "hello.txt"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    port = free_port()
    config = make_config({"http": port}, 'workers = 2\nuser = "nobody"') + (
        f'\n[static]\nroot = "{docroot}"\n[database]\nurl = "sqlite:///{tmp_path}/w.db"\nsynchronous = "normal"\n')
    from conftest import Server
    srv = Server(tmp_path, config, {"http": port}).start()
    try:
        workers = srv.wait_workers(2)
        assert _uid(srv.proc.pid) == 0
        wait_until(lambda: all(_uid(pid) == NOBODY.pw_uid for pid in workers), what="workers as nobody")
        assert http_get(port)[0] == 200
        assert http_get(port, "/static/hello.txt")[2] == b"hello\n"
        assert http_get(port, "/updates?queries=3")[0] == 200  # the database the master made is theirs
        assert os.stat(tmp_path / "w.db").st_uid == NOBODY.pw_uid
        status, _, body = http_get(port, "/nowhere")
        assert status == 404 and str(tmp_path).encode() not in body and b"prefork/" not in body
        os.kill(srv.proc.pid, signal.SIGKILL)  # unprivileged workers still go with their master
        wait_until(lambda: not any(os.path.exists(f"/proc/{p}") and _uid(p) for p in workers),
                   timeout=5, what="the workers to exit")
    finally:
        srv.stop()


def _uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[2])  # effective
    raise AssertionError("no Uid line")


@ROOT_ONLY
@pytest.mark.parametrize("mode", ["process", "thread"])
def test_usr1_after_rotation_with_user_set(tmp_path, mode):
    """logrotate moves the logs, USR1: the master (root) makes the new files and
    gives them to the workers' user, as nginx does, so the unprivileged workers
    can reopen them; the next access line lands in the new file."""
    port = free_port()
    error_log, access_log = tmp_path / "error.log", tmp_path / "access.log"
    config = make_config({"http": port}, f'workers = 2\nmode = "{mode}"\nuser = "nobody"') + (
        f'\n[log]\nerror_log = "{error_log}"\naccess_log = "{access_log}"\n')
    from conftest import Server
    srv = Server(tmp_path, config, {"http": port}).start()
    try:
        srv.wait_workers(1 if mode == "thread" else 2)
        assert http_get(port, "/plaintext?before")[0] == 200
        wait_until(lambda: b"/plaintext?before" in access_log.read_bytes(), what="the first access line")
        os.rename(access_log, tmp_path / "access.log.1")
        os.rename(error_log, tmp_path / "error.log.1")
        os.kill(srv.proc.pid, signal.SIGUSR1)
        wait_until(lambda: access_log.exists() and error_log.exists(), what="the new log files")

        def logged():
            http_get(port, "/plaintext?after")  # until the worker that reopened answers it
            return access_log.exists() and b"/plaintext?after" in access_log.read_bytes()

        wait_until(logged, timeout=10, interval=0.3, what="the access line in the new file")
        for path in (access_log, error_log):
            assert os.stat(path).st_uid == NOBODY.pw_uid
        errors = (tmp_path / "error.log.1").read_text() + error_log.read_text()
        assert "PermissionError" not in errors and "cannot" not in errors and "Traceback" not in errors
    finally:
        srv.stop()
