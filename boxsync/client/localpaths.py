"""
Wire paths mapped to the synced folder's files, on the reactor's thread.

L{boxsync.paths.to_local} checks every parent of a path on the way down (one
C{lstat} each), so that nothing is read or written through a link. An engine
maps the same folders over and over: a burst of 10,000 new files in 100
folders is 40,000 mappings, each checking the same few parents. Every
C{lstat} also lets go of the interpreter's lock, and taking it back while
another thread hashes or writes costs far more than the call.

L{LocalPaths} keeps the folders it checked until the reactor's next turn:
the mappings made in one turn (the jobs a batch's answer or a burst of
changes starts) check each folder once. A folder replaced by a link is seen
by the first mapping of the next turn, as it would have been seen by the
next call before: what is found through a mapping was never protected
against a change made between it and its use.
"""

from __future__ import annotations

from pathlib import Path

from attrs import define, field
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ..paths import a_box, to_local
from .state import same_box


@define
class LocalPaths:
    """
    L{to_local} below C{root}, with the folders checked in one turn of
    C{reactor} checked once. Call it on the reactor's thread only.
    """

    root: Path
    reactor: IReactorTime
    _folders: dict[str, str] = field(factory=dict, init=False)
    _forgetting: IDelayedCall | None = field(default=None, init=False)

    def __call__(self, path: str) -> Path:
        """
        The file below C{root} for the wire path C{path}.

        @raise BadPath: as L{to_local} does.
        """
        return to_local(self.root, path, self.folders(), self._kept_out)

    def _kept_out(self, folder: str) -> str | None:
        """
        Why nothing is placed in C{folder}, below the root and with a
        hidden folder of its own: a server's box, or a folder synced on its
        own with the root's box (its client would send it up again, a level
        deeper); C{None} for one synced with another box (each client
        brings the other's changes).
        """
        why = a_box(folder)
        if why is None and same_box(self.root, folder):
            why = "a folder synced on its own with this same box"
        return why

    def folders(self) -> dict[str, str]:
        """
        The folders checked this turn, for a call of L{to_local} on this
        thread, forgotten at the next.
        """
        if self._forgetting is None:
            self._forgetting = self.reactor.callLater(0, self._forget)
        return self._folders

    def _forget(self) -> None:
        self._forgetting = None
        self._folders.clear()
