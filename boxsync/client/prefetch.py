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

A file this client has too, of the same size, is most likely being edited
in place: the new version is its own copy with the blocks announced put
in. While those come, the blocks of its own copy that they leave alone are
written at their places too, and hashed with them (L{Prefetch._copy_own}).
If the guess is right, the download at the commit finds the whole file
made and hashed, and only places it; if not, it uses what is at its place
and writes over the rest. A later announcement that touches a block copied
voids the guess: the download then checks every block it finds.
"""

from __future__ import annotations

import bisect
import os
from collections import deque
from pathlib import Path
from typing import Awaitable, Callable, Mapping

from attrs import define, field
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ..blocks import Block, Recipe, RunningDigest
from ..fs import NEW_FILE_MODE
from ..holes import put
from ..wire import Incoming
from .api import BoxsyncAPI
from .blockwise import Fetched, Runner
from .errors import NotFound
from .placing import path_tag
from .room import Room

__all__ = ["Prefetch", "IDLE_SECONDS", "WORKERS", "OwnRecipe"]

#: The recipe of this client's own copy of a path, by its local path, if
#: it is known without reading the copy (else nothing).
OwnRecipe = Callable[[str], Awaitable[Mapping[Path, Recipe]]]

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
    #: Where the blocks announced go, as (offset, size).
    announced: list[tuple[int, int]] = field(factory=list)
    #: The blocks of this client's own copy being written (see
    #: L{Prefetch._copy_own}): where, as (offset, size), in order.
    copying: Deferred[None] | None = None
    copied: list[tuple[int, int]] = field(factory=list)
    #: Whether a block announced since overlaps one of those: what is in
    #: the file is then checked block by block at the download.
    spoiled: bool = False
    #: Whether the file is of no more use (its download taking it waits
    #: for the copy to end: it would do the same work after).
    dropped: bool = False
    #: The room on the disk granted to it, until it stops.
    granted: int = 0


@define
class Prefetch:
    """
    @ivar run: runs the writing of blocks in a thread.
    @ivar tmp: the folder of the temporary files.
    @ivar own: the recipe of this client's own copy of a path (see
        L{_copy_own}); C{None}: nothing is made ahead from it.
    """

    api: BoxsyncAPI
    clock: IReactorTime
    run: Runner
    tmp: Path
    own: OwnRecipe | None = None
    room: Room | None = None
    _files: dict[str, _File] = field(factory=dict)
    log = Logger()

    def fetching(self, path: str) -> bool:
        """
        Whether the blocks of C{path} are being fetched ahead.
        """
        return path in self._files

    def announced(self, event: Incoming) -> None:
        """
        Fetch the blocks C{event} names as they arrive.
        """
        file = self._files.get(event.path)
        if file is None:
            if self.room is not None and not self.room.fits(event.size):
                self.log.info("{path} is on its way, not fetched ahead: too little room on this disk", path=event.path)
                return
            temp = self.tmp / f"in-{path_tag(event.path)}"
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, NEW_FILE_MODE)
            file = self._files[event.path] = _File(event.path, temp, fd, RunningDigest(fd, event.size))
            file.granted = event.size if self.room is not None else 0
            self.log.info("{path} is on its way: fetching its blocks as they come", path=event.path)
        placed = event.placed()
        spans = [(offset, size) for offset, _, size in placed]
        if any(_overlap(span, file.copied) for span in spans):
            file.spoiled = True
        file.announced.extend(spans)
        if file.copying is None and self.own is not None:
            file.copying = Deferred.fromCoroutine(self._copy_own(file))
        file.wanted.extend((offset, Block(sha256, size)) for offset, sha256, size in placed)
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

    async def _copy_own(self, file: _File) -> None:
        """
        Write at their places the blocks of this client's own copy of
        C{file} (of the same size, its recipe known) that the blocks
        announced so far leave alone, each hashed into the whole as it is
        written: the new version as an edit in place would make it.
        """
        assert self.own is not None
        try:
            own = await self.own(file.path)
        except Exception as e:
            self.log.info("{path}: nothing taken ahead from the copy here: {error}", path=file.path, error=e)
            return
        if len(own) != 1 or file.stopped or file.spoiled:
            return
        [(source, recipe)] = own.items()
        if recipe.size != file.digest.size:
            return
        announced = _merged(file.announced)
        blocks = [(offset, block) for offset, block in recipe.placed() if not _overlap((offset, block.size), announced)]
        # Known before any is written: an announcement from now on that
        # overlaps one of them spoils what is copied.
        file.copied = [(offset, block.size) for offset, block in blocks]
        copied = await self.run(lambda: _copy(file, source, blocks))
        file.written.update(copied)

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

    async def _stop(self, file: _File, dropped: bool = True) -> None:
        """
        Stop fetching C{file}'s blocks, and copying them too if it is
        C{dropped}; once nothing writes any more, close it.
        """
        file.stopped = True
        file.dropped = dropped
        if file.idle is not None and file.idle.active():
            file.idle.cancel()
        for fetching in list(file.fetching):
            fetching.cancel()
        # Not cancelled themselves: a block being written is written
        # before the file is closed.
        await DeferredList([*file.workers, *([file.copying] if file.copying else [])], consumeErrors=True)
        if file.fd >= 0:
            os.close(file.fd)
            file.fd = -1
        if self.room is not None and file.granted:
            self.room.give_back(file.granted)
            file.granted = 0

    async def take(self, path: str, temp: Path) -> Fetched:
        """
        The download of C{path} to C{temp} starts: stop fetching ahead, and
        give it the blocks fetched (as C{temp}, unless an earlier try left
        one there).
        """
        file = self._files.pop(path, None)
        if file is None:
            return Fetched()
        await self._stop(file, dropped=False)
        if temp.exists():
            file.temp.unlink(missing_ok=True)
            return Fetched()
        os.rename(file.temp, temp)
        if file.spoiled:
            return Fetched()
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
    put(file.fd, data, offset)
    file.digest.wrote(offset, data)


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """
    C{spans} (offset, size), in order, those that overlap or touch made one.
    """
    merged: list[tuple[int, int]] = []
    for offset, size in sorted(spans):
        if merged and offset <= merged[-1][0] + merged[-1][1]:
            start, length = merged[-1]
            merged[-1] = (start, max(length, offset + size - start))
        else:
            merged.append((offset, size))
    return merged


def _overlap(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    """
    Whether the bytes of C{span} (offset, size) overlap those of any of
    C{spans} (in order of their offsets, not overlapping each other).
    """
    offset, size = span
    at = bisect.bisect_left(spans, (offset + size, 0))
    return at > 0 and spans[at - 1][0] + spans[at - 1][1] > offset


def _copy(file: _File, source: Path, blocks: list[tuple[int, Block]]) -> list[tuple[int, str]]:
    """
    Write C{blocks} of the file C{source} at their places in C{file}, as
    long as it is neither dropped nor spoiled. Blocking.

    @return: those written, as (offset, sha256): not checked one by one
        (the whole file's sha256 is).
    """
    copied: list[tuple[int, str]] = []
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return copied
    try:
        for offset, block in blocks:
            if file.dropped or file.spoiled:
                break
            data = os.pread(fd, block.size, offset)
            if len(data) != block.size:
                break
            _write(file, offset, data)
            copied.append((offset, block.sha256))
    except OSError:
        pass
    finally:
        os.close(fd)
    return copied
