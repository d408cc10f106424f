"""
The content codings a block travels in: zstd (C{zstandard}) where both sides
have it, gzip otherwise, nothing for bytes that do not shrink.

Whether a block shrinks is judged from a sample of it before the whole is
compressed, so a video or an archive costs one small compression, not one
of 4 MiB. Decoding is bounded: a block never decodes to more than the
caller's limit, whatever the sender claims (a "zip bomb" is refused after
the limit, never held).
"""

from __future__ import annotations

import zlib
from typing import Any, Iterable

import zstandard

__all__ = ["ACCEPTED", "DecodeError", "GzipStream", "accepted", "encode", "decode"]

#: What this side takes, best first, as an C{Accept-Encoding} value.
ACCEPTED = "zstd, gzip"

_KNOWN = ("zstd", "gzip")

#: How much of a block is compressed to judge whether the rest would
#: shrink, and the least it must shrink to be sent compressed.
_SAMPLE = 64 * 1024
_WORTH = 0.9

_ZSTD_LEVEL = 3
_GZIP_LEVEL = 1


class DecodeError(ValueError):
    """
    Bytes that are not what their coding says, or decode past the limit.
    """


def accepted(header: str | None) -> list[str]:
    """
    The codings an C{Accept-Encoding} header accepts that this side knows,
    best first (ours: zstd, then gzip), leaving out any with C{q=0}.
    """
    taken: set[str] = set()
    for item in (header or "").split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip().lower()
        if params.replace(" ", "").lower() in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
            continue
        taken.add(name)
    return [name for name in _KNOWN if name in taken]


def _compress(coding: str, data: bytes | memoryview) -> bytes:
    if coding == "zstd":
        return zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(data)
    compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def encode(data: bytes, codings: Iterable[str]) -> tuple[str | None, bytes]:
    """
    C{data} in the best of C{codings} if it shrinks enough for that to pay,
    else as it is.

    @return: the coding used (C{None}: none) and the bytes to send.
    """
    coding = next(iter(codings), None)
    if coding is None or len(data) < 1024:
        return None, data
    sample = memoryview(data)[:_SAMPLE]
    if len(_compress(coding, sample)) > len(sample) * _WORTH:
        return None, data
    packed = _compress(coding, data)
    if len(packed) > len(data) * _WORTH:
        return None, data
    return coding, packed


def decode(data: bytes, coding: str | None, limit: int) -> bytes:
    """
    The bytes C{data} stands for in C{coding}.

    @raise DecodeError: if C{coding} is unknown, C{data} is not in it, or
        it decodes to more than C{limit} bytes.
    """
    if coding is None or coding == "identity":
        result = data
    elif coding == "zstd":
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(data)
            pieces: list[bytes] = []
            left = limit + 1
            while left > 0 and (piece := reader.read(left)):
                pieces.append(piece)
                left -= len(piece)
            result = b"".join(pieces)
        except zstandard.ZstdError as e:
            raise DecodeError(f"not zstd: {e}") from None
    elif coding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            result = inflater.decompress(data, limit + 1)
        except zlib.error as e:
            raise DecodeError(f"not gzip: {e}") from None
        if len(result) <= limit and not inflater.eof:
            raise DecodeError("gzip data is cut short")
    else:
        raise DecodeError(f"unknown content coding {coding!r}")
    if len(result) > limit:
        raise DecodeError(f"decodes to more than {limit} bytes")
    return result


class GzipStream:
    """
    A stream of writes (an event stream) in gzip, each write flushed whole
    so the reader can decode it at once (treq's client does, as it comes).

    Its writes are compressed in one small window (alike writes, such as a
    plan's JSON events, shrink to about a quarter) until L{settle}; from
    then on each goes as a stored block, as it is, and the compressor's
    memory is freed: a stream held open for hours, among thousands, costs
    nothing more than one sent as it is.
    """

    def __init__(self) -> None:
        self._deflater: Any = zlib.compressobj(
            _GZIP_LEVEL, zlib.DEFLATED, 16 + _STREAM_WBITS, _STREAM_MEMLEVEL
        )
        # The gzip header, which goes before the first write, however it goes.
        self._head: bytes = self._deflater.flush(zlib.Z_SYNC_FLUSH)

    def encode(self, data: bytes) -> bytes:
        head, self._head = self._head, b""
        if self._deflater is None:
            stored = (_stored(data[start : start + 0xFFFF]) for start in range(0, len(data), 0xFFFF))
            return head + b"".join(stored)
        return head + self._deflater.compress(data) + self._deflater.flush(zlib.Z_SYNC_FLUSH)

    def settle(self) -> None:
        """
        Send each write from now on as it is (in stored blocks).
        """
        self._deflater = None


#: The window and memory level of a L{GzipStream}: 24 KiB of memory
#: instead of zlib's 256 KiB, for events a few hundred bytes long.
_STREAM_WBITS = 12
_STREAM_MEMLEVEL = 2


def _stored(data: bytes) -> bytes:
    """
    C{data} (at most 65,535 bytes) as a deflate stored block, not the last:
    after a sync flush the stream is at a byte boundary, where it may go.
    """
    size = len(data)
    return b"\x00" + size.to_bytes(2, "little") + (size ^ 0xFFFF).to_bytes(2, "little") + data
