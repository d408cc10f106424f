"""
Resuming a download: where the part a C{206} answer sends starts, which
version its C{ETag} names, and the hash of the part already on disk.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from twisted.web.iweb import IResponse

from ..wire import ProtocolError
from .transport import response_header

__all__ = ["HASH_BLOCK", "etag_sha256", "range_start", "hash_prefix"]

#: How much of a partial download is read at a time to seed its hash.
HASH_BLOCK = 1024 * 1024


def etag_sha256(response: IResponse) -> str | None:
    """
    The sha256 a response's C{ETag} names, if it has one.
    """
    etag = response_header(response, "ETag")
    if etag is None:
        return None
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"').lower()


def range_start(response: IResponse) -> int | None:
    """
    Where the part in a C{206} answer starts, from its C{Content-Range}.
    """
    value = response_header(response, "Content-Range")
    if value is None:
        return None
    unit, _, rest = value.strip().partition(" ")
    first, _, _ = rest.partition("-")
    if unit != "bytes" or not first.isdigit():
        return None
    return int(first)


def unsatisfied_size(response: IResponse) -> int | None:
    """
    The size of the whole file, from a C{416} answer's C{Content-Range}
    (C{bytes */SIZE}): a range asked for past its end.
    """
    value = response_header(response, "Content-Range")
    if value is None:
        return None
    unit, _, rest = value.strip().partition(" ")
    star, _, size = rest.partition("/")
    if unit != "bytes" or star != "*" or not size.isdigit():
        return None
    return int(size)


def hash_prefix(dest: Path, size: int) -> hashlib._Hash:
    """
    A sha256 of the first C{size} bytes of C{dest}, read a block at a time.
    """
    digest = hashlib.sha256()
    with dest.open("rb") as f:
        remaining = size
        while remaining > 0:
            block = f.read(min(HASH_BLOCK, remaining))
            if not block:
                raise ProtocolError(f"{dest} shrank while being resumed")
            digest.update(block)
            remaining -= len(block)
    return digest
