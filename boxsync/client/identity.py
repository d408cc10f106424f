"""
The synced folder is the one the client started with.

A folder that is moved away, deleted, replaced by another or unmounted (an
empty mount point is left) looks, to a scan of its path, like a folder
whose every file was deleted. Syncthing keeps a marker in each folder for
this; boxsync has its state file in the folder's hidden folder. Before a
scan's deletes are believed and before any delete is sent to the server,
the client checks that the folder at its path and the state file in it are
still those it opened (L{FolderIdentity.check}): if not, it stops, having
deleted nothing, and says why in one line.

Nor is the folder inside another synced with the same box
(L{check_not_inside}): each client would send the other's files up and get
them back a level deeper, again and again (Nextcloud and Seafile refuse a
sync folder inside another altogether).
"""

from __future__ import annotations

import os
from pathlib import Path

from attrs import frozen

from ..paths import CLIENT_STATE_FILE, marked_above
from .state import box_of, state_file

__all__ = ["FolderIdentity", "FolderReplaced", "InsideSameBox", "check_not_inside"]


class FolderReplaced(Exception):
    """
    The synced folder is not the folder the client started with.
    """


class InsideSameBox(Exception):
    """
    The synced folder is inside another one synced with the same box.
    """


def check_not_inside(root: Path, box: str) -> None:
    """
    Make sure no folder above C{root} is synced with the box C{box}.

    @raise InsideSameBox: if one is.
    """
    outer = marked_above(root, CLIENT_STATE_FILE)
    while outer is not None:
        if box_of(outer) == box:
            raise InsideSameBox(
                f"{root} is inside {outer}, a folder synced with the same box: each client would send the other's "
                "files up and get them back a level deeper, again and again; sync a folder outside it"
            )
        outer = marked_above(outer, CLIENT_STATE_FILE)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


@frozen
class FolderIdentity:
    """
    What makes the folder C{root} the one being synced: its own device and
    inode, and those of its state file.
    """

    root: Path
    folder: tuple[int, int] | None
    state: tuple[int, int] | None

    @classmethod
    def of(cls, root: Path) -> FolderIdentity:
        """
        The identity of C{root} as it is now, its state opened.
        """
        return cls(root, _identity(root), _identity(state_file(root)))

    def check(self) -> None:
        """
        @raise FolderReplaced: if the folder at C{root}, or its state file,
            is not the one it was.
        """
        now = FolderIdentity.of(self.root)
        if now.folder == self.folder and now.state != self.state:
            raise FolderReplaced(
                f"the state of {self.root} ({state_file(self.root).relative_to(self.root)}) was deleted "
                "or replaced: stopped, and nothing was deleted on the server; started again, the client "
                "compares every file with the box"
            )
        if now != self:
            raise FolderReplaced(
                f"{self.root} is no longer the folder that was being synced (moved, deleted, "
                "replaced or unmounted): stopped, and nothing was deleted on the server"
            )
