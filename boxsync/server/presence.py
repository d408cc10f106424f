"""
Who is connected: the clients of an account as the web page's clients panel
shows them, with how many event streams each has open, when it was last
connected, and its transfers under way.

One server knows that of its own clients (its L{Hub} and L{Transfers}).
Servers of one index in PostgreSQL serve the clients of an account between
them, a client reaching any of them: each reports what it sees to the token
registry they share every L{REPORT_SECONDS} (an account's line only when it
changed), and the panel adds up the reports of all of them. The report of a
server silent for L{STALE_SECONDS} (stopped, or killed) still tells when its
clients were last seen, but no longer that they are connected.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from typing import Any, Iterable

from attrs import define, evolve, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .hub import Hub
from .outage import Outage
from .tokenwatch import TokenWatch
from .transfers import Transfers

__all__ = ["REPORT_SECONDS", "STALE_SECONDS", "ClientSeen", "Presence", "merged"]

#: How often a server of many reports the clients it serves.
REPORT_SECONDS = 2.0
#: How long after its last report a server's clients no longer count as
#: connected through it.
STALE_SECONDS = 10.0
#: How long after its last report a server's report is forgotten.
FORGET_SECONDS = 30 * 24 * 3600.0


@frozen
class ClientSeen:
    """
    One client of an account, as one server or all of them see it.

    @ivar last_seen: when it last had a stream open (now, while it has one
        or transfers something).
    """

    client: str
    streams: int
    last_seen: float
    transfers: tuple[dict[str, Any], ...] = ()

    @property
    def connected(self) -> bool:
        """
        Whether it is connected now: a stream open, or a transfer under way.
        """
        return bool(self.streams or self.transfers)

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "streams": self.streams,
            "last_seen": self.last_seen,
            "transfers": list(self.transfers),
        }


def merged(views: Iterable[Iterable[ClientSeen]]) -> list[ClientSeen]:
    """
    The clients of several servers' views as one, by name: their streams
    and transfers added up, the latest of their last connections.
    """
    found: dict[str, ClientSeen] = {}
    for view in views:
        for seen in view:
            before = found.get(seen.client)
            found[seen.client] = seen if before is None else ClientSeen(
                seen.client,
                before.streams + seen.streams,
                max(before.last_seen, seen.last_seen),
                before.transfers + seen.transfers,
            )
    return [found[client] for client in sorted(found)]


def _reported(text: str, reported: float, now: float) -> list[ClientSeen]:
    """
    The clients in a server's report C{text}, made at C{reported}. A client
    connected there counts as connected until C{now} if the server reported
    since L{STALE_SECONDS}, else as last seen at that report.
    """
    fresh = now - reported < STALE_SECONDS
    views = []
    for entry in json.loads(text):
        # A client connected was told without a time: that of the report.
        when = reported if entry["last_seen"] is None else entry["last_seen"]
        told = ClientSeen(entry["client"], entry["streams"], when, tuple(entry["transfers"]))
        if not told.connected:
            views.append(told)
        elif fresh:
            views.append(evolve(told, last_seen=now))
        else:
            views.append(evolve(told, streams=0, transfers=()))
    return views


@define
class Presence:
    """
    The clients of each account, for the panel.

    @ivar shared: the token registry of the servers of the index, for a
        server that may have others beside it; C{None} for a server alone.
    @ivar server: this server's name in the reports: new at each start.
    """

    clock: IReactorTime
    hub: Hub
    transfers: Transfers
    shared: TokenWatch | None = None
    report_seconds: float = REPORT_SECONDS
    server: str = field(factory=lambda: secrets.token_hex(8))
    _said: dict[str, str] = field(factory=dict)
    _loop: LoopingCall | None = None
    log = Logger()
    _outage: Outage = field(factory=lambda: Outage("reporting this server's clients", Presence.log))

    def here(self, account: str) -> list[ClientSeen]:
        """
        The clients of C{account} this server has seen since it started, or
        that have a transfer under way here.
        """
        connected = Counter(listener.client for listener in self.hub.listeners(account))
        transfers = self.transfers.of(account)
        seen = self.hub.last_seen(account)
        seen.update(dict.fromkeys(transfers, self.clock.seconds()))
        return [
            ClientSeen(
                client,
                connected.get(client, 0),
                when,
                tuple(transfer.to_json() for transfer in transfers.get(client, ())),
            )
            for client, when in sorted(seen.items())
            if client
        ]

    async def clients(self, account: str) -> list[ClientSeen]:
        """
        The clients of C{account}, on every server of the index.

        @raise IndexUnavailable: if the others' reports cannot be read.
        """
        mine = self.here(account)
        if self.shared is None:
            return mine
        now = self.clock.seconds()
        reports = await self.shared.clients_seen(account)
        return merged([mine, *(_reported(text, when, now) for server, when, text in reports if server != self.server)])

    def start(self) -> None:
        if self.shared is None:
            return
        self._loop = LoopingCall(lambda: Deferred.fromCoroutine(self._outage.round(self.report)))
        self._loop.clock = self.clock
        self._loop.start(self.report_seconds, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    async def report(self) -> None:
        """
        Tell the others what this server sees of the clients of each
        account that changed since it last did.
        """
        assert self.shared is not None
        accounts = self.hub.accounts() | self.transfers.accounts() | set(self._said)
        now = self.clock.seconds()
        changed = {}
        for account in sorted(accounts):
            text = json.dumps([_unstamped(seen) for seen in self.here(account)], sort_keys=True)
            if text == "[]":
                text = ""
            if self._said.get(account) != text:
                changed[account] = text
        await self.shared.report_clients(self.server, now, changed, now - FORGET_SECONDS)
        for account, text in changed.items():
            if text:
                self._said[account] = text
            else:
                self._said.pop(account, None)


def _unstamped(seen: ClientSeen) -> dict[str, Any]:
    """
    C{seen} as reported: a client connected now is told without a time (its
    reader takes the time of the report), so that an account's line
    changes only when its clients do.
    """
    entry = seen.to_json()
    if seen.connected:
        entry["last_seen"] = None
    return entry
