"""
One client's open event stream: the plan, written as fast as the connection
drains it, then live events as the hub publishes them.
"""

from __future__ import annotations

from typing import AsyncIterable, Callable

from attrs import define, field
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.web.server import Request
from zope.interface import implementer

from ..protocol import Event, Hello, Ready, encode_comment, encode_event

__all__ = ["EventStream", "RETRY_MS"]

#: What clients are told to wait before reconnecting (SSE "retry:").
RETRY_MS = 2000


@implementer(IPushProducer)
@define(eq=False)
class EventStream:
    """
    An SSE response that the hub can publish to (a L{boxsync.server.hub.Listener}).

    Live events that arrive while the plan is still being written are held
    back until after C{ready}, so the client sees the plan whole first.
    """

    request: Request
    stream_id: str
    client: str
    encode: Callable[[Event, bool], bytes] = encode_event
    _held: list[Event] | None = field(factory=list)
    _paused: Deferred[None] | None = None
    _closed: bool = False

    def start(self, seq: int) -> None:
        """
        Write the headers and the first frames, and start taking
        back-pressure from the connection.
        """
        self.request.registerProducer(self, True)
        retry = f"retry: {RETRY_MS}\n\n".encode()
        self._write(retry + self.encode(Hello(self.stream_id, seq), True))

    async def run(self, plan: AsyncIterable[Event], upto: int) -> None:
        """
        Write every event of C{plan}, waiting whenever the connection is
        full, then C{ready} and the live events held back meanwhile.
        """
        async for event in plan:
            if self._paused is not None:
                await self._paused
            if self._closed:
                return
            self._write(self.encode(event, False))
        self._write(self.encode(Ready(upto), True))
        held, self._held = self._held or [], None
        for event in held:
            self.send(event)

    def send(self, event: Event) -> None:
        if self._held is not None:
            self._held.append(event)
        else:
            self._write(self.encode(event, True))

    def keepalive(self) -> None:
        self._write(encode_comment("keepalive"))

    def close(self) -> None:
        """
        The stream is over (the client went away or the server stops).
        """
        if self._closed:
            return
        self._closed = True
        self.request.unregisterProducer()
        self._wake(CancelledError())

    def _write(self, data: bytes) -> None:
        if not self._closed:
            self.request.write(data)

    def _wake(self, error: Exception | None = None) -> None:
        paused, self._paused = self._paused, None
        if paused is not None:
            if error is None:
                paused.callback(None)
            else:
                paused.errback(error)

    # IPushProducer

    def pauseProducing(self) -> None:
        if self._paused is None:
            self._paused = Deferred()

    def resumeProducing(self) -> None:
        self._wake()

    def stopProducing(self) -> None:
        self.close()
