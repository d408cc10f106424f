"""
What the client does to carry out a decision of L{reconcile}: upload a file,
delete a path on the server, record a base, delete a local file, keep a
conflict copy, and move a verified download into place.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Awaitable, Callable

from attrs import define
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..fs import prune
from ..paths import BadPath, to_local
from ..wire import Download
from . import reconcile
from .api import BoxsyncAPI
from .errors import APIError, NotFound, StaleBase
from .placing import conflict_name, placed_base, swap
from .progress import Reporter
from .scanner import FileChanging, LocalFile
from .state import UNKNOWN_CTIME, Base, LocalState
from .transfers import Transfers, changed_while_sent

__all__ = ["Actions"]


@define
class Actions:
    """
    @ivar name: this client's name, in the names of its conflict copies.
    @ivar look: looks at the file at a path now (see L{Engine._look}).
    @ivar changed: reports a path changed here, as the watcher does.
    @ivar resync: ends the session for a fresh scan and plan, with the
        reason, if there is one more to say than the failure itself.
    @ivar committed: told the seq of each commit this client makes (the
        server does not echo them), so the cursor can pass them.
    """

    root: Path
    name: str
    reactor: IReactorTime
    api: BoxsyncAPI
    state: LocalState
    reporter: Reporter
    transfers: Transfers
    look: Callable[[str], Awaitable[LocalFile | None]]
    changed: Callable[[str], None]
    resync: Callable[[str | None], None]
    committed: Callable[[int], None] = lambda seq: None
    log = Logger()

    def _local(self, path: str) -> Path:
        return to_local(self.root, path)

    async def carry_out(self, action: reconcile.Action, path: str, file: LocalFile | None) -> None:
        """
        Do what L{reconcile} decided about C{path}, whose file a look found
        to be C{file}.
        """
        if isinstance(action, reconcile.Record):
            assert file is not None
            self.state.put(file.as_base(action.seq))
        elif isinstance(action, reconcile.Send):
            assert file is not None
            await self.upload(file, action.base)
        elif isinstance(action, reconcile.SendEdit):
            self.state.put(Base(path, action.sha256, -1, -1, -1, action.seq, UNKNOWN_CTIME))
            self.changed(path)
        elif isinstance(action, reconcile.Remove):
            await self.remove(path, action.base)
        elif isinstance(action, reconcile.Forget):
            self.state.forget(path)
        elif isinstance(action, reconcile.Revive):
            assert file is not None
            self.state.forget(path)
            await self.upload(file, action.seq)
        elif isinstance(action, reconcile.DeleteHere):
            local = self._local(path)
            local.unlink()
            prune(self.root, local.parent)
            self.state.forget(path)
            self.reporter.message(f"deleted {path}")

    async def upload(self, file: LocalFile, base: int) -> None:
        try:
            result = await self.transfers.upload(file, self._local(file.path), base)
        except StaleBase:
            await self._resolve_stale(file.path)
            return
        except APIError as e:
            if not changed_while_sent(e):
                raise
            if file.sha256 is None:
                # Hashed as it was sent, and written to meanwhile: hashing it
                # first waits until it is stable (and an append then only
                # adds to what is sent next time).
                again = await self.look(file.path)
                if again is not None:
                    await self.upload(again, base)
                return
            # The file changed while it was sent: the watcher (or the next
            # scan) reports it again once it is stable.
            self.resync(f"{file.path} changed while it was sent")
            return
        self.state.put(file.as_base(result.seq, result.sha256))
        self.committed(result.seq)

    async def remove(self, path: str, base: int) -> None:
        try:
            self.committed((await self.api.delete(path, base)).seq)
        except NotFound:
            pass
        except StaleBase:
            # Someone changed the file meanwhile: their version wins over
            # our delete, so fetch it again.
            await self._resolve_stale(path)
            return
        self.state.forget(path)
        self.reporter.message(f"deleted {path} on the server")

    async def _resolve_stale(self, path: str) -> None:
        """
        The server moved on from our base while we changed C{path}: keep our
        copy as a conflict copy, take theirs.
        """
        file = await self.look(path)
        if file is not None and file.changed:
            self.keep_as_conflict(path)
        self.state.forget(path)
        # Resync: the plan brings the server's version (and the conflict
        # copy is a new file in the manifest).
        self.resync(None)

    def keep_as_conflict(self, path: str, source: Path | None = None) -> str:
        """
        Keep the local copy of C{path} (or the file at C{source}, a copy of
        it taken out of the way) under a conflict name, and upload it.
        """
        new = conflict_name(path, self.name, self.reactor.seconds())
        n = 1
        while os.path.lexists(self._local(new)):
            n += 1
            new = conflict_name(path, f"{self.name}-{n}", self.reactor.seconds())
        source = source or self._local(path)
        special = not stat.S_ISREG(os.lstat(source).st_mode)
        os.rename(source, self._local(new))
        if special:
            self.log.warn(
                "{path} here was a link or a special file, which is not synced; it is now {new}",
                path=path,
                new=new,
            )
        else:
            self.log.warn("{path} changed on both sides; your copy is now {new}", path=path, new=new)
        self.reporter.message(f"conflict: kept your copy of {path} as {new}")
        self.changed(new)
        return new

    async def place(
        self,
        temp: Path,
        target: Path,
        event: Download,
        seq: int,
        placed: os.stat_result | None,
        seen: LocalFile | None,
    ) -> None:
        """
        Move a verified download of version C{seq} into place over C{seen},
        what the look before the download found there (unchanged since its
        base); C{placed} is its stat, if the download took it.

        The move itself is atomic (L{swap}): an edit saved since that look
        is what the move takes out of the way, and is kept as a conflict
        copy, never overwritten; a file that appeared since is looked at
        again.
        """
        path = event.path
        # Taken before the move: the file keeps its inode, size and mtime.
        if placed is None:
            os.utime(temp, ns=(event.mtime_ns, event.mtime_ns))
            placed = os.stat(temp)
        for attempt in range(3):
            if attempt:
                seen = await self.look(path)
                if seen is not None and seen.changed:
                    self.keep_as_conflict(path)
                    seen = None
            try:
                displaced = swap(temp, target, seen, self.root)
                break
            except FileExistsError:
                if target.is_dir() and not target.is_symlink():
                    raise BadPath(f"{path} is a folder here") from None
                continue  # a new file appeared since the look: look again
        else:
            raise FileChanging(f"{path} keeps appearing while a download is placed")
        if displaced is not None:
            self.keep_as_conflict(path, displaced)
        self.state.put(placed_base(target, path, event.sha256, placed, seq))
