"""
One account's box: where its storage, its index rows and its listeners meet.

Every change of the box goes through L{Box.upload} or L{Box.delete}: check the
base, move the bytes, commit the row under the next seq, tell the listeners.
The HTTP routes of every protocol (boxsync's own and the legacy one) call
these and nothing lower.
"""

from __future__ import annotations

import time

from attrs import define, field
from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from ..protocol import Delete, Download
from .hub import Hub
from .index import FileRecord, IIndex
from .storage import BoxStorage, StagingFile

__all__ = ["Box", "StaleBase", "NotFound", "DigestMismatch"]


class StaleBase(Exception):
    """
    The path is no longer at the base the change started from.
    """

    def __init__(self, path: str, current: int) -> None:
        super().__init__(f"{path!r} has changed on the server (now at seq {current})")
        self.current = current


class NotFound(Exception):
    """
    No live file at that path.
    """


class DigestMismatch(ValueError):
    """
    The uploaded bytes do not have the sha256 the client announced.
    """


def _row_seq(row: FileRecord | None) -> int:
    return 0 if row is None else row.seq


@define
class Box:
    account: str
    index: IIndex
    storage: BoxStorage
    hub: Hub
    _lock: DeferredLock = field(factory=DeferredLock)
    log = Logger()

    async def _check_base(self, path: str, base: int | None) -> FileRecord | None:
        row: FileRecord | None = await self.index.get(self.account, path)
        if base is not None:
            current = _row_seq(row)
            # Base 0 also matches a tombstone: a deleted path is free again.
            if base != current and not (base == 0 and row is not None and row.deleted):
                raise StaleBase(path, current)
        return row

    async def upload(
        self,
        path: str,
        staged: StagingFile,
        base: int | None,
        sha256: str | None,
        mtime_ns: int | None,
        origin: str = "",
        stream: str | None = None,
    ) -> FileRecord:
        """
        Commit C{staged} as the new version of C{path}.

        @param base: the seq the upload started from; C{None} for last
            writer wins.
        @param sha256: the digest the client announced, if any.
        @raise StaleBase: if C{path} has moved on from C{base}.
        @raise DigestMismatch: if the bytes do not match C{sha256}.
        """
        try:
            if sha256 is not None and sha256 != staged.sha256:
                raise DigestMismatch(
                    f"body has sha256 {staged.sha256}, not {sha256} as announced"
                )
            await self._lock.acquire()
        except BaseException:
            staged.discard()
            raise
        try:
            try:
                await self._check_base(path, base)
            except BaseException:
                staged.discard()
                raise
            if mtime_ns is None:
                mtime_ns = time.time_ns()
            await self.storage.place(staged, path, mtime_ns)
            record = await self.index.commit(
                self.account,
                FileRecord(path, staged.size, staged.sha256, mtime_ns, 0, False, origin),
            )
        finally:
            self._lock.release()
        self.log.info(
            "{origin} uploaded {path} ({size} bytes) as seq {seq}",
            origin=origin or "a client",
            path=path,
            size=record.size,
            seq=record.seq,
        )
        self.hub.publish(
            self.account,
            Download(path, record.sha256, record.size, record.mtime_ns, record.seq),
            exclude=stream,
        )
        return record

    async def delete(
        self, path: str, base: int | None, origin: str = "", stream: str | None = None
    ) -> FileRecord:
        """
        Delete C{path}: remove the file, commit a tombstone.

        @raise NotFound: if there is no live file at C{path}.
        @raise StaleBase: if C{path} has moved on from C{base}.
        """
        async with self._lock:
            row = await self._check_base(path, base)
            if row is None or row.deleted:
                raise NotFound(path)
            await self.storage.remove(path)
            record = await self.index.commit(
                self.account,
                FileRecord(path, 0, row.sha256, time.time_ns(), 0, True, origin),
            )
        self.log.info(
            "{origin} deleted {path} as seq {seq}",
            origin=origin or "a client",
            path=path,
            seq=record.seq,
        )
        self.hub.publish(self.account, Delete(path, record.seq), exclude=stream)
        return record
