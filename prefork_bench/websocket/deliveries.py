"""Who got which message: the accounting of the client processes and the
parent's sums. Pure.

Each client process keeps, per sequence number, how many of its connections
got that message and when the last one did (``Deliveries``); each connection
keeps only the last sequence number it got, so a message that comes again or
out of publish order is counted as a duplicate and not as a delivery
(exactly once, in order, per subscriber). The parent adds the processes'
counts up (``merge``) and sets them against what it published
(``summarize``): lost = expected deliveries - deliveries counted.
"""

from __future__ import annotations

from dataclasses import dataclass


class Deliveries:
    """One client process's count per message: seq -> [connections, last arrival]."""

    __slots__ = ("counts", "duplicates", "foreign")

    def __init__(self) -> None:
        self.counts: dict[int, list] = {}
        self.duplicates = 0   # a message again, or one older than the last one the connection got
        self.foreign = 0      # a message that is not one of the bench's

    def record(self, last: int, seq: int, now: float) -> int:
        """A connection whose last message was ``last`` got ``seq`` at ``now``;
        returns its new last."""
        if seq < 0:
            self.foreign += 1
            return last
        if seq <= last:
            self.duplicates += 1
            return last
        entry = self.counts.get(seq)
        if entry is None:
            self.counts[seq] = [1, now]
        else:
            entry[0] += 1
            entry[1] = now
        return seq

    def report(self) -> dict:
        """For the JSON line: {"d": {"seq": [count, last]}, "dup": n, "foreign": n}."""
        return {"d": {str(seq): v for seq, v in self.counts.items()}, "dup": self.duplicates,
                "foreign": self.foreign}


def merge(reports: list[dict]) -> tuple[dict[int, tuple[int, float]], int, int]:
    """The processes' latest ``Deliveries.report()``s added up:
    ({seq: (connections, last arrival)}, duplicates, foreign)."""
    total: dict[int, tuple[int, float]] = {}
    duplicates = foreign = 0
    for rep in reports:
        duplicates += rep.get("dup", 0)
        foreign += rep.get("foreign", 0)
        for key, (count, last) in rep.get("d", {}).items():
            seq = int(key)
            have = total.get(seq)
            total[seq] = (count, last) if have is None else (have[0] + count, max(have[1], last))
    return total, duplicates, foreign


@dataclass
class Published:
    """One message the parent published."""
    seq: int
    sent: float        # time.monotonic() just before it went out
    expected: int      # subscribers that should get it (the connections open then)


def summarize(published: list[Published], got: dict[int, tuple[int, float]], duplicates: int = 0,
              foreign: int = 0) -> dict:
    """Per message: expected, received, lost, fan-out (publish -> the last
    subscriber got it); and the totals, with the deliveries per second while
    fanning out (all deliveries / the sum of the fan-out times)."""
    rows = []
    for p in published:
        count, last = got.get(p.seq, (0, None))
        rows.append({"seq": p.seq, "expected": p.expected, "received": count,
                     "lost": max(0, p.expected - count), "extra": max(0, count - p.expected),
                     "fanout_s": None if last is None else max(0.0, last - p.sent)})
    unknown = sum(count for seq, (count, _) in got.items() if seq not in {p.seq for p in published})
    fanouts = sorted(r["fanout_s"] for r in rows if r["fanout_s"] is not None)
    delivered = sum(r["received"] for r in rows)
    busy = sum(fanouts)
    return {
        "messages": len(rows),
        "expected": sum(r["expected"] for r in rows),
        "delivered": delivered,
        "lost": sum(r["lost"] for r in rows),
        "extra": sum(r["extra"] for r in rows) + unknown,
        "duplicates": duplicates,
        "foreign": foreign,
        "fanout_p50_s": fanouts[(len(fanouts) - 1) // 2] if fanouts else None,
        "fanout_max_s": fanouts[-1] if fanouts else None,
        "fanout_min_s": fanouts[0] if fanouts else None,
        "delivered_per_s": delivered / busy if busy > 0 else None,
        "per_message": rows,
    }
