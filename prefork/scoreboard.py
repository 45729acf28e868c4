"""The scoreboard: shared memory the master creates before forking.

One fixed-size record of 64-bit integers per worker *process record* (not per
slot: during a reload the old and the new worker of a slot overlap, and each
has its own record). The master hands out record numbers; a worker writes only
its own record; the master reads them all (heartbeats now, status counters
later). Single-writer fields of aligned int64 need no lock.
"""

from __future__ import annotations

import mmap
import time

# field offsets within a record
HEARTBEAT = 0   # time.monotonic_ns() of the worker's last tick
PID = 1
GENERATION = 2
ACCEPTED = 3
ACTIVE = 4
REQUESTS = 5
READY = 6       # 1 once the worker accepts
HANDLED = 7     # accepted connections that were served (not shed for want of fds)
READING = 8     # connections receiving a request
WRITING = 9     # connections with a response being computed or sent
WAITING = 10    # idle keep-alive connections
SLOT = 11
BUSY = 12       # pool threads running application code (a WSGI app, an offloaded handler)
STOPPING = 13   # written by the master: its QUIT is the server's graceful stop, not a hand-over (reload, recycle)
FIELDS = 16


class Scoreboard:
    def __init__(self, records: int):
        self.records = records
        self._mm = mmap.mmap(-1, records * FIELDS * 8)  # anonymous, MAP_SHARED: survives fork shared
        self.cells = memoryview(self._mm).cast("q")
        self._free = list(range(records - 1, -1, -1))

    # master side ---------------------------------------------------------------

    def allocate(self) -> int:
        if not self._free:
            raise RuntimeError(f"scoreboard full ({self.records} worker records)")
        rec = self._free.pop()
        base = rec * FIELDS
        for i in range(FIELDS):
            self.cells[base + i] = 0
        self.cells[base + HEARTBEAT] = time.monotonic_ns()
        return rec

    def release(self, rec: int) -> None:
        self.cells[rec * FIELDS + PID] = 0  # no longer a live worker
        self._free.append(rec)

    def live(self) -> list[int]:
        """Records of running workers (PID set): for status pages."""
        cells, out = self.cells, []
        for rec in range(self.records):
            if cells[rec * FIELDS + PID]:
                out.append(rec)
        return out

    def get(self, rec: int, field: int) -> int:
        return self.cells[rec * FIELDS + field]

    def silent_for(self, rec: int) -> float:
        """Seconds since the worker in ``rec`` last beat."""
        return (time.monotonic_ns() - self.cells[rec * FIELDS + HEARTBEAT]) / 1e9

    # worker side -----------------------------------------------------------------

    def set(self, rec: int, field: int, value: int) -> None:
        self.cells[rec * FIELDS + field] = value

    def beat(self, rec: int) -> None:
        self.cells[rec * FIELDS + HEARTBEAT] = time.monotonic_ns()
