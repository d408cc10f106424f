"""
One commit at a time in a box.

A commit checks each path's base, moves the new files into the box (keeping
what they replace, to undo), and records them in the index: two commits of
one path must not overlap, or a commit undone could put back a file another
has replaced since. Within a server, commits take turns on a
L{DeferredLock}. When several servers serve one box (its index in
PostgreSQL), they take turns on an C{flock} too, on a file in the box's
hidden folder, waited for in a thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredLock

from ..lock import FolderLock

__all__ = ["COMMIT_LOCK", "Turns"]

#: The file in a box's hidden folder its servers take turns on.
COMMIT_LOCK = "commit.lock"


@define
class Turns:
    """
    @ivar path: the lock file of the servers of the box (C{None}: this
        server is its only one).
    @ivar in_thread: runs a call in a thread, and gives its result.
    """

    path: Path | None = None
    in_thread: Callable[[Callable[[], Any]], Deferred[Any]] | None = None
    _local: DeferredLock = field(factory=DeferredLock)
    _held: FolderLock | None = None

    async def __aenter__(self) -> None:
        await self._local.acquire()
        if self.path is None or self.in_thread is None:
            return
        path = self.path
        try:
            self._held = await self.in_thread(lambda: FolderLock.acquire(path, wait=True))
        except BaseException:
            self._local.release()
            raise

    async def __aexit__(self, *exc: object) -> None:
        if self._held is not None:
            self._held.release()
            self._held = None
        self._local.release()
