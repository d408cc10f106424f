"""
An upload being written: a staging file in the box's hidden folder, on the
box's file system, hashed as it is written, made durable, then handed to the
storage to be placed (or discarded); and what a full disk looks like to the
rest of the server (L{DiskFull}, a C{507}).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from attrs import define, field
from twisted.internet.defer import Deferred

from .. import libc
from ..writer import HashingWriter, Runner, write_all

__all__ = ["BoxNotWritable", "DiskFull", "StagingFile", "WRITE_BACK_BYTES", "as_box_error", "discarding", "start_write_back"]

#: Every time this many more bytes of an upload are written, the kernel is
#: asked to start writing them to the disk: the final fsync then has little
#: left to do (it took ~0.45 s of a 1 GiB upload, ~5 ms with this).
WRITE_BACK_BYTES = 8 * 1024 * 1024


_SYNC_FILE_RANGE_WRITE = 2


def start_write_back(fd: int, offset: int, length: int) -> None:
    """
    Have the kernel start writing C{length} bytes of C{fd} from C{offset}
    to the disk, without waiting for them (elsewhere than on Linux, do
    nothing). A hint only: a failure shows at the next fsync.
    """
    sync_file_range = libc.function(
        "sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint
    )
    if sync_file_range is not None:
        sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


class DiskFull(OSError):
    """
    The box's file system has no room left.
    """

    def __str__(self) -> str:
        # What clients see in the 507 answer: no "[Errno 28]" in front.
        return self.strerror or super().__str__()


class BoxNotWritable(OSError):
    """
    The box may not be written: its owner or mode, an immutable folder, a
    file system mounted read-only. Nothing was committed; the client is told
    to ask again, as the server's operator has to set it right.
    """

    def __str__(self) -> str:
        return f"the server cannot write in its box ({self.strerror})"


def _is_full(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


#: What writing where one may not fails with.
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def as_box_error(e: BaseException) -> BaseException:
    """
    C{e}, as a L{DiskFull} if it says the file system is full, or a
    L{BoxNotWritable} if it says the box may not be written.
    """
    if isinstance(e, OSError) and not isinstance(e, (DiskFull, BoxNotWritable)):
        if _is_full(e):
            return DiskFull(e.errno, "no space left in the box")
        if e.errno in _NOT_WRITABLE:
            return BoxNotWritable(e.errno, e.strerror, e.filename, None, e.filename2)
    return e


@contextmanager
def discarding(staged: StagingFile) -> Iterator[None]:
    """
    Discard C{staged} if the block raises; a full disk is raised as
    L{DiskFull}.
    """
    try:
        yield
    except BaseException as e:
        staged.discard()
        full = as_box_error(e)
        if full is e:
            raise
        raise full from e


@define(frozen=True)
class _Known:
    """
    The digest of bytes already known by their sha256.
    """

    sha256: str

    def hexdigest(self) -> str:
        return self.sha256

    def update(self, data: bytes) -> None:
        raise ValueError("a staging file made of a known file takes no more bytes")


@define
class StagingFile:
    """
    An upload being written: a temporary file in the staging folder, hashed
    as it is written, either here (L{write}) or a batch at a time in a
    worker thread (L{writer}). Whoever holds it either hands it to
    L{BoxStorage.place} or calls L{discard}.

    @ivar size: how many bytes are written.
    @ivar error: what L{write} met, if anything.
    """

    path: Path
    _fd: int | None
    size: int = 0
    error: OSError | None = None
    _hash: Any = field(factory=hashlib.sha256)
    #: A second name of a file of the box (L{holding}): renamed over a name
    #: of that same file, it stays (POSIX: the rename does nothing).
    linked: bool = False
    #: How much of the file was handed to L{start_write_back}.
    _written_back: int = field(default=0, init=False)

    @classmethod
    def holding(cls, path: Path, fd: int, sha256: str, size: int) -> StagingFile:
        """
        A staging file that is already whole: a second name of a file whose
        sha256 and size are known.
        """
        return cls(path, fd, size, hash=_Known(sha256), linked=True)

    def fileno(self) -> int:
        """
        @raise ValueError: if the file is closed.
        """
        if self._fd is None:
            raise ValueError("staging file already closed")
        return self._fd

    def writer(self, run: Runner) -> HashingWriter:
        """
        A writer that appends to this file and hashes, a batch at a time
        through C{run}, counting into L{size} each batch written. Every
        L{WRITE_BACK_BYTES} the disk is asked to start on what is written.

        While it has a batch under way this file must be neither closed nor
        discarded (its descriptor could be reused, and get that batch):
        wait for the writer's C{close} or C{abort} first.
        """

        def batch(work: Callable[[], None]) -> Deferred[None]:
            def write() -> None:
                work()
                self._write_back()

            return run(write)

        return HashingWriter(self, self._hash, batch, on_written=self._written)

    def _written(self, size: int) -> None:
        self.size += size

    def _write_back(self) -> None:
        """
        After a batch, in its thread: start writing to the disk what the
        batches appended, every L{WRITE_BACK_BYTES}.
        """
        end = os.lseek(self.fileno(), 0, os.SEEK_CUR)
        if end - self._written_back >= WRITE_BACK_BYTES:
            start_write_back(self.fileno(), self._written_back, end - self._written_back)
            self._written_back = end

    def write(self, data: bytes) -> None:
        """
        Append C{data}; on a write error remember it and drop the rest.
        """
        if self._append(data):
            self._hash.update(data)

    def write_many(self, pieces: Iterable[bytes]) -> None:
        """
        Append each of C{pieces}, as L{write} does, each hashed in a second
        thread while the next is read and written (SHA-256 lets go of the
        GIL): on two cores a file assembled from blocks costs the longer of
        the two, not their sum. Blocking.
        """
        with ThreadPoolExecutor(1, thread_name_prefix="boxsync-hash") as pool:
            hashing: Future[None] | None = None
            for data in pieces:
                if not self._append(data):
                    break
                if hashing is not None:
                    hashing.result()
                hashing = pool.submit(self._hash.update, data)
            if hashing is not None:
                hashing.result()

    def _append(self, data: bytes) -> bool:
        """
        Write C{data} at the end, not hashed yet; on a write error remember
        it and drop the rest.

        @return: whether it was written.
        """
        if self.error is not None or self._fd is None:
            return False
        try:
            write_all(self._fd, [data])
        except OSError as e:
            self.error = DiskFull(e.errno, "no space left in the box") if _is_full(e) else e
            self.discard()
            return False
        self.size += len(data)
        self._write_back()
        return True

    @property
    def sha256(self) -> str:
        return str(self._hash.hexdigest())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def finish(self, mtime_ns: int) -> None:
        """
        Make the data durable and give the file its final mode and mtime.
        Runs in a thread.
        """
        if self._fd is None:
            raise ValueError("staging file already closed")
        try:
            os.fchmod(self._fd, 0o644)
            os.fsync(self._fd)
        finally:
            self.close()
        os.utime(self.path, ns=(mtime_ns, mtime_ns))
