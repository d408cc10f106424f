"""
The hub: for each account, the event streams that are open right now.

A commit is published to every stream of its account but the one of the
client that made it. The hub also sends the keep-alive comments that stop
proxies (and the clients' own silence timeouts) from closing idle streams.

Each stream belongs to the token that opened it: the hub caps how many
streams one token holds open, and ends them all when the token is revoked.
"""

from __future__ import annotations

from typing import Callable, Collection, Iterator, Protocol

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..wire import Event

__all__ = ["Hub", "Listener", "TooManyStreams"]

KEEPALIVE_SECONDS = 15.0

#: How many event streams one token may hold open at once, by default.
MAX_STREAMS_PER_TOKEN = 8


class TooManyStreams(Exception):
    """
    The token already holds as many open streams as it may (HTTP 429).
    """


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

    def disconnect(self) -> None:
        """
        End the stream and drop its connection (its token was revoked).
        """


@define
class Hub:
    """
    @ivar max_streams_per_token: the most streams one token may hold open;
        streams opened without a token id (with a shared key) are not
        counted.
    """

    clock: IReactorTime
    keepalive_seconds: float = KEEPALIVE_SECONDS
    max_streams_per_token: int = MAX_STREAMS_PER_TOKEN
    _accounts: dict[str, dict[str, Listener]] = field(factory=dict)
    _tokens: dict[str, dict[str, Listener]] = field(factory=dict)
    _seen: dict[str, dict[str, float]] = field(factory=dict)
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

    def add(self, account: str, listener: Listener, token: str = "") -> Callable[[], None]:
        """
        Register C{listener}, opened with the token of id C{token}; return
        the function that unregisters it.

        @raise TooManyStreams: if that token holds as many streams as it may.
        """
        if token and len(self._tokens.get(token, ())) >= self.max_streams_per_token:
            raise TooManyStreams(
                f"this token already has {self.max_streams_per_token} open event streams"
            )
        removers = [_register(self._accounts, account, listener)]
        if token:
            removers.append(_register(self._tokens, token, listener))
        seen = self._seen.setdefault(account, {})

        def remove() -> None:
            for remover in removers:
                remover()
            seen[listener.client] = self.clock.seconds()

        return remove

    def last_seen(self, account: str) -> dict[str, float]:
        """
        When each client of C{account} last had a stream open (now, for
        those with one open), since the hub was made.
        """
        seen = dict(self._seen.get(account, {}))
        now = self.clock.seconds()
        for listener in self.listeners(account):
            seen[listener.client] = now
        return seen

    def accounts(self) -> set[str]:
        """
        The accounts with a stream open, or that had one since the hub was
        made.
        """
        return set(self._accounts) | set(self._seen)

    def disconnect(self, tokens: Collection[str]) -> int:
        """
        End every stream opened with one of C{tokens}; return how many.
        """
        ended = 0
        for token in tokens:
            for listener in list(self._tokens.get(token, {}).values()):
                try:
                    listener.disconnect()
                except Exception:
                    self.log.failure("disconnecting {stream}", stream=listener.stream_id)
                ended += 1
        return ended

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


def _register(groups: dict[str, dict[str, Listener]], key: str, listener: Listener) -> Callable[[], None]:
    """
    Put C{listener} in the group C{key} of C{groups}; return the function
    that takes it out again (and drops the group once it is empty).
    """
    streams = groups.setdefault(key, {})
    streams[listener.stream_id] = listener

    def remove() -> None:
        if streams.get(listener.stream_id) is listener:
            del streams[listener.stream_id]
        if not streams and groups.get(key) is streams:
            del groups[key]

    return remove
