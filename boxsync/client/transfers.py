"""
The bytes of one file, moved up or down: in the next batch if the file is
small enough, else alone, within the limit of such transfers at once; each
transfer reported as it starts, progresses and ends. A download goes to a
temporary file named after its path and version, so an interrupted one
resumes; the engine then places it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

from attrs import define, field

from ..wire import BATCH_FILE_LIMIT, BatchFile, Download
from .api import BoxsyncAPI
from .batch import Batcher
from .errors import APIError, DigestMismatch, NotFound, StaleBase
from .jobs import Jobs
from .progress import Reporter
from .results import CommitResult, DownloadResult
from .scanner import LocalFile

__all__ = ["SMALL_FILE", "Transfers", "changed_while_sent"]

#: A transfer of a file up to this size goes in a batch, and needs only a job
#: slot; a larger one goes alone, and also needs one of the C{transfers} slots.
SMALL_FILE = BATCH_FILE_LIMIT

_T = TypeVar("_T")


def changed_while_sent(error: APIError) -> bool:
    """
    Whether the server refused an upload because its bytes did not have
    the sha256 sent with them: the file changed while it was read.
    """
    return error.status == 400 and "sha256" in error.message


def _upload_note(error: BaseException, unhashed: bool) -> str:
    if isinstance(error, StaleBase):
        return "changed on the server"
    if isinstance(error, APIError) and changed_while_sent(error):
        return "changed while sent; hashing it first" if unhashed else "changed while sent"
    if isinstance(error, APIError):
        return f"failed: {error.message}"
    return "failed"


@define
class Transfers:
    """
    @ivar tmp: the folder of unfinished downloads.
    @ivar partial: the paths (hashed, as in the names of their downloads)
        that may have an unfinished download of another version in C{tmp}.
    """

    root: Path
    api: BoxsyncAPI
    batcher: Batcher
    jobs: Jobs
    reporter: Reporter
    tmp: Path
    partial: set[str] = field(factory=set)

    async def _move(
        self, size: int, batched: Callable[[], Awaitable[_T]], alone: Callable[[], Awaitable[_T]]
    ) -> _T:
        """
        Move C{size} bytes: C{batched}, in the next batch, if that is small
        enough (L{SMALL_FILE}); else C{alone}, within the limit of transfers
        at once.
        """
        if size <= SMALL_FILE:
            return await batched()
        return await self.jobs.alone(alone)

    async def upload(self, file: LocalFile, local: Path, base: int) -> CommitResult:
        """
        Upload C{file}, found at C{local}, as the next version after C{base}.

        @raise StaleBase: if the path is no longer at C{base}.
        @raise APIError: if the server refuses it (L{changed_while_sent}: the
            file changed while it was read).
        """
        self.reporter.started("upload", file.path, file.size)

        def batched() -> Awaitable[CommitResult]:
            # Only files that move alone are left unhashed.
            assert file.sha256 is not None
            return self.batcher.upload(
                BatchFile(file.path, file.size, file.sha256, file.mtime_ns, base, file.executable),
                local,
                file.data,
            )

        try:
            result = await self._move(
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
                    executable=file.executable,
                ),
            )
        except BaseException as e:
            self.reporter.finished(file.path, _upload_note(e, file.sha256 is None))
            raise
        self.reporter.finished(file.path)
        return result

    async def download(self, event: Download) -> tuple[Path, DownloadResult] | None:
        """
        Download version C{event} to a temporary file, verified.

        @return: the file and what came, or C{None} if that version is no
            longer the server's (its own event follows).
        """
        path = event.path
        # Named after the path and the version: an interrupted download of
        # the same version resumes, and two paths with the same content
        # never share a temporary file.
        where = hashlib.sha256(path.encode()).hexdigest()[:16]
        temp = self.tmp / f"dl-{where}-{event.sha256[:32]}"
        self.reporter.started("download", path, event.size)
        try:
            result = await self._move(
                event.size,
                lambda: self.batcher.download(path, temp, event.sha256, event.size, event.mtime_ns),
                lambda: self.api.download(
                    path, temp, event.sha256, on_progress=lambda n: self.reporter.progress(path, n)
                ),
            )
        except (NotFound, DigestMismatch):
            # Deleted or replaced meanwhile: what came of this version is of
            # no more use.
            self.reporter.finished(path, "changed on the server meanwhile")
            temp.unlink(missing_ok=True)
            return None
        except BaseException:
            self.reporter.finished(path, "failed")
            self.partial.add(where)
            raise
        self.reporter.finished(path)
        if where in self.partial:
            # Partial downloads of this path's earlier versions will not resume.
            self.partial.discard(where)
            for stale in self.tmp.glob(f"dl-{where}-*"):
                if stale != temp:
                    stale.unlink(missing_ok=True)
        return temp, result
