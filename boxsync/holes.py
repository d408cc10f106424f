"""
Runs of zeros left as holes: a sparse file (a disk image, some databases)
stays sparse wherever boxsync writes it.

A file of 1 GiB made with C{truncate -s 1G} takes no room on its disk; written
byte for byte it takes 1 GiB, in the box and on every machine that gets it.
Every writer of file contents (the server's uploads and the files it makes of
blocks, the client's downloads, whole or in blocks) writes a piece of at
least a page that is all zeros (L{parts}) as a hole instead: L{append} by
seeking past it, L{put} by punching it. The bytes read back are the same,
and so is the sha256; only the disk space differs. Syncthing does the same with its
all-zero blocks.
"""

from __future__ import annotations

import ctypes
import errno
import os

from . import libc
from .blocks import BLOCK_MAX

__all__ = ["MIN_HOLE", "append", "is_hole", "parts", "punch", "put", "spans", "zeros"]

#: The smallest run of zeros worth a hole: a page, the file systems' block.
MIN_HOLE = 4096

#: What a piece is compared with (C{bytes.startswith} compares in C and
#: stops at the first byte that differs: ~25 µs a MiB of zeros, nothing
#: for other data).
_ZEROS = bytes(BLOCK_MAX)

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02

#: The errors of a file system that cannot punch holes.
_CANNOT_PUNCH = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})


def is_hole(data: bytes | memoryview) -> bool:
    """
    Whether C{data} is worth leaving as a hole: at least L{MIN_HOLE} bytes,
    all zeros (pieces longer than a block are written as they are).
    """
    return len(data) >= MIN_HOLE and _ZEROS.startswith(data)


def parts(data: bytes | memoryview) -> list[tuple[int, int, bool]]:
    """
    C{data} as parts (start, end, whether a hole), in order: a piece where
    data begins or ends in the middle of a run of zeros (FastCDC cuts zeros
    only at its largest block) has its zero head and tail, in whole pages,
    as holes. Other data costs two compares of a page.
    """
    size = len(data)
    if size < MIN_HOLE or (data[0] and data[-1]):
        return [(0, size, False)] if size else []
    if is_hole(data):
        return [(0, size, True)]
    view = memoryview(data)
    head = 0
    while head + MIN_HOLE <= size and _ZEROS.startswith(view[head : head + MIN_HOLE]):
        head += MIN_HOLE
    tail = size
    while tail - MIN_HOLE >= head and _ZEROS.startswith(view[tail - MIN_HOLE : tail]):
        tail -= MIN_HOLE
    found = [(0, head, True), (head, tail, False), (tail, size, True)]
    return [(start, end, hole) for start, end, hole in found if end > start]


def append(fd: int, size: int) -> None:
    """
    Append C{size} zeros to C{fd} as a hole: seek past all but the last,
    which is written (so the file's size is right at every step, and a
    resume can trust it). C{fd} must be positioned at the file's end and not
    opened with C{O_APPEND}.
    """
    os.lseek(fd, size - 1, os.SEEK_CUR)
    if os.write(fd, b"\0") != 1:
        raise OSError(errno.EIO, "nothing could be written")


def put(fd: int, data: bytes | memoryview, offset: int) -> None:
    """
    Write C{data} at C{offset} in C{fd}; its runs of zeros (L{parts}) are
    punched as holes (L{zeros}), whatever was there before.
    """
    view = memoryview(data)
    for start, end, hole in parts(view):
        if not (hole and zeros(fd, offset + start, end - start)):
            os.pwrite(fd, view[start:end], offset + start)


def zeros(fd: int, offset: int, size: int) -> bool:
    """
    Make the C{size} bytes at C{offset} in C{fd} zeros that take no room,
    whatever was there before: all but the last punched as a hole, the last
    written (so the file grows as a write would make it grow, and never
    shrinks, even with other writes at other places under way).

    @return: whether the file system could (if not, nothing was changed).
    """
    if not punch(fd, offset, size - 1):
        return False
    os.pwrite(fd, b"\0", offset + size - 1)
    return True


def spans(fd: int, offset: int, size: int) -> list[tuple[int, int, bool]]:
    """
    The C{size} bytes at C{offset} in C{fd} as spans (offset, size, whether
    a hole), in order, from C{SEEK_DATA} and C{SEEK_HOLE} (a file system
    that cannot tell has no holes). A hole past the end of the file is one.
    The position of C{fd} is left where it was.
    """
    found: list[tuple[int, int, bool]] = []
    position = os.lseek(fd, 0, os.SEEK_CUR)
    end = offset + size
    try:
        while offset < end:
            try:
                data = min(os.lseek(fd, offset, os.SEEK_DATA), end)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                data = end
            if data > offset:
                found.append((offset, data - offset, True))
                offset = data
                continue
            hole = min(os.lseek(fd, offset, os.SEEK_HOLE), end)
            found.append((offset, hole - offset, False))
            offset = hole
    finally:
        os.lseek(fd, position, os.SEEK_SET)
    return found


def punch(fd: int, offset: int, size: int) -> bool:
    """
    Punch a hole of C{size} bytes at C{offset} in C{fd}, the size of the
    file kept: they read as zeros and take no room.

    @return: whether the file system could.
    @raise OSError: if it could but failed.
    """
    fallocate = libc.function("fallocate", ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)
    if fallocate is None:
        return False
    if fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, size) == 0:
        return True
    code = ctypes.get_errno()
    if code in _CANNOT_PUNCH:
        return False
    raise OSError(code, os.strerror(code))
