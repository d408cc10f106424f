"""
The transport under the client's calls: a request whose response headers
must come before a silence of C{idle_timeout}, and response bodies read as
they arrive, each with its own silence watchdog.

treq's C{timeout=} covers only the wait for the response headers, and an
event stream or a large download can stall for good after them; a large
upload can take as long as it takes, as long as it moves: while its bytes
leave the socket, and, once they all have (into a proxy that takes the
whole body and trickles it on), while the server says it is still getting
them (C{102 Processing}, asked for with L{PROGRESS_HEADER}).
"""

from __future__ import annotations

import json
from typing import Any, Callable

from attrs import define, frozen
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IProducer,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from ..wire import ProtocolError
from ..wire.headers import PROGRESS_HEADER, PROGRESS_PROCESSING
from .errors import StreamIdle, error_for
from .probe import SchemeCheck
from .sockets import received, unsent
from .throttle import Gate, TokenBucket

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "MAX_JSON",
    "Watchdog",
    "BodyReader",
    "CountingProducer",
    "Transport",
    "response_header",
]

#: How many seconds a response may stay silent before it is given up.
DEFAULT_IDLE_TIMEOUT = 45.0

#: The most bytes of a JSON answer (an error or a commit) this client reads.
MAX_JSON = 64 * 1024


@define
class Watchdog:
    """
    Call C{on_idle} once if L{poke} is not called for C{timeout} seconds.
    """

    clock: IReactorTime
    timeout: float
    on_idle: Callable[[], object]
    fired: bool = False
    _call: IDelayedCall | None = None

    def poke(self) -> None:
        """
        Something happened: start the countdown again.
        """
        if self._call is not None and self._call.active():
            self._call.reset(self.timeout)
        elif not self.fired:
            self._call = self.clock.callLater(self.timeout, self._fire)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _fire(self) -> None:
        self._call = None
        self.fired = True
        self.on_idle()


def _ignore(chunk: bytes) -> None:
    pass


class BodyReader(Protocol):
    """
    Hand a response body to C{sink} a chunk at a time, as it arrives, and give
    up on it when nothing arrives for C{idle_timeout} seconds.

    With a C{bucket} (a bandwidth limit) every chunk is spent from it, and
    the connection is not read until the bucket is out of debt again: that
    wait is not silence, and the body is done only once it is over, so a
    body takes as long as its size at that rate.

    @ivar done: fires with C{None} once the whole body was delivered. It fails
        with L{StreamIdle} after a silence, with what C{sink} raised, or with
        the reason the connection was lost. Cancelling it closes the
        connection. Nothing reaches C{sink} after it has fired.
    @ivar gate: what pauses the connection, for a consumer of the body to
        register (once the body is delivered to this reader).
    """

    gate: Gate

    def __init__(
        self,
        clock: IReactorTime,
        idle_timeout: float,
        sink: Callable[[bytes], object],
        bucket: TokenBucket | None = None,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._bucket = bucket
        self._slowed: IDelayedCall | None = None
        self._ended: Failure | None = None
        self._watchdog = Watchdog(clock, idle_timeout, self._idle)
        self.done: Deferred[None] = Deferred(lambda _: self._abort())

    def connectionMade(self) -> None:
        self.gate = Gate(IPushProducer(self.transport))
        self._watchdog.poke()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self._watchdog.poke()
        try:
            self._sink(data)
        except Exception:
            self._fail(Failure())
            return
        if self._bucket is not None:
            self._slow_down(self._bucket.spend(len(data)))

    def _slow_down(self, delay: float) -> None:
        """
        Read nothing more for C{delay} seconds (the bandwidth limit's debt).
        """
        if delay <= 0 or self._slowed is not None:
            return
        self._watchdog.stop()
        self.gate.hold(self)
        self._slowed = self._clock.callLater(delay, self._speed_up)

    def _speed_up(self) -> None:
        self._slowed = None
        if self._ended is not None:
            self._end(self._ended)
            return
        self._watchdog.poke()
        self.gate.release(self)
        assert self._bucket is not None
        # What arrived meanwhile (a transport may hand over what it had).
        self._slow_down(self._bucket.spend(0))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._watchdog.stop()
        if self.done.called:
            return
        if self._slowed is not None:
            if reason.check(ResponseDone, PotentialDataLoss):
                self._ended = reason  # done once the limit's debt is paid
                return
            self._slowed.cancel()
            self._slowed = None
        self._end(reason)

    def _end(self, reason: Failure) -> None:
        self._let_go()
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        else:
            self.done.errback(reason)

    def _let_go(self) -> None:
        """
        Hold on to C{sink} no longer, nor to what it holds (a whole body
        being collected): a reader lives on in a cycle with its C{done}
        until the garbage collector's next pass.
        """
        self._sink = _ignore

    def _idle(self) -> None:
        self._fail(Failure(StreamIdle(self._watchdog.timeout)))

    def _fail(self, reason: Failure) -> None:
        if not self.done.called:
            self.done.errback(reason)
        self._abort()

    def _abort(self) -> None:
        self._let_go()
        self._watchdog.stop()
        if self._slowed is not None:
            self._slowed.cancel()
            self._slowed = None
        if self.transport is not None:
            # The transport of a response body is a push producer; stopping it
            # closes the connection (there is no public "abort" for a body).
            IPushProducer(self.transport).stopProducing()


@implementer(IConsumer)
@define
class CountingConsumer:
    """
    Pass writes on to C{consumer}, telling C{on_write} how many bytes each one
    carried.
    """

    consumer: IConsumer
    on_write: Callable[[int], object]

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self.consumer.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.consumer.unregisterProducer()

    def write(self, data: bytes) -> None:
        self.on_write(len(data))
        self.consumer.write(data)


@implementer(IBodyProducer)
@define
class CountingProducer:
    """
    A request body that reports every piece of itself it sends.
    """

    producer: IBodyProducer
    on_write: Callable[[int], object]
    consumer: IConsumer | None = None

    @property
    def length(self) -> int:
        length: int = self.producer.length
        return length

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self.consumer = consumer
        started: Deferred[None] = self.producer.startProducing(
            CountingConsumer(consumer, self.on_write)
        )
        return started

    def unsent(self) -> int | None:
        """
        How many bytes of the body the connection has not delivered yet, if
        that can be told (see L{boxsync.client.sockets.unsent}).
        """
        return unsent(self.consumer)

    def received(self) -> int | None:
        """
        How many bytes the connection has received while the body is sent,
        if that can be told (see L{boxsync.client.sockets.received}).
        """
        return received(self.consumer)

    def pauseProducing(self) -> None:
        self.producer.pauseProducing()

    def resumeProducing(self) -> None:
        self.producer.resumeProducing()

    def stopProducing(self) -> None:
        self.producer.stopProducing()


@define
class _Draining:
    """
    Once the whole of a request body is written it can take a long while to
    drain (the socket's send buffer, a slow link) and to reach the server
    (through a proxy that holds it): as long as it does, the connection is
    not silent. Called now and then, this pokes C{watchdog} whenever fewer
    bytes of C{body} are queued than the time before, or more bytes have
    come back (the server's C{102 Processing}).
    """

    body: CountingProducer
    watchdog: Watchdog
    queued: int | None = None
    heard: int | None = None

    def __call__(self) -> None:
        before, self.queued = self.queued, self.body.unsent()
        heard_before, self.heard = self.heard, self.body.received()
        if _less(self.queued, before) or _less(heard_before, self.heard):
            self.watchdog.poke()


def _less(one: int | None, other: int | None) -> bool:
    return one is not None and other is not None and one < other


@frozen
class Transport:
    """
    Requests to one server, and the reading of their answers.

    @ivar http: the treq client requests go through (or anything with its
        C{request} method, such as treq's C{StubTreq}).
    @ivar clock: the clock of the silence watchdogs.
    @ivar base_url: the server's URL, such as C{"http://127.0.0.1:8080"}.
    @ivar idle_timeout: how many seconds a request may send nothing and
        receive nothing before it is given up with L{StreamIdle}.
    @ivar diagnose: asked about a request that failed without an answer,
        gives the error to raise instead, if any (a L{WrongScheme}); told
        when the server answers.
    """

    http: HTTPClient
    clock: IReactorTime
    base_url: str
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    diagnose: SchemeCheck | None = None

    async def request(
        self,
        method: str,
        url_path: str,
        headers: Headers,
        body: IBodyProducer | None = None,
        on_write: Callable[[int], object] | None = None,
    ) -> IResponse:
        """
        Send a request and wait for the headers of its response, giving up
        with L{StreamIdle} when nothing is sent or received for
        C{idle_timeout} seconds.

        @param on_write: called with the size of each piece of C{body} sent.
        """
        requested: Deferred[Any]
        watchdog = Watchdog(self.clock, self.idle_timeout, lambda: requested.cancel())
        draining: LoopingCall | None = None
        if body is not None:
            body = CountingProducer(body, _poking(watchdog, on_write))
            draining = self._watch_draining(body, watchdog)
            headers = headers.copy()
            headers.setRawHeaders(PROGRESS_HEADER, [PROGRESS_PROCESSING])
        requested = self.http.request(
            method,
            self.base_url.rstrip("/") + url_path,
            headers=headers,
            data=body,
            unbuffered=True,
            allow_redirects=False,
        )
        watchdog.poke()
        try:
            response: IResponse = await requested
            if self.diagnose is not None:
                self.diagnose.answered()
            return response
        except Exception as e:
            error: Exception = StreamIdle(self.idle_timeout) if watchdog.fired else e
            instead = None if self.diagnose is None else await self.diagnose(error)
            if instead is not None:
                raise instead from e
            if error is not e:
                raise error from e
            raise
        finally:
            watchdog.stop()
            if draining is not None and draining.running:
                draining.stop()

    def _watch_draining(self, body: CountingProducer, watchdog: Watchdog) -> LoopingCall:
        """
        Poke C{watchdog} while the bytes of C{body} drain from the socket.
        """
        draining = LoopingCall(_Draining(body, watchdog))
        draining.clock = self.clock
        draining.start(min(1.0, self.idle_timeout / 4), now=False)
        return draining

    def read(
        self, response: IResponse, sink: Callable[[bytes], object], bucket: TokenBucket | None = None
    ) -> BodyReader:
        """
        Start handing the body of C{response} to C{sink}, no faster than
        C{bucket} allows, if given.
        """
        reader = BodyReader(self.clock, self.idle_timeout, sink, bucket)
        response.deliverBody(reader)
        return reader

    def abandon(self, response: IResponse) -> None:
        """
        Close the connection of a response whose body is not wanted.
        """
        reader = self.read(response, lambda chunk: None)
        reader.done.addErrback(lambda reason: None)
        reader.done.cancel()

    async def small_body(
        self, response: IResponse, limit: int = MAX_JSON, bucket: TokenBucket | None = None
    ) -> bytes:
        """
        The whole body of a short answer (an error, a commit, a batch), read
        no faster than C{bucket} allows, if given.

        @raise ProtocolError: if it is longer than C{limit} bytes.
        """
        chunks: list[bytes] = []
        size = 0

        def received(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            if size > limit:
                raise ProtocolError(f"answer longer than {limit} bytes")
            chunks.append(chunk)

        await self.read(response, received, bucket).done
        return b"".join(chunks)

    async def json_answer(self, response: IResponse, limit: int = MAX_JSON) -> Any:
        """
        The JSON body of a short answer.

        @raise ProtocolError: if it is not JSON, or too long.
        """
        try:
            return json.loads(await self.small_body(response, limit))
        except ValueError as e:
            raise ProtocolError(f"answer is not JSON: {e}") from None

    async def check(self, response: IResponse, *expected: int) -> None:
        """
        Raise the L{APIError} for a response whose status is not one of
        C{expected}, having read its body.
        """
        if response.code not in expected:
            raise error_for(response.code, await self.small_body(response))


def _poking(watchdog: Watchdog, on_write: Callable[[int], object] | None) -> Callable[[int], None]:
    """
    What a request body reports each piece it sends to: C{watchdog}, then
    C{on_write}.
    """

    def wrote(count: int) -> None:
        watchdog.poke()
        if on_write is not None:
            on_write(count)

    return wrote


def response_header(response: IResponse, name: str) -> str | None:
    """
    The last value of the header C{name} of C{response}, if it has one.
    """
    values = response.headers.getRawHeaders(name)
    if not values:
        return None
    value: bytes | str = values[-1]
    return value.decode("latin-1") if isinstance(value, bytes) else value
