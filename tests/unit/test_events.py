"""
The event stream as a producer: a huge plan is produced only as fast as the
connection takes it, and live events wait for the end of the plan.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest_twisted
from twisted.internet.defer import Deferred

from boxsync.wire import Download, InSync, SSEParser, decode_event
from boxsync.server.events import PLAN_WRITE, EventStream

SHA = "d" * 64


class SlowRequest:
    """
    A request whose connection fills up every C{room} writes.
    """

    def __init__(self, room: int) -> None:
        self.room = room
        self.writes: list[bytes] = []
        self.producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        if len(self.writes) % self.room == 0 and self.producer is not None:
            self.producer.pauseProducing()

    def events(self) -> list[Any]:
        parser = SSEParser()
        return [decode_event(m) for m in parser.feed(b"".join(self.writes))]


@pytest_twisted.ensureDeferred
async def test_a_huge_plan_is_produced_as_the_connection_drains() -> None:
    request = SlowRequest(room=100)
    produced = 0

    async def plan() -> AsyncIterator[Any]:
        nonlocal produced
        for i in range(100_000):
            produced += 1
            yield InSync(f"f{i}", i + 1)

    stream = EventStream(request, "s", "c")  # type: ignore[arg-type]
    stream.start(100_000)
    running = Deferred.fromCoroutine(stream.run(plan(), 100_000))
    # The connection is full after 100 writes (the hello and 99 of the
    # plan's, PLAN_WRITE events each): the plan waits, with one event taken
    # from it and not yet written.
    written = sum(w.count(b"event: insync") for w in request.writes)
    assert not running.called
    assert len(request.writes) == 100 and written == 99 * PLAN_WRITE and produced == written + 1
    stream.send(Download("live", SHA, 1, 0, 100_001))
    rounds = 0
    while not running.called:
        rounds += 1
        seen = len(request.writes)
        request.producer.resumeProducing()
        written += sum(w.count(b"event: insync") for w in request.writes[seen:])
        assert produced <= written + 1
    await running
    assert rounds >= 100_000 // PLAN_WRITE // 100
    events = request.events()
    assert events[0].name == "hello"
    assert sum(1 for e in events if e.name == "insync") == 100_000
    # The live event came after the whole plan and its "ready".
    assert [e.name for e in events[-2:]] == ["ready", "download"]


@pytest_twisted.ensureDeferred
async def test_closing_stops_the_plan() -> None:
    request = SlowRequest(room=10)

    async def plan() -> AsyncIterator[Any]:
        for i in range(1000):
            yield InSync(f"f{i}", i + 1)

    stream = EventStream(request, "s", "c")  # type: ignore[arg-type]
    stream.start(1)
    running = Deferred.fromCoroutine(stream.run(plan(), 1))
    stream.stopProducing()
    try:
        await running
    except Exception:
        pass
    written = len(request.writes)
    assert written <= 11 and request.producer is None
    stream.send(Download("late", SHA, 1, 0, 2))
    stream.keepalive()
    assert len(request.writes) == written
