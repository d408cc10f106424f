"""
The hub: for each account, the event streams that are open right now.

A commit is published to every stream of its account but the one of the
client that made it. The hub also sends the keep-alive comments that stop
proxies (and the clients' own silence timeouts) from closing idle streams.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..protocol import Event

__all__ = ["Hub", "Listener"]

KEEPALIVE_SECONDS = 15.0


class Listener(Protocol):
    """
    One open event stream.
    """

    stream_id: str
    client: str

    def send(self, event: Event) -> None:
        """
        Deliver a live event.
        """

    def keepalive(self) -> None:
        """
        Write a keep-alive comment.
        """


@define
class Hub:
    clock: IReactorTime
    keepalive_seconds: float = KEEPALIVE_SECONDS
    _accounts: dict[str, dict[str, Listener]] = field(factory=dict)
    _loop: LoopingCall | None = None
    log = Logger()

    def start(self) -> None:
        self._loop = LoopingCall(self._keepalive)
        self._loop.clock = self.clock
        self._loop.start(self.keepalive_seconds, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def add(self, account: str, listener: Listener) -> Callable[[], None]:
        """
        Register C{listener}; return the function that unregisters it.
        """
        streams = self._accounts.setdefault(account, {})
        streams[listener.stream_id] = listener

        def remove() -> None:
            if streams.get(listener.stream_id) is listener:
                del streams[listener.stream_id]
            if not streams and self._accounts.get(account) is streams:
                del self._accounts[account]

        return remove

    def publish(self, account: str, event: Event, exclude: str | None = None) -> int:
        """
        Send C{event} to every stream of C{account} but C{exclude}; return to
        how many.
        """
        sent = 0
        for stream_id, listener in list(self._accounts.get(account, {}).items()):
            if stream_id == exclude:
                continue
            try:
                listener.send(event)
            except Exception:
                self.log.failure("publishing to {stream}", stream=stream_id)
                continue
            sent += 1
        return sent

    def listeners(self, account: str | None = None) -> Iterator[Listener]:
        accounts = self._accounts.values() if account is None else [
            self._accounts.get(account, {})
        ]
        for streams in accounts:
            yield from list(streams.values())

    def count(self) -> int:
        return sum(len(streams) for streams in self._accounts.values())

    def _keepalive(self) -> None:
        for listener in self.listeners():
            try:
                listener.keepalive()
            except Exception:
                self.log.failure("keep-alive to {stream}", stream=listener.stream_id)
