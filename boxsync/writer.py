"""
Writing a body to a file, and hashing it, off the reactor thread.

A body (a download on the client, an upload on the server) arrives in pieces
of up to a few hundred KiB. Writing and hashing each one on the reactor
thread makes that thread the limit of the transfer: it also has to read the
socket. L{HashingWriter} gathers the pieces into batches of about
a MiB and writes and hashes each batch in a worker thread (C{writev()} and
C{sha256.update()} release the GIL for large buffers), one batch at a time,
in order, while the next batches arrive. When a few batches are waiting for
their turn it pauses its producer: what it holds is bounded, whatever the size
of the file.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from typing import TYPE_CHECKING, Callable, Protocol

from attrs import define, field
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from . import holes

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["BATCH_SIZE", "MAX_PENDING", "Runner", "HasFileno", "HashingWriter", "inline", "write_all"]

#: How many bytes are gathered before they are written and hashed at once.
#: Larger batches fall out of the CPU's cache before they are written: with
#: 4 MiB the kernel's copy into the page cache took twice as long as with 1 MiB.
BATCH_SIZE = 1024 * 1024

#: How many bytes may wait for their turn before the producer is paused.
MAX_PENDING = 4 * BATCH_SIZE

#: The most pieces one C{writev} takes.
_IOV_MAX = os.sysconf("SC_IOV_MAX")

#: Runs a function, maybe in another thread, and fires with what it returned.
Runner = Callable[[Callable[[], None]], "Deferred[None]"]


class HasFileno(Protocol):
    """
    What a L{HashingWriter} writes to: anything with a file descriptor.
    """

    def fileno(self) -> int: ...


def write_all(fd: int, pieces: list[bytes]) -> None:
    """
    Append C{pieces} to C{fd}, in order, in as few system calls as it takes:
    no copy of them is made, and the GIL is released once per call rather
    than once per piece. Runs of zeros are appended as holes
    (L{holes.parts}, L{holes.append}): C{fd} is positioned at the file's end, and not opened
    with C{O_APPEND}.

    @raise OSError: if the file refuses them (as on a full disk).
    """
    views: list[memoryview] = []
    zeros = 0
    for piece in pieces:
        view = memoryview(piece)
        for start, end, hole in holes.parts(view):
            if hole:
                _write_views(fd, views)
                views = []
                zeros += end - start
            else:
                if zeros:
                    holes.append(fd, zeros)
                    zeros = 0
                views.append(view[start:end])
    _write_views(fd, views)
    if zeros:
        holes.append(fd, zeros)


def _write_views(fd: int, views: list[memoryview]) -> None:
    """
    Write all of C{views}, in order, at C{fd}'s position.
    """
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        if not written:
            raise OSError(errno.EIO, "nothing could be written")
        while written:
            if written >= len(views[0]):
                written -= len(views.pop(0))
            else:
                views[0], written = views[0][written:], 0


def inline(work: Callable[[], None]) -> Deferred[None]:
    """
    A L{Runner} that runs C{work} right away, on the calling thread.
    """
    return maybeDeferred(work)


@implementer(IConsumer)
@define(eq=False)
class HashingWriter:
    """
    Append what is written to C{file} and feed it to C{digest}, a batch at a
    time, through C{run}.

    While a batch is under way C{file} and C{digest} are used by the thread
    it runs in: neither may be touched (nor the file closed) until L{close}
    or L{abort} has fired.

    @ivar file: open for writing, where the bytes go, through its file
        descriptor (nothing may be left in its buffer).
    @ivar digest: the hash they are fed to, in order.
    @ivar run: runs each batch's work, typically in a worker thread.
    @ivar on_written: called on the calling thread with the size of each
        batch once it is written.
    @ivar batch_size: how many bytes make a batch.
    @ivar max_pending: how many bytes may wait (besides the batch under way)
        before the producer is paused.
    @ivar received: how many bytes were given to L{write}.
    """

    file: HasFileno
    digest: _Hash
    run: Runner
    on_written: Callable[[int], object] | None = None
    batch_size: int = BATCH_SIZE
    max_pending: int = MAX_PENDING
    received: int = 0
    _pending: deque[bytes] = field(factory=deque)
    _pending_size: int = 0
    _busy: Deferred[None] | None = None
    _producer: IPushProducer | None = None
    _paused: bool = False
    _failure: Failure | None = None
    _closed: bool = False
    _waiting: list[Deferred[None]] = field(factory=list)
    _idle: list[Deferred[None]] = field(factory=list)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        Pause C{producer} whenever the disk falls behind.
        """
        if not streaming:
            raise ValueError("a HashingWriter takes only push producers")
        self._producer = IPushProducer(producer)

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, data: bytes) -> None:
        """
        Take the next piece.

        @raise Exception: what writing or hashing an earlier batch raised.
        """
        if self._failure is not None:
            self._failure.raiseException()
        if self._closed:
            raise ValueError("write after close")
        self._pending.append(data)
        self._pending_size += len(data)
        self.received += len(data)
        if self._busy is None:
            if self._pending_size >= self.batch_size:
                self._next()
        elif self._pending_size >= self.max_pending and not self._paused:
            if self._producer is not None:
                self._paused = True
                self._producer.pauseProducing()

    def close(self) -> Deferred[None]:
        """
        Write what is left and wait until every batch is written.

        @return: fires with C{None}, or fails with what writing or hashing
            raised (the producer was stopped then). The file stays open.
        """
        self._closed = True
        done: Deferred[None] = Deferred()
        self._waiting.append(done)
        if self._busy is None:
            self._next()
        return done

    def abort(self) -> Deferred[None]:
        """
        Drop what waits, start no other batch, and let go of the producer.

        This is for a body that will not be used: a L{close} already
        waiting fires once nothing is under way, whatever was dropped.

        @return: fires with C{None} once no batch is under way (whatever
            that batch met): from then on C{file} may be closed.
        """
        self._closed = True
        self._pending.clear()
        self._pending_size = 0
        self._producer = None
        idle: Deferred[None] = Deferred()
        if self._busy is None:
            idle.callback(None)
        else:
            self._idle.append(idle)
        return idle

    def _next(self) -> None:
        """
        Start writing what is pending; once closed and nothing is left, tell
        those waiting for it.
        """
        if self._failure is None and self._pending:
            batch: list[bytes] = []
            size = 0
            while self._pending and size < self.batch_size:
                batch.append(self._pending.popleft())
                size += len(batch[-1])
            self._pending_size -= size
            self._busy = busy = self.run(lambda: self._write(batch))
            busy.addCallbacks(self._written, self._failed, callbackArgs=(size,))
        elif self._closed:
            waiting, self._waiting = self._waiting, []
            for done in waiting:
                if self._failure is None:
                    done.callback(None)
                else:
                    done.errback(self._failure)
        if self._busy is None:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def _write(self, batch: list[bytes]) -> None:
        """
        Write and hash one batch (in a worker thread).
        """
        write_all(self.file.fileno(), batch)
        for piece in batch:
            self.digest.update(piece)

    def _written(self, _: None, size: int) -> None:
        self._busy = None
        if self.on_written is not None:
            self.on_written(size)
        if self._pending_size >= self.batch_size or self._closed:
            self._next()
        if self._paused and self._pending_size < self.max_pending and self._producer is not None:
            self._paused = False
            self._producer.resumeProducing()

    def _failed(self, reason: Failure) -> None:
        self._busy = None
        self._failure = reason
        self._pending.clear()
        self._pending_size = 0
        if self._producer is not None:
            self._producer.stopProducing()
        self._next()
