"""The bus inside real worker processes, without WebSockets.

``python -m tests.bus_apps -c FILE`` runs prefork-server (the real master,
its relay, reloads) with each worker's bus attached to a ``Recorder``, which
appends every delivery to ``$PREFORK_TEST_BUS_DIR/<pid>.log`` as a line
``channel binary length head`` (the head: the payload up to its first "|").
The route ``tests.bus_apps:publish`` (a prefix such as ``/pub/``) publishes
on the serving worker: ``/pub/<channel>?n=&size=&tag=&binary=`` publishes
``n`` payloads ``<tag>:<pid>:<i>|`` padded to ``size`` bytes, and answers the
worker's pid.
"""
from __future__ import annotations

import os
import sys
from urllib.parse import parse_qs

from prefork import worker
from prefork.messages import Request, Response


class Recorder:
    """A bus subscriber that writes what it gets to a file (one write per delivery)."""

    def __init__(self, directory: str):
        self.fd = os.open(os.path.join(directory, f"{os.getpid()}.log"),
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def deliver(self, channel: bytes, payload: bytes, binary: bool) -> None:
        head = payload.split(b"|", 1)[0][:64]
        os.write(self.fd, b"%s %d %d %s\n" % (channel, binary, len(payload), head))


def publish(request: Request) -> Response:
    query = {k: v[0] for k, v in parse_qs(request.query.decode()).items()}
    channel = request.path.rsplit(b"/", 1)[1]
    n, size = int(query.get("n", 1)), int(query.get("size", 0))
    tag, binary = query.get("tag", "m"), query.get("binary") == "1"
    bus = worker.Worker.current.bus
    pid = os.getpid()
    for i in range(n):
        payload = b"%s:%d:%d|" % (tag.encode(), pid, i)
        bus.publish(channel, payload.ljust(size, b"x"), binary)
    return Response(200, b"%d" % pid, b"text/plain")


def _patch() -> None:
    directory = os.environ["PREFORK_TEST_BUS_DIR"]
    init = worker.Worker.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        worker.Worker.current = self  # one reactor per worker process in these tests
        self.bus.attach(Recorder(directory))

    worker.Worker.__init__ = recording_init


if __name__ == "__main__":
    from prefork.cli import main

    _patch()
    sys.exit(main(sys.argv[1:]))
