"""
Bandwidth limits (C{--limit-up}, C{--limit-down}): a token bucket per
direction, shared by every transfer that way.

An upload's body goes out through L{Throttled}, which hands its consumer no
more bytes than the bucket holds and pauses the file's producer until the
bucket fills again. A download is slowed where it is read
(L{boxsync.client.transport.BodyReader}): what arrives is spent from the
bucket, and the connection is not read (its transport paused, through a
L{Gate} it shares with the writer's back-pressure) until the debt is paid.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Hashable

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IDelayedCall, IProducer, IPushProducer, IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

__all__ = ["MIN_BURST", "Gate", "Throttled", "TokenBucket", "bucket"]

#: The fewest bytes a bucket holds when full (but never more than a second's
#: worth): a transfer sends or reads in pieces at least this large.
MIN_BURST = 16 * 1024


#: The shortest wait for the bucket: shorter ones would be lost in the
#: rounding of the clock, and the bucket would never seem to fill.
_SHORTEST_WAIT = 0.001

#: How far under a whole byte the bucket's content may be to give it.
_HAIR = 1e-6


@define
class TokenBucket:
    """
    Bytes that may move now: it fills at C{rate} bytes a second up to
    C{burst}, and starts full.
    """

    clock: IReactorTime
    rate: float
    burst: int
    _tokens: float = field(init=False)
    _at: float = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._tokens = float(self.burst)
        self._at = self.clock.seconds()

    def _fill(self) -> float:
        now = self.clock.seconds()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        return self._tokens

    def take(self, wanted: int) -> int:
        """
        Take up to C{wanted} bytes' worth; how many were taken (0: wait, see
        L{wait}).
        """
        # A hair under a whole byte, from the clock's rounding, is a byte.
        taken = max(0, min(wanted, int(self._fill() + _HAIR)))
        self._tokens -= taken
        return taken

    def wait(self, wanted: int) -> float:
        """
        How many seconds until C{wanted} bytes (at most C{burst}) may move.
        """
        missing = min(wanted, self.burst) - self._fill()
        return max(_SHORTEST_WAIT, missing / self.rate)

    def spend(self, count: int) -> float:
        """
        Take C{count} bytes' worth, which have moved already, running into
        debt if need be.

        @return: how many seconds until the debt is paid (0: none).
        """
        self._tokens = self._fill() - count
        return max(0.0, -self._tokens / self.rate)


def bucket(clock: IReactorTime, rate: int | None) -> TokenBucket | None:
    """
    The bucket of a limit of C{rate} bytes a second (C{None}: no limit).
    """
    if rate is None:
        return None
    return TokenBucket(clock, float(rate), min(rate, max(MIN_BURST, rate // 8)))


#: Who holds a L{Gate} through its C{pauseProducing}.
_CONSUMER = "consumer"


@implementer(IPushProducer)
@define(eq=False)
class Gate:
    """
    A push producer kept paused while anyone holds it: the consumer it is
    registered with (L{pauseProducing}), the bandwidth limit, both.
    """

    producer: IPushProducer
    _holders: set[Hashable] = field(factory=set)

    def hold(self, holder: Hashable) -> None:
        if not self._holders:
            self.producer.pauseProducing()
        self._holders.add(holder)

    def release(self, holder: Hashable) -> None:
        if holder not in self._holders:
            return
        self._holders.discard(holder)
        if not self._holders:
            self.producer.resumeProducing()

    def pauseProducing(self) -> None:
        self.hold(_CONSUMER)

    def resumeProducing(self) -> None:
        self.release(_CONSUMER)

    def stopProducing(self) -> None:
        self.producer.stopProducing()


@implementer(IConsumer)
@define
class _Feed:
    """
    What a throttled body's own producer writes to.
    """

    throttled: Throttled

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        pass  # the throttled body pauses its producer itself

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.throttled._queue(data)


@implementer(IBodyProducer)
@define(eq=False)
class Throttled:
    """
    A request body sent no faster than C{bucket} allows: its producer's
    writes are passed on as the bucket fills, and the producer is paused
    while any wait (or while the consumer pauses this body).
    """

    producer: IBodyProducer
    bucket: TokenBucket
    _consumer: IConsumer | None = None
    _waiting: deque[bytes] = field(factory=deque)
    _paused: bool = False
    _held: bool = False
    _finished: bool = False
    _call: IDelayedCall | None = None
    _emptied: list[Deferred[None]] = field(factory=list)

    @property
    def length(self) -> Any:
        return self.producer.length

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        produced: Deferred[None] = self.producer.startProducing(_Feed(self))
        return produced.addBoth(self._produced)

    def _produced(self, result: Any) -> Any:
        self._finished = True
        if isinstance(result, Failure) or not self._waiting:
            return result
        # Its last bytes are still waiting for the bucket.
        d: Deferred[None] = Deferred()
        self._emptied.append(d)
        return d

    def _queue(self, data: bytes) -> None:
        if data:
            self._waiting.append(data)
            if self._call is None:
                self._send()

    def _send(self) -> None:
        """
        Pass on what the bucket allows; if anything is left, try again when
        the bucket has filled enough for it.
        """
        self._call = None
        while self._waiting and not self._paused:
            first = self._waiting[0]
            taken = self.bucket.take(len(first))
            if not taken:
                delay = self.bucket.wait(len(first))
                self._call = self.bucket.clock.callLater(delay, self._send)
                break
            if taken < len(first):
                self._waiting[0] = first[taken:]
            else:
                self._waiting.popleft()
            assert self._consumer is not None
            self._consumer.write(first[:taken])
        self._hold(bool(self._waiting) or self._paused)
        if not self._waiting:
            emptied, self._emptied = self._emptied, []
            for d in emptied:
                d.callback(None)

    def _hold(self, hold: bool) -> None:
        """
        Pause or resume this body's own producer (which must not be told
        anything once it has finished).
        """
        if self._finished or hold == self._held:
            return
        self._held = hold
        if hold:
            self.producer.pauseProducing()
        else:
            self.producer.resumeProducing()

    def pauseProducing(self) -> None:
        self._paused = True
        self._hold(True)

    def resumeProducing(self) -> None:
        self._paused = False
        if self._call is None:
            self._send()

    def stopProducing(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None
        self._waiting.clear()
        if not self._finished:
            self.producer.stopProducing()
