"""
The client's bandwidth limits (L{boxsync.client.throttle}): the real client
against the real server in memory, time moved by hand one due call at a
time, and a response body read from a transport that tells when it is
paused.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionLost
from twisted.web.client import ResponseDone

from boxsync.client.errors import StreamIdle
from boxsync.client.throttle import MIN_BURST, TokenBucket, bucket
from boxsync.client.transport import BodyReader
from boxsync.wire import BatchFile
from tests.helpers import sha as sha256
from tests.memory import MemoryServer, result_of
from tests.memory import server  # noqa: F401 (the fixture)

RATE = 100 * 1024
DATA = os.urandom(500_000)


def seconds_until(server: MemoryServer, d: Deferred[Any], most: float = 60.0) -> float:
    """
    Move the clock from one due call to the next until C{d} fires; how long
    that took on the clock.
    """
    clock = server.reactor
    start = clock.seconds()
    server.settle()
    while not d.called:
        due = min((call.getTime() for call in clock.getDelayedCalls()), default=None)
        assert due is not None, "nothing left to happen"
        assert due - start <= most, f"not done after {most} s"
        clock.advance(max(0.0, due - clock.seconds()))
        server.settle()
    return clock.seconds() - start


def test_the_bucket() -> None:
    clock = Clock()
    limit = TokenBucket(clock, 1000.0, 500)
    assert limit.take(800) == 500  # full at first
    assert limit.take(1) == 0 and limit.wait(300) == pytest.approx(0.3)
    assert limit.wait(0) == pytest.approx(0.001)  # never no wait at all
    clock.advance(0.2)
    assert limit.take(800) == 200
    # Bytes that moved already run into debt.
    assert limit.spend(1000) == pytest.approx(1.0)
    clock.advance(10)
    assert limit.take(10_000) == 500  # never fuller than its burst
    made = bucket(clock, 256 * 1024)
    assert made is not None and made.burst == 32 * 1024
    small = bucket(clock, 1000)
    assert small is not None and small.burst == 1000
    assert bucket(clock, None) is None
    assert MIN_BURST == 16 * 1024


def test_an_upload_goes_no_faster_than_its_limit(server: MemoryServer, tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.write_bytes(DATA)
    api = server.api(idle_timeout=5.0)
    api.up = bucket(server.reactor, RATE)
    assert api.up is not None
    sent: list[tuple[float, int]] = []
    total = 0

    def progress(count: int) -> None:
        nonlocal total
        total += count
        sent.append((server.reactor.seconds(), total))

    start = server.reactor.seconds()
    d = Deferred.fromCoroutine(api.upload("a", local, 0, sha256(DATA), 1, progress))
    took = seconds_until(server, d)
    assert result_of(d).size == len(DATA)
    assert took == pytest.approx((len(DATA) - api.up.burst) / RATE, abs=0.2)
    # At every moment, no more than the burst and the rate since the start.
    assert all(count <= api.up.burst + RATE * (when - start) + 1 for when, count in sent)
    assert (server.storage.root / "a").read_bytes() == DATA


def test_a_batch_of_uploads_goes_no_faster_than_its_limit(server: MemoryServer) -> None:
    api = server.api()
    api.up = bucket(server.reactor, RATE)
    assert api.up is not None
    files = [(BatchFile(f"f{n}", len(DATA), sha256(DATA), 1, 0), DATA) for n in range(2)]
    d = Deferred.fromCoroutine(api.upload_batch(files))
    took = seconds_until(server, d)
    assert [result.seq for result in result_of(d)] == [1, 2]  # type: ignore[union-attr]
    assert took >= (2 * len(DATA) - api.up.burst) / RATE


@pytest.mark.parametrize("batched", [False, True])
def test_a_download_is_done_no_sooner_than_its_limit_allows(
    server: MemoryServer, tmp_path: Path, batched: bool
) -> None:
    local = tmp_path / "local"
    local.write_bytes(DATA)
    server.run(server.api(name="desktop").upload("a", local, 0, sha256(DATA), 1))
    api = server.api()
    api.down = bucket(server.reactor, RATE)
    assert api.down is not None
    if batched:
        d = Deferred.fromCoroutine(api.download_batch(["a"]))
    else:
        d = Deferred.fromCoroutine(api.download("a", tmp_path / "dest", sha256(DATA)))
    took = seconds_until(server, d)
    assert took == pytest.approx((len(DATA) - api.down.burst) / RATE, abs=0.2)
    if batched:
        assert result_of(d)[0][1] == DATA
    else:
        assert (tmp_path / "dest").read_bytes() == DATA


def test_without_a_limit_no_time_passes(server: MemoryServer, tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.write_bytes(DATA)
    api = server.api()
    assert seconds_until(server, Deferred.fromCoroutine(api.upload("a", local, 0, sha256(DATA), 1))) == 0
    d = Deferred.fromCoroutine(api.download("a", tmp_path / "dest", sha256(DATA)))
    assert seconds_until(server, d) == 0


def test_a_body_over_its_limit_pauses_its_connection() -> None:
    """
    A body read past its limit pauses its transport until the debt is paid,
    whatever its consumer says meanwhile; that pause is no silence; and the
    body is done only once the debt is paid.
    """
    clock = Clock()
    transport = StringTransport()
    chunks: list[bytes] = []
    reader = BodyReader(clock, 1.5, chunks.append, TokenBucket(clock, 1000.0, 1000))
    reader.makeConnection(transport)
    reader.dataReceived(b"x" * 800)
    assert transport.producerState == "producing"
    reader.dataReceived(b"x" * 2200)  # 2,000 bytes of debt: 2 s
    assert transport.producerState == "paused"
    # A consumer that pauses and resumes does not end the limit's pause.
    reader.gate.pauseProducing()
    reader.gate.resumeProducing()
    assert transport.producerState == "paused"
    clock.advance(1.9)
    assert transport.producerState == "paused" and not reader.done.called
    clock.advance(0.1)
    assert transport.producerState == "producing"
    # The consumer's own pause holds the connection past the limit's.
    reader.gate.pauseProducing()
    reader.dataReceived(b"x" * 500)
    clock.advance(0.5)
    assert transport.producerState == "paused"
    reader.gate.resumeProducing()
    assert transport.producerState == "producing"
    # The last bytes: the body ends, but is done only after their debt.
    reader.dataReceived(b"x" * 1500)
    reader.connectionLost(Failure(ResponseDone()))
    assert not reader.done.called
    clock.advance(1.5)
    assert result_of(reader.done) is None
    assert sum(map(len, chunks)) == 5000


def test_a_limited_body_still_has_a_silence_watchdog() -> None:
    clock = Clock()
    reader = BodyReader(clock, 1.0, lambda chunk: None, TokenBucket(clock, 1000.0, 1000))
    reader.makeConnection(StringTransport())
    reader.dataReceived(b"x" * 1500)
    clock.advance(0.5)  # the debt is paid; from then on, silence counts
    clock.advance(0.99)
    assert not reader.done.called
    clock.advance(0.02)
    with pytest.raises(StreamIdle):
        result_of(reader.done)


class Chunks(list[bytes]):
    """
    A body's chunks, collected (a list that can be referred to weakly).
    """


@pytest.mark.parametrize("end", ["done", "lost", "cancelled"])
def test_a_reader_lets_go_of_the_body_it_read(end: str) -> None:
    """
    Once its body is done, lost or given up on, a reader holds its sink no
    longer: a reader lives on in a cycle with its C{done} until the garbage
    collector's next pass, and would keep a whole batch's bytes with it.
    """
    chunks = Chunks()
    held = weakref.ref(chunks)
    reader = BodyReader(Clock(), 1.0, chunks.append)
    reader.makeConnection(StringTransport())
    reader.dataReceived(b"x" * 100)
    if end == "done":
        reader.connectionLost(Failure(ResponseDone()))
    elif end == "lost":
        reader.connectionLost(Failure(ConnectionLost()))
    else:
        reader.done.cancel()
    reader.done.addErrback(lambda reason: None)
    assert chunks == [b"x" * 100]
    del chunks
    assert held() is None
    assert reader.done.called
