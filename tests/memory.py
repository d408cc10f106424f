"""
The real server in memory: its Klein resource and its upload site, with the
real box, index and hub, reached by the real client through treq's
in-memory agent. No socket, no thread, no real time: the disk and index work
that would go to a thread runs at once, and time moves only when a test
advances the L{Clock}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Coroutine, Iterator, TypeVar, cast

import pytest
from attrs import define, field
from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.internet import _producer_helpers
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock, Cooperator
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from boxsync.client.api import BoxsyncAPI
from boxsync.server.app import BoxsyncApp
from boxsync.server.history import HistoryRoutes
from boxsync.server.auth import DEFAULT_ACCOUNT, ApiKeyAuth
from boxsync.server.box import Box
from boxsync.server.hub import Hub
from boxsync.server.index import SQLiteIndex
from boxsync.server.storage import BoxStorage
from boxsync.server.uploads import UploadSite
from boxsync.writer import inline

__all__ = ["KEY", "InlineReactor", "InMemory", "MemoryServer", "result_of", "server"]

KEY = "memory-key-0123456789"

T = TypeVar("T")


class InlineThreads:
    """
    A thread pool that runs each call at once, on the calling thread.
    """

    started = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, object], object], func: Callable[..., object], *args: object, **kw: object
    ) -> None:
        try:
            result = func(*args, **kw)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


@implementer(IReactorFromThreads)
class InlineReactor(Clock):
    """
    A L{Clock} whose thread pool runs work at once: what the server hands a
    thread is done inside the call that asks for it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.threads = InlineThreads()
        self.threads.start()

    def getThreadPool(self) -> InlineThreads:
        return self.threads

    def callFromThread(self, callable: Callable[..., Any], *args: object, **kwargs: object) -> None:
        callable(*args, **kwargs)


class SiteAgent(RequestTraversalAgent):
    """
    treq's in-memory agent, serving requests through a given site (the
    server's L{UploadSite}, whose requests stream uploads to the box) rather
    than a plain C{Site} of its resource.
    """

    def __init__(self, site: Site) -> None:
        super().__init__(site.resource)
        self._serverFactory = cast(Site, _SocketLike(site))

    def flush(self) -> bool:
        """
        Move what is buffered on every connection, until nothing moves
        (what one connection delivers can make another write).

        @return: whether anything moved.
        """
        moved = False
        while any(pump.flush() for pump in list(self._pumps)):
            moved = True
        self._pumps = {
            pump for pump in self._pumps if not (pump.clientIO.disconnected and pump.serverIO.disconnected)
        }
        return moved


@define
class _SocketLike:
    """
    Build the site's channels for treq's in-memory transports. A socket's
    transport has the channel as its producer, and stops it before it tells
    the channel the connection is lost, which stops the response's producer
    while its request is still attached (the server's event stream relies
    on that order); the in-memory transport does neither, so this does it.
    """

    site: Site

    def buildProtocol(self, address: object) -> Any:
        channel = self.site.buildProtocol(address)
        lost = channel.connectionLost

        def connectionLost(reason: Failure) -> None:
            # A plain Site's channel (HTTP/1 or 2, chosen later) has none.
            stop = getattr(channel, "stopProducing", None)
            if stop is not None:
                stop()
            lost(reason)

        channel.connectionLost = connectionLost
        return channel


class Recording(Resource):
    """
    The server's resource, keeping each request it serves.
    """

    isLeaf = True

    def __init__(self, resource: IResource) -> None:
        super().__init__()
        self.resource = resource
        self.requests: list[Request] = []

    def render(self, request: Request) -> Any:
        self.requests.append(request)
        return self.resource.render(request)


@define
class InMemory:
    """
    Clients of a site served in memory, and the clock of both.
    """

    reactor: InlineReactor = field(init=False, factory=InlineReactor)
    agent: SiteAgent = field(init=False)

    def serve(self, site: Site) -> HTTPClient:
        """
        Serve C{site}; a client of it.
        """
        self.agent = SiteAgent(site)
        return HTTPClient(self.agent)

    def settle(self) -> None:
        """
        Move every byte both ways and run every call due now, until nothing
        moves.
        """
        for _ in range(10_000):
            self.agent.flush()
            now = self.reactor.seconds()
            if not any(call.getTime() <= now for call in self.reactor.getDelayedCalls()):
                return
            self.reactor.advance(0)
        raise AssertionError("the server and the client never settle")

    def advance(self, seconds: float) -> None:
        """
        Let C{seconds} pass, a second at a time, settling at each step.
        """
        self.settle()
        while seconds > 0:
            step = min(seconds, 1.0)
            self.reactor.advance(step)
            seconds -= step
            self.settle()

    def start(self, coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
        """
        Start a call, settling what it sets off.
        """
        d = Deferred.fromCoroutine(coroutine)
        self.settle()
        return d

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """
        The result of a call that completes without time passing.
        """
        return result_of(self.start(coroutine))


@define
class MemoryServer(InMemory):
    """
    One account's box served in memory, with an API key.
    """

    root: Path
    max_upload: int | None = None
    keepalive_seconds: float = 15.0
    storage: BoxStorage = field(init=False)
    index: SQLiteIndex = field(init=False)
    hub: Hub = field(init=False)
    box: Box = field(init=False)
    site: UploadSite = field(init=False)
    recording: Recording = field(init=False)
    http: HTTPClient = field(init=False)
    cooperator: Cooperator = field(init=False)

    def __attrs_post_init__(self) -> None:
        clock = self.reactor
        self.cooperator = Cooperator(scheduler=lambda work: clock.callLater(0, work))
        self.storage = BoxStorage(clock, self.root)
        self.index = SQLiteIndex(clock, self.storage.hidden / "index.sqlite", pool=cast(ThreadPool, clock.threads))
        self.index.start()
        self.hub = Hub(clock, self.keepalive_seconds)
        self.hub.start()
        self.box = Box(DEFAULT_ACCOUNT, self.index, self.storage, self.hub)
        auth = ApiKeyAuth(KEY)
        app = BoxsyncApp(clock, auth, lambda account: self.box, self.hub, max_upload=self.max_upload)
        # As the service installs them: the history's routes beside the rest.
        HistoryRoutes(app).install(app.app)
        self.recording = Recording(app.resource())
        self.site = UploadSite(
            self.recording,
            self.storage.new_staging,
            max_upload=self.max_upload,
            authorize=app.principal,
            run=inline,
            reactor=clock,
        )
        self.http = self.serve(self.site)

    @property
    def requests(self) -> list[Request]:
        """
        The requests served so far, in order.
        """
        return self.recording.requests

    def close(self) -> None:
        self.hub.stop()
        self.index.stop()
        self.cooperator.stop()

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        Have Twisted's HTTP channel drive pull producers (C{static.File}'s,
        which send downloads) on this server's clock: it does so through the
        global cooperator, which runs on the global reactor.
        """
        monkeypatch.setattr(_producer_helpers, "cooperate", self.cooperator.cooperate)

    def api(self, token: str | None = KEY, idle_timeout: float = 5.0, name: str = "laptop") -> BoxsyncAPI:
        """
        A client of this server, on its clock.
        """
        return BoxsyncAPI(
            http=self.http,
            clock=self.reactor,
            base_url="http://box.example",
            token=token,
            client_name=name,
            idle_timeout=idle_timeout,
        )


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryServer]:
    """
    A server in memory on a new box, closed when the test ends. Test modules
    import it.
    """
    running = MemoryServer(tmp_path / "box")
    running.patch(monkeypatch)
    try:
        yield running
    finally:
        running.close()


def result_of(d: Deferred[T]) -> T:
    """
    The result of C{d}, which must have fired; raises its failure.
    """
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    assert outcome, "the call has not finished"
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    result: T = outcome[0]
    return result
