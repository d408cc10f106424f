"""
Files below a folder, reached one path segment at a time from the folder's
descriptor.

Each folder on the way is opened relative to the one before it with
C{O_NOFOLLOW | O_DIRECTORY}, and the last segment is then read, renamed,
linked or removed relative to its folder's descriptor (C{openat},
C{renameat}, C{linkat}, C{unlinkat}). A symbolic link swapped in anywhere
on the way, at any moment, is never followed: the check and the use are the
same system call. (A path checked first and used by name afterwards can be
swapped in between.)
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

from ..paths import LOCAL_PATH_MAX, BadPath, normalize

__all__ = ["Folders", "folder", "parent_of", "open_regular", "open_regular_fd", "segments"]

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

#: A regular file to read: O_NONBLOCK so that opening a FIFO does not wait
#: for a writer.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def segments(root: Path, path: str) -> list[str]:
    """
    The segments of wire path C{path}, checked.

    @raise BadPath: if the path is not acceptable, or too long for the file
        system below C{root} (as a whole path, for the tools that read the
        box by name).
    """
    wire = normalize(path)
    if len(os.fsencode(os.path.join(root, wire))) >= LOCAL_PATH_MAX:
        raise BadPath("path longer than the file system takes here")
    return wire.split("/")


def _open_folder(fd: int, name: str, create: bool) -> int:
    """
    The folder C{name} in the folder open as C{fd}, never through a link.

    @raise BadPath: if C{name} is a link or anything else than a folder.
    @raise FileNotFoundError: if there is nothing there, and not C{create}.
    """
    try:
        try:
            return os.open(name, _FOLDER, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(name, 0o755, dir_fd=fd)
            except FileExistsError:
                pass  # made meanwhile: open whatever it is, as above
            return os.open(name, _FOLDER, dir_fd=fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise BadPath(f"{name!r} in the way is a link or a file, not a folder") from None
        raise


def _open_folders(root: Path, names: Sequence[str], create: bool) -> int:
    """
    The descriptor of the folder C{root}/C{names}..., opened a segment at a
    time (the caller's to close).
    """
    fd = os.open(root, _FOLDER)
    try:
        for name in names:
            child = _open_folder(fd, name, create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def folder(root: Path, names: Sequence[str], create: bool = False) -> Iterator[int]:
    """
    The descriptor of the folder C{root}/C{names}..., opened a segment at a
    time; closed when the block ends.

    @param create: make the folders that are missing.
    @raise BadPath: if a segment is a link or a file.
    @raise FileNotFoundError: if a folder is missing, and not C{create}.
    """
    fd = _open_folders(root, names, create)
    try:
        yield fd
    finally:
        os.close(fd)


class Folders:
    """
    The folders that hold many paths below C{root}, each opened as
    L{folder} opens it, the last one kept open for the next path: a batch
    of files in one folder opens it once, not once a file. A context
    manager; blocking.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._names: tuple[str, ...] | None = None
        self._fd = -1

    def parent_of(self, path: str) -> tuple[int, str]:
        """
        As L{parent_of}: the descriptor of the folder that holds C{path}
        (this object's to close) and the name of C{path} in it.
        """
        *names, name = segments(self.root, path)
        if tuple(names) != self._names:
            self.close()
            self._fd = _open_folders(self.root, names, False)
            self._names = tuple(names)
        return self._fd, name

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._names = -1, None

    def __enter__(self) -> Folders:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextmanager
def parent_of(root: Path, path: str, create: bool = False) -> Iterator[tuple[int, str]]:
    """
    The descriptor of the folder that holds wire path C{path} below C{root},
    and the name of C{path} in it.

    @raise BadPath: if the path is not acceptable or goes through a link or
        a file.
    @raise FileNotFoundError: if a folder on the way is missing, and not
        C{create}.
    """
    *names, name = segments(root, path)
    with folder(root, names, create) as fd:
        yield fd, name


def open_regular_fd(root: Path, path: str, folders: Folders | None = None) -> tuple[int, os.stat_result] | None:
    """
    The regular file at wire path C{path} below C{root}, open for reading
    (a raw descriptor, for the caller to close), with its C{fstat}; or
    C{None} if there is none there (a link is never followed, on the way or
    at the end).

    @param folders: the folders of C{root} to go through, if they are kept
        open for more paths.
    """
    try:
        if folders is not None:
            parent, name = folders.parent_of(path)
            fd = os.open(name, _READ, dir_fd=parent)
        else:
            with parent_of(root, path) as (parent, name):
                fd = os.open(name, _READ, dir_fd=parent)
    except (BadPath, OSError):
        return None
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            return fd, st
    except OSError:
        pass
    os.close(fd)
    return None


def open_regular(root: Path, path: str) -> BinaryIO | None:
    """
    L{open_regular_fd}, as a file object in blocking mode.
    """
    opened = open_regular_fd(root, path)
    if opened is None:
        return None
    fd, _ = opened
    try:
        os.set_blocking(fd, True)
    except OSError:
        os.close(fd)
        return None
    return open(fd, "rb", closefd=True)
