"""
Where an account's blocks are found, and how a file is made of them.

L{IBlockStore} is what the routes use. L{LocalBlockStore}, the embedded
one, keeps no second copy of anything the box holds: a block is read from
a live file of the box or a kept version (the index knows which, and at
what offset), and only blocks that no file holds yet, sent ahead of a
commit, are kept on their own, each in a file named by its sha256 in
C{.boxsync/blocks/}. Every block read is checked against its sha256, so a
file changed by hand in the box is never taken for what it was.

A commit by recipe assembles the new file in staging from those blocks, in
a thread, checks the whole file's sha256, and is then committed as any
upload. The blocks sent for it are removed once it is: they are in the box
now. Blocks sent for a commit that never came are removed after
L{PENDING_HOURS}.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import Interface, implementer

from ..blocks import Block, Recipe, block_of, read_block
from ..fs import fsync_dir
from .index import BlockSource, IIndex
from .staging import StagingFile, as_box_error
from .storage import BoxStorage

__all__ = ["Arrivals", "IBlockStore", "LocalBlockStore", "PENDING_HOURS", "BadBlock", "check_block"]

#: How long a block sent ahead of a commit that never came is kept.
PENDING_HOURS = 24


class BadBlock(ValueError):
    """
    A block's bytes are not what its sha256 says.
    """


def check_block(block: Block, data: bytes) -> None:
    """
    Refuse C{data} as the bytes of C{block} unless they are. Blocking (it
    hashes them): run it in a thread.

    @raise BadBlock: if they are not.
    """
    if block_of(data) != block:
        raise BadBlock(f"the bytes sent are not block {block.sha256}")


@define
class Arrivals:
    """
    Who waits, on this server, for which block to be put (a client that
    fetches the blocks of a file still being sent): L{arrived}, once a
    block is in the store (put here, or on another server of the box),
    fires every L{wait} for it.
    """

    _waiting: dict[str, list[Deferred[None]]] = field(factory=dict)

    def wait(self, sha256: str) -> Deferred[None]:
        """
        A Deferred that fires once the block C{sha256} arrives; cancel it
        to stop waiting.
        """
        waiting = self._waiting.setdefault(sha256, [])

        def cancel(arrived: Deferred[None]) -> None:
            if arrived in waiting:
                waiting.remove(arrived)
            if not waiting:
                self._waiting.pop(sha256, None)

        arrived: Deferred[None] = Deferred(cancel)
        waiting.append(arrived)
        return arrived

    def waited_for(self) -> list[str]:
        """
        The blocks someone waits for.
        """
        return list(self._waiting)

    def arrived(self, sha256: str) -> None:
        """
        The block C{sha256} is held now: fire whatever waits for it.
        """
        for arrived in self._waiting.pop(sha256, []):
            arrived.callback(None)


class IBlockStore(Interface):
    """
    The blocks of one account. All methods return Deferreds.
    """

    def missing(hashes: Sequence[str]) -> Any:
        """
        Those of C{hashes} the account has nowhere, in their order.
        """

    def put(block: Block, data: bytes) -> Any:
        """
        Keep C{data}, the bytes of C{block}, until a commit uses them.

        @raise BadBlock: if they are not.
        """

    def read(sha256: str) -> Any:
        """
        The bytes of the block C{sha256}, or C{None} if the account has it
        nowhere.
        """

    def read_many(hashes: Sequence[str]) -> Any:
        """
        The bytes of each of the blocks C{hashes} the account has: a C{dict}
        from sha256 to bytes, without those it has nowhere.
        """

    def assemble(recipe: Recipe, staged: StagingFile) -> Any:
        """
        Write the blocks of C{recipe}, in order, into C{staged}.

        @return: the sha256s of the blocks it could not find (nothing was
            written then), or an empty list.
        """

    def used(recipe: Recipe) -> Any:
        """
        A commit of C{recipe} is durable: the blocks sent for it are no
        longer needed on their own.
        """

    def sweep(older_than_ns: int) -> Any:
        """
        Remove the blocks sent ahead of commits before C{older_than_ns} that
        never came; return how many.
        """


#: Files a block store reads blocks from, by (path, seq), kept open.
_Opened = dict[tuple[str | None, int], int]


@implementer(IBlockStore)
@define
class LocalBlockStore:
    """
    L{IBlockStore} in the box itself (see the module's description).
    """

    account: str
    index: IIndex
    storage: BoxStorage
    pending: Path = field(init=False)
    #: The blocks sent ahead that this process checked and wrote itself:
    #: read back, they are not hashed again. Each was written whole, then
    #: renamed into place; only a crash of the machine could tear one,
    #: and this set does not outlive that.
    _written: set[str] = field(init=False, factory=set)
    log = Logger()

    def __attrs_post_init__(self) -> None:
        self.pending = self.storage.hidden / "blocks"
        self.pending.mkdir(exist_ok=True)

    def _pending_path(self, sha256: str) -> Path:
        return self.pending / sha256

    async def missing(self, hashes: Sequence[str]) -> list[str]:
        unique = list(dict.fromkeys(hashes))
        found: dict[str, BlockSource] = await self.index.find_blocks(self.account, unique)
        rest = [sha256 for sha256 in unique if sha256 not in found]
        if not rest:
            return []
        held: set[str] = await self.storage.in_thread(
            lambda: {sha256 for sha256 in rest if self._pending_path(sha256).exists()}
        )
        return [sha256 for sha256 in rest if sha256 not in held]

    async def put(self, block: Block, data: bytes) -> None:
        def work() -> None:
            check_block(block, data)
            temp = self.pending / f".{block.sha256}.{os.urandom(4).hex()}"
            try:
                with open(temp, "xb") as f:
                    f.write(data)
                os.replace(temp, self._pending_path(block.sha256))
            except OSError as e:
                temp.unlink(missing_ok=True)
                raise as_box_error(e) from e
            self._written.add(block.sha256)

        await self.storage.in_thread(work)

    async def read(self, sha256: str) -> bytes | None:
        return (await self.read_many([sha256])).get(sha256)

    async def read_many(self, hashes: Sequence[str]) -> dict[str, bytes]:
        unique = list(dict.fromkeys(hashes))
        found: dict[str, BlockSource] = await self.index.find_blocks(self.account, unique)

        def work() -> dict[str, bytes]:
            blocks = {sha256: self._read(sha256, found.get(sha256)) for sha256 in unique}
            return {sha256: data for sha256, data in blocks.items() if data is not None}

        read: dict[str, bytes] = await self.storage.in_thread(work)
        return read

    def _read(
        self, sha256: str, source: BlockSource | None, check: bool = True, opened: _Opened | None = None
    ) -> bytes | None:
        """
        The block C{sha256}, from C{source} or, failing that, from the
        blocks sent ahead; checked against its sha256 unless C{check} is
        false. Blocking.

        @param opened: the files read from so far, kept open (by the
            caller, which closes them) for the next blocks.
        """
        if source is not None:
            data = self._read_source(source, check, opened)
            if data is not None:
                return data
        try:
            fd = os.open(self._pending_path(sha256), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            size = os.fstat(fd).st_size
            return read_block(fd, 0, Block(sha256, size), check and sha256 not in self._written)
        finally:
            os.close(fd)

    def _read_source(self, source: BlockSource, check: bool, opened: _Opened | None = None) -> bytes | None:
        key = (source.path, source.seq)
        fd = opened.get(key) if opened is not None else None
        if fd is None:
            fd = self.storage.open_fd(source.path) if source.path is not None else self.storage.open_version(source.seq)
            if fd is None:
                return None
            if opened is not None:
                opened[key] = fd
        try:
            return read_block(fd, source.offset, source.block, check)
        finally:
            if opened is None:
                os.close(fd)

    async def assemble(self, recipe: Recipe, staged: StagingFile) -> list[str]:
        hashes = [block.sha256 for block in recipe.blocks]
        found: dict[str, BlockSource] = await self.index.find_blocks(self.account, list(dict.fromkeys(hashes)))

        def work() -> list[str]:
            missing: list[str] = []
            # The version a file's blocks come from, opened once.
            opened: _Opened = {}

            def pieces() -> Iterator[bytes]:
                for block in recipe.blocks:
                    # Unchecked: the whole file's sha256 is checked once it
                    # is made; only if it is wrong is each block checked.
                    data = self._read(block.sha256, found.get(block.sha256), False, opened)
                    if data is None or len(data) != block.size:
                        missing.append(block.sha256)
                    elif not missing:
                        yield data

            try:
                staged.write_many(pieces())
            finally:
                for fd in opened.values():
                    os.close(fd)
            if staged.error is not None:
                raise staged.error
            if not missing and staged.sha256 != recipe.sha256:
                missing = self._bad_blocks(recipe, found)
            return list(dict.fromkeys(missing))

        result: list[str] = await self.storage.in_thread(work)
        return result

    def _bad_blocks(self, recipe: Recipe, found: dict[str, BlockSource]) -> list[str]:
        """
        The blocks of C{recipe} whose bytes are not theirs (a block sent
        ahead and torn by a crash, a box file changed by hand); those sent
        ahead are removed, to be sent again. Blocking.
        """
        bad = []
        for block in dict.fromkeys(recipe.blocks):
            # Suspects now, even those this process checked as they came.
            self._written.discard(block.sha256)
            if self._read(block.sha256, found.get(block.sha256)) is None:
                self._forget(block.sha256)
                bad.append(block.sha256)
        return bad

    def _forget(self, sha256: str) -> None:
        """
        Remove the block C{sha256} sent ahead, if it is there. Blocking.
        """
        self._written.discard(sha256)
        self._pending_path(sha256).unlink(missing_ok=True)

    async def used(self, recipe: Recipe) -> None:
        def work() -> None:
            for block in recipe.blocks:
                self._forget(block.sha256)

        await self.storage.in_thread(work)

    async def sweep(self, older_than_ns: int) -> int:
        def work() -> int:
            count = 0
            for entry in os.scandir(self.pending):
                try:
                    if entry.stat(follow_symlinks=False).st_mtime_ns < older_than_ns:
                        os.unlink(entry.path)
                        self._written.discard(entry.name)
                        count += 1
                except FileNotFoundError:
                    pass
            if count:
                fsync_dir(self.pending)
            return count

        swept: int = await self.storage.in_thread(work)
        return swept


def pending_deadline(now: float | None = None) -> int:
    """
    The time before which a block sent ahead of a commit is swept.
    """
    return int(((time.time() if now is None else now) - PENDING_HOURS * 3600) * 1e9)
