"""
A large file moved by its blocks: only the blocks the other side lacks go on
the wire, several at once, each checked against its sha256.

Up: the file is cut into blocks in a thread, a few at a time; the server is
asked which of those it lacks, and they are read again (from the page
cache) and sent while the next are cut; then the version is committed by
its recipe. The server checks each block against its name, and the whole
file's sha256: a file that changed meanwhile is never committed as a mix
of two versions. Blocks the server already has (in any file or kept
version of the account, or sent by an upload that was cut off) never move:
a copy, a rename or a resumed upload sends next to nothing.

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
from typing import Awaitable, Callable, Collection, Iterable, Mapping, Sequence

from attrs import define, frozen
from twisted.internet.defer import Deferred, DeferredList

from ..batches import batched
from ..blocks import Block, Cutter, Recipe, read_block, recipe_of
from ..fs import CHUNK_SIZE, NEW_FILE_MODE, copy_range
from ..holes import put
from ..wire import Incoming
from ..wire.blocks import BlockCommit
from ..wire.events import MAX_INCOMING
from .api import BoxsyncAPI
from .errors import BadRequest, DigestMismatch, MissingBlocks
from .results import CommitResult, DownloadResult

__all__ = ["Blockwise", "ChangedWhileSent", "Fetched", "IN_FLIGHT"]

#: How many blocks move at once each way.
IN_FLIGHT = 4

#: How many blocks are cut before the server is asked which it lacks (some
#: 20 MiB): those are sent while the next are cut.
CUT_AT_ONCE = 16

#: How many times a commit is asked again after sending what was missing
#: (blocks sent can be swept meanwhile, or a kept version dropped).
_ROUNDS = 3


class ChangedWhileSent(Exception):
    """
    The file changed while its blocks were read: nothing of a mix of two
    versions was committed.
    """


Runner = Callable[[Callable[[], object]], Deferred]


@frozen
class Fetched:
    """
    What was fetched ahead of a download, in its temporary file.

    @ivar checked: the blocks in it that were checked as they came (their
        offsets and sha256s).
    @ivar whole: the size and sha256 of the file those blocks make, if they
        make all of it (hashed as they came).
    @ivar only: whether the file holds nothing but those blocks (it was
        made to fetch them): the rest of it is not worth reading.
    """

    checked: frozenset[tuple[int, str]] = frozenset()
    whole: tuple[int, str] | None = None
    only: bool = False


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
        known: Recipe | None = None,
    ) -> CommitResult:
        """
        Commit the first C{size} bytes of C{local} as C{path}, sending only
        the blocks the server lacks.

        The file is cut L{CUT_AT_ONCE} blocks at a time, in a thread; the
        server is asked which of those it lacks, and they are sent while
        the next are cut. Then the version is committed by its recipe (and
        whatever the server names as missing then, after a sweep, is sent
        and the commit asked again).

        @param expected_sha256: what the file's sha256 was when it was
            looked at, if known.
        @param known: the file's recipe, if it is known without reading it
            (a renamed file whose stamps did not change): nothing is cut,
            and only the blocks the server names as missing are read.
        @raise ChangedWhileSent: if the file is no longer what it was.
        @raise StaleBase: if the path is no longer at C{base}.
        """
        fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if known is not None and (known.size, known.sha256) == (size, expected_sha256):
                recipe = known
                runs = batched(recipe.placed(), MAX_INCOMING)

                async def take() -> list[tuple[int, Block]]:
                    return next(runs, [])

                await self._send_as_taken(path, fd, size, take, on_progress)
            else:
                recipe = await self._cut_and_send(path, fd, size, on_progress)
            if recipe.size != size or (expected_sha256 is not None and recipe.sha256 != expected_sha256):
                raise ChangedWhileSent(path)
            placed = _placed(recipe)
            commit = BlockCommit(path, base, mtime_ns, recipe, executable)
            for _ in range(_ROUNDS):
                try:
                    return await self.api.commit_blocks(commit)
                except MissingBlocks as e:
                    if not set(e.missing) <= placed.keys():
                        raise
                    await self._send(fd, [placed[sha256] for sha256 in e.missing], on_progress)
            return await self.api.commit_blocks(commit)
        finally:
            os.close(fd)

    async def _cut_and_send(self, path: str, fd: int, size: int, on_progress: Callable[[int], object]) -> Recipe:
        """
        Cut the first C{size} bytes of C{fd} into blocks, L{CUT_AT_ONCE} at
        a time in a thread, sending those the server lacks as they are cut;
        its recipe.
        """
        cutter: Cutter = await self.run(lambda: Cutter(fd, size))
        try:
            await self._send_as_taken(path, fd, size, lambda: self.run(lambda: cutter.take(CUT_AT_ONCE)), on_progress)
            recipe: Recipe = await self.run(cutter.finish)
            return recipe
        finally:
            await self.run(cutter.close)

    async def _send_as_taken(
        self,
        path: str,
        fd: int,
        size: int,
        take: Callable[[], Awaitable[list[tuple[int, Block]]]],
        on_progress: Callable[[int], object],
    ) -> None:
        """
        Send the blocks of C{path} that the server lacks, in the order they
        are placed: each run of them that C{take} gives (until it gives
        none) is asked about while the one before is sent.

        Each question tells the other clients, that may fetch the blocks as
        they reach the server, which blocks make C{path} from where on. A
        block is sent once, however often it appears.
        """
        sent: set[str] = set()
        sending: Deferred[None] | None = None
        try:
            while taken := await take():
                incoming = Incoming(path, size, taken[0][0], [(block.sha256, block.size) for _, block in taken])
                asked = list(dict.fromkeys(block.sha256 for _, block in taken))
                missing = set(await self.api.missing_blocks(asked, incoming))
                wanted = []
                for offset, block in taken:
                    if block.sha256 in missing and block.sha256 not in sent:
                        sent.add(block.sha256)
                        wanted.append((offset, block))
                # What the server has already (or is sent once) counts as done.
                on_progress(sum(block.size for _, block in taken) - sum(block.size for _, block in wanted))
                if sending is not None:
                    # Awaited once: what it ended with is raised here, not
                    # awaited again below.
                    previous, sending = sending, None
                    await previous
                sending = Deferred.fromCoroutine(self._send(fd, wanted, on_progress))
            if sending is not None:
                last, sending = sending, None
                await last
        finally:
            # A run still being sent when something else failed (a question,
            # a read) ends before the file is closed.
            if sending is not None:
                sending.addErrback(lambda failure: None)
                await sending

    async def _send(self, fd: int, blocks: list[tuple[int, Block]], on_progress: Callable[[int], object]) -> None:
        """
        Send C{blocks}, each read from C{fd} at its offset, L{IN_FLIGHT} at
        once.
        """

        def send(offset: int, block: Block) -> Callable[[], Awaitable[None]]:
            async def sending() -> None:
                # The server checks each block against its name: one that
                # changed since it was cut is refused there.
                data = await self.run(lambda: read_block(fd, offset, block, check=False))
                if data is None:
                    raise ChangedWhileSent(f"block at {offset}")
                try:
                    await self.api.put_block(block, data, self.codings)
                except BadRequest as e:
                    raise ChangedWhileSent(f"block at {offset}") from e
                on_progress(block.size)

            return sending

        await _all([send(offset, block) for offset, block in blocks])

    async def download(
        self,
        path: str,
        temp: Path,
        expected_sha256: str,
        sources: Iterable[Path],
        on_progress: Callable[[int], object],
        fetched: Fetched = Fetched(),
        known: Mapping[Path, Recipe] | None = None,
    ) -> DownloadResult | None:
        """
        Fetch the live version of C{path} into C{temp}, taking what blocks
        it can from C{temp} itself (an earlier try) and C{sources} (local
        files that may hold some of them).

        @param fetched: what C{temp} holds of the version, fetched ahead:
            the blocks checked as they were written there are taken as they
            are (the whole file's sha256 is checked in the end in any case:
            if they make all of it, as hashed as they came).
        @param known: the recipes of some of C{sources}, known without
            reading them (their stamps unchanged since they were those
            versions): their blocks are taken without cutting them, and
            without checking each, for the same reason.

        @return: what came, or C{None} if the server's version is no longer
            C{expected_sha256}.
        @raise DigestMismatch: if a block or the whole is not what it should be.
        """
        seq, recipe = await self.api.recipe(path)
        if recipe.sha256 != expected_sha256:
            return None
        if _made_of(recipe, fetched) and fetched.whole != (recipe.size, recipe.sha256):
            # Not that version after all (a copy here changed as it was
            # read): each block is checked where it is.
            fetched = Fetched()
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, NEW_FILE_MODE)
        try:
            wanted = await self.run(
                lambda: _fill_locally(fd, recipe, list(sources), fetched.checked, known, fetched.only)
            )
            on_progress(recipe.size - sum(block.size for _, block in wanted))

            def fetch(block: Block, offsets: list[int]) -> Callable[[], Awaitable[None]]:
                async def fetching() -> None:
                    data = await self.api.get_block(block)
                    for offset in offsets:
                        await self.run(lambda: put(fd, data, offset))
                        on_progress(block.size)

                return fetching

            # A block the file holds more than once (zeros, repeated
            # records) is fetched once.
            places: dict[Block, list[int]] = {}
            for offset, block in wanted:
                places.setdefault(block, []).append(offset)
            await _all([fetch(block, offsets) for block, offsets in places.items()])
            if _made_of(recipe, fetched):
                assert fetched.whole is not None
                actual = fetched.whole[1]
                await self.run(lambda: os.ftruncate(fd, recipe.size))
            else:
                actual = await self.run(lambda: _finish(fd, recipe.size))
        finally:
            os.close(fd)
        if actual != recipe.sha256:
            temp.unlink(missing_ok=True)
            raise DigestMismatch(path, recipe.sha256, actual)
        return DownloadResult(sha256=actual, size=recipe.size, seq=seq)


def _made_of(recipe: Recipe, fetched: Fetched) -> bool:
    """
    Whether what was C{fetched} ahead is the whole of C{recipe}'s version,
    its sha256 known: every block checked as it came, at its place, and
    nothing else written.
    """
    return (
        fetched.whole is not None
        and fetched.whole[0] == recipe.size
        and all((offset, block.sha256) in fetched.checked for offset, block in recipe.placed())
    )


def _placed(recipe: Recipe) -> dict[str, tuple[int, Block]]:
    """
    Each distinct block of C{recipe}, by its sha256, with an offset of it.
    """
    return {block.sha256: (offset, block) for offset, block in recipe.placed()}


async def _all(work: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """
    Run each of C{work}, L{IN_FLIGHT} at a time (as many workers, each
    taking the next as it is done); once one fails, start no more, and
    raise its failure when those under way have ended.
    """
    pending = iter(work)
    failed: list[BaseException] = []

    async def worker() -> None:
        for each in pending:
            if failed:
                return
            try:
                await each()
            except BaseException as e:
                failed.append(e)
                return

    await DeferredList([Deferred.fromCoroutine(worker()) for _ in range(IN_FLIGHT)])
    if failed:
        raise failed[0]


def _fill_locally(
    fd: int,
    recipe: Recipe,
    sources: list[Path],
    checked: Collection[tuple[int, str]] = (),
    known: Mapping[Path, Recipe] | None = None,
    only_checked: bool = False,
) -> list[tuple[int, Block]]:
    """
    Write into C{fd} every block of C{recipe} found locally: in C{fd} at its
    place already (without reading those C{checked} there, nor, if it holds
    C{only_checked} ones, any other), or in one of C{sources} (those
    C{known} not cut, their blocks not checked one by one). Blocking.

    @return: the blocks still wanted, with their offsets.
    """
    wanted: list[tuple[int, Block]] = []
    for offset, block in recipe.placed():
        if (offset, block.sha256) in checked:
            continue
        if only_checked or read_block(fd, offset, block) is None:
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
        trusted = known.get(source) if known else None
        try:
            for offset, block in (trusted or recipe_of(source_fd)).placed():
                if block.sha256 not in places:
                    continue
                if trusted is not None:
                    # Its blocks need not be read to be checked (the whole
                    # file's sha256 is): copied in the kernel, and read only
                    # where the kernel would not copy them.
                    at = places[block.sha256]
                    places[block.sha256] = [p for p in at if not copy_range(source_fd, offset, fd, p, block.size)]
                    if not places[block.sha256]:
                        del places[block.sha256]
                        continue
                data = read_block(source_fd, offset, block, check=trusted is None)
                if data is not None:
                    for place in places.pop(block.sha256):
                        put(fd, data, place)
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
