"""
The client as a tree of Twisted services: each part of a running client
starts and stops itself, and the tree stops them in the reverse order they
were started (the periodic rescan and the watcher first, then the engine,
then the status file, and last the folder's state and the connection).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, globalLogPublisher

from .engine import Engine
from .status import StatusFile
from .watcher import FolderWatcher

__all__ = ["EngineService", "RescanService", "StatusService", "WatcherService", "closing", "sync_service"]

log = Logger()


class EngineService(Service):
    """
    Runs the engine while the service runs. L{done} fires when the engine
    ends by itself (in sync, with C{once}) or fails (e.g. a refused token).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.done: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        Deferred.fromCoroutine(self.engine.run()).chainDeferred(self.done)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.engine.stop()
        ended: Deferred[None] = Deferred()

        def passed_on(result: object) -> object:
            # What the engine ended with is for the owner of done to see.
            ended.callback(None)
            return result

        self.done.addBoth(passed_on)
        return ended


class WatcherService(Service):
    """
    Watches the folder while the service runs; where it cannot (no
    inotify), the periodic rescans must do.
    """

    def __init__(self, watcher: FolderWatcher) -> None:
        self.watcher = watcher

    def startService(self) -> None:
        super().startService()
        try:
            self.watcher.start()
        except OSError as e:
            log.warn("cannot watch {root} ({error}); relying on rescans", root=str(self.watcher.root), error=e)

    def stopService(self) -> None:
        super().stopService()
        self.watcher.stop()


class RescanService(Service):
    """
    Rescans the folder every C{seconds}, the first time one period after it
    starts. A rescan that fails is logged by the engine and does not stop
    the next.
    """

    def __init__(self, clock: IReactorTime, seconds: float, rescan: Callable[[], None]) -> None:
        self._loop = LoopingCall(rescan)
        self._loop.clock = clock
        self.seconds = seconds

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.seconds, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()


class StatusService(Service):
    """
    Keeps the status file written while the service runs, and marks the
    client stopped in it when it stops.
    """

    def __init__(self, status: StatusFile) -> None:
        self.status = status

    def startService(self) -> None:
        super().startService()
        globalLogPublisher.addObserver(self.status)
        self.status.start()

    def stopService(self) -> None:
        super().stopService()
        globalLogPublisher.removeObserver(self.status)
        self.status.close()


class _Closing(Service):
    def __init__(self, close: Callable[[], Any]) -> None:
        self._close = close

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return maybeDeferred(self._close)


def closing(close: Callable[[], Any]) -> Service:
    """
    A service that only calls C{close} when it stops: what must outlive the
    services started after it (the folder's state, the connection pool).
    """
    return _Closing(close)


def sync_service(
    engine: Engine,
    status: StatusFile,
    watcher: FolderWatcher | None,
    rescan_seconds: float,
    *closers: Callable[[], Any],
) -> tuple[MultiService, EngineService]:
    """
    The tree of a running client: C{closers} (called last, in order), the
    status file, the engine, and, unless C{watcher} is C{None} (a client
    that syncs once), the watcher and the periodic rescan.

    @return: the tree, and its engine's service (whose C{done} tells when
        the engine ended).
    """
    top = MultiService()
    for close in reversed(closers):
        closing(close).setServiceParent(top)
    StatusService(status).setServiceParent(top)
    running = EngineService(engine)
    running.setServiceParent(top)
    if watcher is not None:
        WatcherService(watcher).setServiceParent(top)
        RescanService(engine.reactor, rescan_seconds, engine.rescan).setServiceParent(top)
    return top, running
