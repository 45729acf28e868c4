"""The shipped systemd units, checked by systemd-analyze, and the notify
protocol across a USR2 upgrade and a failed reload (the notify socket
simulated by a datagram socket that receives the sender's credentials, as
systemd's does).

This file: the tests with server processes, subprocesses and sockets;
tests/unit/test_systemd.py has the in-process ones."""

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from conftest import ROOT, Server, children, cmdline, free_port, http_get, make_config, pid_alive, wait_until


UNITS = ROOT / "systemd"
DROPIN = UNITS / "prefork.service.d" / "notify-reload.conf"
SHIPPED_EXEC = "/opt/prefork/.venv/bin/prefork-server"


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


class NotifySocket:
    """systemd's side of NOTIFY_SOCKET: datagrams with the sender's pid
    (SCM_CREDENTIALS), kept in order of arrival."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.seen: list[tuple[int, list[str]]] = []

    def _recv(self, timeout: float):
        self.sock.settimeout(timeout)
        data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("iII")))
        pid = 0
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", cdata[:struct.calcsize("iII")])[0]
        msg = (pid, data.decode().split("\n"))
        self.seen.append(msg)
        return msg

    def until(self, pid, line: str, timeout: float = 15.0) -> list[str]:
        """The next message from ``pid`` (any sender if None) that has ``line``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {line!r} from {pid}; seen {self.seen}")
            try:
                sender, lines = self._recv(left)
            except socket.timeout:
                continue
            if (pid is None or sender == pid) and line in lines:
                return lines

    def drain(self) -> None:
        while True:
            try:
                self._recv(0.05)
            except socket.timeout:
                return

    def sent_by(self, pid) -> list[list[str]]:
        return [lines for sender, lines in self.seen if sender == pid]

    def close(self) -> None:
        self.sock.close()


def start_as_systemd(tmp_path, backend, notify: NotifySocket) -> Server:
    """The master as systemd starts it: NOTIFY_SOCKET, WATCHDOG_USEC, and
    WATCHDOG_PID set to the master's own pid."""
    ports = {"http": free_port()}
    srv = Server(tmp_path, make_config(ports, f'backend = "{backend}"\nworkers = 2'), ports)
    launcher = ("import os, sys\n"
                "os.environ['WATCHDOG_PID'] = str(os.getpid())\n"
                "os.execv(sys.executable, [sys.executable, '-m', 'prefork.cli', '-c', sys.argv[1]])\n")
    srv.proc = subprocess.Popen([sys.executable, "-c", launcher, str(srv.path)], cwd=ROOT,
                                env=dict(os.environ, PYTHONPATH=str(ROOT), NOTIFY_SOCKET=notify.path,
                                         WATCHDOG_USEC="400000"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return srv


def worker_children(pid: int) -> list[int]:
    out = []
    for p in children(pid):
        try:
            if "worker process" in cmdline(p):
                out.append(p)
        except OSError:
            pass
    return out


def kill_all(*masters: int) -> None:
    for master in masters:
        if master and pid_alive(master):
            workers = children(master)
            os.kill(master, signal.SIGKILL)
            for p in workers:
                if pid_alive(p):
                    os.kill(p, signal.SIGKILL)


def test_usr2_under_systemd_new_master_becomes_main(tmp_path, backend):
    """With NotifyAccess=all, the new master of a USR2 upgrade tells systemd
    MAINPID=<its pid> with READY=1 once its workers serve, and pings the
    watchdog; the old master, told to QUIT, does not say STOPPING=1 (systemd
    would stop the service, new master included)."""
    notify = NotifySocket(tmp_path / "notify.sock")
    srv = start_as_systemd(tmp_path, backend, notify)
    old = srv.pid
    new = 0
    try:
        assert "STATUS=2 workers, generation 1" in notify.until(old, "READY=1")
        notify.until(old, "WATCHDOG=1")
        os.kill(old, signal.SIGUSR2)
        ready = notify.until(None, "READY=1")
        new = int(srv.pid_path.read_text())
        assert new != old and new in children(old)
        assert notify.sent_by(new)[-1] == ready
        assert f"MAINPID={new}" in ready
        assert len(worker_children(new)) == 2  # READY once its workers serve
        assert http_get(srv.port)[0] == 200
        notify.until(new, "WATCHDOG=1")        # systemd's watchdog is the new master's too
        os.kill(old, signal.SIGQUIT)
        assert srv.proc.wait(15) == 0
        notify.drain()
        assert not [m for m in notify.sent_by(old) if "STOPPING=1" in m], notify.sent_by(old)
        assert not [m for m in notify.sent_by(old) if any(x.startswith("MAINPID=") for x in m)]
        # the new master serves alone, and is still systemd's watched main process
        for _ in range(10):
            assert http_get(srv.port)[0] == 200
        notify.until(new, "WATCHDOG=1")
        assert pid_alive(new)
        # a stop of the new master, now alone: STOPPING=1 as usual
        os.kill(new, signal.SIGQUIT)
        notify.until(new, "STOPPING=1")
        wait_until(lambda: not pid_alive(new), what="the new master's exit")
    finally:
        kill_all(old, new)
        notify.close()


def test_usr2_rollback_under_systemd_hands_main_back(tmp_path, backend):
    """Rolling back (WINCH, HUP the old master, QUIT the new one): the new
    master gives MAINPID back to the old one instead of STOPPING=1, and the
    old master, once it reaps it, says MAINPID=<itself> and READY=1."""
    notify = NotifySocket(tmp_path / "notify.sock")
    srv = start_as_systemd(tmp_path, backend, notify)
    old = srv.pid
    new = 0
    try:
        notify.until(old, "READY=1")
        old_workers = wait_until(lambda: len(worker_children(old)) == 2 and worker_children(old),
                                 what="the old master's workers")
        os.kill(old, signal.SIGUSR2)
        ready = notify.until(None, "READY=1")
        new = int(srv.pid_path.read_text())
        assert f"MAINPID={new}" in ready
        os.kill(old, signal.SIGWINCH)
        wait_until(lambda: not any(pid_alive(p) for p in old_workers), what="old workers gone after WINCH")
        os.kill(old, signal.SIGHUP)
        wait_until(lambda: len(worker_children(old)) == 2, what="the old master's workers again")
        os.kill(new, signal.SIGQUIT)
        notify.until(new, f"MAINPID={old}")
        back = notify.until(old, f"MAINPID={old}")
        assert "READY=1" in back
        wait_until(lambda: not pid_alive(new), what="the new master's exit")
        notify.drain()
        assert not [m for m in notify.sent_by(new) if "STOPPING=1" in m], notify.sent_by(new)
        assert srv.proc.poll() is None
        assert http_get(srv.port)[0] == 200
        wait_until(lambda: int(srv.pid_path.read_text()) == old, what="the pid file back to the old master")
        os.kill(old, signal.SIGQUIT)
        notify.until(old, "STOPPING=1")
        assert srv.proc.wait(15) == 0
    finally:
        kill_all(old, new)
        notify.close()


def test_refused_reload_completes_the_notify_protocol(start_server, tmp_path):
    """Under Type=notify-reload systemd sends HUP and waits for RELOADING=1
    (with a MONOTONIC_USEC= after its signal) and READY=1: a reload refused
    for a bad file must send both, not only STATUS=."""
    notify = NotifySocket(tmp_path / "notify.sock")
    srv = start_server(server="workers = 1", names=("http",), env=dict(os.environ, NOTIFY_SOCKET=notify.path))
    try:
        notify.until(srv.pid, "READY=1")
        text = srv.path.read_text()
        for bad in (text.replace("workers = 1", 'workers = "lots"'), text.replace("[server]\n", '[server]\nmode = "thread"\n')):
            srv.path.write_text(bad)
            sent = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            os.kill(srv.pid, signal.SIGHUP)
            reloading = notify.until(srv.pid, "RELOADING=1")
            [usec] = [x.split("=", 1)[1] for x in reloading if x.startswith("MONOTONIC_USEC=")]
            assert int(usec) >= sent
            ready = notify.until(srv.pid, "READY=1")
            assert any(x.startswith("STATUS=reload failed") for x in ready), ready
        assert http_get(srv.port)[0] == 200
    finally:
        notify.close()
