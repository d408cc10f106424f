"""
The token registry as a running server sees it (L{TokenWatch}): read in a
thread of its own, and read again whenever it changed, by any process or
server, polled every L{POLL_SECONDS}. What it holds is what every request
is checked against: the revoked tokens, the accounts there are, and the
web sessions signed out before their time. Through it too, the servers of
one index tell each other which clients they serve
(L{boxsync.server.presence}).
"""

from __future__ import annotations

from typing import Callable, Mapping, TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from ..reactors import IServerReactor
from .outage import Outage
from .registry import Registry

__all__ = ["POLL_SECONDS", "TokenWatch"]

_T = TypeVar("_T")

#: How often the registry is checked for changes.
POLL_SECONDS = 0.5


@define
class TokenWatch:
    """
    @ivar open_registry: opens the token registry (called in its thread).
    @ivar revoked: the ids of every revoked token, updated in place.
    @ivar accounts: every account, updated in place.
    @ivar ended: the ids of the web sessions signed out before their time
        (on any server) that would still be going, updated in place.
    @ivar changed: called after each read that found a change, with the
        tokens revoked since the one before.
    """

    reactor: IServerReactor
    open_registry: Callable[[], Registry]
    poll_seconds: float = POLL_SECONDS
    revoked: set[str] = field(factory=set)
    accounts: set[str] = field(factory=set)
    ended: set[str] = field(factory=set)
    changed: Callable[[set[str]], None] = lambda newly_revoked: None
    _pool: ThreadPool = field(factory=lambda: ThreadPool(1, 1, "boxsync-registry"))
    _registry: Registry | None = None
    _version: int | None = None
    _loop: LoopingCall | None = None
    _reading: DeferredLock = field(factory=DeferredLock)
    log = Logger()
    _outage: Outage = field(factory=lambda: Outage("reading the token registry", TokenWatch.log))

    async def start(self) -> None:
        """
        Read the registry, then keep polling it.
        """
        self._pool.start()
        try:
            await self.refresh()
        except BaseException:
            self.stop()
            raise
        self._loop = LoopingCall(lambda: Deferred.fromCoroutine(self._poll()))
        self._loop.clock = self.reactor
        self._loop.start(self.poll_seconds, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._pool.started:
            self._pool.stop()
        if self._registry is not None:
            self._registry.close()
            self._registry = None

    def _in_thread(self, work: Callable[[Registry], _T]) -> Deferred[_T]:
        return deferToThreadPool(self.reactor, self._pool, lambda: work(self._opened()))

    def _opened(self) -> Registry:
        """
        The registry, opened the first time. Runs in the registry's thread.
        """
        if self._registry is None:
            self._registry = self.open_registry()
        return self._registry

    def _read(self, registry: Registry) -> tuple[int, set[str], set[str], set[str]] | None:
        """
        What the registry holds, if it changed since the last read. Runs in
        the registry's thread.
        """
        version = registry.version()
        if version == self._version:
            return None
        now = int(self.reactor.seconds())
        return version, registry.revoked(), registry.accounts(), registry.ended_sessions(now)

    async def refresh(self) -> None:
        """
        Take in the registry's changes.
        """
        async with self._reading:
            read = await self._in_thread(self._read)
            if read is None:
                return
            self._version, revoked, accounts, ended = read
            newly = revoked - self.revoked
            for held, now in ((self.revoked, revoked), (self.accounts, accounts), (self.ended, ended)):
                held.intersection_update(now)
                held.update(now)
            self.changed(newly)

    async def _poll(self) -> None:
        await self._outage.round(self.refresh)

    async def use_link(self, token_id: str, until: int, now: int) -> bool:
        """
        Record that the one-time sign-in link C{token_id} signs in now;
        return whether it is the first time, on any server of the registry.
        """
        return await self._in_thread(lambda registry: registry.use_once(token_id, until, now))

    async def end_session(self, session_id: str, until: int, now: int) -> None:
        """
        Record that the web session C{session_id}, which would have lasted
        until C{until}, was signed out: every server refuses it at its next
        poll.
        """
        self.ended.add(session_id)
        await self._in_thread(lambda registry: registry.end_session(session_id, until, now))

    async def report_clients(self, server: str, now: float, clients: Mapping[str, str], forget: float) -> None:
        """
        Record what this server, C{server}, sees of the clients of some
        accounts (L{Registry.report_clients}).
        """
        await self._in_thread(lambda registry: registry.report_clients(server, now, clients, forget))

    async def clients_seen(self, account: str) -> list[tuple[str, float, str]]:
        """
        What every server last reported of the clients of C{account}.
        """
        return await self._in_thread(lambda registry: registry.clients_seen(account))
