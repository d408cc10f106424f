"""
The bodies of uploads: a file read from disk by a C{FileBodyProducer},
stopped at the size it had when it was hashed, or hashed as it is read and
followed by its sha256.
"""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO, Callable

from attrs import define, field
from twisted.internet.task import Cooperator
from twisted.web.client import FileBodyProducer

from ..wire import SHA256_TRAILER
from .sockets import READ_SIZE

__all__ = ["Prefix", "Hashing", "file_body"]


@define
class Prefix:
    """
    The first C{left} bytes of a file open for reading, for a
    C{FileBodyProducer} (which would otherwise read on to whatever end the
    file has by then).
    """

    file: BinaryIO
    left: int

    def read(self, size: int) -> bytes:
        data = self.file.read(min(size, self.left))
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.file.close()


@define
class Hashing:
    """
    A file being sent, hashed as it is read: once C{size} bytes are read,
    their sha256 (hex) follows, or, if they are fewer or C{unchanged} says
    the file changed meanwhile, a digest of no file.
    """

    file: Prefix
    size: int
    unchanged: Callable[[], bool]
    _digest: hashlib._Hash = field(factory=hashlib.sha256)
    _read: int = 0
    _ended: bool = False

    def read(self, size: int) -> bytes:
        data = self.file.read(size)
        if data:
            self._digest.update(data)
            self._read += len(data)
            return data
        if self._ended:
            return b""
        self._ended = True
        if self._read != self.size or not self.unchanged():
            return b"0" * SHA256_TRAILER
        return self._digest.hexdigest().encode("ascii")

    def close(self) -> None:
        self.file.close()


def file_body(
    file: BinaryIO,
    cooperator: Cooperator,
    size: int | None = None,
    trailer: bool = False,
    unchanged: Callable[[], bool] | None = None,
) -> FileBodyProducer:
    """
    The body of an upload of C{file}: its first C{size} bytes (all of it by
    default), followed, with C{trailer}, by their sha256 (see L{Hashing}).
    """
    source: BinaryIO | Prefix | Hashing = file if size is None else Prefix(file, size)
    length = size
    if trailer:
        if size is None:
            size = os.fstat(file.fileno()).st_size
        source = Hashing(Prefix(file, size), size, unchanged or (lambda: True))
        length = size + SHA256_TRAILER
    body = FileBodyProducer(source, cooperator, readSize=READ_SIZE)
    if length is not None:
        body.length = length
    return body
