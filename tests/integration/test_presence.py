"""
The clients panel's view of an account's clients: one server's own, and
that of several servers adding up their reports through the token registry
they share (here two servers' watches on one registry file, with the real
reactor for the registry's thread and a L{Clock} for the time).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import AsyncIterator

import pytest_twisted
from attrs import define
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from boxsync.server.hub import Hub
from boxsync.server.presence import REPORT_SECONDS, STALE_SECONDS, ClientSeen, Presence, merged
from boxsync.server.registry import TokenRegistry
from boxsync.server.tokenwatch import TokenWatch
from boxsync.server.transfers import UP, Transfers
from tests.helpers import timed


@define
class _Listener:
    stream_id: str
    client: str


def test_views_add_up_by_client() -> None:
    upload = {"path": "a.txt", "direction": UP, "size": 3, "moved": 1, "started": 5.0}
    one = [ClientSeen("laptop", 1, 50.0), ClientSeen("phone", 0, 20.0)]
    two = [ClientSeen("phone", 2, 40.0, (upload,)), ClientSeen("desktop", 0, 10.0)]
    assert merged([one, two, []]) == [
        ClientSeen("desktop", 0, 10.0),
        ClientSeen("laptop", 1, 50.0),
        ClientSeen("phone", 2, 40.0, (upload,)),
    ]
    assert merged([]) == []


def test_a_server_alone_tells_its_own_clients() -> None:
    clock = Clock()
    hub, transfers = Hub(clock), Transfers(clock)
    presence = Presence(clock, hub, transfers)
    clock.advance(10)
    remove = hub.add("alice", _Listener("s1", "laptop"))
    hub.add("alice", _Listener("s2", "laptop"))
    clock.advance(5)
    remove()
    transfers.start("alice", "phone", UP, "big.iso", 100)
    clock.advance(5)
    laptop, phone = presence.here("alice")
    assert laptop == ClientSeen("laptop", 1, 20.0)
    assert (phone.client, phone.streams, phone.last_seen) == ("phone", 0, 20.0)
    assert [t["path"] for t in phone.transfers] == ["big.iso"]
    assert presence.here("bob") == []


@define
class _Server:
    hub: Hub
    transfers: Transfers
    presence: Presence
    watch: TokenWatch


@pytest_twisted.async_yield_fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[_Server, _Server, Clock]]:
    clock = Clock()
    clock.advance(1_000)
    made = []
    for _ in range(2):
        watch = TokenWatch(reactor, lambda: TokenRegistry(tmp_path / "tokens.sqlite"))  # type: ignore[arg-type]
        await timed(Deferred.fromCoroutine(watch.start()), reactor)
        hub, transfers = Hub(clock), Transfers(clock)
        made.append(_Server(hub, transfers, Presence(clock, hub, transfers, watch), watch))
    try:
        yield made[0], made[1], clock
    finally:
        for server in made:
            server.watch.stop()


def _seen(found: list[ClientSeen]) -> list[tuple[str, int, float, list[str]]]:
    return [(c.client, c.streams, c.last_seen, [t["path"] for t in c.transfers]) for c in found]


@pytest_twisted.ensureDeferred
async def test_servers_add_up_what_each_reports(servers: tuple[_Server, _Server, Clock]) -> None:
    one, two, clock = servers
    one.hub.add("alice", _Listener("s1", "laptop"))
    remove = two.hub.add("alice", _Listener("s2", "phone"))
    transfer = two.transfers.start("alice", "phone", UP, "big.iso", 100)
    for server in (one, two):
        await timed(Deferred.fromCoroutine(server.presence.report()), reactor)
    clock.advance(REPORT_SECONDS)
    # Each sees its own clients and the other's, connected now.
    for server in (one, two):
        found = await timed(Deferred.fromCoroutine(server.presence.clients("alice")), reactor)
        assert _seen(found) == [("laptop", 1, 1_002.0, []), ("phone", 1, 1_002.0, ["big.iso"])]
    # The phone leaves; until two says so, one still counts it as there.
    two.transfers.end("alice", transfer)
    remove()
    found = await timed(Deferred.fromCoroutine(one.presence.clients("alice")), reactor)
    assert _seen(found)[1] == ("phone", 1, 1_002.0, ["big.iso"])
    clock.advance(1)
    await timed(Deferred.fromCoroutine(two.presence.report()), reactor)
    found = await timed(Deferred.fromCoroutine(one.presence.clients("alice")), reactor)
    assert _seen(found) == [("laptop", 1, 1_003.0, []), ("phone", 0, 1_002.0, [])]
    # A client of another account is not told.
    assert await timed(Deferred.fromCoroutine(one.presence.clients("bob")), reactor) == []


@pytest_twisted.ensureDeferred
async def test_a_silent_server_s_clients_are_no_longer_connected(servers: tuple[_Server, _Server, Clock]) -> None:
    """
    A server that stopped reporting (stopped, or killed) leaves what it last
    said: its clients were last seen then, and are not connected through
    it any more.
    """
    one, two, clock = servers
    two.hub.add("alice", _Listener("s2", "phone"))
    two.transfers.start("alice", "phone", UP, "big.iso", 100)
    await timed(Deferred.fromCoroutine(two.presence.report()), reactor)
    clock.advance(STALE_SECONDS - 1)
    found = await timed(Deferred.fromCoroutine(one.presence.clients("alice")), reactor)
    assert _seen(found) == [("phone", 1, clock.seconds(), ["big.iso"])]
    clock.advance(2)
    found = await timed(Deferred.fromCoroutine(one.presence.clients("alice")), reactor)
    assert _seen(found) == [("phone", 0, 1_000.0, [])]


@pytest_twisted.ensureDeferred
async def test_a_report_tells_only_the_accounts_that_changed(
    servers: tuple[_Server, _Server, Clock], tmp_path: Path
) -> None:
    one, _, clock = servers
    one.hub.add("alice", _Listener("s1", "laptop"))
    remove = one.hub.add("bob", _Listener("s2", "phone"))
    registry = TokenRegistry(tmp_path / "tokens.sqlite")
    try:
        await timed(Deferred.fromCoroutine(one.presence.report()), reactor)
        (alice,) = registry.clients_seen("alice")
        clock.advance(REPORT_SECONDS)
        remove()
        # Bob's line is written again; alice's (connected all along) is not,
        # but her server's report time moves.
        registry._db.execute("UPDATE clients_seen SET clients = '[]' WHERE account = 'alice'")
        await timed(Deferred.fromCoroutine(one.presence.report()), reactor)
        assert registry.clients_seen("alice") == [(alice[0], 1_002.0, "[]")]
        ((_, _, bob),) = registry.clients_seen("bob")
        assert [(c["client"], c["streams"], c["last_seen"]) for c in json.loads(bob)] == [("phone", 0, 1_002.0)]
    finally:
        registry.close()
