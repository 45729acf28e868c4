"""Least privilege: ``[server] user`` / ``group``, as nginx's ``user`` directive.

The master keeps the privileges it started with (it binds the sockets, port 80
included, opens the logs and creates the database, and on USR1 gives the
reopened log files to the user); each worker drops to the
configured user and group right after it is built and before it serves
anything. Whether that user can read the static root and use the SQLite
database is checked when the config is loaded, so a mistake is a clear
start-up (or reload) error naming the key, the path and the user -- not a 403
or a 503 for every request later.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]   # supplementary groups, the primary one included


def resolve(user: str, group: str = "") -> Identity:
    """The uid, gid and groups of ``user`` (a name or a number); KeyError if unknown."""
    entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    gid = entry.pw_gid
    if group:
        gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
    groups = {gid} | {g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem}
    return Identity(entry.pw_name, entry.pw_uid, gid, tuple(sorted(groups)))


def allowed(path: str, ident: Identity, want: int) -> bool:
    """Would ``ident`` get ``want`` (os.R_OK | os.W_OK | os.X_OK bits) on
    ``path``, judging by its mode bits? (os.access asks for this process.)"""
    if ident.uid == 0:
        return True
    st = os.stat(path)
    if st.st_uid == ident.uid:
        shift = 6
    elif st.st_gid in ident.groups:
        shift = 3
    else:
        shift = 0
    bits = (st.st_mode >> shift) & 7
    return bits & want == want


def reachable(path: str, ident: Identity) -> str | None:
    """The first directory on the way to ``path`` that ``ident`` cannot enter."""
    parts = os.path.abspath(path).split(os.sep)
    current = os.sep
    for part in parts[1:-1]:
        current = os.path.join(current, part)
        if os.path.isdir(current) and not allowed(current, ident, os.X_OK):
            return current
    return None


def check(static_root: str, sqlite_file: str, ident: Identity) -> tuple[str, str] | None:
    """(config key, reason) for the first thing ``ident`` could not use, or None."""
    if static_root:
        blocked = reachable(os.path.join(static_root, "x"), ident)
        if blocked:
            return "static.root", f"user {ident.user!r} cannot enter {blocked}"
        if not allowed(static_root, ident, os.R_OK | os.X_OK):
            return "static.root", f"{static_root} is not readable by user {ident.user!r}"
    if sqlite_file:
        directory = os.path.dirname(sqlite_file) or "."
        blocked = reachable(sqlite_file, ident)
        if blocked:
            return "database.url", f"user {ident.user!r} cannot enter {blocked}"
        # SQLite in WAL mode creates -wal and -shm files beside the database
        if os.path.isdir(directory) and not allowed(directory, ident, os.W_OK | os.X_OK):
            return "database.url", f"{directory} is not writable by user {ident.user!r} (SQLite needs it for its WAL)"
        for path in (sqlite_file, sqlite_file + "-wal", sqlite_file + "-shm"):
            if (os.path.exists(path) and not allowed(path, ident, os.R_OK | os.W_OK)
                    and os.stat(path).st_uid != os.getuid()):  # (what is ours, hand_over gives to ident)
                return "database.url", f"{path} is not readable and writable by user {ident.user!r}"
    return None


def hand_over(paths: list[str], ident: Identity) -> None:
    """Give the files the master created (the database) to the workers' user."""
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and st.st_uid != ident.uid:
            os.chown(path, ident.uid, ident.gid)


def drop(ident: Identity) -> None:
    """Become ``ident`` for good (groups first, then gid, then uid).

    Changing credentials clears the parent-death signal (prctl), which the
    master set so that its workers go when it does: it is set again."""
    if os.getuid() == ident.uid and os.getgid() == ident.gid:
        return
    deathsig = _pdeathsig()
    os.setgroups(list(ident.groups))
    os.setgid(ident.gid)
    os.setuid(ident.uid)
    if os.getuid() != ident.uid or os.geteuid() != ident.uid:
        raise OSError(f"could not drop privileges to {ident.user}")
    if deathsig:
        _prctl(PR_SET_PDEATHSIG, deathsig)


PR_SET_PDEATHSIG, PR_GET_PDEATHSIG = 1, 2


def _prctl(option: int, arg) -> int:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):
        return -1


def _pdeathsig() -> int:
    value = ctypes.c_int(0)
    if _prctl(PR_GET_PDEATHSIG, ctypes.byref(value)) != 0:
        return 0
    return value.value
