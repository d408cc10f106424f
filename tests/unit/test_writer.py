"""
Tests for L{boxsync.writer}: batching, order, back-pressure, aborting and
failures of L{HashingWriter}, with the batches run when the test says.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import pytest
from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from boxsync.writer import HashingWriter, Runner, inline, write_all


@implementer(IPushProducer)
@define
class Producer:
    """
    Records what the writer asked of it.
    """

    calls: list[str] = field(factory=list)

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


@define
class Later:
    """
    A runner that runs each batch only when the test calls L{step}.
    """

    queue: list[tuple[Callable[[], None], Deferred[None]]] = field(factory=list)

    def __call__(self, work: Callable[[], None]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.queue.append((work, d))
        return d

    def step(self) -> None:
        work, d = self.queue.pop(0)
        try:
            work()
        except Exception:
            d.errback(Failure())
        else:
            d.callback(None)


@define
class Made:
    writer: HashingWriter
    path: Path
    written: list[int]
    producer: Producer

    def data(self) -> bytes:
        return self.path.read_bytes()


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[[Runner], Made]]:
    """
    A writer into a new file, with batches of 10 bytes, pausing its producer
    when 10 more bytes wait.
    """
    files: list[BinaryIO] = []

    def make(run: Runner, path: Path = tmp_path / "file") -> Made:
        file = path.open("wb", buffering=0)
        files.append(file)
        written: list[int] = []
        producer = Producer()
        writer = HashingWriter(
            file, hashlib.sha256(), run, written.append, batch_size=10, max_pending=10
        )
        writer.registerProducer(producer, True)
        return Made(writer, path, written, producer)

    yield make
    for file in files:
        file.close()


def results(d: Deferred[None]) -> list[object]:
    got: list[object] = []
    d.addBoth(got.append)
    return got


def test_batches_in_order(make: Callable[..., Made]) -> None:
    """
    Pieces are written and hashed in order, a batch at a time once a batch
    is full, the rest on L{HashingWriter.close}.
    """
    made = make(inline)
    writer = made.writer
    pieces = [bytes([i]) * 4 for i in range(7)]
    for piece in pieces[:2]:
        writer.write(piece)
    assert made.data() == b""
    for piece in pieces[2:]:
        writer.write(piece)
    assert made.written == [12, 12]
    assert results(writer.close()) == [None]
    data = b"".join(pieces)
    assert made.data() == data
    assert made.written == [12, 12, 4]
    assert writer.digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert writer.received == len(data)
    assert made.producer.calls == []


def test_back_pressure(make: Callable[..., Made]) -> None:
    """
    While one batch is being written the next ones gather; once too much
    waits the producer is paused, and it is resumed when it has gone into a
    batch.
    """
    later = Later()
    made = make(later)
    writer, producer = made.writer, made.producer
    writer.write(b"a" * 10)
    assert len(later.queue) == 1
    writer.write(b"b" * 6)
    assert producer.calls == []
    writer.write(b"c" * 6)
    assert producer.calls == ["pause"]
    writer.write(b"d")  # what arrives after the pause is still taken
    assert producer.calls == ["pause"]
    later.step()
    assert made.data() == b"a" * 10
    assert producer.calls == ["pause", "resume"]
    assert len(later.queue) == 1  # the second batch is under way
    closed = results(writer.close())
    assert closed == []
    later.step()
    assert closed == []
    later.step()
    assert closed == [None]
    assert made.data() == b"a" * 10 + b"b" * 6 + b"c" * 6 + b"d"
    assert made.written == [10, 12, 1]


def test_close_waits_for_the_batch_under_way(make: Callable[..., Made]) -> None:
    later = Later()
    made = make(later)
    writer = made.writer
    writer.write(b"x" * 10)
    writer.write(b"y")
    first, second = results(writer.close()), results(writer.close())
    later.step()
    assert (first, second) == ([], [])
    later.step()
    assert (first, second) == ([None], [None])
    assert made.data() == b"x" * 10 + b"y"
    with pytest.raises(ValueError):
        writer.write(b"z")


def test_close_with_nothing_written(make: Callable[..., Made]) -> None:
    made = make(inline)
    assert results(made.writer.close()) == [None]
    assert (made.data(), made.written) == (b"", [])


def test_write_fails(make: Callable[..., Made]) -> None:
    """
    When a batch cannot be written the producer is stopped, what is pending
    is dropped, the next write raises the error and closing fails with it.
    """
    later = Later()
    made = make(later, Path("/dev/full"))
    writer = made.writer
    writer.write(b"a" * 10)
    writer.write(b"b" * 10)
    later.step()
    assert made.producer.calls == ["pause", "stop"]
    with pytest.raises(OSError):
        writer.write(b"c")
    [failure] = results(writer.close())
    assert isinstance(failure, Failure) and failure.check(OSError)
    assert later.queue == []


def test_failure_reported_to_close_under_way(make: Callable[..., Made]) -> None:
    later = Later()
    writer = make(later).writer
    writer.write(b"a")
    closed = results(writer.close())
    work, d = later.queue.pop()
    d.errback(Failure(OSError(5, "I/O error")))
    [failure] = closed
    assert isinstance(failure, Failure) and failure.check(OSError)


def test_abort_waits_for_the_batch_under_way(make: Callable[..., Made]) -> None:
    """
    Aborting drops what waits and lets go of the producer (it is not
    resumed by the batch under way), and fires once that batch is done:
    only then may the file be closed.
    """
    later = Later()
    made = make(later)
    writer = made.writer
    writer.write(b"a" * 10)
    writer.write(b"b" * 10)
    assert made.producer.calls == ["pause"]
    aborted = results(writer.abort())
    assert aborted == []
    later.step()
    assert aborted == [None]
    assert later.queue == [] and made.data() == b"a" * 10
    assert made.producer.calls == ["pause"]
    with pytest.raises(ValueError):
        writer.write(b"c")


def test_abort_when_idle_fires_at_once(make: Callable[..., Made]) -> None:
    later = Later()
    made = make(later)
    made.writer.write(b"a" * 5)
    assert results(made.writer.abort()) == [None]
    assert later.queue == [] and made.data() == b""


def test_abort_after_a_failure(make: Callable[..., Made]) -> None:
    later = Later()
    made = make(later, Path("/dev/full"))
    made.writer.write(b"a" * 10)
    aborted = results(made.writer.abort())
    later.step()
    assert aborted == [None]
    assert made.producer.calls == []


def test_only_push_producers(make: Callable[..., Made]) -> None:
    made = make(inline)
    writer = made.writer
    with pytest.raises(ValueError):
        writer.registerProducer(made.producer, False)
    writer.unregisterProducer()
    writer.write(b"a" * 25)  # no producer to pause: nothing breaks
    assert results(writer.close()) == [None]
    assert made.data() == b"a" * 25


def test_write_all_partial(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """
    What a C{writev} did not take is written by the next, in order, at most
    C{IOV_MAX} pieces at a time.
    """
    calls: list[int] = []
    real = os.writev

    def writev(fd: int, views: list[memoryview]) -> int:
        calls.append(len(views))
        return real(fd, [bytes(b"".join(views))[:5]])

    monkeypatch.setattr(os, "writev", writev)
    monkeypatch.setattr("boxsync.writer._IOV_MAX", 2)
    path = tmp_path / "f"
    with path.open("wb", buffering=0) as f:
        write_all(f.fileno(), [b"abc", b"", b"defg", b"hij"])
    assert path.read_bytes() == b"abcdefghij"
    assert calls == [2, 2]


def test_write_all_takes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "writev", lambda fd, views: 0)
    with pytest.raises(OSError):
        write_all(-1, [b"abc"])
