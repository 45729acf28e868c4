"""The publish/subscribe seam between the WebSocket handlers and the bus.

The worker's hub of subscribers (the ``pubsub`` handler's channels, on the
apps side) publishes through a ``Bus`` and is what the bus delivers to.
Which bus a worker has is decided where the worker is built: ``LoopbackBus``
(one process: a publish is delivered at once), the fan-out between the
workers of one server, or Redis pub/sub between servers. Every bus delivers
each published message to each attached subscriber once, in publish order
per publisher. Imports nothing else of prefork.
"""
from __future__ import annotations

from typing import Protocol


class Subscriber(Protocol):
    """What a bus delivers to: the worker's hub of channels."""

    def deliver(self, channel: bytes, payload: bytes, binary: bool) -> None: ...


class Bus(Protocol):
    """What the hub publishes through."""

    def attach(self, subscriber: Subscriber) -> None: ...

    def publish(self, channel: bytes, payload: bytes, binary: bool) -> None: ...

    def close(self) -> None: ...


class LoopbackBus:
    """One process and no other: a publish is delivered to the attached subscriber at once."""

    __slots__ = ("_subscriber",)

    def __init__(self) -> None:
        self._subscriber: Subscriber | None = None

    def attach(self, subscriber: Subscriber) -> None:
        self._subscriber = subscriber

    def publish(self, channel: bytes, payload: bytes, binary: bool) -> None:
        if self._subscriber is not None:
            self._subscriber.deliver(channel, payload, binary)

    def close(self) -> None:
        self._subscriber = None
