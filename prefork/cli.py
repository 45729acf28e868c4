"""Command line: ``prefork-server [-c FILE] [-t] [-s SIGNAL] [--version]``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__
from .config import ConfigError, load
from .listeners import BindError
from .logs import setup_error_log

DEFAULT_CONFIG = "conf/server.toml"

log = logging.getLogger("prefork")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prefork-server", description="A pre-forking server with an epoll reactor.")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"configuration file (default: {DEFAULT_CONFIG})")
    p.add_argument("-t", "--test", action="store_true", help="check the configuration and exit (0 good, 1 bad)")
    p.add_argument("-s", "--signal", choices=("stop", "quit", "reload", "reopen"),
                   help="send a signal to the running master (found through server.pid_file)")
    p.add_argument("-v", "--version", action="version", version=f"prefork-server {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    # Handlers named "package.module:callable" are found from the directory
    # the server starts in, as gunicorn and uvicorn do.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"prefork-server: {exc}", file=sys.stderr)
        if args.test:
            print(f"prefork-server: configuration file {args.config} test failed", file=sys.stderr)
        return 1
    if args.test:
        print(f"prefork-server: configuration file {args.config} test is successful", file=sys.stderr)
        return 0
    from .master import Master, signal_master

    if args.signal:
        return signal_master(config, args.signal)
    try:
        setup_error_log(config.log)
    except OSError as exc:
        print(f"prefork-server: {config.path}: log.error_log: cannot open {config.log.error_log}: {exc.strerror}",
              file=sys.stderr)
        return 1
    from .apps.db import DatabaseError

    master = Master(config, argv)
    try:
        return master.run()
    except (BindError, DatabaseError) as exc:
        print(f"prefork-server: {exc}", file=sys.stderr)
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
