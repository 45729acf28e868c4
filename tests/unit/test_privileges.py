"""Least privilege: [server] user/group. The master keeps root (it binds and
opens), the workers drop to the user before serving; what that user cannot
read or write is a start-up error naming the key, the path and the user.

This file: the in-process tests; tests/e2e/test_privileges_e2e.py has those with
server processes, subprocesses and sockets."""

from __future__ import annotations

import logging
import os

import pytest

from prefork import privileges
from prefork.config import ConfigError, from_dict
from testkit import NOBODY, ROOT_ONLY, conf, reachable_tmp_dir


@pytest.fixture
def tmp_path():
    yield from reachable_tmp_dir()


def test_unknown_user_or_group_is_a_config_error():
    with pytest.raises(ConfigError, match=r"server\.user.*no such user: 'no-such-user-x'"):
        from_dict(conf(server={"user": "no-such-user-x"}), "f.toml")
    with pytest.raises(ConfigError, match=r"server\.group.*no such group"):
        from_dict(conf(server={"user": "nobody", "group": "no-such-group-x"}), "f.toml")
    with pytest.raises(ConfigError, match=r"server\.group.*needs server\.user"):
        from_dict(conf(server={"group": "nogroup"}), "f.toml")


def test_mode_bits_decide_for_another_user(tmp_path):
    ident = privileges.resolve("nobody")
    assert ident.uid == NOBODY.pw_uid
    f = tmp_path / "f"
    f.write_text("x")
    os.chmod(f, 0o644)
    assert privileges.allowed(str(f), ident, os.R_OK)
    assert not privileges.allowed(str(f), ident, os.W_OK)
    os.chmod(f, 0o600)
    assert not privileges.allowed(str(f), ident, os.R_OK) or os.stat(f).st_uid == ident.uid


@ROOT_ONLY
def test_unreadable_static_root_is_a_clear_error(tmp_path):
    docroot = tmp_path / "www"
    docroot.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(docroot, 0o700)  # root's alone
    with pytest.raises(ConfigError, match=r"static\.root: user 'nobody' cannot enter .*www"):
        from_dict(conf(server={"user": "nobody"}, static={"root": str(docroot)}), "f.toml")
    os.chmod(docroot, 0o755)
    from_dict(conf(server={"user": "nobody"}, static={"root": str(docroot)}), "f.toml")


def test_failed_log_reopen_keeps_the_old_file(tmp_path, caplog):
    """A reopen that cannot open the new file (here: its directory is gone)
    keeps writing to the old one and says so, instead of raising."""
    from types import SimpleNamespace

    from prefork.logs import AccessLog, ReopenableHandler
    logs = tmp_path / "logs"
    logs.mkdir()
    access = AccessLog(str(logs / "access.log"))
    handler = ReopenableHandler(str(logs / "error.log"))
    os.rename(logs, tmp_path / "moved")
    access.reopen()
    handler.reopen()
    assert "cannot reopen access log" in caplog.text
    request = SimpleNamespace(peer=("127.0.0.1", 1), method=b"GET", target=b"/kept", version="1.1",
                              header=lambda name: None)
    access.log(request, 200, 1)
    access.close()
    handler.emit(logging.makeLogRecord({"msg": "still here"}))
    handler.close()
    assert b"/kept" in (tmp_path / "moved" / "access.log").read_bytes()
    error_text = (tmp_path / "moved" / "error.log").read_text()
    assert "cannot reopen" in error_text and "still here" in error_text


@ROOT_ONLY
def test_log_hand_over_never_follows_a_link(tmp_path):
    """Where the workers' user can write in the log directory, a symlink or a
    hard link planted as the log must not get root's chown onto another file."""
    from prefork.config import LogConfig
    from prefork.logs import hand_to_workers
    victim = tmp_path / "victim"
    victim.write_text("root's\n")
    os.symlink(victim, tmp_path / "error.log")
    os.link(victim, tmp_path / "access.log")
    hand_to_workers(LogConfig(error_log=str(tmp_path / "error.log"), access_log=str(tmp_path / "access.log")),
                    NOBODY.pw_uid, NOBODY.pw_gid)
    assert os.stat(victim).st_uid == 0
    fresh = tmp_path / "fresh.log"
    hand_to_workers(LogConfig(error_log="-", access_log=str(fresh)), NOBODY.pw_uid, NOBODY.pw_gid)
    assert os.stat(fresh).st_uid == NOBODY.pw_uid
