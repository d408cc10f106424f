"""
What a box that went back to an earlier state (restored from a backup) lost
of this folder's versions.

A client that finds the box's last change behind what it has seen starts
over (L{boxsync.client.state.LocalState.start_over}): its next session is a
first sync, where a file that differs from the box's is a conflict. But the
files whose versions the box lost are no conflict when the box's version is
one from before: this folder's is newer, and goes back up over it. Which
box versions are from before is told by the box's own history: the first
of the bases the folder may still share with it (newest first) that the box
has at that seq with those bytes is a seq up to which the two share their
history. A box version past it may be a change made through the box since
it went back, and stays a conflict.
"""

from __future__ import annotations

from attrs import frozen

from .api import BoxsyncAPI
from .errors import NotFound
from .state import LocalState

__all__ = ["WentBack", "shared_up_to"]


@frozen
class WentBack:
    """
    @ivar lost: the files whose versions the box lost.
    @ivar shared_up_to: the seq up to which the box's versions are from
        before it went back (0: none is known to be).
    """

    lost: frozenset[str] = frozenset()
    shared_up_to: int = 0

    @classmethod
    async def recall(cls, state: LocalState, api: BoxsyncAPI, cursor: int) -> WentBack:
        """
        At a session's start, what the box lost: for a first sync with it
        (no C{cursor}); forgotten once one is done.
        """
        if cursor:
            state.forget_lost_by_box()
            return cls()
        known = state.lost_by_box()
        if not known.lost:
            return cls()
        return cls(known.lost, await shared_up_to(api, known.maybe_shared))

    def older(self, path: str, seq: int) -> bool:
        """
        Whether the box's version C{seq} of C{path} is older than the one
        this folder has, which the box lost.
        """
        return path in self.lost and seq <= self.shared_up_to


async def shared_up_to(api: BoxsyncAPI, maybe_shared: list[tuple[str, int, str]]) -> int:
    """
    The highest seq of the versions C{maybe_shared} (C{(path, seq,
    sha256)}, newest first) that the box has too, at that seq with those
    bytes (0: none): one request each, until one is found.
    """
    for path, seq, sha256 in maybe_shared:
        try:
            _, versions = await api.history(path)
        except NotFound:
            continue
        if any(v.seq == seq and v.sha256 == sha256 for v in versions):
            return seq
    return 0
