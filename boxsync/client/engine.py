"""
The sync engine: keeps one folder identical to the box.

It scans the folder, opens the event stream with a manifest of what changed,
and works through the plan and the live events; the folder watcher feeds it
local changes. Every change to a file goes through one job at a time per
path, a few jobs at once in all. Nothing is ever overwritten or deleted
unless it is unchanged since its base: otherwise the local copy is kept as a
conflict copy first.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import random
import stat
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from attrs import define, evolve, field
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredLock,
    DeferredSemaphore,
)
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..fs import prune
from ..paths import HIDDEN_DIR, BadPath, to_local
from ..protocol import (
    BATCH_FILE_LIMIT,
    SHA256_TRAILER_FEATURE,
    Conflict,
    Delete,
    Download,
    Event,
    Hello,
    InSync,
    Ready,
    Remove,
    Upload,
)
from .api import (
    APIError,
    AuthError,
    BoxsyncAPI,
    CommitResult,
    DigestMismatch,
    DownloadResult,
    NotFound,
    StaleBase,
)
from .batch import Batcher
from .connect import describe_failure, unwrap
from .ignore import IgnoreRules
from .progress import Reporter
from .placing import TMP_DAYS, conflict_name, placed_base, remove_older, swap
from .scanner import (
    FileChanging,
    LocalFile,
    ReadElsewhere,
    ScanResult,
    scan,
    scan_one,
    unchanged,
)
from .state import UNKNOWN_CTIME, Base, LocalState

__all__ = ["Engine", "Fatal", "NotInSync"]

#: Errors that stop the client: retrying would not help.
Fatal = (AuthError,)

#: What writing to a full disk (or past a quota or a size limit) fails with.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

#: Files up to this size are read (to hash them) on the reactor's thread:
#: from the page cache that costs less than a hop to a thread and back.
INLINE_READ = 64 * 1024

#: A transfer of a file up to this size goes in a batch, and needs only a job
#: slot; a larger one goes alone, and also needs one of the C{transfers} slots.
SMALL_FILE = BATCH_FILE_LIMIT

_T = TypeVar("_T")


class NotInSync(Exception):
    """
    With C{once}: the folder could not be brought in sync (the reason is
    the last failure).
    """


@define
class Engine:
    """
    @ivar once: stop as soon as the folder and the box agree.
    @ivar transfers: how many transfers of files larger than L{SMALL_FILE}
        run at once.
    @ivar jobs: how many jobs run at once; the small transfers of all of
        them are gathered into batches (L{Batcher}), so a burst of small
        files moves this many at a time.
    """

    reactor: Any
    root: Path
    api: BoxsyncAPI
    state: LocalState
    ignore: IgnoreRules
    reporter: Reporter
    name: str
    once: bool = False
    transfers: int = 4
    jobs: int = 256
    max_backoff: float = 30.0
    rescan_seconds: float = 300.0
    log = Logger()

    _semaphore: DeferredSemaphore = field(init=False)
    _large: DeferredSemaphore = field(init=False)
    # The paths with a local change queued whose job has not started yet.
    _queued: set[str] = field(factory=set)
    _locks: dict[str, DeferredLock] = field(factory=dict)
    _active: int = 0
    _plan_seq: int | None = None
    _seen_seq: int = 0
    _failed: bool = False
    _stream: Any = None
    _stopping: bool = False
    _resync: bool = False
    # The sha256 of each file as this session's manifest reported it.
    _sent: dict[str, str] = field(factory=dict)
    # The files this session's scan hashed, until first looked at again.
    _hashed: dict[str, LocalFile] = field(factory=dict)
    #: Whether the server takes an upload's sha256 after its bytes.
    _trailers: bool = False
    _synced: bool = False
    last_error: str | None = None
    _idle_waiters: list[Deferred[None]] = field(factory=list)
    _wake: Deferred[None] | None = None
    _tmp: Path = field(init=False)
    _batcher: Batcher = field(init=False)
    # The paths (hashed, as in the names of their downloads) that may have
    # an unfinished download of another version in the temporary folder.
    _partial: set[str] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._semaphore = DeferredSemaphore(max(self.jobs, self.transfers))
        self._large = DeferredSemaphore(self.transfers)
        self._batcher = Batcher(self.api, self.reactor, self._thread)
        if self.state.later is None:
            # The bases recorded by the jobs of one turn of the reactor (a
            # batch's files) are written in one transaction.
            self.state.later = lambda write: self.reactor.callLater(0, write)
        self._tmp = self.root / HIDDEN_DIR / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        kept = remove_older(self._tmp, time.time() - TMP_DAYS * 86400)
        self._partial = {name.split("-")[1] for name in kept if name.startswith("dl-")}

    # Running

    async def run(self) -> None:
        """
        Sync until stopped (or, with C{once}, until in sync).

        @raise AuthError: if the server refuses the credentials.
        """
        failures = 0
        while not self._stopping:
            self._resync = False
            try:
                if await self._session():
                    return
                reason = self.last_error or "the server closed the stream"
            except Fatal:
                raise
            except CancelledError:
                if self._stopping:
                    return
                if not self._resync:
                    raise
                reason = self.last_error or "a change raced with another client's"
            except Exception as e:
                if self.once and failures >= 2:
                    raise
                reason = _describe(e)
            else:
                if self.once and failures >= 4:
                    raise NotInSync(reason)
                if not self._failed:
                    failures = 0
            if self._synced:
                # All was well until now: this trouble is new, so the
                # back-off starts over rather than where the last one ended.
                failures = 0
            failures += 1
            delay = min(self.max_backoff, 0.25 * 2 ** min(failures, 10))
            delay *= random.uniform(0.5, 1.0)
            self.log.info(
                "resyncing in {delay:.1f} s: {reason}", reason=reason, delay=delay
            )
            await self._sleep(delay)

    def stop(self) -> None:
        """
        Stop: close the stream; running transfers are abandoned cleanly (a
        download leaves no partial file in the folder).
        """
        self._stopping = True
        if self._stream is not None:
            self._stream.cancel()
        if self._wake is not None and not self._wake.called:
            self._wake.cancel()

    async def _sleep(self, seconds: float) -> None:
        self._wake = deferLater(self.reactor, seconds, lambda: None)
        try:
            await self._wake
        except CancelledError:
            pass
        finally:
            self._wake = None

    async def _session(self) -> bool:
        """
        One connection: scan, send the manifest, act on the plan and on live
        events until the stream ends (or, with C{once}, until in sync).

        @return: whether it ended in sync.
        """
        self._plan_seq = None
        self._failed = False
        self._synced = False
        self.last_error = None
        self._trailers = SHA256_TRAILER_FEATURE in await self.api.features()
        result = await self.scan()
        cursor = self.state.cursor
        manifest = result.to_manifest(self.name, cursor, only_changed=cursor > 0)
        self._sent = {e.path: e.sha256 for e in manifest.files if e.sha256 is not None}
        self._hashed = {
            path: file for path, file in result.files.items() if file.changed or file.base == 0
        }
        self.log.info(
            "connecting to {url}: {files} files to report, cursor {cursor}",
            url=self.api.base_url,
            files=len(manifest.files) + len(manifest.deleted),
            cursor=cursor,
        )
        stream = await self.api.open_stream(manifest, cursor or None, self._on_event)
        self._stream = stream
        try:
            if self.once and await _first(self.idle(), stream.done) is not stream.done:
                # In sync, unless a job failed: then try again.
                return not self._failed
            await stream.done
            return False
        finally:
            self._stream = None
            if not stream.done.called:
                stream.cancel()
                stream.done.addErrback(lambda failure: failure.trap(CancelledError))

    def idle(self) -> Deferred[None]:
        """
        Fires once the plan is done and no job is running or waiting.
        """
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        self._check_idle()
        return d

    @property
    def pending(self) -> int:
        """
        How many jobs are running or waiting.
        """
        return self._active

    @property
    def in_sync(self) -> bool:
        """
        Whether a stream is open, its plan is done, and no job is left or failed.
        """
        return self._stream is not None and self._plan_seq is not None and not (self._active or self._failed)

    def _check_idle(self) -> None:
        if self._active or self._plan_seq is None:
            return
        if not self._failed:
            self._synced = True
            seq = max(self._plan_seq, self._seen_seq)
            if seq > self.state.cursor:
                self.state.cursor = seq
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)

    async def scan(self) -> ScanResult:
        """
        Scan the folder (in a thread) and record what the scan refreshed.
        """
        self.ignore.reload()
        bases = self.state.all()
        unhashed = self._unhashed_over()
        result: ScanResult = await self._thread(
            lambda: scan(self.root, bases, self.ignore, unhashed)
        )
        if result.refreshed:
            self.state.put_many(result.refreshed)
        for skipped in result.skipped:
            self.log.warn("not syncing {path}: {reason}", path=skipped.path, reason=skipped.reason)
        return result

    def _unhashed_over(self) -> int | None:
        """
        The size over which a new file is not hashed before its upload but
        as it is sent, if the server takes that (files that move alone).
        """
        return SMALL_FILE if self._trailers else None

    def _thread(self, fn: Callable[[], Any]) -> Deferred[Any]:
        from twisted.internet.threads import deferToThreadPool

        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn)

    # Events from the server

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Hello):
            self.api.stream_id = event.stream
            return
        if isinstance(event, Ready):
            self._plan_seq = event.seq
            self._seen_seq = max(self._seen_seq, event.seq)
            self.log.info("plan received; up to seq {seq}", seq=event.seq)
            self._check_idle()
            return
        if isinstance(event, (Download, Delete)) and self._plan_seq is not None:
            self._seen_seq = max(self._seen_seq, event.seq)
        handlers: dict[type, Callable[[Any], Awaitable[None]]] = {
            Upload: self._upload_event,
            Download: self._download,
            Delete: self._delete_local,
            Remove: self._remove_event,
            Conflict: self._conflict_event,
            InSync: self._insync,
        }
        handler = handlers[type(event)]
        self.submit(event.path, lambda: handler(event))  # type: ignore[union-attr]

    # Local changes (from the watcher)

    def changed(self, path: str) -> None:
        if path in self._queued:
            # A job that has not looked yet will see this change too.
            return
        base = self.state.get(path)
        if base is not None and unchanged(self.root, path, base):
            # Most often the watcher's report of a file this client has
            # just placed: a job would find it unchanged too.
            return
        self._queued.add(path)

        async def job() -> None:
            self._queued.discard(path)
            await self._local_change(path)

        self.submit(path, job)

    def deleted(self, path: str) -> None:
        for base in self.state.under(path):
            self.changed(base.path)

    def rescan(self) -> None:
        Deferred.fromCoroutine(self._rescan()).addErrback(
            lambda f: self.log.failure("rescan failed", f)
        )

    async def _rescan(self) -> None:
        result = await self.scan()
        for file in result.files.values():
            if file.changed or file.base == 0:
                self.changed(file.path)
        for deleted in result.deleted:
            self.changed(deleted.path)

    # Jobs

    def submit(self, path: str, job: Callable[[], Awaitable[None]]) -> Deferred[None]:
        """
        Run C{job} after every earlier job on C{path}, within the limit of
        jobs at once.
        """
        self._active += 1
        lock = self._locks.get(path)
        if lock is None:
            lock = self._locks[path] = DeferredLock()

        async def run() -> None:
            async with lock:
                await self._semaphore.acquire()
                try:
                    await job()
                finally:
                    # On a fresh stack: released here, the token would resume
                    # the next waiting job inside this one, and a long queue
                    # of jobs that finish at once would nest until Python's
                    # recursion limit (and lose the jobs past it).
                    self.reactor.callLater(0, self._semaphore.release)

        def done(result: object) -> None:
            self._active -= 1
            if not lock.locked and not lock.waiting and self._locks.get(path) is lock:
                del self._locks[path]
            self._check_idle()

        d = Deferred.fromCoroutine(run())
        d.addErrback(self._job_failed, path)
        d.addBoth(done)
        return d

    def _job_failed(self, failure: Any, path: str) -> None:
        if failure.check(CancelledError):
            return
        if failure.check(*Fatal):
            self.log.error("{path}: {error}", path=path, error=failure.value)
            if self._stream is not None:
                self._stream.cancel()
            return
        self.log.warn("{path}: {error}", path=path, error=_describe(failure.value))
        self.last_error = f"{path}: {_describe(failure.value)}"
        self._request_resync()

    def _request_resync(self) -> None:
        """
        Something did not go through: end this session, so that the next
        (after a back-off) starts from a fresh scan and plan.
        """
        self._failed = True
        if self.once:
            # The idle check ends a --once session; it sees the failure.
            return
        self._resync = True
        if self._stream is not None:
            self._stream.cancel()

    def _local(self, path: str) -> Path:
        return to_local(self.root, path)

    async def _transfer(
        self, size: int, batched: Callable[[], Awaitable[_T]], alone: Callable[[], Awaitable[_T]]
    ) -> _T:
        """
        Move C{size} bytes: C{batched}, in the next batch, if that is small
        enough (L{SMALL_FILE}); else C{alone}, within the limit of transfers
        at once.
        """
        if size <= SMALL_FILE:
            return await batched()
        async with self._large:
            return await alone()

    async def _look(self, path: str, to_upload: bool = False) -> LocalFile | None:
        """
        The file at C{path} now, compared with its base (hashed in a thread
        if its stat changed); waits while it is being written.

        @param to_upload: the look is for an upload: a large new file is not
            hashed, if the server takes its hash after its bytes.
        """
        base = self.state.get(path)
        unhashed = self._unhashed_over() if to_upload else None
        hashed = self._hashed.pop(path, None)
        if hashed is not None and (hashed.sha256 is not None or unhashed is not None):
            unchanged = self._unchanged_since_scan(hashed, base)
            if unchanged is not None:
                return unchanged
        for attempt in range(20):
            try:
                try:
                    return scan_one(self.root, path, base, INLINE_READ, unhashed)
                except ReadElsewhere:
                    found: LocalFile | None = await self._thread(
                        lambda: scan_one(self.root, path, base, None, unhashed)
                    )
                    return found
            except FileChanging:
                await self._sleep(min(2.0, 0.1 * 2**attempt))
        raise FileChanging(f"{path} keeps changing")

    def _unchanged_since_scan(self, hashed: LocalFile, base: Base | None) -> LocalFile | None:
        """
        The file the scan looked at, compared with C{base}, if its stat is
        still what the scan saw (so a new file is not read twice before its
        upload); else C{None}.
        """
        try:
            local = self._local(hashed.path)
        except BadPath:
            return None
        if not hashed.is_still(local) or (hashed.sha256 is None and base is not None):
            return None
        changed = base is None or hashed.sha256 != base.sha256
        return evolve(hashed, base=base.seq if base is not None else 0, changed=changed)

    async def _local_change(self, path: str) -> None:
        if self.ignore.ignored(path):
            return
        file = await self._look(path, to_upload=True)
        base = self.state.get(path)
        if file is None:
            if base is not None:
                await self._remove(path, base.seq)
            return
        if file.changed or base is None:
            await self._upload(file, base.seq if base is not None else 0)

    async def _upload_event(self, event: Upload) -> None:
        file = await self._look(event.path, to_upload=True)
        if file is None:
            return
        base = self.state.get(event.path)
        if base is not None and base.seq > event.base:
            # Uploaded by this client since the plan was made (a change the
            # watcher reported): only what changed after that goes up.
            if file.changed:
                await self._upload(file, base.seq)
            return
        await self._upload(file, event.base)

    async def _upload(self, file: LocalFile, base: int) -> None:
        local = self._local(file.path)
        self.reporter.started("upload", file.path, file.size)

        def batched() -> Deferred[CommitResult]:
            # Only files that move alone are left unhashed.
            assert file.sha256 is not None
            return self._batcher.upload(
                file.path, local, base, file.sha256, file.mtime_ns, file.size, file.data
            )

        try:
            result = await self._transfer(
                file.size,
                batched,
                lambda: self.api.upload(
                    file.path,
                    local,
                    base,
                    file.sha256,
                    file.mtime_ns,
                    on_progress=lambda n: self.reporter.progress(file.path, n),
                    size=file.size,
                    hash_as_sent=file.sha256 is None,
                    unchanged=lambda: file.is_still(local),
                ),
            )
        except StaleBase:
            self.reporter.finished(file.path, "changed on the server")
            await self._resolve_stale(file.path)
            return
        except APIError as e:
            if e.status == 400 and "sha256" in e.message and file.sha256 is None:
                # Hashed as it was sent, and written to meanwhile: hashing it
                # first waits until it is stable (and an append then only
                # adds to what is sent next time).
                self.reporter.finished(file.path, "changed while sent; hashing it first")
                again = await self._look(file.path)
                if again is not None:
                    await self._upload(again, base)
                return
            if e.status == 400 and "sha256" in e.message:
                # The file changed while it was sent: the watcher (or the
                # next scan) reports it again once it is stable.
                self.reporter.finished(file.path, "changed while sent")
                self.last_error = f"{file.path} changed while it was sent"
                self._request_resync()
                return
            self.reporter.finished(file.path, f"failed: {e.message}")
            raise
        except BaseException:
            self.reporter.finished(file.path, "failed")
            raise
        self.reporter.finished(file.path)
        self.state.put(file.as_base(result.seq, result.sha256))

    async def _remove(self, path: str, base: int) -> None:
        try:
            await self.api.delete(path, base)
        except NotFound:
            pass
        except StaleBase:
            # Someone changed the file meanwhile: their version wins over
            # our delete, so fetch it again.
            await self._resolve_stale(path)
            return
        self.state.forget(path)
        self.reporter.message(f"deleted {path} on the server")

    async def _remove_event(self, event: Remove) -> None:
        if await self._look(event.path) is None:
            await self._remove(event.path, event.base)

    async def _resolve_stale(self, path: str) -> None:
        """
        The server moved on from our base while we changed C{path}: keep our
        copy as a conflict copy, take theirs.
        """
        file = await self._look(path)
        if file is not None and file.changed:
            self._keep_as_conflict(path)
        self.state.forget(path)
        # Resync: the plan brings the server's version (and the conflict
        # copy is a new file in the manifest).
        self._request_resync()

    def _keep_as_conflict(self, path: str, source: Path | None = None) -> str:
        """
        Keep the local copy of C{path} (or the file at C{source}, a copy of
        it taken out of the way) under a conflict name, and upload it.
        """
        new = conflict_name(path, self.name, self.reactor.seconds())
        n = 1
        while self._local(new).exists():
            n += 1
            new = conflict_name(path, f"{self.name}-{n}", self.reactor.seconds())
        os.rename(source or self._local(path), self._local(new))
        self.log.warn("{path} changed on both sides; your copy is now {new}", path=path, new=new)
        self.reporter.message(f"conflict: kept your copy of {path} as {new}")
        self.changed(new)
        return new

    async def _conflict_event(self, event: Conflict) -> None:
        await self._download(
            Download(event.path, event.sha256, event.size, event.mtime_ns, event.seq)
        )

    def _outdated(self, path: str, seq: int) -> bool:
        """
        Whether this client is past version C{seq} of C{path} already (it
        has committed a newer one since): an event about that version, from
        a plan made before, has nothing left to do.
        """
        base = self.state.get(path)
        return base is not None and base.seq >= seq

    async def _insync(self, event: InSync) -> None:
        if self._outdated(event.path, event.seq):
            return
        file = await self._look(event.path)
        if file is None:
            return
        sent = self._sent.get(event.path)
        if sent is None or file.sha256 == sent:
            self.state.put(file.as_base(event.seq))
            return
        # Edited since the manifest said it was the server's version: the
        # base is that version, and the edit goes up from it.
        self.state.put(Base(event.path, sent, -1, -1, -1, event.seq, UNKNOWN_CTIME))
        self.changed(event.path)

    async def _download(self, event: Download) -> None:
        path = event.path
        if self.ignore.ignored(path) or self._outdated(path, event.seq):
            return
        try:
            target = self._local(path)
        except BadPath as e:
            self.log.warn("cannot place {path} here: {error}", path=path, error=e)
            return
        file = await self._look(path)
        if file is not None and file.sha256 == event.sha256:
            self.state.put(file.as_base(event.seq))
            return
        if file is not None and file.changed:
            self._keep_as_conflict(path)
            file = None
        # Named after the path and the version: an interrupted download of
        # the same version resumes, and two paths with the same content
        # never share a temporary file.
        where = hashlib.sha256(path.encode()).hexdigest()[:16]
        temp = self._tmp / f"dl-{where}-{event.sha256[:32]}"
        self.reporter.started("download", path, event.size)
        try:
            result = await self._transfer(
                event.size,
                lambda: self._batcher.download(path, temp, event.sha256, event.size, event.mtime_ns),
                lambda: self.api.download(
                    path, temp, event.sha256, on_progress=lambda n: self.reporter.progress(path, n)
                ),
            )
        except (NotFound, DigestMismatch):
            # Deleted or replaced meanwhile: its own event follows, and what
            # came of this version is of no more use.
            self.reporter.finished(path, "changed on the server meanwhile")
            temp.unlink(missing_ok=True)
            return
        except BaseException:
            self.reporter.finished(path, "failed")
            self._partial.add(where)
            raise
        self.reporter.finished(path)
        await self._place(temp, target, event, result, file)
        if where in self._partial:
            # Partial downloads of this path's earlier versions will not resume.
            self._partial.discard(where)
            for stale in self._tmp.glob(f"dl-{where}-*"):
                stale.unlink(missing_ok=True)

    async def _place(
        self, temp: Path, target: Path, event: Download, result: DownloadResult, seen: LocalFile | None
    ) -> None:
        """
        Move a verified download into place over C{seen}, what the look
        before the download found there (unchanged since its base).

        The move itself is atomic (L{_swap}): an edit saved since that look
        is what the move takes out of the way, and is kept as a conflict
        copy, never overwritten; a file that appeared since is looked at
        again.
        """
        path = event.path
        # Taken before the move: the file keeps its inode, size and mtime.
        placed = result.placed
        if placed is None:
            os.utime(temp, ns=(event.mtime_ns, event.mtime_ns))
            placed = os.stat(temp)
        for attempt in range(3):
            if attempt:
                seen = await self._look(path)
                if seen is not None and seen.changed:
                    self._keep_as_conflict(path)
                    seen = None
            try:
                displaced = swap(temp, target, seen, self.root)
                break
            except FileExistsError:
                if target.is_dir() and not target.is_symlink():
                    raise BadPath(f"{path} is a folder here") from None
                continue  # a new file appeared since the look: look again
        else:
            raise FileChanging(f"{path} keeps appearing while a download is placed")
        if displaced is not None:
            self._keep_as_conflict(path, displaced)
        self.state.put(placed_base(target, path, event.sha256, placed, result.seq))

    async def _delete_local(self, event: Delete) -> None:
        path = event.path
        if self._outdated(path, event.seq):
            return
        base = self.state.get(path)
        file = await self._look(path)
        if file is None:
            self.state.forget(path)
            return
        if file.changed or base is None:
            # Changed here after it was deleted there: the edit wins and
            # comes back as a new version.
            self.state.forget(path)
            await self._upload(file, event.seq)
            return
        local = self._local(path)
        local.unlink()
        prune(self.root, local.parent)
        self.state.forget(path)
        self.reporter.message(f"deleted {path}")


def _describe(error: BaseException) -> str:
    cause = unwrap(error)
    if isinstance(cause, OSError) and cause.errno in _FULL:
        return f"no space left on this disk ({cause.strerror})"
    return describe_failure(cause)


async def _first(*ds: Deferred[Any]) -> Deferred[Any]:
    """
    Wait for the first of C{ds} to fire, and return it. The results stay in
    the Deferreds, for their owners to consume.
    """
    winner: Deferred[Deferred[Any]] = Deferred()

    def fired(result: Any, d: Deferred[Any]) -> Any:
        if not winner.called:
            winner.callback(d)
        return result

    for d in ds:
        d.addBoth(fired, d)
    return await winner
