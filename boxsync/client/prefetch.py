"""
The blocks of a large file another client is still sending, fetched as they
reach the server, ahead of its commit.

As the sender cuts a new version into blocks, the server tells the
account's other clients which blocks make it, a few at a time (an
C{incoming} event). Each block is fetched as soon as it is on the server
(C{GET /blocks/<sha256>?wait=S} waits for it there) and written at its
place in a temporary file. Once the version is committed, its download
starts from that file: every block already in place (checked against its
sha256) is not fetched again, and the whole file's sha256 is checked before
it is placed, as always. Nothing reaches the folder before the commit; a
file whose sender goes quiet is dropped after L{IDLE_SECONDS}.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

from attrs import define, field
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ..blocks import Block, RunningDigest
from ..wire import Incoming
from .api import BoxsyncAPI
from .blockwise import Fetched, Runner
from .errors import NotFound
from .placing import path_tag

__all__ = ["Prefetch", "IDLE_SECONDS", "WORKERS"]

#: How many blocks of one file are fetched at once.
WORKERS = 2

#: How long the server is asked to wait for a block that has not arrived.
WAIT_SECONDS = 10.0

#: How long a file is fetched on with neither a new block announced nor one
#: fetched: its sender stopped (the blocks fetched stay for its download
#: only until then).
IDLE_SECONDS = 120.0


@define(eq=False)
class _File:
    """
    One file being fetched ahead: its blocks still to fetch, the temporary
    file they are written to, and the workers fetching them.
    """

    path: str
    temp: Path
    fd: int
    digest: RunningDigest
    wanted: deque[tuple[int, Block]] = field(factory=deque)
    workers: list[Deferred[None]] = field(factory=list)
    fetching: set[Deferred[bytes]] = field(factory=set)
    written: set[tuple[int, str]] = field(factory=set)
    idle: IDelayedCall | None = None
    stopped: bool = False


@define
class Prefetch:
    """
    @ivar run: runs the writing of blocks in a thread.
    @ivar tmp: the folder of the temporary files.
    """

    api: BoxsyncAPI
    clock: IReactorTime
    run: Runner
    tmp: Path
    _files: dict[str, _File] = field(factory=dict)
    log = Logger()

    def announced(self, event: Incoming) -> None:
        """
        Fetch the blocks C{event} names as they arrive.
        """
        file = self._files.get(event.path)
        if file is None:
            temp = self.tmp / f"in-{path_tag(event.path)}"
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            file = self._files[event.path] = _File(event.path, temp, fd, RunningDigest(fd, event.size))
            self.log.info("{path} is on its way: fetching its blocks as they come", path=event.path)
        file.wanted.extend((offset, Block(sha256, size)) for offset, sha256, size in event.placed())
        self._busy(file)
        file.workers = [worker for worker in file.workers if not worker.called]
        while len(file.workers) < WORKERS and file.wanted:
            file.workers.append(Deferred.fromCoroutine(self._work(file)))

    def _busy(self, file: _File) -> None:
        """
        Put off dropping C{file} for L{IDLE_SECONDS}, unless it is stopped
        (taken by its download, or dropped) already.
        """
        if file.stopped:
            return
        if file.idle is not None and file.idle.active():
            file.idle.reset(IDLE_SECONDS)
        else:
            file.idle = self.clock.callLater(IDLE_SECONDS, self._drop, file)

    async def _work(self, file: _File) -> None:
        while file.wanted and not file.stopped:
            offset, block = file.wanted.popleft()
            fetching = Deferred.fromCoroutine(self.api.get_block(block, wait=WAIT_SECONDS))
            file.fetching.add(fetching)
            try:
                data = await fetching
            except NotFound:
                # Not there yet: asked for again after the rest.
                file.wanted.append((offset, block))
                continue
            except CancelledError:
                return
            except Exception as e:
                # The download fetches what is missing; nothing is lost.
                self.log.info("stopped fetching {path} ahead: {error}", path=file.path, error=e)
                return
            finally:
                file.fetching.discard(fetching)
            if file.stopped:
                return
            await self.run(lambda: _write(file, offset, data))
            file.written.add((offset, block.sha256))
            self._busy(file)

    async def _stop(self, file: _File) -> None:
        """
        Stop fetching C{file}'s blocks; once no worker writes any more,
        close it.
        """
        file.stopped = True
        if file.idle is not None and file.idle.active():
            file.idle.cancel()
        for fetching in list(file.fetching):
            fetching.cancel()
        # Not cancelled themselves: a block being written is written
        # before the file is closed.
        await DeferredList(file.workers, consumeErrors=True)
        if file.fd >= 0:
            os.close(file.fd)
            file.fd = -1

    async def take(self, path: str, temp: Path) -> Fetched:
        """
        The download of C{path} to C{temp} starts: stop fetching ahead, and
        give it the blocks fetched (as C{temp}, unless an earlier try left
        one there).
        """
        file = self._files.pop(path, None)
        if file is None:
            return Fetched()
        await self._stop(file)
        if temp.exists():
            file.temp.unlink(missing_ok=True)
            return Fetched()
        os.rename(file.temp, temp)
        sha256 = file.digest.hexdigest()
        whole = None if sha256 is None else (file.digest.size, sha256)
        return Fetched(frozenset(file.written), whole, only=True)

    def _drop(self, file: _File) -> None:
        if self._files.get(file.path) is file:
            del self._files[file.path]
        self.log.info("{path} did not come: what was fetched of it ahead is dropped", path=file.path)
        Deferred.fromCoroutine(self._stop(file)).addCallback(lambda _: file.temp.unlink(missing_ok=True))

    async def stop(self) -> None:
        """
        Drop every file being fetched ahead (the session ends).
        """
        files, self._files = list(self._files.values()), {}
        for file in files:
            await self._stop(file)
            file.temp.unlink(missing_ok=True)


def _write(file: _File, offset: int, data: bytes) -> None:
    """
    Write a block fetched ahead at its place, and hash it into the whole.
    Blocking.
    """
    os.pwrite(file.fd, data, offset)
    file.digest.wrote(offset, data)
