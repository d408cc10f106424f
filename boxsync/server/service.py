"""
The server as a tree of Twisted services: the index, the boxes (checked
against the index at start-up; in token mode, the accounts and their
boxes), the hub, the HTTP listeners and the periodic status line. Each
starts and stops itself; the tree starts them in that order and stops them
in the reverse one, and the listeners open only once the boxes are checked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, Protocol

import psutil
from attrs import define, field
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredLock, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory

from ..lock import FolderLock, Locked
from ..paths import SERVER_LOCK_FILE
from ..reactors import IServerReactor
from ..stdlog import LibraryLogs
from .accounts import Accounts
from .adopt import LOOK_SECONDS, QUIET_SECONDS, adopt, look_for_hand_changes
from .history import HistoryRoutes
from .retention import TIDY_SECONDS, Retention, tidy
from .app import BoxsyncApp
from .auth import DEFAULT_ACCOUNT, IAuthenticator, TokenAuth
from .blockstore import IBlockStore, LocalBlockStore
from .box import Box
from .bucketed import BucketedBlockStore
from .hub import MAX_STREAMS_PER_TOKEN, Hub
from .index import IIndex, IndexUnavailable, SQLiteIndex, Stats
from .legacy import LegacyAdapter
from .limits import (
    MAX_MANIFEST_BYTES,
    MAX_MANIFEST_ENTRIES,
    MAX_UPLOAD,
    ConnectionLimits,
)
from .presence import Presence
from .registry import REGISTRY_FILE, Registry, TokenRegistry
from .relay import BlockNews, Commit, Receiver, Relay
from .s3store import S3BlockStore, S3Bucket, parse_store_url
from .sessions import SIGN_IN, Sessions, session_key
from .tokenwatch import POLL_SECONDS, TokenWatch
from .storage import BoxStorage
from .turns import COMMIT_LOCK, Turns
from .tokens import load_secret
from .uploads import UploadSite
from .web import WebPage

if TYPE_CHECKING:
    from .pgindex import PostgresIndex

__all__ = [
    "INDEX_FILE",
    "BoxInUse",
    "BoxsyncService",
    "ServerConfig",
    "claim",
    "indexed_in",
    "open_index",
    "open_registry",
    "record_index",
    "served_with",
]


@define
class ServerConfig:
    """
    @ivar auth: who gets in, with one account; C{None} with C{tokens}.
    @ivar tokens: serve many accounts, one folder each, to clients with
        signed tokens (L{boxsync.server.tokens}) instead.
    @ivar index: the PostgreSQL database the index is in (a
        C{postgresql://} URL); C{None}: SQLite, in the box's hidden folder.
    @ivar store: the S3 bucket the blocks clients send are kept in (an
        C{s3://} URL, see L{boxsync.server.s3store.parse_store_url});
        C{None}: in the box's hidden folder.
    @ivar max_streams_per_token: the most event streams one token may hold
        open at once.
    @ivar retention: what of the overwritten and deleted versions is kept
        (C{--keep-versions}, C{--thin-versions}, C{--history-max}).
    @ivar tidy_seconds: how often old versions and unused blocks are
        removed.
    @ivar look_seconds: how often the box is looked at for what a person
        changed in it by hand (0: never, only at start-up).
    @ivar revocation_seconds: how often, in token mode, the token registry
        is checked for revocations and new accounts.
    """

    box: Path
    listen: list[str]
    auth: IAuthenticator | None = None
    max_upload: int | None = MAX_UPLOAD
    status_seconds: float = 60.0
    keepalive_seconds: float = 15.0
    max_manifest: int | None = MAX_MANIFEST_BYTES
    max_manifest_entries: int = MAX_MANIFEST_ENTRIES
    connections: ConnectionLimits = ConnectionLimits()
    tokens: bool = False
    index: str | None = None
    store: str | None = None
    max_streams_per_token: int = MAX_STREAMS_PER_TOKEN
    revocation_seconds: float = POLL_SECONDS
    retention: Retention = field(factory=Retention)
    tidy_seconds: float = TIDY_SECONDS
    look_seconds: float = LOOK_SECONDS

    def __attrs_post_init__(self) -> None:
        if (self.auth is None) != self.tokens:
            raise ValueError("give either an authenticator or token mode, not both or neither")


#: The server's lock file and the file that says how the box is served,
#: below the box's hidden folder.
LOCK_FILE = SERVER_LOCK_FILE

log = Logger()

#: How long a stopping server lets the requests under way end.
DRAIN_SECONDS = 10.0

#: How often it looks whether they have.
DRAIN_POLL_SECONDS = 0.05

#: The file the servers of one box take turns on to tidy it, and to look
#: at it for changes made by hand.
TIDY_LOCK = "tidy.lock"
MODE_FILE = "mode"


class BoxInUse(Exception):
    """
    The box cannot be served by this server: another one serves it, or it
    was served the other way (accounts with tokens, or one shared key).
    """


def claim(hidden: Path, tokens: bool) -> FolderLock:
    """
    Make this the only server of the box whose hidden folder is C{hidden},
    served in token mode or not as it always was (recorded at its first
    start; a box with a token registry was served with tokens).

    @raise BoxInUse: if another server holds it, or it was served the other
        way: its accounts' folders would be given to the shared key, or
        the other way round.
    """
    try:
        lock = FolderLock.acquire(hidden / LOCK_FILE)
    except Locked as e:
        raise BoxInUse(f"{hidden.parent} is already served by another boxsync server (pid {e.pid})") from None
    _check_mode(hidden, tokens, lock)
    return lock


async def claim_shared(
    hidden: Path, tokens: bool, in_thread: Callable[[Callable[[], FolderLock]], Deferred[FolderLock]]
) -> tuple[FolderLock, bool]:
    """
    Serve the box whose hidden folder is C{hidden} beside the other servers
    of its index in PostgreSQL: alone if none serves it yet (the lock is
    then taken alone, for the box to be checked, and L{FolderLock.share}d
    after), else beside them, once the one checking it is done.

    @return: the lock, and whether this server is alone.
    @raise BoxInUse: as L{claim}.
    """
    try:
        lock = FolderLock.acquire(hidden / LOCK_FILE)
        alone = True
    except Locked as e:
        log.info(
            "the box {box} is served already (pid {pid} took it first): waiting to serve it beside",
            box=str(hidden.parent),
            pid=e.pid,
        )
        lock = await in_thread(lambda: FolderLock.acquire(hidden / LOCK_FILE, shared=True, wait=True))
        alone = False
    _check_mode(hidden, tokens, lock)
    return lock, alone


def served_with(hidden: Path) -> str | None:
    """
    How the box whose hidden folder is C{hidden} has been served: C{tokens}
    (an account per folder), C{key} (one shared key), or C{None} if it
    never was. A box from before this was noted was served with tokens if
    it has a token registry.
    """
    try:
        return (hidden / MODE_FILE).read_text().strip()
    except FileNotFoundError:
        return "tokens" if (hidden / REGISTRY_FILE).exists() else None


def _check_mode(hidden: Path, tokens: bool, lock: FolderLock) -> None:
    """
    @raise BoxInUse: if the box was served the other way (see L{claim});
        C{lock} is then released.
    """
    mode = "tokens" if tokens else "key"
    was = served_with(hidden)
    if was is None:
        was = mode
        (hidden / MODE_FILE).write_text(was + "\n")
    if was != mode:
        lock.release()
        served = "with --tokens (an account per folder)" if was == "tokens" else "to one shared key"
        raise BoxInUse(
            f"{hidden.parent} was served {served}: serve it the same way, or move its files to a "
            f"new box to change (see docs/deploy.md)"
        )


def open_index(
    reactor: IServerReactor, url: str | None, hidden: Path, timeout: float | None = None
) -> SQLiteIndex | PostgresIndex:
    """
    The index: in the PostgreSQL database at C{url} (waited for up to
    C{timeout} seconds, if given, instead of the default), else in SQLite
    in the box's hidden folder C{hidden}. Not started.
    """
    if url is None:
        return SQLiteIndex(reactor, hidden / "index.sqlite")
    from .pgindex import PostgresIndex

    return PostgresIndex(reactor, url) if timeout is None else PostgresIndex(reactor, url, timeout=timeout)


#: In the box's hidden folder of servers whose index is in PostgreSQL: where
#: it is (C{postgresql://host:port/database}, no user, no password), for
#: C{boxsync-admin} to say where to find it.
INDEX_FILE = "index-in"


def record_index(hidden: Path, url: str) -> None:
    """
    Note in the box's hidden folder C{hidden} that its index is in the
    PostgreSQL database at C{url} (L{INDEX_FILE}).
    """
    from .pgindex import where

    said = f"postgresql://{where(url)}\n"
    path = hidden / INDEX_FILE
    if not path.exists() or path.read_text() != said:
        path.write_text(said)


def indexed_in(hidden: Path) -> str | None:
    """
    Where the index of the box whose hidden folder is C{hidden} is, if it is
    in PostgreSQL (as L{record_index} noted), else C{None}.
    """
    try:
        return (hidden / INDEX_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def open_registry(url: str | None, hidden: Path, timeout: float | None = None) -> Registry:
    """
    The token registry: in the PostgreSQL database at C{url} (reached
    within C{timeout} seconds, if given, instead of the default), with the
    tokens of the box's own registry (from before its index moved there)
    copied in; else the box's SQLite file. Blocks: call it from a thread.
    """
    own = hidden / REGISTRY_FILE
    if url is None:
        return TokenRegistry(own)
    from .pgregistry import PostgresRegistry

    registry = PostgresRegistry(url) if timeout is None else PostgresRegistry(url, timeout)
    if own.exists():
        before = TokenRegistry(own)
        try:
            registry.take_in(before)
        finally:
            before.close()
    return registry


def open_relay(reactor: IServerReactor, url: str | None, receiver: Receiver) -> Relay | None:
    """
    With an index in PostgreSQL (at C{url}), the relay that tells the other
    servers on it of this one's commits and C{receiver} of theirs; else
    none: a server alone has no one to tell. Not started.
    """
    if url is None:
        return None
    from .pgrelay import PostgresRelay

    return PostgresRelay(reactor, reactor, url, receiver)


@define
class _Followers:
    """
    The boxes of this server, as the relay's L{Receiver}: another server's
    commit is published by the box of its account, if this server has it.
    """

    boxes: Callable[[], list[Box]]
    box_of: Callable[[str], Box | None]
    log = Logger()

    def committed(self, commit: Commit) -> None:
        box = self.box_of(commit.account)
        if box is not None:
            self._follow(box.remote(commit))

    def catch_up(self) -> None:
        for box in self.boxes():
            self._follow(box.catch_up())

    def heard(self, news: BlockNews) -> None:
        box = self.box_of(news.account)
        if box is not None:
            box.heard(news)

    def _follow(self, work: Coroutine[Any, Any, None]) -> None:
        Deferred.fromCoroutine(work).addErrback(
            lambda failure: self.log.failure("publishing another server's commits", failure)
        )


class _Startable(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


class _IndexService(Service):
    """
    The index, open while the server runs.
    """

    def __init__(self, index: _Startable) -> None:
        self.index = index

    def startService(self) -> None:
        super().startService()
        self.index.start()

    def stopService(self) -> None:
        super().stopService()
        self.index.stop()


class _BoxesService(Service):
    """
    The boxes: checked against the index as the service starts (L{ready}
    fires then), the token registry watched while it runs, and in token
    mode the accounts.
    """

    log = Logger()

    def __init__(
        self,
        storage: BoxStorage,
        tokens: bool,
        check: Callable[[], Coroutine[Any, Any, object]],
        watch: TokenWatch,
        accounts: Accounts | None,
        index: str | None = None,
    ) -> None:
        self.storage = storage
        self.tokens = tokens
        self._check = check
        self.watch = watch
        self.accounts = accounts
        self.index = index
        #: Whether other servers may serve the box too (its index is in PostgreSQL).
        self.beside_others = index is not None
        self.ready: Deferred[object] = Deferred()
        self._lock: FolderLock | None = None

    def startService(self) -> None:
        super().startService()
        Deferred.fromCoroutine(self._start()).chainDeferred(self.ready)

    async def _start(self) -> object:
        try:
            return await self._claim_and_check()
        except BaseException:
            # The service may never be stopped: leave no thread behind.
            self.watch.stop()
            raise

    async def _claim_and_check(self) -> object:
        # Before anything of the box is touched: another server may be
        # writing its staging files.
        if not self.beside_others:
            self._lock = claim(self.storage.hidden, self.tokens)
            await self.watch.start()
        else:
            self._lock, alone = await claim_shared(self.storage.hidden, self.tokens, self.storage.in_thread)
            assert self.index is not None
            record_index(self.storage.hidden, self.index)
            await self.watch.start()
            if not alone:
                # The others write in the box: it is theirs as much as ours,
                # and was checked by the first of them.
                self.log.info("serving the box beside other servers")
                if self.accounts is not None:
                    self.accounts.adopting = False
                    await self.accounts.start()
                return None
        left = self.storage.clean_staging()
        if left:
            self.log.info("removed {count} unfinished uploads", count=left)
        checked = await self._check()
        if self.beside_others:
            if self.accounts is not None:
                # Accounts made from now on may be written in by others.
                self.accounts.adopting = False
            self._lock.share()
        return checked

    def stopService(self) -> None:
        super().stopService()
        self.watch.stop()
        if self._lock is not None:
            self._lock.release()


class _HubService(Service):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def startService(self) -> None:
        super().startService()
        self.hub.start()

    def stopService(self) -> None:
        super().stopService()
        self.hub.stop()


class _PresenceService(Service):
    """
    The reports of this server's clients to the others', from when the
    boxes are ready (the token registry is read then) until it stops.
    """

    def __init__(self, presence: Presence, ready: Deferred[object]) -> None:
        self.presence = presence
        self.ready = ready

    def startService(self) -> None:
        super().startService()
        self.ready.addCallback(self._start)

    def _start(self, result: object) -> object:
        if self.running:
            self.presence.start()
        return result

    def stopService(self) -> None:
        super().stopService()
        self.presence.stop()


class _ListenService(Service):
    """
    The HTTP listeners, opened once C{after} fires. As the service stops
    they close, the requests under way are given up to C{drain_seconds} to
    end (an answer cut short would leave its client unsure whether its
    commit was made), and then every open connection is cut: event streams
    at once, since they never end by themselves.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IServerReactor,
        listen: list[str],
        factory: WrappingFactory,
        after: Deferred[object],
        site: UploadSite,
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self.reactor = reactor
        self.listen = listen
        self.factory = factory
        self.after = after
        self.site = site
        self.drain_seconds = drain_seconds
        self.ports: list[IListeningPort] = []
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        Deferred.fromCoroutine(self._open()).chainDeferred(self.ready)

    async def _open(self) -> None:
        await self.after
        for description in self.listen:
            if not self.running:
                return  # stopped while the boxes were being checked
            endpoint = serverFromString(self.reactor, description)
            self.ports.append(await endpoint.listen(self.factory))
        self.log.info("listening on {listen}", listen=", ".join(self.listen))

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return Deferred.fromCoroutine(self._close())

    async def _close(self) -> None:
        ports, self.ports = self.ports, []
        await gatherResults([maybeDeferred(port.stopListening) for port in ports], consumeErrors=True)
        deadline = self.reactor.seconds() + self.drain_seconds
        while self.site.answering() and self.reactor.seconds() < deadline:
            await deferLater(self.reactor, DRAIN_POLL_SECONDS, lambda: None)
        for connection in list(self.factory.protocols):
            connection.transport.abortConnection()


class _Periodic(Service):
    """
    Some work every C{seconds}, from one period after the server is ready
    (the status line in the log, the tidying of the boxes); work that fails
    is logged and the next comes.
    """

    log = Logger()

    def __init__(self, clock: Any, seconds: float, work: Callable[[], Coroutine[Any, Any, object]], after: Deferred[None]) -> None:
        self._loop = LoopingCall(lambda: Deferred.fromCoroutine(self._run(work)))
        self._loop.clock = clock
        self.seconds = seconds
        self.after = after

    async def _run(self, work: Callable[[], Coroutine[Any, Any, object]]) -> None:
        try:
            await work()
        except Exception:
            self.log.failure("periodic work failed")

    def startService(self) -> None:
        super().startService()
        self.after.addCallback(self._start)

    def _start(self, result: None) -> None:
        if self.running:
            self._loop.start(self.seconds, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()


class BoxsyncService(MultiService):
    """
    Runs one boxsync server. The listeners start only once the box has been
    checked against the index, so no client ever sees a stale box; L{ready}
    fires then (or fails with why the server could not start).
    """

    log = Logger()

    def __init__(self, reactor: IServerReactor, config: ServerConfig) -> None:
        super().__init__()
        self.reactor = reactor
        self.config = config
        self.storage = BoxStorage(reactor, config.box)
        self.index = open_index(reactor, config.index, self.storage.hidden)
        self.hub = Hub(reactor, config.keepalive_seconds, config.max_streams_per_token)
        self.box: Box | None = None
        self.accounts: Accounts | None = None
        self.relay = open_relay(reactor, config.index, _Followers(self._boxes, self._box_of))
        self.bucket = None if config.store is None else S3Bucket.connect(parse_store_url(config.store), os.environ)
        #: Whether other servers may serve the box too (its index is in PostgreSQL).
        self.cluster = config.index is not None
        #: One tidying of the boxes at a time (the hourly one, one to make
        #: room on a full disk).
        self._tidying = DeferredLock()
        self._making_room: Deferred[None] | None = None
        auth: IAuthenticator
        boxes: Callable[[str], Box]
        check: Callable[[], Coroutine[Any, Any, object]]
        # Signs the tokens and, for every server of the box alike, the web
        # page's sessions.
        secret = load_secret(self.storage.hidden, create=True)
        # The registry: the tokens and accounts, and the sessions signed out.
        self.tokens = TokenWatch(
            reactor, lambda: open_registry(config.index, self.storage.hidden), config.revocation_seconds
        )
        if config.auth is None:
            self.accounts = Accounts(
                reactor,
                self.storage.root,
                self.index,
                self.hub,
                self.tokens,
                relay=self.relay,
                turns=self._turns,
                blocks=self._blocks,
            )
            auth = TokenAuth(secret, reactor, self.tokens.revoked, self.accounts.has)
            boxes = self.accounts.box
            check = self.accounts.start
        else:
            self.box = Box(
                DEFAULT_ACCOUNT,
                self.index,
                self.storage,
                self.hub,
                blocks=self._blocks(DEFAULT_ACCOUNT, self.index, self.storage),
                relay=self.relay,
                turns=self._turns(self.storage),
            )
            auth, boxes = config.auth, self._box_for
            check = lambda: adopt(self._box_for(DEFAULT_ACCOUNT), reactor)  # noqa: E731
        sessions = Sessions(
            reactor,
            auth,
            session_key(secret),
            self.tokens.revoked,
            self.tokens.use_link if self.accounts is not None else None,
            self.tokens.ended,
            self.tokens.end_session,
        )
        self.app = BoxsyncApp(
            reactor,
            auth,
            boxes,
            self.hub,
            max_manifest_entries=config.max_manifest_entries,
            legacy=LegacyAdapter(boxes, self.hub, config.max_manifest_entries, clock=reactor),
            max_upload=config.max_upload,
            sessions=sessions,
            disk_full=self._disk_full,
        )
        self.presence = Presence(reactor, self.hub, self.app.transfers, self.tokens if self.cluster else None)
        WebPage(reactor, self.app, sessions, self.presence).install(self.app.app)
        HistoryRoutes(self.app).install(self.app.app)
        self.site = UploadSite(
            self.app.resource(),
            self.storage.new_staging,
            max_upload=config.max_upload,
            authorize=self.app.principal,
            public=[(b"POST", SIGN_IN.encode())],
            transfers=self.app.transfers,
            max_body=config.max_manifest,
            limits=config.connections,
            reactor=reactor,
        )
        self.site.displayTracebacks = False
        # Tracks every open connection, to close them when the service stops.
        self.factory = WrappingFactory(self.site)
        # First: what the index's and the bucket's libraries say is logged
        # as boxsync's own lines from the start.
        LibraryLogs().setServiceParent(self)
        _IndexService(self.index).setServiceParent(self)
        checked = _BoxesService(self.storage, config.tokens, check, self.tokens, self.accounts, config.index)
        checked.setServiceParent(self)
        _HubService(self.hub).setServiceParent(self)
        _PresenceService(self.presence, checked.ready).setServiceParent(self)
        if isinstance(self.relay, Service):
            self.relay.setServiceParent(self)
        if self.relay is not None:
            checked.ready.addCallback(lambda result: Deferred.fromCoroutine(self._follow(result)))
        self._listeners = _ListenService(reactor, config.listen, self.factory, checked.ready, self.site)
        self._listeners.setServiceParent(self)
        self.ready: Deferred[None] = Deferred()
        self._listeners.ready.addCallbacks(self._started, self._failed)
        if config.status_seconds > 0:
            _Periodic(reactor, config.status_seconds, self._log_status, self._after_ready()).setServiceParent(self)
        _Periodic(reactor, config.tidy_seconds, self._tidy, self._after_ready()).setServiceParent(self)
        if config.look_seconds > 0:
            _Periodic(reactor, config.look_seconds, self._look, self._after_ready()).setServiceParent(self)

    def stopService(self) -> Deferred[Any]:
        """
        Stop answering first, letting the requests under way end; then the
        rest (the index they need among it).
        """
        closed = maybeDeferred(self._listeners.stopService)
        closed.addBoth(lambda _: MultiService.stopService(self))
        return closed

    def _after_ready(self) -> Deferred[None]:
        after: Deferred[None] = Deferred()
        self.ready.addCallback(lambda result: after.callback(None))
        return after

    async def _follow(self, checked: object) -> object:
        """
        Before the first stream opens, have every box publish from now on
        what the other servers commit.
        """
        for box in self._boxes():
            await box.follow()
        return checked

    def _boxes(self) -> list[Box]:
        return [self.box] if self.box is not None else self.accounts.boxes() if self.accounts is not None else []

    def _box_of(self, account: str) -> Box | None:
        for box in self._boxes():
            if box.account == account:
                return box
        return None

    def _turns(self, storage: BoxStorage) -> Turns:
        """
        How the commits of the box kept in C{storage} take turns: beside
        those of the other servers, if there may be others.
        """
        if not self.cluster:
            return Turns()
        return Turns(storage.hidden / COMMIT_LOCK, storage.in_thread)

    def _blocks(self, account: str, index: IIndex, storage: BoxStorage) -> IBlockStore:
        """
        The block store of C{account}: in its box, and in the bucket too if
        there is one.
        """
        local = LocalBlockStore(account, index, storage)
        if self.bucket is None:
            return local
        return BucketedBlockStore(local, S3BlockStore(account, index, self.bucket, self.reactor))

    async def _tidy(self, full: bool = False) -> None:
        # Kept versions do not share their blocks where there are several
        # servers (punched out of one, filled back before a read): the
        # filling on one server could meet the punching on another.
        async with self._tidying:
            await self._on_one_server(
                lambda alone: tidy(self._boxes(), self.config.retention, self.reactor.seconds(), alone, full)
            )

    def _disk_full(self) -> None:
        """
        A commit found the box's disk full: the oldest kept versions make
        room (once at a time; the client tries again by itself).
        """
        if self._making_room is None or self._making_room.called:
            self._making_room = Deferred.fromCoroutine(self._make_room())

    async def _make_room(self) -> None:
        self.log.warn("the box's disk is full: the oldest kept versions go, to make room for the files in use")
        try:
            await self._tidy(full=True)
        except Exception:
            self.log.failure("making room in the box failed")

    async def _look(self) -> None:
        """
        Take what a person changed in the boxes by hand.
        """

        async def look(alone: bool) -> None:
            while self.running:
                unsettled = 0
                for box in self._boxes():
                    unsettled += (await look_for_hand_changes(box)).unsettled
                if not unsettled:
                    return
                # A file still being written (a copy into the box under
                # way): looked at again soon, not a whole period later.
                await deferLater(self.reactor, QUIET_SECONDS, lambda: None)

        await self._on_one_server(look)

    async def _on_one_server(self, work: Callable[[bool], Awaitable[object]]) -> None:
        """
        Do C{work} (told whether this server is the box's only one): where
        there are several, on one of them at a time, the others passing
        their turn (each would find the same to do).
        """
        if not self.cluster:
            await work(True)
            return
        try:
            lock = FolderLock.acquire(self.storage.hidden / TIDY_LOCK)
        except Locked:
            return
        try:
            await work(False)
        finally:
            lock.release()

    @property
    def ports(self) -> list[IListeningPort]:
        return self._listeners.ports

    def _box_for(self, account: str) -> Box:
        assert self.box is not None
        return self.box

    def _started(self, result: None) -> None:
        self.log.info(
            "serving {box} on {listen}",
            box=str(self.storage.root),
            listen=", ".join(self.config.listen),
        )
        self.ready.callback(None)

    def _failed(self, failure: Any) -> None:
        # (A port out of range is an OverflowError from bind.)
        if failure.check(BoxInUse, CannotListenError, OSError, IndexUnavailable, OverflowError):
            # Nothing unexpected: one line says it all.
            self.log.error("the server could not start: {error}", error=_one_line(failure.value))
        else:
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


def _one_line(error: BaseException) -> str:
    if isinstance(error, CannotListenError):
        reason = getattr(error.socketError, "strerror", None) or error.socketError
        return f"cannot listen on port {error.port}: {reason}"
    if isinstance(error, OSError) and error.strerror:
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror}{where}"
    return str(error)
