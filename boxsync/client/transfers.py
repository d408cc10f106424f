"""
The bytes of one file, moved up or down: in the next batch if the file is
small enough, else alone, within the limit of such transfers at once; each
transfer reported as it starts, progresses and ends. A download goes to a
temporary file named after its path and version, so an interrupted one
resumes; the engine then places it.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, TypeVar

from attrs import define, field
from twisted.internet.interfaces import IReactorTime

from ..blocks import Recipe
from ..fs import hash_file
from ..paths import BadPath, to_local
from ..wire import BATCH_FILE_LIMIT, BatchFile, Download
from .api import BoxsyncAPI
from .batch import Batcher
from .blockwise import Blockwise, ChangedWhileSent, Fetched
from .errors import APIError, DigestMismatch, NotFound, StaleBase
from .jobs import Jobs
from .placing import (
    SET_ASIDE_SECONDS,
    path_tag,
    remove_set_aside,
    set_aside,
    set_aside_path,
)
from .prefetch import Prefetch
from .progress import MOVED_BACK, Reporter
from .results import CommitResult, DownloadResult
from .room import NoRoom, Room
from .scanner import LocalFile, StatKey, stat_key
from .state import Base

__all__ = ["SMALL_FILE", "Transfers", "changed_while_sent"]

#: A transfer of a file up to this size goes in a batch, and needs only a job
#: slot; a larger one goes alone, and also needs one of the C{transfers} slots.
SMALL_FILE = BATCH_FILE_LIMIT

_T = TypeVar("_T")


def changed_while_sent(error: BaseException) -> bool:
    """
    Whether an upload failed because the file changed while it was read:
    the server refused bytes that did not have the sha256 sent with them,
    or a block read again was no longer the block it was.
    """
    if isinstance(error, ChangedWhileSent):
        return True
    return isinstance(error, APIError) and error.status == 400 and "sha256" in error.message


def _upload_note(error: BaseException, unhashed: bool) -> str:
    if isinstance(error, StaleBase):
        return "changed on the server"
    if changed_while_sent(error):
        return "changed while sent; hashing it first" if unhashed else "changed while sent"
    if isinstance(error, FileNotFoundError):
        return "gone since it was looked at"
    if isinstance(error, APIError):
        return f"failed: {error.message}"
    return "failed"


@define
class Transfers:
    """
    @ivar tmp: the folder of unfinished downloads.
    @ivar partial: the paths (hashed, as in the names of their downloads)
        that may have an unfinished download of another version in C{tmp}.
    @ivar blockwise: how large files move when the server speaks blocks
        (C{None}: whole).
    @ivar copies: the local files known to have a download's content,
        other than the file it replaces.
    @ivar recipes: the recipes of some of those files, known without
        reading them (by their paths).
    @ivar prefetch: the blocks of large files still being sent, fetched
        ahead of their commits.
    @ivar aside: the sha256s (their first 32 digits) of the files set aside
        in C{tmp} (see L{set_aside}).
    @ivar trusted: the stamps, by sha256 (its first 32 digits), of files set
        aside that are known to be their content while they keep them.
    @ivar room: the free space a download must leave on the disk of C{tmp}
        (C{None}: none looked at).
    """

    root: Path
    api: BoxsyncAPI
    batcher: Batcher
    jobs: Jobs
    reporter: Reporter
    tmp: Path
    partial: set[str] = field(factory=set)
    blockwise: Blockwise | None = None
    copies: Callable[[Download], list[Path]] = lambda event: []
    recipes: Callable[[str], Awaitable[dict[Path, Recipe]]] | None = None
    aside: set[str] = field(factory=set)
    trusted: dict[str, StatKey] = field(factory=dict)
    clock: IReactorTime | None = None
    prefetch: Prefetch | None = None
    room: Room | None = None
    _swept: float | None = None

    def set_aside(self, local: Path, sha256: str, seen: LocalFile | None = None) -> None:
        """
        Take the file C{local}, with the content C{sha256}, that another
        client deleted, out of the folder for a while: if it was a rename
        there, the file under its new name is taken from here.

        @param seen: what a look found at C{local} (its stamps those of its
            base, or its bytes read): if the file set aside is still it, its
            stamps there are kept, and while they stay the same it is
            taken back without being read.
        """
        if not set_aside(local, self.tmp, sha256):
            return
        self.aside.add(sha256[:32])
        self.trusted.pop(sha256[:32], None)
        aside = set_aside_path(self.tmp, sha256)
        if seen is not None and seen.sha256 == sha256 and seen.is_still(aside, renamed=True):
            try:
                self.trusted[sha256[:32]] = stat_key(os.lstat(aside))
            except OSError:
                pass
        now = None if self.clock is None else self.clock.seconds()
        if now is None or self._swept is None or now - self._swept > SET_ASIDE_SECONDS / 10:
            self._swept = now
            remove_set_aside(self.tmp)
            # Those gone (taken back, or removed) are trusted no more.
            self.trusted = {
                prefix: stamps for prefix, stamps in self.trusted.items() if set_aside_path(self.tmp, prefix).exists()
            }

    async def version_recipe(self, base: Base) -> Recipe | None:
        """
        The recipe of the version C{base} is of, as the server has it;
        C{None} for a file that moves whole, or if the server has none (or
        one of other bytes).
        """
        if self.blockwise is None or base.folder or base.size <= SMALL_FILE:
            return None
        try:
            _, recipe = await self.api.recipe(base.path, base.seq)
        except NotFound:
            return None
        return recipe if (recipe.sha256, recipe.size) == (base.sha256, base.size) else None

    async def _move(
        self, size: int, batched: Callable[[], Awaitable[_T]], alone: Callable[[], Awaitable[_T]]
    ) -> _T:
        """
        Move C{size} bytes: C{batched}, in the next batch, if that is small
        enough (L{SMALL_FILE}); else C{alone}, within the limit of transfers
        at once.
        """
        if size <= SMALL_FILE:
            return await batched()
        return await self.jobs.alone(alone)

    async def upload(self, file: LocalFile, local: Path, base: int, recipe: Recipe | None = None) -> CommitResult:
        """
        Upload C{file}, found at C{local}, as the next version after C{base}.

        @param recipe: its recipe, if known without cutting it (a file
            renamed here, whose blocks the server has).

        @raise StaleBase: if the path is no longer at C{base}.
        @raise APIError: if the server refuses it (L{changed_while_sent}: the
            file changed while it was read).
        """
        self.reporter.started("upload", file.path, file.size)

        def batched() -> Awaitable[CommitResult]:
            # Only files that move alone are left unhashed.
            assert file.sha256 is not None
            return self.batcher.upload(
                BatchFile(file.path, file.size, file.sha256, file.mtime_ns, base, file.executable),
                local,
                file.data,
                known=file.moved_from is not None,
            )

        blockwise = self.blockwise
        if blockwise is not None and file.size > SMALL_FILE:
            alone = lambda: blockwise.upload(  # noqa: E731
                file.path,
                local,
                base,
                file.mtime_ns,
                file.size,
                file.sha256,
                file.executable,
                lambda n: self.reporter.progress(file.path, n),
                recipe or file.recipe,
            )
        else:
            alone = lambda: self.api.upload(  # noqa: E731
                file.path,
                local,
                base,
                file.sha256,
                file.mtime_ns,
                on_progress=lambda n: self.reporter.progress(file.path, n),
                size=file.size,
                hash_as_sent=file.sha256 is None,
                unchanged=lambda: file.is_still(local),
                executable=file.executable,
            )
        try:
            result = await self._move(file.size, batched, alone)
        except BaseException as e:
            self.reporter.finished(file.path, _upload_note(e, file.sha256 is None))
            raise
        self.reporter.finished(file.path)
        return result

    async def _take_aside(self, blockwise: Blockwise, event: Download, temp: Path) -> bool:
        """
        Take as the download of C{event} the file with its content that a
        delete here set aside (a rename elsewhere), if there is one: a large
        one in any case (read if its stamps changed since), a small one
        only if its stamps did not change (on this thread: nothing is read;
        else the batch copies it, as it copies any local file).
        """
        aside = set_aside_path(self.tmp, event.sha256)
        small = event.size <= SMALL_FILE
        if small and event.sha256[:32] not in self.trusted:
            return False
        trusted = self.trusted.pop(event.sha256[:32], None)

        def take() -> bool:
            try:
                before = stat_key(os.lstat(aside))
                os.replace(aside, temp)
            except FileNotFoundError:
                return False
            # Untouched since it was set aside (no write, which would move
            # its ctime, before this move; none since, which would move its
            # size or mtime): it is still the bytes it was.
            if trusted is not None and before == trusted and trusted[0] == event.size:
                try:
                    if stat_key(os.lstat(temp))[:3] == trusted[:3]:
                        return True
                except FileNotFoundError:
                    return False
            if hash_file(temp) == (event.sha256, event.size):
                return True
            temp.unlink(missing_ok=True)
            return False

        if small:
            return take()
        taken: bool = await blockwise.run(take)
        return taken

    def _sources(self, event: Download) -> list[Path]:
        """
        The local files that may hold blocks of the download C{event}: the
        file it replaces, then its L{copies}.
        """
        try:
            replaced = [to_local(self.root, event.path)]
        except BadPath:
            replaced = []
        return replaced + self.copies(event)

    @asynccontextmanager
    async def _room_for(self, event: Download, temp: Path) -> AsyncIterator[None]:
        """
        Around the download of C{event} to C{temp}: the room it still needs
        on the disk (its size, less what C{temp} holds of it already: an
        earlier try, the blocks fetched ahead), taken and then given back.

        @raise NoRoom: if there is too little.
        """
        if self.room is None:
            yield
            return
        granted = max(event.size - (_allocated(temp) if event.size > SMALL_FILE else 0), 0)
        try:
            self.room.take(granted)
        except NoRoom:
            if not self.aside:
                raise
            # The files set aside (for a rename that may come) go first.
            remove_set_aside(self.tmp, 0)
            self.aside.clear()
            self.trusted.clear()
            self.room.look_again()
            self.room.take(granted)
        try:
            yield
        finally:
            self.room.give_back(granted)

    async def download(self, event: Download) -> tuple[Path, DownloadResult] | None:
        """
        Download version C{event} to a temporary file, verified.

        @return: the file and what came, or C{None} if that version is no
            longer the server's (its own event follows).
        """
        path = event.path
        # Named after the path and the version: an interrupted download of
        # the same version resumes, and two paths with the same content
        # never share a temporary file.
        where = path_tag(path)
        temp = self.tmp / f"dl-{where}-{event.sha256[:32]}"
        self.reporter.started("download", path, event.size)
        blockwise = self.blockwise
        on_progress = lambda n: self.reporter.progress(path, n)  # noqa: E731
        if blockwise is not None and await self._take_aside(blockwise, event, temp):
            self.reporter.finished(path, MOVED_BACK)
            return temp, DownloadResult(sha256=event.sha256, size=event.size, seq=event.seq)
        if blockwise is not None and event.size > SMALL_FILE:
            fetched = await self.prefetch.take(path, temp) if self.prefetch is not None else Fetched()
            known = await self.recipes(path) if self.recipes is not None else {}
            alone = lambda: blockwise.download(  # noqa: E731
                path, temp, event.sha256, self._sources(event), on_progress, fetched, known
            )
        else:
            alone = lambda: self.api.download(path, temp, event.sha256, on_progress=on_progress)  # noqa: E731

        def batched() -> Awaitable[DownloadResult]:
            # Local files that may have the content: one set aside, then
            # those known to have it (not the file it replaces).
            aside = [set_aside_path(self.tmp, event.sha256)] if event.sha256[:32] in self.aside else []
            here = aside + self.copies(event)
            return self.batcher.download(
                path, temp, event.sha256, event.size, event.mtime_ns, here, event.seq, event.executable
            )

        try:
            async with self._room_for(event, temp):
                result = await self._move(event.size, batched, alone)
            if result is None:
                raise NotFound(404, "a newer version came meanwhile")
        except (NotFound, DigestMismatch):
            # Deleted or replaced meanwhile: what came of this version is of
            # no more use.
            self.reporter.finished(path, "changed on the server meanwhile")
            temp.unlink(missing_ok=True)
            return None
        except BaseException:
            self.reporter.finished(path, "failed")
            self.partial.add(where)
            raise
        self.reporter.finished(path)
        # Partial downloads of this path's earlier versions will not resume.
        self._drop_partial(where, temp)
        return temp, result

    def deleted(self, path: str) -> None:
        """
        C{path} was deleted on the server: what came of its unfinished
        downloads is of no more use.
        """
        self._drop_partial(path_tag(path))

    def _drop_partial(self, where: str, keep: Path | None = None) -> None:
        """
        Remove the unfinished downloads of the path tagged C{where}, but
        C{keep}.
        """
        if where in self.partial:
            self.partial.discard(where)
            for stale in self.tmp.glob(f"dl-{where}-*"):
                if stale != keep:
                    stale.unlink(missing_ok=True)


def _allocated(path: Path) -> int:
    """
    How much of its disk the file at C{path} takes, 0 if there is none.
    """
    try:
        return path.stat().st_blocks * 512
    except FileNotFoundError:
        return 0
