"""
Gathering the engine's small transfers into batches.

The engine moves each file in a job of its own. A burst of small files (a
checkout, an unpacked archive) would cost one request, one answer and one
commit each: more than the files themselves. L{Batcher} takes the small
uploads and downloads of all the jobs running at once and sends them a batch
at a time (C{POST /batch/upload}, C{POST /batch/download}), at most two
batches each way at once: while those are under way the next one grows, so a
lone change still goes at once, in a request of its own (a plain C{PUT} or
C{GET}, with no extra thread hop), and a burst goes in ever larger batches.
Each job still gets its own outcome, as if its file had moved alone.

A server that has no batches (it answers 404 or 405) gets each file on its
own from then on.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import deque
from pathlib import Path
from typing import Any, Awaitable, Callable, Container, Generic, Sequence, TypeVar

from attrs import define, evolve, field, frozen
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..fs import NEW_FILE_MODE, write_small
from ..wire import BATCH_MAX_FILES, BatchFile, ErrorAnswer, ProtocolError, Refusal
from .api import BoxsyncAPI
from .errors import APIError, DigestMismatch, error_from
from .results import CommitResult, DownloadResult

__all__ = ["Batcher", "BATCH_BYTES", "write_download"]

#: How many file bytes a batch gathers at most.
BATCH_BYTES = 4 * 1024 * 1024

_T = TypeVar("_T")
_R = TypeVar("_R")

#: Runs a function in a thread and fires with what it returned.
InThread = Callable[[Callable[[], Any]], "Deferred[Any]"]


@frozen
class _Upload:
    file: BatchFile
    local: Path
    # The bytes to send, if the engine has them already.
    data: bytes | None = None
    # Whether the server is known to have the content (a renamed file).
    known: bool = False


@frozen
class _Download:
    path: str
    dest: Path
    sha256: str
    size: int
    mtime_ns: int
    # Local files that may have the content, and the version it is.
    sources: Sequence[Path] = ()
    seq: int = 0
    executable: bool | None = None


@define(eq=False)
class _Lane(Generic[_T, _R]):
    """
    The queue of one direction: items wait here until a batch takes them.

    @ivar send: moves one batch, and gives back each item's outcome (a
        result or an exception), in order.
    @ivar size: the bytes an item adds to a batch.
    """

    clock: IReactorTime
    send: Callable[[list[_T]], Awaitable[list[_R | BaseException]]]
    size: Callable[[_T], int]
    max_in_flight: int = 2
    _waiting: deque[tuple[_T, Deferred[_R]]] = field(factory=deque)
    _in_flight: int = 0
    _scheduled: Any = None

    def add(self, item: _T) -> Deferred[_R]:
        done: Deferred[_R] = Deferred()
        self._waiting.append((item, done))
        self._schedule()
        return done

    def _schedule(self) -> None:
        # On the next turn of the reactor: whatever the other jobs add
        # meanwhile goes in the same batch.
        if self._waiting and self._scheduled is None and self._in_flight < self.max_in_flight:
            self._scheduled = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._scheduled = None
        batch: list[tuple[_T, Deferred[_R]]] = []
        size = 0
        while self._waiting and len(batch) < BATCH_MAX_FILES:
            item = self._waiting[0][0]
            if batch and size + self.size(item) > BATCH_BYTES:
                break
            batch.append(self._waiting.popleft())
            size += self.size(item)
        self._in_flight += 1
        Deferred.fromCoroutine(self._run(batch))
        self._schedule()

    async def _run(self, batch: list[tuple[_T, Deferred[_R]]]) -> None:
        try:
            try:
                outcomes = await self.send([item for item, _ in batch])
            except Exception as e:
                outcomes = [e] * len(batch)
            for (_, done), outcome in zip(batch, outcomes):
                if isinstance(outcome, BaseException):
                    done.errback(outcome)
                else:
                    done.callback(outcome)
        finally:
            self._in_flight -= 1
            self._schedule()


@define(eq=False)
class Batcher:
    """
    Sends the small uploads and downloads given to it in batches.

    @ivar api: the server's API.
    @ivar clock: schedules each batch.
    @ivar in_thread: runs the reading and writing of files off the reactor
        thread.
    @ivar supported: whether the server has batches (C{None}: not known yet).
    @ivar deletes_supported: whether the server has batch deletes (C{None}:
        not known yet).
    @ivar blocks: whether the server speaks blocks: a batch then asks it
        which of its files' contents it has already (a file renamed, copied
        or brought back), and sends those as stored parts, without bytes.
    """

    api: BoxsyncAPI
    clock: IReactorTime
    in_thread: InThread
    supported: bool | None = None
    blocks: bool = False
    log = Logger()
    deletes_supported: bool | None = None
    _uploads: _Lane[_Upload, CommitResult] = field(init=False)
    _downloads: _Lane[_Download, DownloadResult] = field(init=False)
    _deletes: _Lane[tuple[str, int], CommitResult] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._uploads = _Lane(self.clock, self._send_uploads, lambda item: item.file.size)
        self._downloads = _Lane(self.clock, self._send_downloads, lambda item: item.size)
        self._deletes = _Lane(self.clock, self._send_deletes, lambda item: 0)

    def delete(self, path: str, base: int) -> Deferred[CommitResult]:
        """
        Commit the deletion of C{path} at C{base}, in the next batch; the
        same outcomes as L{BoxsyncAPI.delete}.
        """
        return self._deletes.add((path, base))

    async def _send_deletes(self, items: list[tuple[str, int]]) -> list[CommitResult | BaseException]:
        if self.deletes_supported is False or len(items) == 1:
            return await _each(items, self._delete_alone)
        try:
            outcomes: list[CommitResult | BaseException] = list(await self.api.delete_batch(items))
        except APIError as e:
            if e.status not in (404, 405) or self.deletes_supported is not None:
                raise
            self.log.info("the server has no batch deletes: files are deleted one at a time")
            self.deletes_supported = False
            return await _each(items, self._delete_alone)
        self.deletes_supported = True
        return outcomes

    async def _delete_alone(self, item: tuple[str, int]) -> CommitResult:
        return await self.api.delete(*item)

    def upload(
        self, file: BatchFile, local: Path, data: bytes | None = None, known: bool = False
    ) -> Deferred[CommitResult]:
        """
        Commit C{data} (if given, else the first C{file.size} bytes of
        C{local}) as C{file} says, in the next batch; the same outcomes as
        L{BoxsyncAPI.upload}.

        @param known: the server is known to have the content (a file
            renamed here): it is sent as stored without asking first (with
            its bytes after all if the server no longer has it).
        """
        return self._uploads.add(_Upload(file, local, data, known))

    def download(
        self,
        path: str,
        dest: Path,
        sha256: str,
        size: int,
        mtime_ns: int,
        sources: Sequence[Path] = (),
        seq: int = 0,
        executable: bool | None = None,
    ) -> Deferred[DownloadResult]:
        """
        Fetch C{path} into C{dest}, in the next batch; the same outcomes as
        L{BoxsyncAPI.download} with C{sha256} expected. A file written by
        the batch gets C{mtime_ns}, and its result the stat of it.

        @param sources: local files that may have the content already (a
            file renamed or copied elsewhere): the first that has it is
            copied instead, as version C{seq} (C{executable} or not).
        """
        return self._downloads.add(_Download(path, dest, sha256, size, mtime_ns, sources, seq, executable))

    def _unsupported(self, error: APIError) -> bool:
        if error.status in (404, 405) and self.supported is None:
            self.log.info("the server has no batches: files move one at a time")
            self.supported = False
            return True
        return False

    async def _send_uploads(self, items: list[_Upload]) -> list[CommitResult | BaseException]:
        if self.supported is False or len(items) == 1:
            return await _each(items, self._upload_alone)
        sent = await self._stored(items) if self.blocks else items
        read: list[tuple[BatchFile, bytes] | FileNotFoundError]
        if all(item.data is not None for item in sent):
            read = _read_all(sent)  # nothing to read: no thread hop
        else:
            read = await self.in_thread(lambda: _read_all(sent))
        files = [each for each in read if not isinstance(each, FileNotFoundError)]
        try:
            answers = iter(await self.api.upload_batch(files) if files else [])
        except APIError as e:
            if not self._unsupported(e):
                raise
            return await _each(items, self._upload_alone)
        outcomes: list[CommitResult | BaseException] = [
            each if isinstance(each, FileNotFoundError) else next(answers) for each in read
        ]
        self.supported = True
        for i, (item, outcome) in enumerate(zip(sent, outcomes)):
            if item.file.stored and isinstance(outcome, APIError) and outcome.status == Refusal.MISSING_BLOCKS:
                # Gone from the server since it was asked: sent with its bytes.
                try:
                    outcomes[i] = await self._upload_alone(items[i])
                except Exception as e:
                    outcomes[i] = e
        return outcomes

    async def _stored(self, items: list[_Upload]) -> list[_Upload]:
        """
        C{items}, those whose content the server has already marked as
        stored (sent without their bytes).
        """
        hashes = list(dict.fromkeys(item.file.sha256 for item in items if item.file.size and not item.known))
        missing: Container[str] = ()
        if hashes:
            try:
                missing = await self.api.missing_blocks(hashes)
            except APIError:
                missing = hashes
        return [
            evolve(item, file=evolve(item.file, size=0, stored=True), data=b"")
            if item.file.size and item.file.sha256 not in missing
            else item
            for item in items
        ]

    async def _upload_alone(self, item: _Upload) -> CommitResult:
        file = item.file
        return await self.api.upload(
            file.path, item.local, file.base, file.sha256, file.mtime_ns, size=file.size, executable=file.executable
        )

    async def _send_downloads(self, items: list[_Download]) -> list[DownloadResult | BaseException]:
        if not any(item.sources for item in items):
            return await self._fetch(items)
        # Those whose content is here already are copied, in one thread hop.
        copies = await self.in_thread(lambda: [_copy_here(item) for item in items])
        fetched = iter(await self._fetch([item for item, copy in zip(items, copies) if copy is None]))
        return [next(fetched) if copy is None else copy for copy in copies]

    async def _fetch(self, items: list[_Download]) -> list[DownloadResult | BaseException]:
        if not items:
            return []
        if self.supported is False or len(items) == 1:
            return await _each(items, self._download_alone)
        try:
            parts = await self.api.download_batch([item.path for item in items])
        except APIError as e:
            if not self._unsupported(e):
                raise
            return await _each(items, self._download_alone)
        self.supported = True
        outcomes: list[DownloadResult | BaseException] = await self.in_thread(
            lambda: _write_all(items, parts)
        )
        for i, (item, outcome) in enumerate(zip(items, outcomes)):
            if isinstance(outcome, _Alone):
                # Not in this batch: fetched on its own (not queued again, as
                # the batch it would wait for may be this one's successor).
                try:
                    outcomes[i] = await self._download_alone(item)
                except Exception as e:
                    outcomes[i] = e
        return outcomes

    async def _download_alone(self, item: _Download) -> DownloadResult:
        return await self.api.download(item.path, item.dest, item.sha256)


async def _each(
    items: Sequence[_T], send: Callable[[_T], Awaitable[_R]]
) -> list[_R | BaseException]:
    """
    Send each of C{items} on its own, one after the other.
    """
    outcomes: list[_R | BaseException] = []
    for item in items:
        try:
            outcomes.append(await send(item))
        except CancelledError:
            raise
        except Exception as e:
            outcomes.append(e)
    return outcomes


def _read_all(items: Sequence[_Upload]) -> list[tuple[BatchFile, bytes] | FileNotFoundError]:
    """
    The bytes of each upload: those the engine gave, else the first C{size}
    bytes of its file (read in a thread). A file that shrank since it was
    hashed sends what is left: the server then refuses it for its sha256, as
    it would alone. A file gone since it was hashed (renamed or removed at
    once) is not sent: its place holds why.
    """
    files: list[tuple[BatchFile, bytes] | FileNotFoundError] = []
    for item in items:
        data = item.data
        if data is None:
            try:
                with open(item.local, "rb") as f:
                    data = f.read(item.file.size)
            except FileNotFoundError as e:
                files.append(e)
                continue
            except OSError:
                data = b""
        files.append((evolve(item.file, size=len(data)), data))
    return files


class _Alone(Exception):
    """
    The server left this file out of the batch (too large for one now, or
    the batch was full): fetch it on its own.
    """


def _write_all(
    items: Sequence[_Download], parts: Sequence[tuple[dict[str, Any], bytes]]
) -> list[DownloadResult | BaseException]:
    """
    Write each file of a batch download to its C{dest}, checking its sha256
    (in a thread).

    @return: for each item, its result, or why it was not written.
    """
    received = {header.get("path"): (header, data) for header, data in parts}
    outcomes: list[DownloadResult | BaseException] = []
    for item in items:
        if item.path not in received:
            outcomes.append(ProtocolError(f"the batch did not answer for {item.path!r}"))
            continue
        header, data = received[item.path]
        status = header.get("status")
        if status == 200:
            outcomes.append(_write(item, header, data))
        elif status in (Refusal.TOO_LARGE, Refusal.ASK_AGAIN):
            outcomes.append(_Alone())
        else:
            code = status if isinstance(status, int) else 500
            outcomes.append(error_from(ErrorAnswer.from_json(code, header)))
    return outcomes


def _copy_here(item: _Download) -> DownloadResult | None:
    """
    Copy to C{item.dest} the first of its sources that has its content, if
    one has (blocking).
    """
    for source in item.sources:
        try:
            # Not blocking on a FIFO that took the file's place.
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as f:
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                data = f.read(item.size + 1)
            except OSError:
                continue
        if len(data) != item.size:
            continue
        copied = write_download(item.path, item.dest, item.sha256, item.mtime_ns, item.seq, data, item.executable)
        if isinstance(copied, DownloadResult):
            return copied
    return None


def _write(item: _Download, header: dict[str, Any], data: bytes) -> DownloadResult | BaseException:
    seq = header.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return ProtocolError(f"the batch sent {item.path!r} without its seq")
    executable = header.get("executable")
    return write_download(
        item.path, item.dest, item.sha256, item.mtime_ns, seq, data, executable if isinstance(executable, bool) else None
    )


def write_download(
    path: str, dest: Path, sha256: str, mtime_ns: int, seq: int, data: bytes, executable: bool | None = None
) -> DownloadResult | BaseException:
    """
    Write C{data}, version C{seq} of C{path}, to C{dest} with the mtime
    C{mtime_ns}, if it has the sha256 C{sha256} (blocking).

    @return: the download's result, or why it was not written.
    """
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        return DigestMismatch(path, sha256, actual)
    try:
        # Not open(): a Python file object costs three system calls more,
        # and a batch writes hundreds of files.
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, NEW_FILE_MODE)
        try:
            write_small(fd, data, mtime_ns)
            placed = os.fstat(fd)
        finally:
            os.close(fd)
    except OSError as e:
        return e
    return DownloadResult(sha256=actual, size=len(data), seq=seq, placed=placed, executable=executable)
