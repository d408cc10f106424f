"""
The accounts of a server in token mode: one box each, in a folder of its own
below the box folder, sharing the index, the staging folder and the hub.

The accounts are those the token registry knows (C{boxsync-admin token}
makes one by minting its first token, and makes its folder). The registry is
polled while the server runs: an account minted meanwhile is adopted, and a
revoked token is refused from then on and its open streams are ended.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredLock, gatherResults
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from ..reactors import IServerReactor
from .adopt import adopt
from .auth import TOKEN_REFUSED, Forbidden
from .box import Box
from .hub import Hub
from .index import IIndex
from .registry import Registry
from .relay import Relay
from .storage import BoxStorage
from .tokens import BadName, check_account
from .turns import Turns

__all__ = ["Accounts", "BadAccountFolder", "POLL_SECONDS"]

#: How often the registry is checked for revocations and new accounts.
POLL_SECONDS = 0.5


class BadAccountFolder(Exception):
    """
    An account's folder that cannot be served: not a folder of the box's own.
    """


def account_folder(root: Path, account: str) -> Path:
    """
    The folder of C{account} in the box C{root}, made if missing.

    @raise BadName: if C{account} is not a valid account name.
    @raise BadAccountFolder: if something else than a plain folder (a file,
        a symbolic link) is in its place.
    """
    folder = root / check_account(account)
    if not os.path.lexists(folder):
        folder.mkdir(mode=0o755, exist_ok=True)
    if folder.is_symlink() or not folder.is_dir():
        raise BadAccountFolder(f"{folder} must be a folder (not a link or a file)")
    return folder


@define
class Accounts:
    """
    @ivar root: the box folder, with one folder per account.
    @ivar open_registry: opens the token registry (called in the
        registry's thread).
    @ivar revoked: the ids of every revoked token, updated in place.
    """

    reactor: IServerReactor
    root: Path
    index: IIndex
    hub: Hub
    open_registry: Callable[[], Registry]
    poll_seconds: float = POLL_SECONDS
    relay: Relay | None = None
    turns: Callable[[BoxStorage], Turns] = lambda storage: Turns()
    adopting: bool = True
    revoked: set[str] = field(factory=set)
    _boxes: dict[str, Box] = field(factory=dict)
    _adopted: dict[str, Deferred[Any]] = field(factory=dict)
    _pool: ThreadPool = field(factory=lambda: ThreadPool(1, 1, "boxsync-registry"))
    _registry: Registry | None = None
    _version: int | None = None
    _loop: LoopingCall | None = None
    _polling: DeferredLock = field(factory=DeferredLock)
    log = Logger()

    async def start(self) -> None:
        """
        Read the registry, adopt every account's folder, then keep polling.
        """
        self._pool.start()
        await self.refresh()
        await gatherResults(list(self._adopted.values()))
        self._loop = LoopingCall(lambda: Deferred.fromCoroutine(self._poll()))
        self._loop.clock = self.reactor
        self._loop.start(self.poll_seconds, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._pool.stop()
        if self._registry is not None:
            self._registry.close()
            self._registry = None

    def boxes(self) -> list[Box]:
        """
        The boxes of the accounts adopted so far.
        """
        return list(self._boxes.values())

    def names(self) -> list[str]:
        return sorted(self._boxes)

    def has(self, account: str) -> bool:
        """
        Whether C{account} exists. One minted since the last poll exists
        once its folder does (minting makes it); it is adopted right away.
        """
        if account in self._boxes:
            return True
        try:
            folder = self.root / check_account(account)
        except BadName:
            return False
        if folder.is_symlink() or not folder.is_dir():
            return False
        return self._open(account) is not None

    def box(self, account: str) -> Box:
        """
        The box of C{account}.

        @raise Forbidden: if there is no such account.
        """
        box = self._boxes.get(account)
        if box is None:
            raise Forbidden(TOKEN_REFUSED)
        return box

    def _open(self, account: str) -> Box | None:
        """
        Make the box of C{account} and start adopting its folder; C{None}
        (and an error in the log) if its folder cannot be served.
        """
        try:
            storage = BoxStorage(self.reactor, account_folder(self.root, account))
        except (BadName, BadAccountFolder, OSError) as e:
            self.log.error("account {account} cannot be served: {error}", account=account, error=e)
            return None
        box = self._boxes[account] = Box(
            account, self.index, storage, self.hub, relay=self.relay, turns=self.turns(storage)
        )
        if not self.adopting:
            return box
        adopting = Deferred.fromCoroutine(adopt(box, self.reactor))
        adopting.addErrback(
            lambda failure: self.log.failure("adopting account {account}", failure, account=account)
        )
        self._adopted[account] = adopting
        return box

    def _read(self) -> tuple[int, set[str], set[str]] | None:
        """
        The registry's revoked tokens and accounts, if it changed since the
        last read. Runs in the registry's thread.
        """
        registry = self._opened()
        version = registry.version()
        if version == self._version:
            return None
        return version, registry.revoked(), registry.accounts()

    def use_link(self, token_id: str, until: int, now: int) -> Deferred[bool]:
        """
        Record in the registry (in its thread) that the one-time sign-in
        link C{token_id} signs in now; fires with whether it is the first
        time, on any server of the registry.
        """

        return deferToThreadPool(self.reactor, self._pool, lambda: self._opened().use_once(token_id, until, now))

    def _opened(self) -> Registry:
        """
        The registry, opened the first time. Runs in the registry's thread.
        """
        if self._registry is None:
            self._registry = self.open_registry()
        return self._registry

    async def refresh(self) -> None:
        """
        Take in the registry's changes: refuse newly revoked tokens and end
        their streams; open new accounts.
        """
        async with self._polling:
            read = await deferToThreadPool(self.reactor, self._pool, self._read)
            if read is None:
                return
            self._version, revoked, accounts = read
            newly = revoked - self.revoked
            self.revoked.intersection_update(revoked)
            self.revoked.update(revoked)
            if newly:
                ended = self.hub.disconnect(newly)
                self.log.info(
                    "{tokens} tokens revoked, {streams} open streams ended",
                    tokens=len(newly),
                    streams=ended,
                )
            for account in sorted(accounts - self._boxes.keys()):
                self._open(account)

    async def _poll(self) -> None:
        try:
            await self.refresh()
        except Exception:
            # Keep polling: the next round may well work.
            self.log.failure("reading the token registry")
