"""The shipped systemd units, checked by systemd-analyze, and the notify
protocol across a USR2 upgrade and a failed reload (the notify socket
simulated by a datagram socket that receives the sender's credentials, as
systemd's does)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, Server, children, cmdline, free_port, http_get, make_config, pid_alive, wait_until

UNITS = ROOT / "systemd"
DROPIN = UNITS / "prefork.service.d" / "notify-reload.conf"
SHIPPED_EXEC = "/opt/prefork/.venv/bin/prefork-server"
# the service types systemd 249 (Ubuntu 22.04, the oldest we support) knows
TYPES_249 = {"simple", "exec", "forking", "oneshot", "dbus", "notify", "idle"}


def unit_settings(*paths) -> dict[str, list[str]]:
    """key -> values of every assignment in the unit files, in order (drop-ins last)."""
    out: dict[str, list[str]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")):
                key, _, value = line.partition("=")
                out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_is_for_systemd_249():
    """What systemd before 253 would silently ignore stays out of the unit:
    Type=notify-reload lives in the drop-in only."""
    s = unit_settings(UNITS / "prefork.service")
    assert s["Type"] == ["notify"] and s["Type"][0] in TYPES_249
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # a USR2 upgrade's new master sends MAINPID= and READY=1: it must be heard
    assert s["NotifyAccess"] == ["all"]
    d = unit_settings(DROPIN)
    assert d["Type"] == ["notify-reload"]
    assert d["ExecReload"] == [""]  # systemd sends the HUP itself: no second one from kill


def systemd_version() -> int:
    out = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True, check=True).stdout
    return int(re.match(r"systemd (\d+)", out).group(1))


def verify(tmp_path, dropin: bool) -> tuple[int, str]:
    """``systemd-analyze verify`` on copies of the shipped units whose
    ExecStart names an executable that exists here (verify checks that)."""
    (tmp_path / "prefork.service").write_text(
        (UNITS / "prefork.service").read_text().replace(SHIPPED_EXEC, sys.executable))
    shutil.copy(UNITS / "prefork.socket", tmp_path / "prefork.socket")
    if dropin:
        (tmp_path / "prefork.service.d").mkdir()
        shutil.copy(DROPIN, tmp_path / "prefork.service.d" / DROPIN.name)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "prefork.service"),
                           str(tmp_path / "prefork.socket")], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    return proc.returncode, proc.stdout + proc.stderr


needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


@needs_analyze
def test_systemd_analyze_verify_unit(tmp_path):
    code, out = verify(tmp_path, dropin=False)
    assert SHIPPED_EXEC not in (tmp_path / "prefork.service").read_text()
    assert [line for line in out.splitlines() if "prefork" in line] == [], out
    assert code == 0, out


@needs_analyze
def test_systemd_analyze_verify_notify_reload_dropin(tmp_path):
    code, out = verify(tmp_path, dropin=True)
    about_us = [line for line in out.splitlines() if "prefork" in line]
    if systemd_version() >= 253:
        assert about_us == [] and code == 0, out
    else:  # what the drop-in is documented for: nothing else may be wrong with it
        assert len(about_us) == 1 and re.search(
            r"notify-reload\.conf:\d+: Failed to parse service type, ignoring: notify-reload$", about_us[0]), out
