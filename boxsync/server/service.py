"""
The server as a Twisted service: the index, the box, the hub and the HTTP
listeners, started in the right order and stopped cleanly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil
from attrs import define
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory

from .adopt import adopt
from .app import BoxsyncApp
from .auth import DEFAULT_ACCOUNT, IAuthenticator
from .box import Box
from .hub import Hub
from .index import SQLiteIndex
from .legacy import LegacyAdapter
from .storage import BoxStorage
from .uploads import UploadSite

__all__ = ["ServerConfig", "BoxsyncService"]


@define
class ServerConfig:
    box: Path
    listen: list[str]
    auth: IAuthenticator
    max_upload: int | None = None
    status_seconds: float = 60.0
    keepalive_seconds: float = 15.0


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
        self.hub = Hub(reactor, config.keepalive_seconds)
        self.box = Box(DEFAULT_ACCOUNT, self.index, self.storage, self.hub)
        self.app = BoxsyncApp(
            reactor,
            config.auth,
            self._box_for,
            self.hub,
            legacy=LegacyAdapter(self._box_for, self.hub),
        )
        self.site = UploadSite(
            self.app.resource(),
            self.storage.new_staging,
            max_upload=config.max_upload,
            authorize=config.auth.authenticate,
        )
        self.site.displayTracebacks = False
        # Tracks every open connection, to close them when the service stops.
        self.factory = WrappingFactory(self.site)
        self.ready: Deferred[None] = Deferred()
        self._status: Any = None
        self.ports: list[IListeningPort] = []

    def _box_for(self, account: str) -> Box:
        return self.box

    def startService(self) -> None:
        super().startService()
        self.index.start()
        left = self.storage.clean_staging()
        if left:
            self.log.info("removed {count} unfinished uploads", count=left)
        Deferred.fromCoroutine(self._start()).addErrback(self._failed)

    async def _start(self) -> None:
        await adopt(self.box, self.reactor)
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
        try:
            stats = await self.index.stats(DEFAULT_ACCOUNT)
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
        ports, self.ports = self.ports, []
        stopping = [maybeDeferred(port.stopListening) for port in ports]
        for connection in list(self.factory.protocols):
            connection.transport.abortConnection()
        stopping.append(maybeDeferred(super().stopService))
        d = gatherResults(stopping, consumeErrors=True)
        return d.addBoth(lambda result: self.index.stop())
