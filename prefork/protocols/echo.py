"""Echo protocol, sans-IO: every byte received is sent back."""

from __future__ import annotations


class EchoProtocol:
    __slots__ = ("closing", "linger", "deadline", "driver")
    idle = True  # nothing is ever half-received

    def __init__(self, ctx=None, peer=None):
        self.closing = False
        self.linger = False
        self.deadline = 0.0
        self.driver = None

    def data_received(self, data) -> bytes:
        return bytes(data)

    def eof_received(self) -> bytes:
        self.closing = True
        return b""

    def timeout(self, now: float) -> bytes:
        self.closing = True
        return b""

    def connection_lost(self) -> None:
        pass

    def grace(self, until: float) -> None:
        if not self.deadline or self.deadline > until:
            self.deadline = until
