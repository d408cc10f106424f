"""
Commits made on another server reach this server's event streams: the
boxes' side on one shared index (as two servers on one PostgreSQL would
have), and the relay itself over a real PostgreSQL.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from attrs import define, field
from twisted.internet.defer import Deferred

from boxsync.server.box import Box
from boxsync.server.hub import Hub
from boxsync.server.index import SQLiteIndex
from boxsync.blocks import Block
from boxsync.server.relay import (
    BLOCKS_PER_NOTIFICATION,
    Announced,
    Arrived,
    BlockNews,
    Commit,
    Seen,
    announcements,
    arrivals,
    decode_news,
)
from boxsync.server.storage import BoxStorage
from boxsync.wire import Delete, Download
from boxsync.wire.events import Incoming
from tests.helpers import Recorder, eventually, sha

ACCOUNT = "acct"


def seqs(stream: Recorder) -> list[int]:
    return [event.seq for event in stream.events]  # type: ignore[attr-defined]


@define
class Told:
    """
    A relay that keeps what a box tells it.
    """

    told: list[tuple[str, int, str | None]] = field(factory=list)
    arrived: list[str] = field(factory=list)
    incoming: list[tuple[Incoming, str | None]] = field(factory=list)

    def tell(self, account: str, seq: int, stream: str | None) -> None:
        self.told.append((account, seq, stream))

    def tell_arrived(self, account: str, sha256: str) -> None:
        assert account == ACCOUNT
        self.arrived.append(sha256)

    def tell_incoming(self, account: str, incoming: Incoming, stream: str | None) -> None:
        assert account == ACCOUNT
        self.incoming.append((incoming, stream))


@define
class Server:
    box: Box
    relay: Told
    here: Recorder
    origin: Recorder

    async def upload(self, path: str, data: bytes, stream: str | None = None) -> Any:
        staged = self.box.storage.new_staging()
        staged.write(data)
        return await self.box.upload(path, staged, 0, None, None, stream=stream)


@pytest_twisted.async_yield_fixture
async def servers(tmp_path: Path, reactor: Any) -> AsyncIterator[tuple[Server, Server]]:
    """
    Two servers' boxes of one account on one index, each with its own hub:
    on each, a stream "here" and the stream "origin" uploads come from.
    """
    index = SQLiteIndex(reactor, tmp_path / "index.sqlite")
    index.start()
    made = []
    for name in ("one", "two"):
        relay = Told()
        hub = Hub(reactor)
        here, origin = Recorder(f"here-{name}"), Recorder("origin")
        hub.add(ACCOUNT, here)
        hub.add(ACCOUNT, origin)
        box = Box(ACCOUNT, index, BoxStorage(reactor, tmp_path / name), hub, relay=relay)
        made.append(Server(box, relay, here, origin))
    try:
        yield made[0], made[1]
    finally:
        index.stop()


def test_a_commit_notification_round_trips() -> None:
    for commit in [Commit("s1", "acct", 3, 9, "stream-1"), Commit("s2", "a b", 1, 1, None)]:
        assert Commit.decode(commit.encode()) == commit
    for bad in ["", "s1 3 9 stream", "s1 x 9 - acct", "s1 9 3 - acct", "s1 1 2 - "]:
        with pytest.raises(ValueError):
            Commit.decode(bad)


def run_of(count: int, path: str = "big.bin", offset: int = 0) -> Incoming:
    """
    An announcement of C{count} blocks of C{path} from C{offset}, each of its
    own size.
    """
    blocks = [(hashlib.sha256(b"%d" % n).hexdigest(), 1000 + n) for n in range(count)]
    return Incoming(path, 10**9, offset, blocks)


def test_news_of_blocks_round_trips() -> None:
    for news in [
        Arrived("s1", "acct", (sha(b"1"), sha(b"2"))),
        Announced("s1", "a b", run_of(3, "dir/é.bin", 4096), "stream-1"),
        Announced("s2", "acct", run_of(1), None),
    ]:
        assert decode_news(news.encode()) == news
    for bad in ["", "[]", '{"server": "s"}', '{"server": "s", "account": "a", "arrived": ["nope"]}',
                '{"server": "s", "account": "a", "incoming": {"path": "p"}, "stream": null}']:
        with pytest.raises(ValueError):
            decode_news(bad)


def test_news_of_many_blocks_is_cut_to_fit_a_notification() -> None:
    """
    A run of 1,024 blocks of a file with the longest path is told in
    pieces that each fit PostgreSQL's 8,000 bytes, and together say the
    same blocks at the same offsets.
    """
    for path in ["/".join(["é" * 127] * 16)[:2000], "/".join(['"' * 255] * 8)]:
        assert len(path.encode()) <= 4096
        run = run_of(1024, path, 5000)
        pieces = announcements("server", "a" * 63, run, "stream")
        assert len(pieces) >= -(-1024 // BLOCKS_PER_NOTIFICATION)
        assert max(len(piece.encode().encode()) for piece in pieces) <= 8000
        placed = [block for piece in pieces for block in piece.incoming.placed()]
        assert placed == run.placed()
    # A path of 4 KiB of quotes, escaped, leaves no room: not told at all.
    assert announcements("server", "acct", run_of(3, "/".join(['"' * 255] * 16)), None) == []
    hashes = [sha256 for sha256, _ in run.blocks]
    told = arrivals("server", "acct", hashes)
    assert [h for each in told for h in each.hashes] == hashes
    assert max(len(each.encode().encode()) for each in told) < 8000


def test_each_seq_is_published_once_in_any_order() -> None:
    seen = Seen()
    assert seen.fresh(7) and not seen.fresh(7)
    seen.caught_up(5)
    assert not seen.fresh(4) and seen.fresh(6) and not seen.fresh(7)
    seen.caught_up(7)
    assert seen.above == set() and seen.fresh(8)


@pytest_twisted.ensureDeferred
async def test_a_commit_is_told_and_published_by_the_other_server(servers: tuple[Server, Server]) -> None:
    one, two = servers
    await one.upload("a.txt", b"A", stream="origin")
    assert one.relay.told == [(ACCOUNT, 1, "origin")]
    assert seqs(one.here) == [1] and one.origin.events == []
    assert two.here.events == []

    commit = Commit("other", ACCOUNT, 1, 1, "origin")
    await two.box.remote(commit)
    assert [type(e) for e in two.here.events] == [Download] and seqs(two.here) == [1]
    # The client it came from has it; it hears it from no server.
    assert two.origin.events == []
    # Told twice (a notification, then a catch-up): published once.
    await two.box.remote(commit)
    await two.box.catch_up()
    assert seqs(two.here) == [1]
    # What the other server publishes it does not tell again.
    assert two.relay.told == []


@pytest_twisted.ensureDeferred
async def test_blocks_on_their_way_are_told_and_published_by_the_other_server(
    servers: tuple[Server, Server],
) -> None:
    """
    A client of one server announces blocks and puts one: the streams of
    both servers hear the announcement but the sender's own, and a wait
    for the block on the other server ends once it hears of its arrival.
    """
    one, two = servers
    run = run_of(2)
    one.box.announce([run], "origin")
    assert one.here.events == [run] and one.origin.events == []
    assert one.relay.incoming == [(run, "origin")]
    data = b"a block"
    waiting = two.box.arrivals.wait(sha(data))
    await one.box.put_block(Block(sha(data), len(data)), data)
    assert one.relay.arrived == [sha(data)] and not waiting.called

    two.box.heard(Announced("one", ACCOUNT, run, "origin"))
    assert two.here.events == [run] and two.origin.events == []
    two.box.heard(Arrived("one", ACCOUNT, (sha(b"another"), sha(data))))
    assert waiting.called
    # What it heard it does not tell again.
    assert two.relay.incoming == [] and two.relay.arrived == []


@pytest_twisted.ensureDeferred
async def test_a_box_followed_from_its_start_loses_no_commit_before_its_first_catch_up(
    servers: tuple[Server, Server],
) -> None:
    """
    The other server's notifications of the commits made since this box
    started were all lost (the database went down as they were sent), and
    one later commit's came: the first catch-up still publishes them all.
    """
    one, two = servers
    await one.upload("before.txt", b"0")
    await two.box.follow()  # as the server starts
    for name in ("a", "b", "c"):
        await one.upload(f"{name}.txt", name.encode())
    await two.box.remote(Commit("other", ACCOUNT, 4, 4, None))
    assert seqs(two.here) == [4]
    await two.box.catch_up()
    assert seqs(two.here) == [4, 2, 3]


@pytest_twisted.ensureDeferred
async def test_what_was_never_told_is_caught_up_in_seq_order(servers: tuple[Server, Server]) -> None:
    one, two = servers
    await two.box.catch_up()  # from here on
    for name in ("a", "b", "c"):
        await one.upload(f"{name}.txt", name.encode())
    await Deferred.fromCoroutine(one.box.delete("b.txt", 2))
    assert two.here.events == []
    await two.box.catch_up(page=2)
    # b's upload (seq 2) is superseded by its delete (seq 4): the index
    # holds each path's last record.
    assert seqs(two.here) == [1, 3, 4]
    assert isinstance(two.here.events[-1], Delete)
    await two.box.catch_up()
    assert seqs(two.here) == [1, 3, 4]


@pytest_twisted.ensureDeferred
async def test_commits_of_both_servers_interleave(servers: tuple[Server, Server]) -> None:
    one, two = servers
    await two.box.catch_up()
    await one.upload("a.txt", b"A", stream="origin")  # seq 1, not told yet
    await two.upload("b.txt", b"B")  # seq 2, published on two
    assert seqs(two.here) == [2]
    # One's notification comes late: seq 1 is still published, once.
    await two.box.remote(Commit("one", ACCOUNT, 1, 1, "origin"))
    await two.box.catch_up()
    assert sorted(seqs(two.here)) == [1, 2] and len(seqs(two.here)) == 2


@define
class Heard:
    commits: list[Commit] = field(factory=list)
    catch_ups: int = 0
    news: list[BlockNews] = field(factory=list)

    def committed(self, commit: Commit) -> None:
        self.commits.append(commit)

    def heard(self, news: BlockNews) -> None:
        self.news.append(news)

    def catch_up(self) -> None:
        self.catch_ups += 1


@define
class Relays:
    """
    Two servers' relays on one database, each telling its own L{Heard}.
    """

    url: str
    relays: list[Any]
    heard: list[Heard]


@pytest_twisted.async_yield_fixture
async def relays(postgres: Any, reactor: Any) -> AsyncIterator[Relays]:
    """
    Two relays over a new database of the tests' PostgreSQL, both listening
    (catch-ups only when their connection is lost).
    """
    from boxsync.server.pgrelay import PostgresRelay

    url = postgres.new_database()
    heard = [Heard(), Heard()]
    made = [PostgresRelay(reactor, reactor, url, h, catch_up_seconds=3600) for h in heard]
    for relay in made:
        relay.startService()
    try:
        await eventually(reactor, lambda: _listeners(url) == 2)
        yield Relays(url, made, heard)
    finally:
        for relay in made:
            relay.stopService()


@pytest_twisted.ensureDeferred
async def test_servers_hear_each_others_commits_over_postgresql(relays: Relays, reactor: Any) -> None:
    import psycopg

    url, heard = relays.url, relays.heard
    one, two = relays.relays
    one.tell(ACCOUNT, 1, "s")
    one.tell(ACCOUNT, 2, "s")
    one.tell(ACCOUNT, 3, "t")
    one.tell("other", 4, None)
    await eventually(reactor, lambda: len(heard[1].commits) == 3)
    assert heard[1].commits == [
        Commit(one.server, ACCOUNT, 1, 2, "s"),
        Commit(one.server, ACCOUNT, 3, 3, "t"),
        Commit(one.server, "other", 4, 4, None),
    ]
    # A server does not hear itself.
    assert heard[0].commits == []

    # The listening connections are cut: both connect again and catch up.
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
        )
    await eventually(reactor, lambda: all(h.catch_ups == 1 for h in heard))
    await eventually(reactor, lambda: _listeners(url) == 2)
    two.tell(ACCOUNT, 5, None)
    await eventually(reactor, lambda: len(heard[0].commits) == 1)
    assert heard[0].commits == [Commit(two.server, ACCOUNT, 5, 5, None)]


@pytest_twisted.ensureDeferred
async def test_servers_hear_each_others_blocks_over_postgresql(relays: Relays, reactor: Any) -> None:
    """
    The arrivals told in one turn of the reactor go out together; a long
    announcement in pieces; the other server hears them all, in order,
    and not the server that told them.
    """
    heard = relays.heard
    one = relays.relays[0]
    hashes = [sha(b"%d" % n) for n in range(BLOCKS_PER_NOTIFICATION + 1)]
    for sha256 in hashes:
        one.tell_arrived(ACCOUNT, sha256)
    one.tell_arrived("other", hashes[0])
    run = run_of(BLOCKS_PER_NOTIFICATION + 2)
    one.tell_incoming(ACCOUNT, run, "s")
    expected = [
        *announcements(one.server, ACCOUNT, run, "s"),
        Arrived(one.server, ACCOUNT, tuple(hashes[:-1])),
        Arrived(one.server, ACCOUNT, (hashes[-1],)),
        Arrived(one.server, "other", (hashes[0],)),
    ]
    await eventually(reactor, lambda: len(heard[1].news) == len(expected))
    assert heard[1].news == expected
    assert heard[0].news == [] and heard[1].commits == []


@pytest_twisted.ensureDeferred
async def test_a_commit_is_announced_after_the_announcing_connection_died(relays: Relays, reactor: Any) -> None:
    """
    The connection a server announces its commits on was cut since its last
    commit (as a restart of PostgreSQL cuts it): the next commit is still
    announced, at once, on a new connection, not left to the catch-up.
    """
    import psycopg

    heard, one = relays.heard, relays.relays[0]
    await one.announce(ACCOUNT, 1, 1, None)
    await eventually(reactor, lambda: len(heard[1].commits) == 1)
    with psycopg.connect(relays.url, autocommit=True) as admin:
        (cut,) = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'SELECT pg_notify%%' AND pid <> pg_backend_pid()"
        ).fetchone() or (0,)
    assert cut == 1
    await one.announce(ACCOUNT, 2, 2, None)
    await eventually(reactor, lambda: len(heard[1].commits) == 2)
    assert heard[1].commits[-1] == Commit(one.server, ACCOUNT, 2, 2, None)
    assert heard[1].catch_ups == 0


def _listeners(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
        ).fetchone()
    return int(row[0]) if row else 0
