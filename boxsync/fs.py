"""
The file-system operations both programs share: hashing a file, writing a
small one whole, the executable bit of a mode, and placing files atomically
below a root (C{renameat2}'s
no-replace and exchange moves, making missing folders without following a
link, pruning the folders a removal leaves empty, fsyncing a folder).

Everything here is synchronous and blocking: callers run it in a thread
(or, for a small file, where a thread hop would cost more than the work).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import Callable

from . import holes, libc
from .paths import BadPath
from .wire.values import MAX_COUNT, MIN_MTIME_NS
from .writer import write_all

__all__ = [
    "CANNOT",
    "CHUNK_SIZE",
    "exchange",
    "fsync_dir",
    "hash_file",
    "is_executable",
    "kind_not_synced",
    "make_folder",
    "make_parents",
    "mode_for",
    "move_new",
    "mtime_ns",
    "NEW_FILE_MODE",
    "prune",
    "write_small",
]

#: The mode a file this program makes is asked with: the umask then
#: decides, as for a file any other program makes (small or large, moved
#: whole or by blocks, a file comes with the same mode).
NEW_FILE_MODE = 0o666

#: How much of a file is read at a time to hash it.
CHUNK_SIZE = 1 << 20

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2

#: What a file system that cannot do a C{renameat2} flag answers.
CANNOT = (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP)


def hash_file(path: str | Path | int) -> tuple[str, int]:
    """
    Hash a file (given as an open descriptor, it is closed).

    @return: its sha256 (hex) and the number of bytes read.
    """
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def mtime_ns(st: os.stat_result) -> int:
    """
    The mtime of C{st} as boxsync syncs it: nanoseconds since 1970, within
    what the wire and the indexes carry (a file some file systems allow to
    be dated past 2262 is taken as of then).
    """
    return min(max(st.st_mtime_ns, MIN_MTIME_NS), MAX_COUNT)


def kind_not_synced(is_symlink: bool, is_dir: bool, is_file: bool) -> str | None:
    """
    Why a directory entry of this kind is not synced (a link, a FIFO, a
    socket, a device); C{None} if it is a regular file or a directory.
    """
    if is_symlink:
        return "symbolic link"
    if not is_dir and not is_file:
        return "not a regular file"
    return None


def is_executable(mode: int) -> bool:
    """
    Whether a file of C{mode} is executable, as boxsync syncs it: one bit,
    set if any of the owner's, the group's or the others' x bits is (as git
    and Syncthing see it).
    """
    return bool(mode & 0o111)


def mode_for(mode: int, executable: bool) -> int:
    """
    The permission bits C{mode} (those a file has, or would have) made
    executable or not: an executable file gets an x bit wherever it has an
    r bit (0644 becomes 0755, 0600 becomes 0700), one that is not loses
    them all. The rest is left as it is, so the umask a file was made
    under still shows.
    """
    mode &= 0o7777
    if executable:
        return mode | (mode & 0o444) >> 2
    return mode & ~0o111


def copy_range(source: int, at: int, target: int, to: int, size: int) -> bool:
    """
    Copy C{size} bytes at C{at} in the open file C{source} to C{to} in the
    open file C{target}, in the kernel (shared, not copied, where the file
    system can), the holes of C{source} made holes (L{holes.zeros}); whether
    they were all there to copy.
    """
    try:
        if os.fstat(source).st_size < at + size:
            return False
        for start, length, hole in holes.spans(source, at, size):
            place = to + start - at
            if not (hole and length >= holes.MIN_HOLE and holes.zeros(target, place, length)):
                if not _copy_in_kernel(source, start, target, place, length):
                    return False
    except OSError:
        return False
    return True


def _copy_in_kernel(source: int, at: int, target: int, to: int, size: int) -> bool:
    """
    L{copy_range} without a look for holes.
    """
    while size:
        done = os.copy_file_range(source, target, size, at, to)
        if done == 0:
            return False
        at, to, size = at + done, to + done, size - done
    return True


def write_small(fd: int, data: bytes, mtime_ns: int) -> None:
    """
    Write all of C{data} to the new, open file C{fd} and give it the mtime
    C{mtime_ns}: one file of a batch.

    @raise OSError: if the file refuses them (as on a full disk).
    """
    write_all(fd, [data])
    os.utime(fd, ns=(mtime_ns, mtime_ns))


def _rename2(a: Path, b: Path, flags: int) -> None:
    """
    Linux's C{renameat2} of C{a} to C{b} with C{flags}.

    @raise OSError: C{ENOSYS} or C{EINVAL} where the system or the file
        system cannot do it; else as C{rename} would.
    """
    renameat2 = libc.function(
        "renameat2", ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint
    )
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    libc.check(renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), flags), str(b))


def exchange(a: Path, b: Path) -> None:
    """
    Swap the files at C{a} and C{b} atomically (C{RENAME_EXCHANGE}).

    @raise OSError: C{ENOENT} if either is missing; one of L{CANNOT} where
        the system or the file system cannot do it.
    """
    _rename2(a, b, _RENAME_EXCHANGE)


def _move_no_replace(source: Path, target: Path) -> None:
    try:
        _rename2(source, target, _RENAME_NOREPLACE)
    except OSError as e:
        if e.errno not in CANNOT:
            raise
        # A link, unlike a plain rename, never replaces what is there either.
        os.link(source, target)
        os.unlink(source)


def move_new(source: Path, target: Path, root: Path) -> None:
    """
    Move C{source} to C{target}, where nothing may be, making the folders it
    needs below C{root} first (L{make_parents}).

    @raise FileExistsError: if there is something at C{target}.
    """
    try:
        _move_no_replace(source, target)
    except FileNotFoundError:
        make_parents(root, target)
        _move_no_replace(source, target)


def make_parents(root: Path, target: Path) -> None:
    """
    Make the missing folders from C{root} down to C{target}'s, one at a
    time, so that none is made through a link.

    @raise BadPath: if one of them is a link or a file.
    """
    make_folder(root, target.parent)


def make_folder(root: Path, folder: Path) -> None:
    """
    Make the folder C{folder} below C{root}, and the missing ones above it,
    one at a time, so that none is made through a link.

    @raise BadPath: if it, or one above it, is a link or a file.
    """
    current = root
    for segment in folder.relative_to(root).parts:
        current = current / segment
        try:
            os.mkdir(current)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                raise BadPath(f"{current} is a link or a file, not a folder") from None


def prune(root: Path, folder: Path, keep: Callable[[Path], bool] | None = None) -> None:
    """
    Remove empty folders from C{folder} up to (not including) C{root}, or
    up to one C{keep} says to keep.
    """
    while folder != root and root in folder.parents and not (keep is not None and keep(folder)):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def fsync_dir(folder: Path) -> None:
    """
    Make the names in C{folder} durable.
    """
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
