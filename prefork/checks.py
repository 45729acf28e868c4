"""Loading a configuration with every check, for the server's entry points.

``config.load`` reads and validates the file on its own (it imports nothing
above it). ``load_checked`` adds what needs the layers above: every route's
handler resolves (``apps.check_routes``: errors name the route and the
callable) and a worker's open files fit under the limits (a note). The cli
(-t, start-up, -s) and the master (HUP reload) load through it.
"""

from __future__ import annotations

import dataclasses
import resource

from .apps import check_routes
from .config import Config, load
from .worker import fd_reserve_parts, fds_needed


def load_checked(path: str, check_fds: bool = True) -> Config:
    """``config.load`` and the checks above it; raise ConfigError naming what is
    wrong. ``check_fds``: also note when a worker's open files do not fit under
    this process's limits (the limits doctor reads the file without it: it has
    its own table)."""
    return checked(load(path), check_fds)


def checked(config: Config, check_fds: bool = True) -> Config:
    """The checks above ``config``'s own, for a configuration already read
    (from a file, or the command line's overrides: ``cliapp``)."""
    check_routes(config)
    if check_fds:
        config = dataclasses.replace(config, notes=config.notes + fd_notes(config))
    return config


def fd_notes(config: Config) -> tuple[str, ...]:
    """Can a worker hold worker_connections plus what the static cache and the
    database keep open? A note (-t prints it, the master logs it as a warning)
    when that is above the hard open-file limit, or above worker_rlimit_nofile:
    the worker then runs out of fds before it reaches worker_connections, and
    sheds new connections (as nginx, which warns that worker_connections
    exceed the open file resource limit). Below the soft limit alone is fine:
    the workers raise it themselves."""
    server = config.server
    need = fds_needed(config)
    reserve = fd_reserve_parts(config)
    per = " + ".join([f"worker_connections {server.worker_connections}"]
                     + [f"{n} {what}" for what, n in reserve if n] + [f"{len(config.listen)} listener(s)"])
    keys = ["server.worker_connections"] + [key for key in ("static.cache_entries", "server.threads")
                                            if any(key in what for what, n in reserve if n)]
    if server.mode == "thread":
        keys.append("server.workers")
        per = f"{server.workers} reactors x ({per})"
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and need > hard:
        return (f"server.worker_connections: a worker needs {need} open files ({per}), above the hard "
                f"open-file limit {hard} (ulimit -Hn): it will shed new connections (and fail static files) "
                f"when it runs out; lower {' or '.join(keys)}, or raise the limit (LimitNOFILE= in the systemd "
                f"unit, ulimit -Hn as root)",)
    if server.worker_rlimit_nofile and server.worker_rlimit_nofile < need:
        return (f"server.worker_rlimit_nofile: {server.worker_rlimit_nofile} is below the {need} open files a "
                f"worker needs ({per}): it will shed new connections (and fail static files) when it runs out",)
    return ()
