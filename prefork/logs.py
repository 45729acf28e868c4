"""Error log and access log: paths from config, ``-`` for stderr, reopened on USR1."""

from __future__ import annotations

import logging
import os
import stat
import sys
import time

from .config import LogConfig

FORMAT = "%(asctime)s [%(levelname)s] %(process)d: %(message)s"


class ReopenableHandler(logging.StreamHandler):
    """A log handler on a path (or stderr) that ``reopen()`` reopens, so
    logrotate can move the file and signal USR1."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(self._open())

    def _open(self):
        if self.path in ("", "-"):
            return sys.stderr
        return open(self.path, "a", buffering=1, encoding="utf-8")

    def reopen(self) -> None:
        self.acquire()
        try:
            try:
                new = self._open()
            except OSError as exc:  # keep the old file rather than lose the log
                self.stream.write(f"cannot reopen {self.path}: {exc}; still writing here\n")
                return
            old, self.stream = self.stream, new
            if old is not sys.stderr:
                old.close()
        finally:
            self.release()


def setup_error_log(config: LogConfig) -> ReopenableHandler:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = ReopenableHandler(config.error_log)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(config.level.upper())
    return handler


def reopen_error_log() -> None:
    for h in logging.getLogger().handlers:
        if isinstance(h, ReopenableHandler):
            h.reopen()


def hand_to_workers(config: LogConfig, uid: int, gid: int) -> None:
    """As nginx's master does on USR1 when it runs as root: create the log
    files (logrotate has just moved them) and give them to the workers' user,
    so the unprivileged workers can reopen them. Only files the master owns
    change hands."""
    for path in (config.error_log, config.access_log):
        if path in ("", "-"):
            continue
        try:
            # no symlink, no second hard link: where the workers' user can write in
            # the log directory, it must not get root's chown onto another file
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
            try:
                st = os.fstat(fd)
                if (stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid == os.getuid()
                        and st.st_uid != uid):
                    os.fchown(fd, uid, gid)  # the fd, not the path: no race with a renamed file
            finally:
                os.close(fd)
        except OSError as exc:
            logging.getLogger("prefork.master").error("cannot hand log %s to the workers' user: %s", path, exc)


class AccessLog:
    """nginx's ``combined`` format, buffered and flushed by the worker once a second."""

    def __init__(self, path: str):
        self.path = path
        self.file = self._open()
        self.failed = False
        self._time_second = -1
        self._time_text = ""

    def _open(self):
        if self.path == "-":
            return sys.stderr
        return open(self.path, "a", buffering=65536, encoding="utf-8", errors="backslashreplace")

    def log(self, request, status: int, length: int) -> None:
        now = int(time.time())
        if now != self._time_second:
            self._time_second = now
            self._time_text = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))
        peer = request.peer[0] if isinstance(request.peer, tuple) else "-"
        line = '%s - - [%s] "%s %s HTTP/%s" %d %d "%s" "%s"\n' % (
            peer, self._time_text, request.method.decode("latin-1"), request.target.decode("latin-1"),
            request.version, status, length,
            (request.header(b"referer") or b"-").decode("latin-1"),
            (request.header(b"user-agent") or b"-").decode("latin-1"))
        try:
            self.file.write(line)
        except (OSError, ValueError) as exc:
            self._failed(exc)

    def flush(self) -> None:
        try:
            self.file.flush()
        except (OSError, ValueError) as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        if not self.failed:  # say it once; serving goes on
            self.failed = True
            logging.getLogger("prefork.worker").error("access log %s: %s", self.path, exc)

    def reopen(self) -> None:
        self.flush()
        try:
            new = self._open()
        except OSError as exc:  # keep writing to the old file, and say so
            logging.getLogger("prefork.worker").error("cannot reopen access log %s: %s", self.path, exc)
            return
        if self.file is not sys.stderr:
            try:
                self.file.close()
            except OSError:
                pass
        self.file = new
        self.failed = False

    def close(self) -> None:
        self.flush()
        if self.file is not sys.stderr:
            self.file.close()
