"""
A look at one file of the folder now, compared with its base: what every job
starts from. A file whose stat is what the session's scan saw is not read
again; a small one is read on the reactor's thread, a larger one in a
thread; a file being written is waited for.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Awaitable, Callable

from attrs import Factory, define, evolve, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from ..blocks import Recipe
from ..paths import BadPath
from .localpaths import LocalPaths
from .scanner import (
    FileChanging,
    LocalFile,
    ReadElsewhere,
    changed_since,
    holds_nothing,
    moved,
    renamed_from,
    scan_one,
)
from .state import Base, LocalState

__all__ = ["INLINE_READ", "Looks"]

#: Files up to this size are read (to hash them) on the reactor's thread:
#: from the page cache that costs less than a hop to a thread and back.
INLINE_READ = 64 * 1024


async def _no_recipe(base: Base) -> Recipe | None:
    return None


@define
class Looks:
    """
    @ivar thread: runs a function in a thread.
    @ivar version_recipe: the recipe of a base's version as the server has
        it, if it has one.
    @ivar hashed: the files this session's scan hashed, until first looked
        at again.
    @ivar paths: maps wire paths to the folder's files (the engine's, whose
        jobs share the folders checked in a turn).
    @ivar cut_over: the size over which a file that must be read is cut
        into its blocks as it is hashed (C{cut_over} in L{scan_one}: its
        upload need not read it again), as it stands now; C{None}: none is.
    """

    root: Path
    reactor: IReactorTime
    state: LocalState
    thread: Callable[[Callable[[], Any]], Deferred[Any]]
    version_recipe: Callable[[Base], Awaitable[Recipe | None]] = field(default=_no_recipe)
    hashed: dict[str, LocalFile] = field(factory=dict)
    paths: LocalPaths = Factory(lambda self: LocalPaths(self.root, self.reactor), takes_self=True)
    cut_over: Callable[[], int | None] = lambda: None

    async def look(self, path: str, unhashed: int | None = None, local: Path | None = None) -> LocalFile | None:
        """
        The file at C{path} now, compared with its base (hashed in a thread
        if its stat changed); waits while it is being written. A new
        small file with the bytes of the base of a path that holds nothing
        now is taken as moved from there (see L{_moved}); a larger one, by
        its stamps (L{renamed_here}).

        @param unhashed: a new file larger than this is not hashed (see
            L{scan_one}); C{None}: every file is.
        @param local: C{path} mapped below the root (L{LocalPaths}) this
            turn, if the caller has it.
        """
        base = self.state.get(path)
        hashed = self.hashed.pop(path, None)
        if hashed is not None and (hashed.sha256 is not None or unhashed is not None):
            unchanged = self.unchanged_since_scan(hashed, base)
            if unchanged is not None:
                return unchanged
        if base is None:
            try:
                local = local or self.paths(path)
                st = os.lstat(local)
            except (BadPath, FileNotFoundError, NotADirectoryError):
                return None  # nothing there: a new file's usual look
            except OSError:
                pass  # told by the look below
            else:
                taken = await self.renamed_here(path, local, st)
                if taken is not None:
                    return taken
        for attempt in range(20):
            try:
                try:
                    here = scan_one(self.root, path, base, INLINE_READ, unhashed, self.paths.folders())
                    return self._moved(here) if base is None else here
                except ReadElsewhere:
                    cut_over = self.cut_over()
                    found: LocalFile | None = await self.thread(
                        lambda: scan_one(self.root, path, base, None, unhashed, cut_over=cut_over)
                    )
                    return found
            except FileChanging:
                await deferLater(self.reactor, min(2.0, 0.1 * 2**attempt), lambda: None)
        raise FileChanging(f"{path} keeps changing")

    async def renamed_here(self, path: str, local: Path, st: os.stat_result) -> LocalFile | None:
        """
        The file at C{path} (C{local}, whose lstat is C{st}), which has no
        base, if it is a file this client had in sync under another name
        that holds nothing now (a rename known by its stamps, see
        L{scanner.moved_here}, and made sure of by its sha256, in a thread):
        not cut. Only files too large to read on this thread are looked for.
        """
        if not stat.S_ISREG(st.st_mode) or st.st_size <= INLINE_READ:
            return None
        gone = renamed_from(self.root, path, st, self.state.with_inode(st.st_ino))
        if gone is None:
            return None
        # Its blocks are checked on every core, if the server has them.
        recipe = await self.version_recipe(gone)
        try:
            taken: LocalFile | None = await self.thread(lambda: moved(local, path, gone, recipe))
        except FileChanging:
            return None  # looked at as it settles
        return taken

    def _moved(self, found: LocalFile | None) -> LocalFile | None:
        """
        C{found}, a new file read whole on this thread, marked as moved from
        (L{LocalFile.moved_from}) a path whose base has its bytes and which
        holds nothing now (a rename, or a copy and a delete), if there is
        one: its upload then follows the old path's delete.
        """
        if found is None or found.sha256 is None or not found.size:
            return found
        for gone in self.state.with_sha256(found.sha256):
            if (
                not gone.folder
                and gone.path != found.path
                and gone.size == found.size
                and holds_nothing(self.root, gone.path, self.paths.folders())
            ):
                return evolve(found, moved_from=gone)
        return found

    def unchanged_since_scan(self, hashed: LocalFile, base: Base | None) -> LocalFile | None:
        """
        The file the scan looked at, compared with C{base}, if its stat is
        still what the scan saw (so a new file is not read twice before its
        upload); else C{None}.
        """
        try:
            local = self.paths(hashed.path)
        except BadPath:
            return None
        if not hashed.is_still(local) or (hashed.sha256 is None and base is not None):
            return None
        changed = changed_since(base, hashed.sha256, hashed.executable)
        return evolve(hashed, base=base.seq if base is not None else 0, changed=changed)
