"""
Kept versions share the disk space of the blocks they have in common.

A file overwritten again and again (a disk image, a mailbox, a video being
edited) leaves a kept version each time, each mostly the blocks of the
next. Each version's file stays where the commit put it (moved aside, never
copied), and once an hour the copies of a block that a newer kept version
also holds are punched out of the older files (C{fallocate} with
C{PUNCH_HOLE}: the file keeps its size, the disk space is freed), so ten
versions of a 1 GiB file take 1 GiB and what changed between them. The
index records which blocks each version's file still holds.

Before a version is read (downloaded, restored, or made the new file of a
rename), its holes are filled again from the copies that remain: copied by
the kernel from another kept version's file, or read and checked against
its sha256 from anywhere else; a version being read or linked elsewhere is
never punched. Before versions are forgotten, the holes of the others whose
blocks only those versions hold are filled from them. All of it happens
under one lock per box.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from contextlib import asynccontextmanager
from typing import AsyncIterator, BinaryIO, Callable, Sequence

from attrs import define, field
from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from ..batches import batched
from ..blocks import Block
from ..fs import copy_range
from ..holes import punch, put
from .blockstore import IBlockStore
from .index import BlockSource, IIndex, VersionRecord
from .staging import StagingFile, start_write_back
from .storage import BoxStorage

__all__ = ["SharedVersions", "VersionDamaged"]

#: How many blocks are read and written back at a time as a version is
#: made whole (some 16 MiB).
FILL_AT_ONCE = 16


class VersionDamaged(Exception):
    """
    Some block of a kept version is nowhere any more.
    """


@define
class SharedVersions:
    """
    The kept versions of one box, sharing their blocks' disk space (see the
    module's description).
    """

    account: str
    index: IIndex
    storage: BoxStorage
    blocks: IBlockStore
    _lock: DeferredLock = field(factory=DeferredLock)
    _reading: Counter[int] = field(factory=Counter)
    log = Logger()

    async def _fill(self, seq: int, holes: Sequence[tuple[int, Block]]) -> None:
        """
        Write the blocks C{holes} into kept version C{seq}'s file again, a
        few at a time (memory stays flat whatever the file's size), then
        make them durable and record them, all at once.

        @raise VersionDamaged: if one of them is nowhere.
        """
        if not holes:
            return
        fd = await self.storage.in_thread(
            lambda: os.open(self.storage.version_path(seq), os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        )
        try:
            for some in batched(holes, FILL_AT_ONCE):
                found: dict[str, BlockSource] = await self.index.find_blocks(
                    self.account, [block.sha256 for _, block in some], kept_first=True
                )
                # A block another kept version holds is copied by the kernel
                # (those files are the server's own, as the version itself),
                # even when a live file has it too; the rest is read and
                # checked: a live file may have been changed by hand.
                kept = [(offset, found[block.sha256]) for offset, block in some if _kept(found.get(block.sha256))]
                copied = await self.storage.in_thread(lambda: self._copy(fd, kept))
                rest = [(offset, block) for offset, block in some if offset not in copied]
                if not rest:
                    continue
                contents: dict[str, bytes] = await self.blocks.read_many([block.sha256 for _, block in rest])
                lost = [block.sha256 for _, block in rest if block.sha256 not in contents]
                if lost:
                    raise VersionDamaged(f"version {seq} lacks {len(lost)} blocks that are nowhere any more")
                written = [(offset, contents[block.sha256]) for offset, block in rest]
                await self.storage.in_thread(lambda: _write(fd, written))
            await self.storage.in_thread(lambda: os.fsync(fd))
        finally:
            os.close(fd)
        await self.index.set_held(self.account, seq, [offset for offset, _ in holes], True)

    def _copy(self, fd: int, kept: Sequence[tuple[int, BlockSource]]) -> set[int]:
        """
        Copy into C{fd}, at each offset, the block its source (another kept
        version) holds; the offsets copied (blocking).
        """
        copied: set[int] = set()
        opened: dict[int, int | None] = {}
        try:
            for offset, source in kept:
                if source.seq not in opened:
                    opened[source.seq] = self.storage.open_version(source.seq)
                from_fd = opened[source.seq]
                if from_fd is not None and copy_range(from_fd, source.offset, fd, offset, source.block.size):
                    copied.add(offset)
                    # The disk writes it while the next is copied: the
                    # fsync at the end has little left to do.
                    start_write_back(fd, offset, source.block.size)
        finally:
            for each in opened.values():
                if each is not None:
                    os.close(each)
        return copied

    async def _whole(self, seq: int) -> None:
        await self._fill(seq, await self.index.holes(self.account, seq))

    async def open(self, seq: int) -> BinaryIO | None:
        """
        Kept version C{seq}, whole, open for reading (never punched until it
        is closed), or C{None} if it is not kept.

        @raise VersionDamaged: if it cannot be made whole.
        """
        async with self._lock:
            await self._whole(seq)
            fd: int | None = await self.storage.in_thread(lambda: self.storage.open_version(seq))
            if fd is None:
                return None
            self._reading[seq] += 1
            return _Reading(io.FileIO(fd, "rb"), lambda: self._done_reading(seq))

    def _done_reading(self, seq: int) -> None:
        self._reading[seq] -= 1
        if self._reading[seq] <= 0:
            del self._reading[seq]

    async def staged(self, seq: int, sha256: str, size: int) -> StagingFile | None:
        """
        Kept version C{seq}, whole, as a staging file (a second name of it:
        never punched while it has two), or C{None} if it is not kept.

        @raise VersionDamaged: if it cannot be made whole.
        """
        async with self._lock:
            await self._whole(seq)
            staged: StagingFile | None = await self.storage.in_thread(
                lambda: self.storage.stage_version(seq, sha256, size)
            )
            return staged

    async def share(self) -> int:
        """
        Punch out of each kept version's file the blocks a newer kept version
        holds; return how many bytes that freed.
        """
        async with self._lock:
            shared: list[tuple[int, int, int]] = await self.index.shared_blocks(self.account)
            places: dict[int, list[tuple[int, int]]] = {}
            for seq, offset, size in shared:
                places.setdefault(seq, []).append((offset, size))
            freed = 0
            for seq, spans in places.items():
                if seq in self._reading:
                    continue
                path = self.storage.version_path(seq)
                if not await self.storage.in_thread(lambda: _alone(path)):
                    continue
                # Recorded first: a crash in between leaves a block that is
                # there but taken for a hole (filled again before it is
                # read), never a hole taken for a block.
                await self.index.set_held(self.account, seq, [offset for offset, _ in spans], False)
                freed += await self.storage.in_thread(lambda: _punch(path, spans))
            if freed:
                self.log.info("kept versions share their blocks: {freed} bytes freed", freed=freed)
            return freed

    @asynccontextmanager
    async def forgetting(self, going: Sequence[int]) -> AsyncIterator[None]:
        """
        Around forgetting the kept versions C{going}: first fill the holes
        of the others whose blocks only those hold.
        """
        async with self._lock:
            for seq in await self.index.orphans(self.account, going):
                await self._fill(seq, await self.index.holes(self.account, seq, only_in=going))
            yield

    async def forget_lost(self, before_ns: int) -> list[VersionRecord]:
        """
        Forget the kept versions ended before C{before_ns} whose file is
        gone (removed from C{.boxsync/versions} by hand, or never there: a
        box file written over by hand was recorded as kept by earlier
        servers): they hold no block, so none is punched out of another
        version for them, and no history lists them. A version's file is
        put in place just after its commit: one ended since C{before_ns} is
        left alone.
        """
        async with self._lock:
            kept: list[VersionRecord] = await self.index.kept_versions(self.account)
            ended = [version.seq for version in kept if version.ended_ns < before_ns]
            lost = await self.storage.in_thread(lambda: [seq for seq in ended if not self.storage.has_version(seq)])
            if not lost:
                return []
            forgotten: list[VersionRecord] = await self.index.forget_versions(self.account, lost)
            self.log.warn(
                "{count} kept versions had no file any more, and are no longer listed: {paths}",
                count=len(forgotten),
                paths=", ".join(sorted({version.path for version in forgotten})[:10]),
            )
            return forgotten

    async def forget(self, going: Sequence[int]) -> list[VersionRecord]:
        """
        Forget the kept versions C{going} and remove their files, the blocks
        other versions need from them kept.
        """
        async with self.forgetting(going):
            forgotten: list[VersionRecord] = await self.index.forget_versions(self.account, going)
            await self.storage.drop_versions([version.seq for version in forgotten])
            return forgotten


class _Reading(io.BufferedReader):
    """
    A kept version open for reading, that says when it is closed.
    """

    def __init__(self, raw: io.FileIO, closed: Callable[[], None]) -> None:
        super().__init__(raw)
        self._on_close: Callable[[], None] | None = closed

    def close(self) -> None:
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()
        super().close()


def _kept(source: BlockSource | None) -> bool:
    """
    Whether C{source} is a kept version (not a live file).
    """
    return source is not None and source.path is None


def _write(fd: int, blocks: Sequence[tuple[int, bytes]]) -> None:
    """
    Write C{blocks} into C{fd}, each at its offset, and have the disk start
    on them.
    """
    for offset, data in blocks:
        put(fd, data, offset)
        start_write_back(fd, offset, len(data))


def _alone(path: os.PathLike[str]) -> bool:
    """
    Whether the file at C{path} has no other name (a version restored is
    also the live file, under a second name: never punched).
    """
    try:
        return os.stat(path, follow_symlinks=False).st_nlink == 1
    except FileNotFoundError:
        return False


def _punch(path: os.PathLike[str], spans: Sequence[tuple[int, int]]) -> int:
    """
    Punch holes at C{spans} (offset, size) of the file at C{path}; return
    how many bytes that freed on disk (none where the file system cannot).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        before = os.fstat(fd).st_blocks
        for offset, size in spans:
            try:
                if not punch(fd, offset, size):
                    return 0
            except OSError:
                return 0
        os.fsync(fd)
        return max(0, before - os.fstat(fd).st_blocks) * 512
    finally:
        os.close(fd)
