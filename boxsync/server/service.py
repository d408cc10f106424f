"""
The server as a Twisted service: the index, the box (or, in token mode, the
accounts and their boxes), the hub and the HTTP listeners, started in the
right order and stopped cleanly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import psutil
from attrs import define
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory

from .accounts import POLL_SECONDS, Accounts
from .adopt import adopt
from .app import BoxsyncApp
from .auth import DEFAULT_ACCOUNT, IAuthenticator, TokenAuth
from .box import Box
from .hub import MAX_STREAMS_PER_TOKEN, Hub
from .index import SQLiteIndex, Stats
from .legacy import LegacyAdapter
from .limits import MAX_MANIFEST_BYTES, MAX_MANIFEST_ENTRIES, ConnectionLimits
from .registry import REGISTRY_FILE
from .storage import BoxStorage
from .tokens import load_secret
from .uploads import UploadSite

__all__ = ["ServerConfig", "BoxsyncService"]


@define
class ServerConfig:
    """
    @ivar auth: who gets in, with one account; C{None} with C{tokens}.
    @ivar tokens: serve many accounts, one folder each, to clients with
        signed tokens (L{boxsync.server.tokens}) instead.
    @ivar max_streams_per_token: the most event streams one token may hold
        open at once.
    @ivar revocation_seconds: how often, in token mode, the token registry
        is checked for revocations and new accounts.
    """

    box: Path
    listen: list[str]
    auth: IAuthenticator | None = None
    max_upload: int | None = None
    status_seconds: float = 60.0
    keepalive_seconds: float = 15.0
    max_manifest: int | None = MAX_MANIFEST_BYTES
    max_manifest_entries: int = MAX_MANIFEST_ENTRIES
    connections: ConnectionLimits = ConnectionLimits()
    tokens: bool = False
    max_streams_per_token: int = MAX_STREAMS_PER_TOKEN
    revocation_seconds: float = POLL_SECONDS

    def __attrs_post_init__(self) -> None:
        if (self.auth is None) != self.tokens:
            raise ValueError("give either an authenticator or token mode, not both or neither")


class BoxsyncService(MultiService):
    """
    Runs one boxsync server. The listeners start only once the box has been
    checked against the index, so no client ever sees a stale box.
    """

    log = Logger()

    def __init__(self, reactor: Any, config: ServerConfig) -> None:
        super().__init__()
        self.reactor = reactor
        self.config = config
        self.storage = BoxStorage(reactor, config.box)
        self.index = SQLiteIndex(reactor, self.storage.hidden / "index.sqlite")
        self.hub = Hub(reactor, config.keepalive_seconds, config.max_streams_per_token)
        self.box: Box | None = None
        self.accounts: Accounts | None = None
        auth: IAuthenticator
        boxes: Callable[[str], Box]
        if config.auth is None:
            self.accounts = Accounts(
                reactor,
                self.storage.root,
                self.index,
                self.hub,
                self.storage.hidden / REGISTRY_FILE,
                poll_seconds=config.revocation_seconds,
            )
            secret = load_secret(self.storage.hidden, create=True)
            auth = TokenAuth(secret, reactor, self.accounts.revoked, self.accounts.has)
            boxes = self.accounts.box
        else:
            self.box = Box(DEFAULT_ACCOUNT, self.index, self.storage, self.hub)
            auth, boxes = config.auth, self._box_for
        self.app = BoxsyncApp(
            reactor,
            auth,
            boxes,
            self.hub,
            max_manifest_entries=config.max_manifest_entries,
            legacy=LegacyAdapter(boxes, self.hub, config.max_manifest_entries),
            max_upload=config.max_upload,
        )
        self.site = UploadSite(
            self.app.resource(),
            self.storage.new_staging,
            max_upload=config.max_upload,
            authorize=auth.authenticate,
            max_body=config.max_manifest,
            limits=config.connections,
            reactor=reactor,
        )
        self.site.displayTracebacks = False
        # Tracks every open connection, to close them when the service stops.
        self.factory = WrappingFactory(self.site)
        self.ready: Deferred[None] = Deferred()
        self._status: Any = None
        self.ports: list[IListeningPort] = []

    def _box_for(self, account: str) -> Box:
        assert self.box is not None
        return self.box

    def startService(self) -> None:
        super().startService()
        self.index.start()
        left = self.storage.clean_staging()
        if left:
            self.log.info("removed {count} unfinished uploads", count=left)
        Deferred.fromCoroutine(self._start()).addErrback(self._failed)

    async def _start(self) -> None:
        if self.accounts is not None:
            await self.accounts.start()
        else:
            await adopt(self._box_for(DEFAULT_ACCOUNT), self.reactor)
        self.hub.start()
        for description in self.config.listen:
            endpoint = serverFromString(self.reactor, description)
            self.ports.append(await endpoint.listen(self.factory))
        self.log.info(
            "serving {box} on {listen}",
            box=str(self.storage.root),
            listen=", ".join(self.config.listen),
        )
        if self.config.status_seconds > 0:
            self._status = LoopingCall(lambda: Deferred.fromCoroutine(self._log_status()))
            self._status.clock = self.reactor
            self._status.start(self.config.status_seconds, now=False)
        self.ready.callback(None)

    def _failed(self, failure: Any) -> None:
        self.log.failure("the server could not start", failure)
        self.ready.errback(failure)

    async def _log_status(self) -> None:
        accounts = [DEFAULT_ACCOUNT] if self.accounts is None else self.accounts.names()
        stats = Stats(0, 0, 0)
        try:
            for account in accounts:
                one: Stats = await self.index.stats(account)
                stats = Stats(stats.files + one.files, stats.bytes + one.bytes, stats.seq + one.seq)
        except Exception:
            self.log.failure("status")
            return
        rss = psutil.Process(os.getpid()).memory_info().rss
        self.log.info(
            "status: {clients} clients connected, {files} files, {bytes} bytes, seq {seq}, "
            "RSS {rss_mib:.1f} MiB",
            clients=self.hub.count(),
            files=stats.files,
            bytes=stats.bytes,
            seq=stats.seq,
            rss_mib=rss / 2**20,
        )

    def stopService(self) -> Deferred[Any]:
        if self._status is not None and self._status.running:
            self._status.stop()
        self.hub.stop()
        if self.accounts is not None:
            self.accounts.stop()
        ports, self.ports = self.ports, []
        stopping = [maybeDeferred(port.stopListening) for port in ports]
        for connection in list(self.factory.protocols):
            connection.transport.abortConnection()
        stopping.append(maybeDeferred(super().stopService))
        d = gatherResults(stopping, consumeErrors=True)
        return d.addBoth(lambda result: self.index.stop())
