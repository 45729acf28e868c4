"""Command line: ``prefork-server [MODULE:APP] [-c FILE] [flags] [-t] [-s SIGNAL] [--check-limits [--connections N]]
[--version]``. The app and the flags that override a configuration are ``cliapp``'s."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__, cliapp
from .checks import load_checked
from .config import ConfigError
from .listeners import BindError
from .logs import setup_error_log

DEFAULT_CONFIG = "conf/server.toml"

log = logging.getLogger("prefork")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


class _Version(argparse.Action):
    """``--version``: the version and which hot path runs (compiled or pure Python)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from . import _compiled

        print(f"prefork-server {__version__}, {_compiled.describe()}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prefork-server", description="A pre-forking server with an epoll reactor.")
    # default None, so --check-limits can tell "-c given" from the built-in defaults
    p.add_argument("-c", "--config", default=None, help=f"configuration file (default: {DEFAULT_CONFIG})")
    p.add_argument("-t", "--test", action="store_true", help="check the configuration and exit (0 good, 1 bad)")
    p.add_argument("-s", "--signal", choices=("stop", "quit", "reload", "reopen"),
                   help="send a signal to the running master (found through server.pid_file)")
    p.add_argument("--check-limits", action="store_true",
                   help="check the kernel's limits for --connections (0: they suffice, 1: something to fix)")
    p.add_argument("--connections", type=_positive_int, metavar="N",
                   help="target for --check-limits (default: workers x worker_connections of the config)")
    p.add_argument("--root", default="/", help=argparse.SUPPRESS)  # tests: read a fake /proc below this
    p.add_argument("-v", "--version", action=_Version, nargs=0,
                   help="print the version and whether the hot path runs compiled, and exit")
    cliapp.add_arguments(p)
    return p


def _check_limits(args: argparse.Namespace) -> int:
    """``--check-limits``: print the limits doctor's table; 0 when the target can be met."""
    from .config import ServerConfig
    from .limits import check, render
    from .worker import FD_RESERVE, fd_reserve

    if args.config is None:
        server, source = ServerConfig(), "server: the built-in defaults (no -c)"
        reserve = FD_RESERVE
    else:
        try:
            config = load_checked(args.config, check_fds=False)  # the doctor says what to fix instead
            server, reserve = config.server, fd_reserve(config)
        except ConfigError as exc:
            print(f"prefork-server: {exc}", file=sys.stderr)
            return 1
        source = f"server: {args.config}"
    source += f": workers = {server.workers}, worker_connections = {server.worker_connections}"
    if args.connections is None:
        source += " (the target is their product)"
    report = check(server, args.connections, root=args.root, source=source, reserve=reserve)
    sys.stdout.write(render(report))
    return 0 if report.ok else 1


def _signal_without_file(args: argparse.Namespace) -> int:
    """``-s`` for a server started without -c: only its ``--pid`` file finds it."""
    from .pidfile import signal_pid_file

    if not args.pid:
        print("prefork-server: -s needs the master's pid file: a server started without -c writes one only with "
              "--pid PATH; give the same --pid here (or -c FILE with server.pid_file)", file=sys.stderr)
        return 1
    return signal_pid_file(args.pid, args.signal)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args = parser.parse_args(argv)
    if args.connections is not None and not args.check_limits:
        parser.error("--connections goes with --check-limits")
    cliapp.check_arguments(parser, args)
    # Handlers named "package.module:callable" are found from the directory
    # the server starts in, as gunicorn and uvicorn do.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if args.check_limits:
        return _check_limits(args)
    if args.signal and args.config is None and (args.app or args.pid):
        return _signal_without_file(args)
    # an app without -c: no file, the built-in defaults with the flags applied
    path = args.config or (None if args.app else DEFAULT_CONFIG)
    what = f"configuration file {path}" if path else f"configuration of the command line ({args.app})"
    load = cliapp.Loader(args, path)
    try:
        config = load(check_fds=not args.signal)  # -s: the shell's limits are not the server's
    except ConfigError as exc:
        print(f"prefork-server: {exc}", file=sys.stderr)
        if args.test:
            print(f"prefork-server: {what} test failed", file=sys.stderr)
        return 1
    for note in config.notes:
        print(f"prefork-server: {config.path}: note: {note}", file=sys.stderr)
    if args.test:
        print(f"prefork-server: {what} test is successful", file=sys.stderr)
        return 0
    from .master import Master
    from .pidfile import AlreadyRunning, signal_master

    if args.signal:
        return signal_master(config, args.signal)
    try:
        setup_error_log(config.log)
    except OSError as exc:
        print(f"prefork-server: {config.path}: log.error_log: cannot open {config.log.error_log}: {exc.strerror}",
              file=sys.stderr)
        return 1
    from .apps.db import DatabaseError

    master = Master(config, argv, load, watch=args.reload)
    try:
        return master.run()
    except (AlreadyRunning, BindError, DatabaseError) as exc:
        print(f"prefork-server: {exc}", file=sys.stderr)
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
