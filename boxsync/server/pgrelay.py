"""
The relay over PostgreSQL (L{PostgresRelay}): a server's commits are told to
the others with C{NOTIFY} on L{CHANNEL}, the blocks of files on their way on
L{BLOCKS_CHANNEL}, and theirs heard with C{LISTEN}; see
L{boxsync.server.relay}.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import psycopg
from attrs import define, field
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from ..errors import first_line
from ..wire.events import Incoming
from .relay import CATCH_UP_SECONDS, Commit, Receiver, announcements, arrivals, decode_news

__all__ = ["BLOCKS_CHANNEL", "CHANNEL", "PostgresRelay"]

#: The PostgreSQL channel commits are announced on.
CHANNEL = "boxsync_commits"

#: The PostgreSQL channel the blocks of files on their way are told on.
BLOCKS_CHANNEL = "boxsync_blocks"

#: How long the listening thread waits for a notification before it looks
#: whether it should stop (s).
_POLL_SECONDS = 0.5

#: How long it waits before it connects again after losing its connection.
_RECONNECT_SECONDS = 1.0


@define
class PostgresRelay(Service):
    """
    The relay over the PostgreSQL database at C{url}: one connection that
    listens, in a thread of its own, and one that announces, in another.

    @ivar reactor: where the threads' results are handed back.
    @ivar clock: what times the catch-up.
    @ivar server: this server's name on the channel (random by default).
    """

    reactor: IReactorFromThreads
    clock: IReactorTime
    url: str
    receiver: Receiver
    server: str = field(factory=lambda: os.urandom(8).hex())
    catch_up_seconds: float = CATCH_UP_SECONDS
    _stopping: threading.Event = field(factory=threading.Event)
    _listener: threading.Thread | None = None
    _announcer: ThreadPool = field(init=False)
    _sending: psycopg.Connection[Any] | None = None
    _told: list[tuple[str, int, int, str | None]] = field(factory=list)
    _news: list[str] = field(factory=list)
    _arrived: dict[str, list[str]] = field(factory=dict)
    _loop: LoopingCall | None = None
    log = Logger()

    def __attrs_post_init__(self) -> None:
        self._announcer = ThreadPool(1, 1, "boxsync-relay")

    def startService(self) -> None:
        super().startService()
        self._stopping.clear()
        self._announcer.start()
        self._listener = threading.Thread(target=self._listen, name="boxsync-relay-listen", daemon=True)
        self._listener.start()
        self._loop = LoopingCall(self.receiver.catch_up)
        self._loop.clock = self.clock
        self._loop.start(self.catch_up_seconds, now=False)

    def stopService(self) -> None:
        self._stopping.set()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._announcer.stop()
        if self._sending is not None:
            self._sending.close()
            self._sending = None
        if self._listener is not None:
            # It looks whether to stop at least every _POLL_SECONDS.
            self._listener.join(5 * _POLL_SECONDS)
        super().stopService()

    def tell(self, account: str, seq: int, stream: str | None) -> None:
        """
        Seq C{seq} of C{account} was committed here, from C{stream}: told to
        the other servers once the reactor is free again, in one
        notification with the seqs that follow it from the same stream.
        """
        self._soon()
        last = self._told[-1] if self._told else None
        if last is not None and last[0] == account and last[3] == stream and last[2] + 1 == seq:
            self._told[-1] = (account, last[1], seq, stream)
        else:
            self._told.append((account, seq, seq, stream))

    def tell_arrived(self, account: str, sha256: str) -> None:
        """
        The block C{sha256} of C{account} was put here: told to the other
        servers once the reactor is free again, with the others put by then.
        """
        self._soon()
        self._arrived.setdefault(account, []).append(sha256)

    def tell_incoming(self, account: str, incoming: Incoming, stream: str | None) -> None:
        """
        A client on C{stream} said it is sending C{incoming}: told to the
        other servers once the reactor is free again.
        """
        self._soon()
        self._news += [news.encode() for news in announcements(self.server, account, incoming, stream)]

    def _soon(self) -> None:
        if not (self._told or self._news or self._arrived):
            self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        told, self._told = self._told, []
        news, self._news = self._news, []
        arrived, self._arrived = self._arrived, {}
        for account, hashes in arrived.items():
            news += [each.encode() for each in arrivals(self.server, account, hashes)]
        if news:
            self._notify(BLOCKS_CHANNEL, news).addErrback(
                lambda f: self.log.warn("cannot tell of blocks on their way: {error}", error=f.value)
            )
        for account, first, last, stream in told:
            self.announce(account, first, last, stream)

    def announce(self, account: str, first: int, last: int, stream: str | None) -> Any:
        """
        Tell the other servers that seqs C{first} to C{last} of C{account}
        were committed here, from C{stream}. A Deferred that fires once it
        is said (a notification that cannot be sent is logged: the others
        catch up).
        """
        commit = Commit(self.server, account, first, last, stream)
        d = self._notify(CHANNEL, [commit.encode()])
        d.addErrback(lambda f: self.log.warn("cannot announce a commit: {error}", error=f.value))
        return d

    def _notify(self, channel: str, payloads: list[str]) -> Any:
        """
        Send C{payloads} on C{channel}, in the announcing thread, in order.
        """

        def send() -> None:
            # A connection kept from an earlier commit may have died with
            # its server (PostgreSQL restarted since): then once more, on a
            # new one.
            while True:
                kept = self._sending is not None and not self._sending.closed
                if self._sending is None or self._sending.closed:
                    self._sending = psycopg.connect(self.url, autocommit=True)
                try:
                    while payloads:
                        self._sending.execute("SELECT pg_notify(%s, %s)", (channel, payloads[0]))
                        del payloads[0]
                    return
                except psycopg.OperationalError:
                    self._sending.close()
                    self._sending = None
                    if not kept:
                        raise

        return deferToThreadPool(self.reactor, self._announcer, send)

    def _listen(self) -> None:
        """
        The listening thread: receive notifications until stopped, and
        connect again whenever the connection is lost.
        """
        lost = False
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    connection.execute(f"LISTEN {BLOCKS_CHANNEL}")
                    if lost:
                        self.reactor.callFromThread(self._back)
                        lost = False
                    while not self._stopping.is_set():
                        for notification in connection.notifies(timeout=_POLL_SECONDS):
                            self.reactor.callFromThread(self._received, notification.channel, notification.payload)
            except psycopg.Error as e:
                if not lost:
                    self.reactor.callFromThread(self._lost, first_line(e))
                lost = True
                self._stopping.wait(_RECONNECT_SECONDS)

    def _received(self, channel: str, payload: str) -> None:
        if channel == BLOCKS_CHANNEL:
            try:
                news = decode_news(payload)
            except ValueError as e:
                self.log.warn("ignoring a notification: {error}", error=str(e))
                return
            if news.server != self.server:
                self.receiver.heard(news)
            return
        try:
            commit = Commit.decode(payload)
        except ValueError:
            self.log.warn("ignoring a notification that is not a commit: {payload!r}", payload=payload)
            return
        if commit.server != self.server:
            self.receiver.committed(commit)

    def _lost(self, error: str) -> None:
        self.log.warn("lost the commits of other servers ({error}); connecting again", error=error)

    def _back(self) -> None:
        self.log.info("hearing the commits of other servers again; catching up")
        self.receiver.catch_up()
