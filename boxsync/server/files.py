"""
Sending one file of the box: C{static.File} (HEAD, Range, Last-Modified)
with the file's sha256 as its C{ETag}, its seq and whether it is executable.
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO, Callable

from twisted.web import static
from twisted.web.iweb import IRequest

from ..paths import normalize
from ..wire import EXECUTABLE_HEADER, SEQ_HEADER
from .box import Box, NotFound
from .http import header
from .index import FileRecord

__all__ = ["BoxFile", "box_file"]


class BoxFile(static.File):
    """
    One file of the box, sent by C{static.File} (HEAD, Range, Last-Modified)
    with larger reads, an C{ETag} of its sha256, its seq and whether it is
    executable: sent from the
    file opened when it was found, never opened again by name.

    @ivar sending: told of each response about to send the file (the
        request, and the producer that writes it), if set.
    """

    isLeaf = True
    sending: Callable[[IRequest, Any], None] | None = None

    def __init__(self, opened: BinaryIO, name: str, record: FileRecord) -> None:
        super().__init__(name, defaultType="application/octet-stream")
        self.opened = opened
        self.record = record

    def restat(self, reraise: bool = True) -> None:
        self._statinfo = os.fstat(self.opened.fileno())

    def openForReading(self) -> BinaryIO:
        return self.opened

    def render_GET(self, request: IRequest) -> Any:
        etag = f'"{self.record.sha256}"'
        request.setHeader(b"ETag", etag.encode())
        request.setHeader(SEQ_HEADER.encode(), str(self.record.seq).encode())
        request.setHeader(EXECUTABLE_HEADER.encode(), b"1" if self.record.executable else b"0")
        if_range = header(request, "If-Range")
        ranges = request.requestHeaders.getRawHeaders(b"Range", [b""])[-1]
        if (if_range is not None and if_range.strip() != etag) or not ranges.isascii():
            # A range of another version, or one that is not even ASCII (a
            # malformed Range is ignored: RFC 9110, 14.2): the whole file.
            request.requestHeaders.removeHeader(b"Range")
        return super().render_GET(request)

    render_HEAD = render_GET

    def _rangeToOffsetAndSize(self, start: int | None, end: int | None) -> tuple[int, int]:
        # static.File turns a suffix range longer than the file ("bytes=-333"
        # of 10 bytes) into a negative offset and fails mid-response; it
        # means the whole file (RFC 9110, 14.1.2).
        if start is None and end is not None:
            end = min(end, self.getFileSize())
        offset, size = super()._rangeToOffsetAndSize(start, end)
        return offset, size

    def _doMultipleRangeRequest(self, request: IRequest, byteRanges: list[Any]) -> Any:
        parts = super()._doMultipleRangeRequest(request, byteRanges)
        if parts == ([], b""):
            # static.File sets up a 416 when no range of several is in the
            # file, but returns this instead of a list of parts, and its
            # producer fails on it: send no part at all.
            request.setHeader(b"Content-Type", b"application/octet-stream")
            return [(b"", 0, 0)]
        return parts

    def makeProducer(self, request: IRequest, fileForReading: Any) -> Any:
        producer = super().makeProducer(request, fileForReading)
        producer.bufferSize = 256 * 1024
        if self.sending is not None:
            self.sending(request, producer)
        return producer


async def box_file(box: Box, path: str) -> BoxFile:
    """
    The live file at C{path}, ready to send.

    @raise BadPath: if C{path} is not acceptable.
    @raise NotFound: if the box has no live file there.
    """
    path = normalize(path)
    record: FileRecord | None = await box.index.get(box.account, path)
    opened = None if record is None or record.deleted else box.storage.open_file(path)
    if record is None or opened is None:
        raise NotFound(f"{path!r} is not in the box")
    return BoxFile(opened, path.rsplit("/", 1)[-1], record)
