"""
What a file is made of: its blocks, cut where its content says (FastCDC,
from C{pyfastcdc}), each named by its sha256, and the sha256 of the whole.

A file's L{Recipe} is the same wherever it is computed: an insert or a
delete in the middle of a file changes the one or two blocks around it and
no other, and a renamed, copied or moved file keeps all of its blocks. Both
programs cut and hash here and nowhere else.

Everything here is synchronous and blocking: callers run it in a thread.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from attrs import frozen
from pyfastcdc import FastCDC

__all__ = [
    "BLOCK_AVERAGE",
    "BLOCK_MAX",
    "BLOCK_MIN",
    "Block",
    "Cutter",
    "RunningDigest",
    "holds",
    "Recipe",
    "recipe_of",
    "recipe_of_bytes",
    "block_of",
    "read_block",
]

#: The smallest block (but a file's last): a file up to this size is one
#: block, whose sha256 is the file's.
BLOCK_MIN = 256 * 1024
#: FastCDC's target: blocks come out at ~1.25 MiB on average (its average
#: plus the minimum), some 800 to a GiB.
BLOCK_AVERAGE = 1024 * 1024
#: The largest block: an edit changes at most two blocks of this size.
BLOCK_MAX = 4 * 1024 * 1024

#: How much of a file is read at a time while it is cut.
_READ_SIZE = 8 * 1024 * 1024


def _chunker() -> FastCDC:
    return FastCDC(BLOCK_AVERAGE, min_size=BLOCK_MIN, max_size=BLOCK_MAX)


@frozen
class Block:
    """
    One block of a file: its sha256 (hex) and its size.
    """

    sha256: str
    size: int


@frozen
class Recipe:
    """
    A file's content: its sha256 and size, and the blocks it is made of, in
    order.
    """

    sha256: str
    size: int
    blocks: tuple[Block, ...]

    def placed(self) -> Iterator[tuple[int, Block]]:
        """
        Each block with its offset in the file.
        """
        offset = 0
        for block in self.blocks:
            yield offset, block
            offset += block.size


def block_of(data: bytes | memoryview) -> Block:
    """
    The L{Block} that C{data} is.
    """
    return Block(hashlib.sha256(data).hexdigest(), len(data))


def recipe_of_bytes(data: bytes) -> Recipe:
    """
    The L{Recipe} of a file whose bytes are C{data}.
    """
    whole = hashlib.sha256(data).hexdigest()
    if len(data) <= BLOCK_MIN:
        return Recipe(whole, len(data), (Block(whole, len(data)),) if data else ())
    return Recipe(whole, len(data), tuple(block_of(chunk.data) for chunk in _chunker().cut_buf(data)))


class _Limited:
    """
    The first C{limit} bytes of a file, for L{FastCDC.cut_stream}.
    """

    def __init__(self, fd: int, limit: int) -> None:
        self._fd = fd
        self._left = limit
        self.size = 0

    def readinto(self, buffer: memoryview) -> int:
        want = min(len(buffer), self._left)
        if want <= 0:
            return 0
        count = os.readv(self._fd, [buffer[:want]])
        self.size += count
        self._left -= count
        return count


def _block_at(fd: int, offset: int, size: int) -> Block:
    """
    The L{Block} of the C{size} bytes of C{fd} at C{offset}, as the cut
    found them: of that size whatever is read now (a file cut short since
    makes a block no bytes match, refused wherever it is sent).
    """
    return Block(hashlib.sha256(os.pread(fd, size, offset)).hexdigest(), size)


def _whole(fd: int, start: int, limit: int) -> str:
    """
    The sha256 of C{limit} bytes of C{fd} from C{start} (fewer at its end).
    """
    digest = hashlib.sha256()
    offset, end = start, start + limit
    while offset < end and (piece := os.pread(fd, min(_READ_SIZE, end - offset), offset)):
        digest.update(piece)
        offset += len(piece)
    return digest.hexdigest()


class Cutter:
    """
    A file being cut into its blocks, a few at a time (so what is cut can
    be sent while the rest is cut): L{take} the next blocks, then L{finish}
    for the whole L{Recipe}. The whole file's sha256 is computed in a
    second thread meanwhile, and each block's in a third, as the cut goes
    on (SHA-256 lets go of the GIL). If the file changes meanwhile, they do
    not agree, and the server refuses the recipe.

    Blocking: use it from one thread at a time. The descriptor is the
    caller's to close, after L{finish}.
    """

    def __init__(self, fd: int, limit: int | None = None) -> None:
        start = os.lseek(fd, 0, os.SEEK_CUR)
        size = os.fstat(fd).st_size - start if limit is None else limit
        self._small: Recipe | None = None
        self._blocks: list[Block] = []
        self._offset = 0
        self._pool: ThreadPoolExecutor | None = None
        if size <= BLOCK_MIN:
            # One block, whose hash is the whole file's (unless it grew
            # meanwhile: what was read is cut as any other bytes).
            self._small = recipe_of_bytes(_read_up_to(fd, BLOCK_MAX if limit is None else limit))
            self._pending = list(self._small.placed())
            return
        self._pending = []
        # One thread hashes the whole file, the other each block cut.
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="boxsync-hash")
        self._whole = self._pool.submit(_whole, fd, start, size)
        self._fd = fd
        self._start = start
        self._source = _Limited(fd, size)
        self._chunks = _chunker().cut_stream(self._source)

    def take(self, count: int) -> list[tuple[int, Block]]:
        """
        Up to C{count} more blocks, each with its offset; none once all
        were taken.
        """
        if self._small is not None:
            taken, self._pending = self._pending[:count], self._pending[count:]
            return taken
        assert self._pool is not None
        hashing = []
        for chunk in itertools.islice(self._chunks, count):
            # Its bytes are read again (from the page cache) to be hashed
            # while the next block is cut: the cutter's own are valid only
            # until then.
            hashing.append((self._offset, self._pool.submit(_block_at, self._fd, self._start + self._offset, chunk.length)))
            self._offset += chunk.length
        taken = [(offset, hashed.result()) for offset, hashed in hashing]
        self._blocks.extend(block for _, block in taken)
        return taken

    def finish(self) -> Recipe:
        """
        The recipe of what was cut (all of it: call L{take} until it gives
        nothing first).
        """
        if self._small is not None:
            return self._small
        assert self._pool is not None
        try:
            sha256 = self._whole.result()
        finally:
            self._pool.shutdown()
        return Recipe(sha256, self._source.size, tuple(self._blocks))

    def close(self) -> None:
        """
        Stop, if it was not finished (the second thread is waited for).
        """
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def recipe_of(path: str | Path | int, limit: int | None = None) -> Recipe:
    """
    The L{Recipe} of a file (given as an open descriptor, it is left open
    and read from where it stands).

    @param limit: read no more than this many bytes of it.
    """
    fd = path if isinstance(path, int) else os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        cutter = Cutter(fd, limit)
        try:
            while cutter.take(1024):
                pass
            return cutter.finish()
        finally:
            cutter.close()
    finally:
        if not isinstance(path, int):
            os.close(fd)


def _read_up_to(fd: int, count: int) -> bytes:
    pieces = []
    while count > 0 and (piece := os.read(fd, count)):
        pieces.append(piece)
        count -= len(piece)
    return b"".join(pieces)


def read_block(fd: int, offset: int, block: Block, check: bool = True) -> bytes | None:
    """
    The bytes of C{block} at C{offset} in the open file C{fd}, if they are
    still there (a file changed since its blocks were listed gives
    C{None}; unless C{check} is false, when only the size is checked).
    """
    data = os.pread(fd, block.size, offset)
    if len(data) != block.size or (check and hashlib.sha256(data).hexdigest() != block.sha256):
        return None
    return data


def holds(fd: int, recipe: Recipe) -> bool:
    """
    Whether the open file C{fd} is the version C{recipe} is of: its size,
    and each block's sha256 at its place, hashed on up to four cores at
    once (unlike the whole file's sha256, its blocks' can be). Blocking.
    """
    if os.fstat(fd).st_size != recipe.size:
        return False
    pool = ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="boxsync-check")
    try:
        checks = pool.map(lambda placed: read_block(fd, *placed) is not None, recipe.placed())
        return all(checks)
    finally:
        # What is still queued once one block is found wrong is not read.
        pool.shutdown(cancel_futures=True)


class RunningDigest:
    """
    The sha256 of the first C{size} bytes of a file written a block at a
    time, in any order: each block is hashed as soon as every byte before
    it is, from memory while those waiting for an earlier one hold at most
    C{waiting_max} bytes, read back from the file past that. Once every
    byte is in, the file need not be read again to know its sha256.

    Thread-safe: blocks may be written by several threads.
    """

    def __init__(self, fd: int, size: int, waiting_max: int = 4 * BLOCK_MAX) -> None:
        self._fd = fd
        self.size = size
        self._waiting_max = waiting_max
        self._digest = hashlib.sha256()
        self._at = 0
        #: What waits for an earlier block: its bytes, or how many there
        #: are (to read back from the file).
        self._waiting: dict[int, bytes | int] = {}
        self._held = 0
        self._broken = False
        self._lock = threading.Lock()

    def wrote(self, offset: int, data: bytes) -> None:
        """
        C{data} was written at C{offset} in the file (what was written
        there before, if anything, can no longer be vouched for).
        """
        with self._lock:
            if offset < self._at or offset + len(data) > self.size or offset in self._waiting:
                self._broken = True
            if self._broken:
                return
            if offset == self._at:
                self._digest.update(data)
                self._at += len(data)
            elif self._held + len(data) <= self._waiting_max:
                self._waiting[offset] = data
                self._held += len(data)
            else:
                self._waiting[offset] = len(data)
            while self._at in self._waiting:
                waiting = self._waiting.pop(self._at)
                if isinstance(waiting, bytes):
                    self._held -= len(waiting)
                else:
                    count, waiting = waiting, os.pread(self._fd, waiting, self._at)
                    if len(waiting) != count:
                        self._broken = True
                        return
                self._digest.update(waiting)
                self._at += len(waiting)

    def hexdigest(self) -> str | None:
        """
        The sha256 of the C{size} bytes written, once they all are and none
        was written over; else C{None}.
        """
        with self._lock:
            if self._broken or self._at != self.size:
                return None
            return self._digest.hexdigest()
