"""Command line: ``prefork-server [-c FILE] [-t] [--version]``."""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .config import ConfigError, load
from .listeners import BindError, bind, bound_address
from .worker import run_worker

DEFAULT_CONFIG = "conf/server.toml"

log = logging.getLogger("prefork")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prefork-server", description="A pre-forking server with an epoll reactor.")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"configuration file (default: {DEFAULT_CONFIG})")
    p.add_argument("-t", "--test", action="store_true", help="check the configuration and exit (0 good, 1 bad)")
    p.add_argument("-v", "--version", action="version", version=f"prefork-server {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s [%(levelname)s] %(process)d: %(message)s")
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
    sockets = []
    try:
        for listen in config.listen:
            sockets.append((bind(listen), listen))
    except BindError as exc:
        print(f"prefork-server: {exc}", file=sys.stderr)
        return 1
    for sock, listen in sockets:
        log.info("listening on %s (%s)", bound_address(sock), listen.protocol)
    if config.server.workers > 1:
        log.warning("workers = %d: this version runs one worker in the foreground", config.server.workers)
    return run_worker(config, sockets, 0)


if __name__ == "__main__":
    sys.exit(main())
