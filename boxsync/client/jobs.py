"""
The client's job scheduler. Every change to a file is a job on its path: a
job waits for the jobs submitted before it on its own path, on the folders
above it and on the paths below it, so that what happens to one place in the
folder happens in the order it was seen (a file that became a folder is
deleted before what is now in the folder goes up, and the other way round);
at most so many jobs run at once in all; a transfer too large for a batch
also needs one of a few slots of its own.
"""

from __future__ import annotations

import errno
from typing import Awaitable, Callable, TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from ..paths import BadPath, folders_above
from .errors import TooLarge

__all__ = ["Jobs", "MAX_RETRY_SECONDS", "this_path_only"]

_T = TypeVar("_T")

#: The longest wait before a path that failed on its own is tried again.
MAX_RETRY_SECONDS = 60.0

#: Errors of a local file that concern its path alone.
_PATH_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.EXDEV,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.ENAMETOOLONG,
        errno.ELOOP,
        errno.EEXIST,
        errno.EILSEQ,
    }
)


def this_path_only(error: BaseException | None) -> bool:
    """
    Whether a job's failure is a problem of its path alone, which the
    other paths need not wait for (unlike a lost connection or a full disk):
    a path this side cannot write, or a file larger than the server takes.
    """
    return isinstance(error, (BadPath, TooLarge)) or (isinstance(error, OSError) and error.errno in _PATH_ERRNOS)


@define(eq=False)
class _Job:
    """
    A job submitted, and the jobs submitted after it that wait for it.

    @ivar before: how many of the jobs this one waits for have not ended.
    @ivar go: fires once they all have, if there were any when it was
        submitted.
    """

    before: int = 0
    go: Deferred[None] | None = None
    _after: list[_Job] = field(factory=list)
    _ended: bool = False

    def follow(self, earlier: list[_Job]) -> None:
        """
        Wait for those of C{earlier} that have not ended.
        """
        for each in earlier:
            if not each._ended:
                each._after.append(self)
                self.before += 1
        if self.before:
            self.go = Deferred()

    def end(self) -> None:
        self._ended = True
        after, self._after = self._after, []
        for each in after:
            each.before -= 1
            if not each.before and each.go is not None:
                each.go.callback(None)


@define
class Jobs:
    """
    @ivar limit: how many jobs run at once.
    @ivar transfers: how many jobs hold a slot of L{alone} at once.
    @ivar failed: told of each job that fails, with its path and the job
        (to run it again later, if the failure may pass).
    @ivar done: told each time a job ends (L{active} is then lower).
    @ivar active: how many jobs are running or waiting.
    """

    reactor: IReactorTime
    limit: int
    transfers: int
    failed: Callable[[Failure, str, Callable[[], Awaitable[None]]], None]
    done: Callable[[], None]
    active: int = 0
    # The paths that failed on their own, with why and the last wait, and
    # their next tries.
    _problems: dict[str, tuple[str, float]] = field(factory=dict)
    _retries: dict[str, IDelayedCall] = field(factory=dict)
    _running: DeferredSemaphore = field(init=False)
    _large: DeferredSemaphore = field(init=False)
    # The last job submitted on each path, until it ends; and the paths
    # below each folder that have one.
    _last: dict[str, _Job] = field(factory=dict)
    _below: dict[str, set[str]] = field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self._running = DeferredSemaphore(max(self.limit, self.transfers))
        self._large = DeferredSemaphore(self.transfers)

    def submit(self, path: str, job: Callable[[], Awaitable[None]]) -> Deferred[None]:
        """
        Run C{job} after every earlier job on C{path}, on a folder above it
        or on a path below it, within the limit of jobs at once.
        """
        self.active += 1
        above = folders_above(path)
        this = _Job()
        this.follow([self._last[each] for each in [path, *above, *self._below.get(path, ())] if each in self._last])
        self._last[path] = this
        for folder in above:
            self._below.setdefault(folder, set()).add(path)

        async def run() -> None:
            if this.go is not None:
                await this.go
            await self._running.acquire()
            try:
                await job()
                # Whatever job on the path did it, the path is synced.
                self._problems.pop(path, None)
            finally:
                # On a fresh stack: released here, the token would resume
                # the next waiting job inside this one, and a long queue
                # of jobs that finish at once would nest until Python's
                # recursion limit (and lose the jobs past it).
                self.reactor.callLater(0, self._running.release)

        def ended(result: object) -> None:
            self.active -= 1
            if self._last.get(path) is this:
                del self._last[path]
                for folder in above:
                    below = self._below[folder]
                    below.discard(path)
                    if not below:
                        del self._below[folder]
            this.end()
            self.done()

        d = Deferred.fromCoroutine(run())
        d.addErrback(self.failed, path, job)
        d.addBoth(ended)
        return d

    async def alone(self, work: Callable[[], Awaitable[_T]]) -> _T:
        """
        Do C{work}, a transfer too large for a batch, within the limit of
        such transfers at once.
        """
        async with self._large:
            return await work()

    def retry_later(self, path: str, job: Callable[[], Awaitable[None]], error: str) -> None:
        """
        A job met a problem of C{path} alone (a folder it cannot write, a
        name this file system refuses): the other paths go on syncing, and
        this one is tried again, after a wait that doubles while it fails.
        It counts among L{problems} until a job on it succeeds.
        """
        delay = min(MAX_RETRY_SECONDS, 2 * self._problems[path][1]) if path in self._problems else 1.0
        self._problems[path] = (error, delay)

        pending = self._retries.pop(path, None)
        if pending is not None and pending.active():
            pending.cancel()
        self._retries[path] = self.reactor.callLater(delay, self.submit, path, job)

    @property
    def problems(self) -> dict[str, str]:
        """
        The paths that cannot be synced for now, each with why.
        """
        return {path: error for path, (error, _) in sorted(self._problems.items())}

    def stop(self) -> None:
        """
        Try no path again.
        """
        for pending in self._retries.values():
            if pending.active():
                pending.cancel()
        self._retries.clear()
