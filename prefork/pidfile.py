"""The pid file (``server.pid_file``): refusing to start beside a running
master, writing and removing it, renaming it to ``<pid_file>.oldbin`` while a
USR2 upgrade is under way (and back if the upgrade fails), and ``-s``, which
signals the master it names.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys

from .config import Config

log = logging.getLogger("prefork.master")

OLDBIN = ".oldbin"


class AlreadyRunning(Exception):
    """The pid file names a running prefork master."""


def is_prefork_master(pid: int) -> bool:
    """Is process ``pid`` a prefork master (by its title, or by its command
    line before it has set one)? A pid reused by an unrelated process is not."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    if argv[0].startswith(b"prefork-server: master process"):
        return True
    # a master that has not set its title yet: "python -m prefork.cli ..." or ".../prefork-server ..."
    return (b"prefork.cli" in argv or any(a.endswith(b"/prefork-server") or a == b"prefork-server" for a in argv)) \
        and not ({b"-s", b"--signal", b"-t", b"--test"} & set(argv))


class PidFile:
    """The master's pid file at ``path`` ("" for none: every method does nothing)."""

    def __init__(self, path: str, pid: int):
        self.path = path
        self.pid = pid

    def check(self, upgrading: bool) -> None:
        """Refuse to start while the pid file names a live prefork master
        (a stale file, or one naming a reused pid, is no obstacle).
        ``upgrading``: started by a USR2 master, our parent, which may be named."""
        if not self.path:
            return
        try:
            with open(self.path) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return
        if pid == self.pid or (pid == os.getppid() and upgrading):
            return  # ours (a container's pid 1 again), or the master upgrading to us
        if is_prefork_master(pid):
            raise AlreadyRunning(f"pid file {self.path} names pid {pid}, a running prefork master: not starting "
                                 f"a second server (stop that one first, or signal it with -s)")

    def write(self) -> None:
        if not self.path:
            return
        tmp = f"{self.path}.{self.pid}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{self.pid}\n")
        os.replace(tmp, self.path)

    def remove(self) -> None:
        if not self.path:
            return
        try:
            with open(self.path) as f:
                if f.read().strip() != str(self.pid):
                    return  # another master's file now
            os.unlink(self.path)
        except OSError:
            pass

    def move_aside(self) -> None:
        """<pid_file> to <pid_file>.oldbin: an upgrade starts (raises OSError)."""
        if self.path:
            os.rename(self.path, self.path + OLDBIN)
            self.path = self.path + OLDBIN

    def restore(self) -> None:
        """<pid_file>.oldbin back to <pid_file>: no upgrade is under way."""
        if self.path.endswith(OLDBIN):
            original = self.path[: -len(OLDBIN)]
            try:
                os.rename(self.path, original)
                self.path = original
            except OSError as exc:
                log.error("cannot restore the pid file: %s", exc)


def signal_master(config: Config, action: str) -> int:
    """``-s stop|quit|reload|reopen``: signal the master named in pid_file."""
    path = config.server.pid_file
    if not path:
        print(f"prefork-server: {config.path}: server.pid_file is not set; cannot find the master", file=sys.stderr)
        return 1
    return signal_pid_file(path, action)


def signal_pid_file(path: str, action: str) -> int:
    """``-s``: signal the master whose pid is in the file ``path``."""
    sig = {"stop": signal.SIGTERM, "quit": signal.SIGQUIT, "reload": signal.SIGHUP, "reopen": signal.SIGUSR1}[action]
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError) as exc:
        print(f"prefork-server: cannot read pid file {path}: {exc}", file=sys.stderr)
        return 1
    try:
        os.kill(pid, sig)
    except OSError as exc:
        print(f"prefork-server: kill({pid}, {sig.name}) failed: {errno.errorcode.get(exc.errno, exc)}", file=sys.stderr)
        return 1
    return 0
