"""Helpers for the lifecycle tests in test_master.py (not collected by pytest).

As a module: ``crash``, a handler that takes its worker down after it has
served (an exception that is not an ``Exception`` escapes the worker's loop).

As a script: ``python tests/e2e/lifecycle_helpers.py -c FILE`` runs the server
with ``os.fork`` made to fail on demand, so the master's fork-failure paths
run in a real process: while the file named by ``$FORK_FAIL_FILE`` exists,
it holds how many more forks may succeed; once that reaches 0, ``fork()``
raises EAGAIN. Without the file, forks are real.
"""

import errno
import os
import sys


def crash(request):
    raise KeyboardInterrupt("lifecycle_helpers.crash: a worker crash after ready")


def _failing_fork(real_fork, flag: str):
    def fork():
        try:
            with open(flag) as f:
                allowed = int(f.read().strip() or 0)
        except FileNotFoundError:
            return real_fork()
        if allowed > 0:
            with open(flag, "w") as f:
                f.write(str(allowed - 1))
            return real_fork()
        raise OSError(errno.EAGAIN, "fork refused by the test")
    return fork


if __name__ == "__main__":
    os.fork = _failing_fork(os.fork, os.environ["FORK_FAIL_FILE"])
    from prefork.cli import main

    sys.exit(main())
