"""
A large file moved by its blocks: only the blocks the other side lacks go on
the wire, several at once, each checked against its sha256.

Up: the file is cut into its recipe (one read, in a thread), the server is
asked to commit it, and answers with the blocks it lacks; those are read
again from the file (each checked: a file that changed meanwhile is not
sent as a mix of two versions), sent, and the commit is asked again. Blocks
the server already has (in any file or kept version of the account, or sent
by an upload that was cut off) never move: a copy, a rename or a resumed
upload sends next to nothing.

Down: the version's recipe comes from the server; each block is taken from
the temporary file of an earlier try, if it holds it at its place, or from
the file being replaced or another local file known to hold it, and only
the rest is fetched. The whole file's sha256 is checked before it is
placed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Sequence

from attrs import define
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore

from ..blocks import Block, Recipe, read_block, recipe_of
from ..fs import CHUNK_SIZE
from ..wire.blocks import BlockCommit
from .api import BoxsyncAPI
from .errors import BadRequest, DigestMismatch, MissingBlocks
from .results import CommitResult, DownloadResult

__all__ = ["Blockwise", "ChangedWhileSent", "IN_FLIGHT"]

#: How many blocks move at once each way.
IN_FLIGHT = 4

#: How many times a commit is asked again after sending what was missing
#: (blocks sent can be swept meanwhile, or a kept version dropped).
_ROUNDS = 3


class ChangedWhileSent(Exception):
    """
    The file changed while its blocks were read: nothing of a mix of two
    versions was committed.
    """


Runner = Callable[[Callable[[], object]], Deferred]


@define
class Blockwise:
    """
    @ivar run: runs blocking work (cutting, reading, writing) in a thread.
    @ivar codings: the content codings the server takes for blocks, best
        first.
    """

    api: BoxsyncAPI
    run: Runner
    codings: Sequence[str] = ()

    async def _in_thread(self, work: Callable[[], object]) -> object:
        return await self.run(work)

    async def upload(
        self,
        path: str,
        local: Path,
        base: int | None,
        mtime_ns: int,
        size: int,
        expected_sha256: str | None,
        executable: bool,
        on_progress: Callable[[int], object],
    ) -> CommitResult:
        """
        Commit the first C{size} bytes of C{local} as C{path}, sending only
        the blocks the server lacks.

        @param expected_sha256: what the file's sha256 was when it was
            looked at, if known.
        @raise ChangedWhileSent: if the file is no longer what it was.
        @raise StaleBase: if the path is no longer at C{base}.
        """
        recipe = await self.run(lambda: recipe_of(local, limit=size))
        if recipe.size != size or (expected_sha256 is not None and recipe.sha256 != expected_sha256):
            raise ChangedWhileSent(path)
        commit = BlockCommit(path, base, mtime_ns, recipe, executable)
        offsets = {block.sha256: offset for offset, block in recipe.placed()}
        sent: set[str] = set()
        for _ in range(_ROUNDS):
            try:
                return await self.api.commit_blocks(commit)
            except MissingBlocks as e:
                missing = [sha256 for sha256 in e.missing if sha256 in offsets]
                if len(missing) != len(e.missing):
                    raise
            if not sent:
                # What the server has already counts as done.
                have = sum(block.size for block in recipe.blocks if block.sha256 not in missing)
                on_progress(have)
            await self._send(local, recipe, missing, offsets, on_progress)
            sent.update(missing)
        return await self.api.commit_blocks(commit)

    async def _send(
        self,
        local: Path,
        recipe: Recipe,
        missing: list[str],
        offsets: dict[str, int],
        on_progress: Callable[[int], object],
    ) -> None:
        blocks = {block.sha256: block for block in recipe.blocks}
        fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC)

        def send(sha256: str) -> Callable[[], Awaitable[None]]:
            block = blocks[sha256]

            async def sending() -> None:
                # The server checks each block against its name: one that
                # changed since the recipe was cut is refused there.
                data = await self.run(lambda: read_block(fd, offsets[sha256], block, check=False))
                if data is None:
                    raise ChangedWhileSent(str(local))
                try:
                    await self.api.put_block(block, data, self.codings)
                except BadRequest as e:
                    raise ChangedWhileSent(str(local)) from e
                on_progress(block.size)

            return sending

        try:
            await _all([send(sha256) for sha256 in missing])
        finally:
            os.close(fd)

    async def download(
        self,
        path: str,
        temp: Path,
        expected_sha256: str,
        sources: Iterable[Path],
        on_progress: Callable[[int], object],
    ) -> DownloadResult | None:
        """
        Fetch the live version of C{path} into C{temp}, taking what blocks
        it can from C{temp} itself (an earlier try) and C{sources} (local
        files that may hold some of them).

        @return: what came, or C{None} if the server's version is no longer
            C{expected_sha256}.
        @raise DigestMismatch: if a block or the whole is not what it should be.
        """
        seq, recipe = await self.api.recipe(path)
        if recipe.sha256 != expected_sha256:
            return None
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            wanted = await self.run(lambda: _fill_locally(fd, recipe, list(sources)))
            on_progress(recipe.size - sum(block.size for _, block in wanted))

            def fetch(offset: int, block: Block) -> Callable[[], Awaitable[None]]:
                async def fetching() -> None:
                    data = await self.api.get_block(block)
                    await self.run(lambda: os.pwrite(fd, data, offset))
                    on_progress(block.size)

                return fetching

            await _all([fetch(offset, block) for offset, block in wanted])
            actual = await self.run(lambda: _finish(fd, recipe.size))
        finally:
            os.close(fd)
        if actual != recipe.sha256:
            temp.unlink(missing_ok=True)
            raise DigestMismatch(path, recipe.sha256, actual)
        return DownloadResult(sha256=actual, size=recipe.size, seq=seq)


async def _all(work: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """
    Run each of C{work}, L{IN_FLIGHT} at a time; once one fails, start no
    more, and raise its failure when those under way have ended.
    """
    limit = DeferredSemaphore(IN_FLIGHT)
    failed: list[BaseException] = []

    async def one(each: Callable[[], Awaitable[None]]) -> None:
        await limit.acquire()
        try:
            if not failed:
                await each()
        except BaseException as e:
            failed.append(e)
        finally:
            limit.release()

    await DeferredList([Deferred.fromCoroutine(one(each)) for each in work])
    if failed:
        raise failed[0]


def _fill_locally(fd: int, recipe: Recipe, sources: list[Path]) -> list[tuple[int, Block]]:
    """
    Write into C{fd} every block of C{recipe} found locally: in C{fd} at its
    place already, or in one of C{sources}. Blocking.

    @return: the blocks still wanted, with their offsets.
    """
    wanted: list[tuple[int, Block]] = []
    for offset, block in recipe.placed():
        if read_block(fd, offset, block) is None:
            wanted.append((offset, block))
    if not wanted:
        return []
    places: dict[str, list[int]] = {}
    for offset, block in wanted:
        places.setdefault(block.sha256, []).append(offset)
    for source in sources:
        if not places:
            break
        try:
            source_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            for offset, block in recipe_of(source_fd).placed():
                if block.sha256 in places and (data := read_block(source_fd, offset, block)) is not None:
                    for place in places.pop(block.sha256):
                        os.pwrite(fd, data, place)
        finally:
            os.close(source_fd)
    return [(offset, block) for offset, block in wanted if block.sha256 in places]


def _finish(fd: int, size: int) -> str:
    """
    Cut C{fd} to C{size} and hash it. Blocking.
    """
    os.ftruncate(fd, size)
    digest = hashlib.sha256()
    offset = 0
    while offset < size and (piece := os.pread(fd, CHUNK_SIZE, offset)):
        digest.update(piece)
        offset += len(piece)
    return digest.hexdigest()
