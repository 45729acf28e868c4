"""The shipped systemd units, checked by systemd-analyze, and the notify
protocol across a USR2 upgrade and a failed reload (the notify socket
simulated by a datagram socket that receives the sender's credentials, as
systemd's does).

This file: the in-process tests; tests/e2e/test_systemd_e2e.py has those with
server processes, subprocesses and sockets."""

from conftest import ROOT


UNITS = ROOT / "systemd"
DROPIN = UNITS / "prefork.service.d" / "notify-reload.conf"
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
