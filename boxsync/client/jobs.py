"""
The client's job scheduler. Every change to a file is a job on its path: the
jobs of one path run one after another, in the order they were submitted,
and at most so many jobs run at once in all; a transfer too large for a
batch also needs one of a few slots of its own.
"""

from __future__ import annotations

from typing import Awaitable, Callable, TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredLock, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

__all__ = ["Jobs"]

_T = TypeVar("_T")


@define
class Jobs:
    """
    @ivar limit: how many jobs run at once.
    @ivar transfers: how many jobs hold a slot of L{alone} at once.
    @ivar failed: told of each job that fails, with its path.
    @ivar done: told each time a job ends (L{active} is then lower).
    @ivar active: how many jobs are running or waiting.
    """

    reactor: IReactorTime
    limit: int
    transfers: int
    failed: Callable[[Failure, str], None]
    done: Callable[[], None]
    active: int = 0
    _running: DeferredSemaphore = field(init=False)
    _large: DeferredSemaphore = field(init=False)
    _locks: dict[str, DeferredLock] = field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self._running = DeferredSemaphore(max(self.limit, self.transfers))
        self._large = DeferredSemaphore(self.transfers)

    def submit(self, path: str, job: Callable[[], Awaitable[None]]) -> Deferred[None]:
        """
        Run C{job} after every earlier job on C{path}, within the limit of
        jobs at once.
        """
        self.active += 1
        lock = self._locks.get(path)
        if lock is None:
            lock = self._locks[path] = DeferredLock()

        async def run() -> None:
            async with lock:
                await self._running.acquire()
                try:
                    await job()
                finally:
                    # On a fresh stack: released here, the token would resume
                    # the next waiting job inside this one, and a long queue
                    # of jobs that finish at once would nest until Python's
                    # recursion limit (and lose the jobs past it).
                    self.reactor.callLater(0, self._running.release)

        def ended(result: object) -> None:
            self.active -= 1
            if not lock.locked and not lock.waiting and self._locks.get(path) is lock:
                del self._locks[path]
            self.done()

        d = Deferred.fromCoroutine(run())
        d.addErrback(self.failed, path)
        d.addBoth(ended)
        return d

    async def alone(self, work: Callable[[], Awaitable[_T]]) -> _T:
        """
        Do C{work}, a transfer too large for a batch, within the limit of
        such transfers at once.
        """
        async with self._large:
            return await work()
