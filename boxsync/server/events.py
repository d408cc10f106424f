"""
One client's open event stream: the plan, written as fast as the connection
drains it, then live events as the hub publishes them.
"""

from __future__ import annotations

from typing import AsyncIterable, Callable, Collection

from attrs import define, field, frozen
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from ..coding import GzipStream
from ..wire import EVENT_STREAM, Event, Hello, Ready, as_read_by, encode_comment, encode_event
from .auth import Principal
from .hub import Hub
from .index import IIndex

__all__ = ["EventStream", "Framing", "SSE", "RETRY_MS", "sse_for"]

#: What clients are told to wait before reconnecting (SSE "retry:").
RETRY_MS = 2000


@frozen
class Framing:
    """
    How a stream's events go on the wire.

    @ivar encode: the bytes of one event, or C{b""} to leave it out; the
        flag says whether the event goes with its seq as id (live events and
        C{ready}) or not (plan entries).
    @ivar preamble: written before the first event.
    @ivar keepalive: written on an idle stream now and then; C{b""} for
        nothing at all.
    @ivar plan_write: how many of a plan's events go out in one write (1
        for a reader that takes each chunk for one event).
    """

    content_type: str
    encode: Callable[[Event, bool], bytes]
    preamble: bytes = b""
    keepalive: bytes = b""
    plan_write: int = 1


def sse_for(features: Collection[str]) -> Framing:
    """
    Server-Sent Events, as boxsync's own clients read them: for a client
    that reads C{features}, each event as L{as_read_by} leaves it.
    """

    def encode(event: Event, with_id: bool) -> bytes:
        sent = as_read_by(event, features)
        return b"" if sent is None else encode_event(sent, with_id)

    return Framing(
        EVENT_STREAM,
        encode,
        preamble=f"retry: {RETRY_MS}\n\n".encode(),
        keepalive=encode_comment("keepalive"),
        plan_write=PLAN_WRITE,
    )


#: How many of a plan's events go out in one write of an SSE stream.
PLAN_WRITE = 64

#: Server-Sent Events, for a client of the first protocol.
SSE = sse_for(())


@implementer(IPushProducer)
@define(eq=False)
class EventStream:
    """
    An event-stream response that the hub can publish to (a
    L{boxsync.server.hub.Listener}), framed as SSE or, for the legacy
    clients, as L{boxsync.server.legacy.LEGACY}.

    Live events that arrive while the plan is still being written are held
    back until after C{ready}, so the client sees the plan whole first.
    Each live event goes out as a write of its own (one HTTP chunk); the
    plan's, L{Framing.plan_write} at a time.
    """

    request: Request
    stream_id: str
    client: str
    framing: Framing = SSE
    #: Its writes in gzip (the client accepts it), else as they are.
    gzip: GzipStream | None = None
    _held: list[Event] | None = field(factory=list)
    _paused: Deferred[None] | None = None
    _closed: bool = False
    log = Logger()

    async def serve(
        self,
        hub: Hub,
        principal: Principal,
        index: IIndex,
        plan: Callable[[int], AsyncIterable[Event]],
        other_history: bool = False,
    ) -> None:
        """
        The whole life of the stream, for a route to await: register with
        C{hub} for the principal's account and token, write the hello (with
        C{other_history}, see L{Hello}) and C{plan(upto)} for the account's
        current seq C{upto}, then live events, until the
        route's Deferred is cancelled (Klein does that when the client goes
        away, and so does a stopping server); then unregister and stop
        writing.

        @raise TooManyStreams: before anything is written, if the token
            holds as many streams as it may.
        """
        account = principal.account
        # Registered before the seq is read: a commit after it is either in
        # the plan or sent live, never lost in between.
        unregister = hub.add(account, self, principal.token)
        request = self.request
        request.setHeader(b"Content-Type", self.framing.content_type.encode())
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Accel-Buffering", b"no")
        if self.gzip is not None:
            request.setHeader(b"Content-Encoding", b"gzip")
            request.setHeader(b"Vary", b"Accept-Encoding")
        writing: Deferred[None] | None = None

        def close(_: object = None) -> None:
            unregister()
            self.close()
            if writing is not None:
                writing.cancel()

        held_open: Deferred[None] = Deferred(lambda d: close())
        try:
            box = await index.box_id(account)
            upto = await index.current_seq(account)
            self.start(upto, box, other_history)
            writing = Deferred.fromCoroutine(self.run(plan(upto), upto))
        except BaseException:
            close()
            raise

        def failed(failure: Failure) -> None:
            if not failure.check(CancelledError):
                self.log.failure("plan for {client} failed", failure, client=self.client)
                request.loseConnection()  # type: ignore[attr-defined]

        writing.addErrback(failed)
        try:
            await held_open
        finally:
            self.log.info("{client} disconnected", client=self.client or "a client")
            close()

    def start(self, seq: int, box: str | None = None, other_history: bool = False) -> None:
        """
        Write the headers and the first frames (the hello: the current
        C{seq}, the id of the C{box}, and whether the client's history is
        another), and start taking back-pressure from the connection.
        """
        self.request.registerProducer(self, True)
        hello = self.framing.encode(Hello(self.stream_id, seq, box, other_history or None), True)
        if not self._closed:
            # Written even when empty: it sends the response headers.
            self.request.write(self._encoded(self.framing.preamble + hello))

    async def run(self, plan: AsyncIterable[Event], upto: int) -> None:
        """
        Write every event of C{plan}, waiting whenever the connection is
        full, then C{ready} and the live events held back meanwhile.
        """
        # The plan's events go out a few at a time (fewer chunks, and gzip
        # finds more in common); what is pending is written before any wait.
        pending: list[bytes] = []
        async for event in plan:
            if self._paused is not None:
                self._write(b"".join(pending))
                pending.clear()
                await self._paused
            if self._closed:
                return
            pending.append(self.framing.encode(event, False))
            if len(pending) >= self.framing.plan_write:
                self._write(b"".join(pending))
                pending.clear()
        pending.append(self.framing.encode(Ready(upto), True))
        self._write(b"".join(pending))
        if self.gzip is not None:
            self.gzip.settle()  # live events are few: not worth a compressor each
        held, self._held = self._held or [], None
        for event in held:
            self.send(event)

    def send(self, event: Event) -> None:
        if self._held is not None:
            self._held.append(event)
        else:
            self._write(self.framing.encode(event, True))

    def keepalive(self) -> None:
        self._write(self.framing.keepalive)

    def disconnect(self) -> None:
        """
        Drop the connection at once, without waiting for what is buffered to
        drain (the client may not be reading): the stream then ends as if
        the client had gone away.
        """
        transport = None if self._closed else getattr(self.request, "transport", None)
        self.close()
        if transport is not None:
            transport.abortConnection()

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
        if data and not self._closed:
            self.request.write(self._encoded(data))

    def _encoded(self, data: bytes) -> bytes:
        return data if self.gzip is None else self.gzip.encode(data)

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
