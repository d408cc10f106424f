"""
Room on the folder's disk: a download starts only if it leaves some free.

A download that fills the disk to its last byte fails, and so does
everything else that writes there afterwards: the client's own record of
the folder (SQLite: "database or disk is full") among them, so it could not
even take the deletes that would have made room again, and the user's other
programs with it. Syncthing keeps 1 % of a disk free by default; so does
boxsync (1 MiB at least, 1 GiB at most): a download (or a file fetched
ahead) that would leave less than L{reserve} free is not started, and is
tried again later, as after a full disk, with a line that says how much
it needs and how much is free. C{--keep-free} sets another share or size
(L{KeepFree}), as Syncthing's C{minDiskFree} does.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable

from attrs import define, frozen
from twisted.internet.interfaces import IReactorTime

from ..config import human_size
from ..config import size as config_size

__all__ = ["CEILING", "FLOOR", "SHARE", "KeepFree", "NoRoom", "Room", "reserve"]

#: The share of a disk kept free.
SHARE = 0.01

#: The least kept free, whatever the size of the disk: room for the
#: client's record of the folder to grow.
FLOOR = 1024 * 1024

#: The most kept free: on a disk of 2 TB nearly full, 1 % (20 GB) would
#: stop every download, for room that nothing of the client's needs.
CEILING = 1024**3

#: How long a look at the free space is trusted (less what was granted
#: since).
LOOK_SECONDS = 1.0


def reserve(total: int) -> int:
    """
    How many bytes of a disk of C{total} bytes are kept free: L{SHARE} of
    it, but at least L{FLOOR} and at most L{CEILING}.
    """
    return min(max(int(total * SHARE), FLOOR), CEILING)


@frozen
class KeepFree:
    """
    How much of the disk is kept free (C{--keep-free}): C{size} bytes, or
    the C{share} of the disk; neither: L{reserve}, the default.
    """

    size: int | None = None
    share: float | None = None

    @classmethod
    def parse(cls, value: str) -> KeepFree:
        """
        C{5%} (a share of the disk), C{500M} or C{2G} (a size, as
        L{boxsync.config.size} reads it), or C{0} (nothing kept free).

        @raise ValueError: for anything else, or a share not below 100 %.
        """
        text = value.strip()
        if text == "0":
            return cls(size=0)
        if text.endswith("%"):
            try:
                percent = float(text[:-1])
            except ValueError:
                percent = -1.0
            if not 0 <= percent < 100:
                raise ValueError(f"{value!r} is not a share of the disk (from 0% to 99%)")
            return cls(share=percent / 100)
        return cls(size=config_size(text))

    def of(self, total: int) -> int:
        """
        How many bytes of a disk of C{total} bytes are kept free.
        """
        if self.size is not None:
            return self.size
        if self.share is not None:
            return int(total * self.share)
        return reserve(total)


class NoRoom(OSError):
    """
    A download would leave too little room on the disk: an C{ENOSPC}, which
    the client backs off from as from a full disk.
    """

    def __init__(self, size: int, free: int, kept: int) -> None:
        super().__init__(
            errno.ENOSPC,
            f"{human_size(size)} to download, {human_size(free)} free, {human_size(kept)} kept free",
        )


@define
class Room:
    """
    The free space of the disk of C{folder}, looked at (L{statvfs}) at most
    once every L{LOOK_SECONDS}, less what is granted to downloads under way
    and what was given back since (all of it: what they wrote is counted
    twice until the next look, which errs on the side of room).
    """

    folder: Path
    clock: IReactorTime
    statvfs: Callable[[Path], os.statvfs_result] = os.statvfs
    keep: KeepFree = KeepFree()
    _free: int = 0
    _kept: int = 0
    _looked: float | None = None
    _held: int = 0

    def take(self, size: int) -> None:
        """
        Grant C{size} bytes to a download, until L{give_back}.

        @raise NoRoom: if that would leave less than what is kept free.
        @raise OSError: if the disk cannot be looked at.
        """
        now = self.clock.seconds()
        if self._looked is None or now - self._looked >= LOOK_SECONDS or self._left(size) < self._kept:
            self._look(now)
        if self._left(size) < self._kept:
            raise NoRoom(size, max(self._free - self._held, 0), self._kept)
        self._held += size

    def give_back(self, size: int) -> None:
        """
        A download granted C{size} bytes ended: what it wrote is on the disk
        (taken as all of it until the next look).
        """
        self._held -= size
        self._free -= size

    def look_again(self) -> None:
        """
        Room was made: look at the disk at the next L{take}.
        """
        self._looked = None

    def _left(self, size: int) -> int:
        return self._free - self._held - size

    def fits(self, size: int) -> bool:
        """
        Whether C{size} bytes can be granted (and then they are, until
        L{give_back}).
        """
        try:
            self.take(size)
        except OSError:
            return False
        return True

    def _look(self, now: float) -> None:
        found = self.statvfs(self.folder)
        self._free = found.f_bavail * found.f_frsize
        self._kept = self.keep.of(found.f_blocks * found.f_frsize)
        self._looked = now
