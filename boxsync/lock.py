"""
One process per folder: a client per synced folder, a server per box. The
lock is an advisory C{flock} on a file in the folder's hidden folder, held
for as long as the process runs (the kernel lets go of it when the process
ends, however it ends); the file names the holder's pid, for the message
that the second process prints.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from attrs import define

__all__ = ["FolderLock", "Locked"]


class Locked(Exception):
    """
    Another process holds the lock.

    @ivar pid: its pid, if it wrote one.
    """

    def __init__(self, path: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "another process"
        super().__init__(f"{path} is in use by {holder}")
        self.pid = pid


@define
class FolderLock:
    """
    The lock file at C{path}, once L{acquire}d: released by L{release} or
    when the process ends.
    """

    path: Path
    _fd: int | None = None

    @classmethod
    def acquire(cls, path: Path, shared: bool = False, wait: bool = False) -> FolderLock:
        """
        Take the lock at C{path} (made if missing) and, taken alone, write
        this process's pid in it.

        @param shared: take it beside other processes that take it shared
            (several servers of one box), not alone.
        @param wait: wait until it can be taken (call it in a thread).
        @raise Locked: if another process holds it the other way (or at all,
            to take it alone), and C{wait} is false.
        @raise OSError: if the file cannot be made or opened.
        """
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            pid = _pid(fd)
            os.close(fd)
            raise Locked(path, pid) from None
        except BaseException:
            os.close(fd)
            raise
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def share(self) -> None:
        """
        Let other processes take it shared too, from now on (this one took
        it alone).
        """
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
