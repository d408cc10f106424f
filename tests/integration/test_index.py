"""
The contract of L{IIndex}, on both implementations: the embedded SQLite
index and the PostgreSQL one (on a real PostgreSQL, a new database for each
test).
"""

from __future__ import annotations

import re
import errno
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList, gatherResults

from boxsync.blocks import Block, Recipe
from boxsync.server.box import Box, StaleBase
from boxsync.server.hub import Hub
from boxsync.server.index import (
    BlockSource, FileRecord, IIndex, IndexUnavailable, Moved, SQLiteIndex, Stats, VersionRecord,
)
from boxsync.server.staging import DiskFull
from boxsync.server.storage import BoxStorage
from tests.helpers import sha, timed

A = "acct"
MiB = 2**20

Opener = Callable[..., Any]


@pytest_twisted.async_yield_fixture(params=["sqlite", "postgresql"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path, reactor: Any) -> AsyncIterator[Opener]:
    """
    Opens (and starts) an index on the test's storage: each call another
    one, as another server would have, all stopped as the test ends.
    """
    if request.param == "sqlite":
        path = tmp_path / "index.sqlite"
        make: Opener = lambda: SQLiteIndex(reactor, path)  # noqa: E731
    else:
        from boxsync.server.pgindex import PostgresIndex

        url = request.getfixturevalue("postgres").new_database()
        make = lambda: PostgresIndex(reactor, url)  # noqa: E731
    opened = []

    def open_index(start: bool = True) -> Any:
        index = make()
        if start:
            index.start()
            opened.append(index)
        return index

    try:
        yield open_index
    finally:
        for index in opened:
            index.stop()


@pytest.fixture
def index(opener: Opener) -> Any:
    return opener()


def rec(path: str, data: bytes = b"x", **kwargs: Any) -> FileRecord:
    return FileRecord(path, kwargs.pop("size", len(data)), kwargs.pop("sha256", sha(data)), 7, 0, **kwargs)


def big(name: str, *blocks: Block) -> Recipe:
    """
    A file's recipe of C{blocks} (more than BLOCK_MIN in all).
    """
    return Recipe(sha(name.encode()), sum(block.size for block in blocks), blocks)


def blk(name: str, size: int = MiB) -> Block:
    return Block(sha(name.encode()), size)


async def commit_big(index: Any, path: str, recipe: Recipe) -> FileRecord:
    record: FileRecord = await index.commit(A, rec(path, size=recipe.size, sha256=recipe.sha256))
    await index.set_recipe(A, record.seq, recipe)
    return record


def test_both_implement_the_interface() -> None:
    from boxsync.server.pgindex import PostgresIndex

    assert IIndex.implementedBy(SQLiteIndex) and IIndex.implementedBy(PostgresIndex)


@pytest_twisted.ensureDeferred
async def test_commit_hands_out_the_accounts_next_seqs(index: Any) -> None:
    assert await index.current_seq(A) == 0
    assert await index.get(A, "a") is None
    before = time.time_ns()
    first = await index.commit(A, FileRecord("a", 1, sha(b"x"), 5, seq=99, origin="laptop", ctime_ns=3))
    assert first == FileRecord("a", 1, sha(b"x"), 5, 1, False, "laptop", 3, committed_ns=first.committed_ns)
    assert before <= first.committed_ns <= time.time_ns()
    many = await index.commit_many(A, [rec("b"), rec("c", executable=True), rec("d", folder=True, size=0, sha256="")])
    assert [r.seq for r in many] == [2, 3, 4]
    assert await index.get(A, "c") == many[1]
    assert (await index.get(A, "c")).executable and (await index.get(A, "d")).folder
    assert await index.current_seq(A) == 4
    # Each account counts on its own.
    assert (await index.commit("other", rec("a"))).seq == 1
    assert await index.current_seq(A) == 4
    assert await index.commit_many(A, []) == []
    assert await index.current_seq(A) == 4
    # A file's mtime may be before 1970, or as late as nanoseconds go.
    await index.commit_many(A, [FileRecord("old", 1, sha(b"x"), -(2**63), 0), FileRecord("late", 1, sha(b"x"), 2**63 - 1, 0)])
    assert ((await index.get(A, "old")).mtime_ns, (await index.get(A, "late")).mtime_ns) == (-(2**63), 2**63 - 1)


@pytest_twisted.ensureDeferred
async def test_a_commit_over_a_path_keeps_what_it_replaces(index: Any) -> None:
    one = await index.commit(A, rec("f", b"one", origin="a"))
    two = await index.commit(A, rec("f", b"two!", origin="b"))
    tomb = await index.commit(A, rec("f", size=0, sha256="", deleted=True))
    assert (await index.get(A, "f")).deleted
    kept = await index.versions(A, "f")
    assert kept == [
        VersionRecord("f", 4, sha(b"two!"), 7, two.seq, "b", tomb.seq, kept[0].ended_ns, two.committed_ns),
        VersionRecord("f", 3, sha(b"one"), 7, one.seq, "a", two.seq, kept[1].ended_ns, one.committed_ns),
    ]
    # A tombstone or a folder replaced is not a version.
    await index.commit(A, rec("f", b"three"))
    await index.commit(A, rec("d", folder=True, size=0, sha256=""))
    await index.commit(A, rec("d", b"a file now"))
    assert len(await index.versions(A, "f")) == 2
    assert await index.versions(A, "d") == []


@pytest_twisted.ensureDeferred
async def test_a_version_whose_file_is_not_kept_is_forgotten_with_its_blocks(index: Any) -> None:
    """
    A commit told that the version it replaces has no file kept (written
    over by hand) forgets it and its blocks: nothing lists it, nothing
    takes it for holding a block. The others of the same commit are kept.
    """
    first = await commit_big(index, "f", big("one", blk("a"), blk("b")))
    await commit_big(index, "g", big("two", blk("a"), blk("c")))
    stored = await index.commit_many(A, [rec("f", b"by hand"), rec("g", b"by a client")], None, [False, True])
    assert [v.path for v in await index.versions(A, "f")] == []
    assert [v.path for v in await index.versions(A, "g")] == ["g"]
    assert await index.recipe(A, first.seq) is None
    assert list(await index.find_blocks(A, [blk("a").sha256, blk("b").sha256])) == [blk("a").sha256]
    assert await index.get(A, "f") == stored[0]


@pytest_twisted.ensureDeferred
async def test_since_and_page(index: Any) -> None:
    # Paths sort by their bytes, as UTF-8: upper case first, then lower
    # case, then the rest, whatever the database's locale.
    paths = ["b", "B", "a/z", "a-b", "é", "中", "a0", "~"]
    await index.commit_many(A, [rec(p) for p in paths])
    await index.commit(A, rec("a-b", deleted=True))
    await index.commit("other", rec("x"))
    since = await index.since(A, 0, 100)
    assert [r.path for r in since] == ["b", "B", "a/z", "é", "中", "a0", "~", "a-b"]
    assert [r.seq for r in since] == [1, 2, 3, 5, 6, 7, 8, 9]
    assert [r.path for r in await index.since(A, 5, 2)] == ["中", "a0"]
    assert await index.since(A, 9, 10) == []
    ordered = sorted(paths, key=lambda p: p.encode())
    assert [r.path for r in await index.page(A, "", 100)] == ordered
    assert [r.path for r in await index.page(A, "a-b", 3)] == ordered[ordered.index("a-b") + 1 :][:3]
    assert (await index.page(A, "a", 1))[0].deleted


@pytest_twisted.ensureDeferred
async def test_get_many(index: Any) -> None:
    await index.commit_many(A, [rec(f"p{i:04}") for i in range(1200)])
    wanted = [f"p{i:04}" for i in range(0, 1300, 2)]
    found = await index.get_many(A, wanted)
    assert sorted(found) == [f"p{i:04}" for i in range(0, 1200, 2)]
    assert found["p0010"] == await index.get(A, "p0010")
    assert await index.get_many("other", wanted) == {}
    assert await index.get_many(A, []) == {}


@pytest_twisted.ensureDeferred
async def test_restamp_records_ctimes_of_live_files_only(index: Any) -> None:
    await index.commit_many(A, [rec("a"), rec("b"), rec("gone")])
    await index.commit(A, rec("gone", deleted=True))
    await index.restamp(A, [("a", 11), ("gone", 12), ("missing", 13)])
    assert (await index.get(A, "a")).ctime_ns == 11
    assert (await index.get(A, "b")).ctime_ns == 0
    assert (await index.get(A, "gone")).ctime_ns == 0
    assert await index.current_seq(A) == 4
    assert await index.get(A, "missing") is None


@pytest_twisted.ensureDeferred
async def test_recipes(index: Any) -> None:
    small = await index.commit(A, rec("small", b"tiny"))
    empty = await index.commit(A, rec("empty", b""))
    # A file of one block needs no recipe recorded.
    assert await index.recipe(A, small.seq) == Recipe(sha(b"tiny"), 4, (Block(sha(b"tiny"), 4),))
    assert await index.recipe(A, empty.seq) == Recipe(sha(b""), 0, ())
    recipe = big("big", blk("1"), blk("2"), blk("3", 5))
    record = await index.commit(A, rec("big", size=recipe.size, sha256=recipe.sha256))
    assert await index.recipe(A, record.seq) is None
    await index.set_recipe(A, record.seq, recipe)
    assert await index.recipe(A, record.seq) == recipe
    # Recorded again, it replaces what was there.
    again = big("big", blk("4"), blk("5", recipe.size - MiB))
    await index.set_recipe(A, record.seq, again)
    assert await index.recipe(A, record.seq) == again
    # The recipe of a kept version stays; of a deleted or unknown one, none.
    await index.commit(A, rec("big", b"replaced"))
    assert await index.recipe(A, record.seq) == again
    assert await index.recipe("other", record.seq) is None
    assert await index.recipe(A, 99) is None
    tomb = await index.commit(A, rec("small", deleted=True))
    assert await index.recipe(A, tomb.seq) is None


@pytest_twisted.ensureDeferred
async def test_find_blocks_and_find_kept(index: Any) -> None:
    old = await commit_big(index, "f", big("v1", blk("shared"), blk("old")))
    live = await commit_big(index, "f", big("v2", blk("shared"), blk("new")))
    small = await index.commit(A, rec("s", b"small"))
    found = await index.find_blocks(A, [blk("shared").sha256, blk("old").sha256, sha(b"small"), sha(b"none")])
    # Live files first; a kept version only for what no live file has.
    assert found == {
        blk("shared").sha256: BlockSource(blk("shared"), live.seq, 0, "f"),
        blk("old").sha256: BlockSource(blk("old"), old.seq, MiB, None),
        sha(b"small"): BlockSource(Block(sha(b"small"), 5), small.seq, 0, "s"),
    }
    # Kept versions first when asked: a block a kept version holds is
    # copied from it, not read and checked from a live file.
    assert (await index.find_blocks(A, [blk("shared").sha256], kept_first=True)) == {
        blk("shared").sha256: BlockSource(blk("shared"), old.seq, 0, None)
    }
    await index.set_held(A, old.seq, [MiB], False)
    assert blk("old").sha256 not in await index.find_blocks(A, [blk("old").sha256])
    # Many at once, more than one query's worth.
    assert len(await index.find_blocks(A, [sha(str(i).encode()) for i in range(600)] + [sha(b"small")])) == 1
    assert await index.find_blocks("other", [sha(b"small")]) == {}
    # A small kept version is found by its own sha256.
    await index.commit(A, rec("s", b"other"))
    assert await index.find_blocks(A, [sha(b"small")]) == {
        sha(b"small"): BlockSource(Block(sha(b"small"), 5), small.seq, 0, None)
    }
    assert await index.find_kept(A, sha(b"small"), 5) == small.seq
    assert await index.find_kept(A, sha(b"small"), 6) is None
    assert await index.find_kept(A, sha(b"other"), 5) is None


@pytest_twisted.ensureDeferred
async def test_version_trash_and_at(index: Any) -> None:
    d1 = await index.commit(A, rec("docs/a", b"1"))
    between = time.time_ns()
    while time.time_ns() == between:
        pass
    d2 = await index.commit(A, rec("docs/a", b"22"))
    await index.commit_many(A, [rec("docs/b"), rec("docsx"), rec("docs/sub/c"), rec("docs/f", folder=True)])
    gone_c = await index.commit(A, rec("docs/sub/c", deleted=True))
    gone_x = await index.commit(A, rec("docsx", deleted=True))
    assert await index.version(A, d2.seq) == d2
    kept = await index.version(A, d1.seq)
    assert isinstance(kept, VersionRecord) and kept.ended_seq == d2.seq and kept.size == 1
    assert await index.version(A, gone_c.seq) is None
    assert await index.version(A, 99) is None
    trash = await index.trash(A, "", 10)
    assert [(v.path, v.ended_seq) for v in trash] == [("docsx", gone_x.seq), ("docs/sub/c", gone_c.seq)]
    assert [v.path for v in await index.trash(A, "docs", 10)] == ["docs/sub/c"]
    assert [v.path for v in await index.trash(A, "", 1)] == ["docsx"]
    # The same, as JSON rows.
    for under, limit in (("", 10), ("docs", 10), ("", 1), ("nowhere", 10)):
        page = await index.trash_json(A, under, limit)
        listed = await index.trash(A, under, limit)
        assert json.loads(page.rows) == [
            [v.path, v.seq, v.committed_ns, v.size, v.sha256, v.origin, v.ended_seq, v.ended_ns] for v in listed
        ]
        assert (page.count, page.last) == (len(listed), listed[-1].ended_seq if listed else None)
    # Back again: not in the trash any more.
    await index.commit(A, rec("docsx", b"back"))
    assert [v.path for v in await index.trash(A, "", 10)] == ["docs/sub/c"]
    then = await index.at(A, "docs", between)
    assert [(v.path, v.seq) for v in then] == [("docs/a", d1.seq)]
    now = await index.at(A, "", time.time_ns())
    assert [(v.path, type(v)) for v in now] == [
        ("docs/a", FileRecord), ("docs/b", FileRecord), ("docsx", FileRecord),
    ]
    assert await index.at(A, "", 0) == []


@pytest_twisted.ensureDeferred
async def test_shared_blocks_holes_and_orphans(index: Any) -> None:
    v1 = await commit_big(index, "f", big("v1", blk("x"), blk("only1")))
    v2 = await commit_big(index, "f", big("v2", blk("y"), blk("x")))
    await commit_big(index, "f", big("v3", blk("z")))
    # v1 and v2 are kept; v1's x is held by v2 too.
    assert await index.shared_blocks(A) == [(v1.seq, 0, MiB)]
    assert await index.holes(A, v1.seq) == []
    await index.set_held(A, v1.seq, [0], False)
    assert await index.shared_blocks(A) == []
    assert await index.holes(A, v1.seq) == [(0, blk("x"))]
    # Held by v2 only: gone with v2, v1 must be filled first.
    assert await index.holes(A, v1.seq, only_in=[v2.seq]) == [(0, blk("x"))]
    assert await index.holes(A, v1.seq, only_in=[v1.seq]) == []
    assert await index.orphans(A, [v2.seq]) == [v1.seq]
    assert await index.orphans(A, [v1.seq]) == []
    assert await index.orphans(A, []) == []
    await index.set_held(A, v1.seq, [0], True)
    assert await index.holes(A, v1.seq) == []
    assert await index.orphans(A, [v2.seq]) == []


@pytest_twisted.ensureDeferred
async def test_kept_versions_and_forgetting_them(index: Any) -> None:
    v1 = await commit_big(index, "f", big("v1", blk("a"), blk("b")))
    v2 = await index.commit(A, rec("f", b"2"))
    await index.commit(A, rec("f", b"3"))
    await index.commit(A, rec("g", b"g"))
    await index.commit(A, rec("g", deleted=True))
    kept = await index.kept_versions(A)
    assert [v.seq for v in kept] == [v1.seq, v2.seq, 4]
    assert await index.kept_blocks(A) == {v1.seq: [(blk("a").sha256, MiB), (blk("b").sha256, MiB)]}
    assert await index.kept_blocks("other") == {}
    assert await index.kept_versions("other") == []
    forgotten = await index.forget_versions(A, [v1.seq, 99])
    assert forgotten == kept[:1]
    assert [v.seq for v in await index.kept_versions(A)] == [v2.seq, 4]
    # Its blocks went with it.
    assert await index.kept_blocks(A) == {}
    assert await index.recipe(A, v1.seq) is None
    assert await index.find_blocks(A, [blk("a").sha256]) == {}
    assert await index.forget_versions(A, [v1.seq]) == []


@pytest_twisted.ensureDeferred
async def test_stats(index: Any) -> None:
    assert await index.stats(A) == Stats(0, 0, 0)
    await index.commit_many(A, [rec("a", b"12"), rec("b", b"345"), rec("d", folder=True, size=0, sha256="")])
    await index.commit(A, rec("b", deleted=True))
    await index.commit("other", rec("a", b"123456"))
    assert await index.stats(A) == Stats(files=1, bytes=2, seq=4)


@pytest_twisted.ensureDeferred
async def test_the_box_id_is_made_once_and_every_server_tells_it(
    opener: Opener, request: pytest.FixtureRequest, tmp_path: Path, reactor: Any
) -> None:
    first, second = opener(), opener()
    box = await first.box_id(A)
    assert re.fullmatch("[0-9a-f]{32}", box)
    assert await second.box_id(A) == box
    await first.commit(A, rec("a"))
    assert await opener().box_id(A) == box
    # Another account's box is another box.
    assert await second.box_id("other") not in ("", box)
    # Another box (a new database, or a new SQLite file) is another id.
    if "postgres" in request.fixturenames:
        from boxsync.server.pgindex import PostgresIndex

        other = PostgresIndex(reactor, request.getfixturevalue("postgres").new_database())
    else:
        other = SQLiteIndex(reactor, tmp_path / "other.sqlite")
    other.start()
    try:
        assert await other.box_id(A) not in ("", box)
    finally:
        other.stop()


@pytest_twisted.ensureDeferred
async def test_two_indexes_committing_at_once_never_share_a_seq(opener: Opener, reactor: Any) -> None:
    """
    Two index objects on the same storage, as two servers would have,
    committing to one account at the same time.
    """
    first, second = opener(), opener()
    rounds = 40
    batches = await timed(
        gatherResults(
            [
                index.commit_many(A, [rec(f"{name}/{n}/{i}") for i in range(3)])
                for n in range(rounds)
                for name, index in (("one", first), ("two", second))
            ]
        ),
        reactor,
        60,
    )
    seqs = [record.seq for batch in batches for record in batch]
    assert sorted(seqs) == list(range(1, 6 * rounds + 1))
    # Each batch got consecutive seqs.
    assert all([r.seq for r in batch] == list(range(batch[0].seq, batch[0].seq + 3)) for batch in batches)
    assert await second.current_seq(A) == await first.current_seq(A) == 6 * rounds
    assert len(await first.since(A, 0, 1000)) == 6 * rounds


@pytest_twisted.ensureDeferred
async def test_an_index_not_started_refuses(opener: Opener) -> None:
    index = opener(start=False)
    with pytest.raises(RuntimeError):
        await index.get(A, "a")


def test_servers_starting_at_once_apply_the_schema_once(postgres: Any) -> None:
    import psycopg

    from boxsync.server.pgindex import migrate, migrations

    url = postgres.new_database()
    versions: list[int] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            with psycopg.connect(url) as connection:
                versions.append(migrate(connection))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    latest = migrations()[-1][0]
    assert errors == [] and versions == [latest] * 4
    with psycopg.connect(url) as connection:
        steps = connection.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
        assert steps == [(number, name) for number, name, _ in migrations()]
        # Started again: nothing to do.
        assert migrate(connection) == latest
        assert connection.execute("SELECT COUNT(*) FROM schema_version").fetchone() == (len(steps),)


def test_a_schema_newer_than_this_boxsync_is_refused(postgres: Any) -> None:
    import psycopg

    from boxsync.server.pgindex import SchemaTooNew, migrate

    with psycopg.connect(postgres.new_database()) as connection:
        latest = migrate(connection)
        connection.execute("INSERT INTO schema_version (version, name) VALUES (%s, 'later')", (latest + 1,))
        connection.commit()
        with pytest.raises(SchemaTooNew, match=f"version {latest + 1}, newer than this boxsync knows"):
            migrate(connection)


@pytest_twisted.ensureDeferred
async def test_an_index_on_a_newer_schema_fails_its_queries(postgres: Any, reactor: Any) -> None:
    import psycopg

    from boxsync.server.pgindex import PostgresIndex, SchemaTooNew, migrate

    url = postgres.new_database()
    with psycopg.connect(url) as connection:
        later = migrate(connection) + 1
        connection.execute("INSERT INTO schema_version (version, name) VALUES (%s, 'later')", (later,))
    index = PostgresIndex(reactor, url)
    index.start()
    try:
        with pytest.raises(SchemaTooNew):
            await timed(index.current_seq(A), reactor)
    finally:
        index.stop()


@pytest_twisted.ensureDeferred
async def test_a_full_disk_under_postgresql_is_disk_full(postgres: Any, reactor: Any) -> None:
    import psycopg

    from boxsync.server.pgindex import PostgresIndex

    def full(db: Any) -> None:
        # What PostgreSQL says when it cannot extend a file.
        db.execute("DO $$ BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full'; END $$")

    index = PostgresIndex(reactor, postgres.new_database())
    index.start()
    try:
        with pytest.raises(DiskFull) as raised:
            await timed(index._write(full), reactor)
        assert raised.value.errno == errno.ENOSPC
        assert isinstance(raised.value.__cause__, psycopg.errors.DiskFull)
        # Nothing of it stays: the next call works.
        assert await timed(index.current_seq(A), reactor) == 0
    finally:
        index.stop()


@pytest_twisted.ensureDeferred
async def test_a_commit_expecting_rows_skips_the_paths_that_moved_on(index: Any) -> None:
    a, b = await index.commit_many(A, [rec("a"), rec("b")])
    stored = await index.commit_many(
        A, [rec("a", b"2"), rec("b", b"2"), rec("new"), rec("c")], [a.seq, b.seq - 1, None, 1]
    )
    assert stored[0] == await index.get(A, "a") and stored[0].seq == 3
    assert stored[1] == Moved("b", b) and (await index.get(A, "b")) == b
    assert stored[2] == await index.get(A, "new") and stored[2].seq == 4
    assert stored[3] == Moved("c", None) and await index.get(A, "c") is None
    # What was not committed took no seq.
    assert await index.current_seq(A) == 4


async def _upload(box: Box, path: str, data: bytes, base: int | None) -> FileRecord:
    staged = box.storage.new_staging()
    staged.write(data)
    record: FileRecord = await box.upload(path, staged, base, None, None)
    return record


@pytest_twisted.ensureDeferred
async def test_two_servers_changing_one_path_at_once_one_wins(
    opener: Opener, tmp_path: Path, reactor: Any
) -> None:
    """
    Two servers (their boxes, each with its own index object) change one
    path from the same base at once: one commits, the other is refused as
    a stale base and its change is undone in its box.
    """
    boxes = [
        Box(A, opener(), BoxStorage(reactor, tmp_path / name), Hub(reactor)) for name in ("one", "two")
    ]
    results = await timed(
        DeferredList(
            [Deferred.fromCoroutine(_upload(box, "f.txt", name, 0)) for box, name in zip(boxes, (b"one", b"two"))],
            consumeErrors=True,
        ),
        reactor,
    )
    (won,) = [n for n, (ok, _) in enumerate(results) if ok]
    (lost,) = [n for n, (ok, _) in enumerate(results) if not ok]
    failure = results[lost][1]
    assert failure.check(StaleBase) and failure.value.current == results[won][1].seq == 1
    assert (tmp_path / ("one", "two")[won] / "f.txt").exists()
    assert not (tmp_path / ("one", "two")[lost] / "f.txt").exists()
    # Deleting a file at once, from the seq both saw: one tombstone.
    seq = (await _upload(boxes[0], "g.txt", b"g", None)).seq
    (tmp_path / "two" / "g.txt").write_bytes(b"g")
    deletes = await timed(
        gatherResults([Deferred.fromCoroutine(box.delete_many([("g.txt", seq)])) for box in boxes]), reactor
    )
    outcomes = [outcome for (outcome,) in deletes]
    assert sorted(type(outcome).__name__ for outcome in outcomes) == ["FileRecord", "StaleBase"]
    assert (await boxes[1].index.get(A, "g.txt")).deleted
    assert await boxes[1].index.current_seq(A) == seq + 1
    # Making a folder at once, where there was none: one folder, one
    # commit. The second either finds its base stale (both looked before
    # either committed) or finds the folder made (it looked after): a
    # folder already there is the version that holds it.
    before = await boxes[1].index.current_seq(A)
    made = await timed(
        DeferredList([Deferred.fromCoroutine(box.make_folder("d", 0)) for box in boxes], consumeErrors=True),
        reactor,
    )
    assert await boxes[1].index.current_seq(A) == before + 1
    assert {outcome.seq for ok, outcome in made if ok} == {before + 1}
    assert all(outcome.check(StaleBase) for ok, outcome in made if not ok)


@pytest_twisted.ensureDeferred
async def test_the_index_carries_on_after_postgresql_restarts(postgres: Any, reactor: Any) -> None:
    from boxsync.server.pgindex import PostgresIndex

    index = PostgresIndex(reactor, postgres.new_database(), connections=2)
    index.start()
    try:
        # Both connections in use once.
        await timed(gatherResults([index.commit(A, rec("a")), index.commit(A, rec("b"))]), reactor)
        postgres.restart()
        # The connections it had died with the server: new ones are made.
        batches = await timed(gatherResults([index.commit(A, rec("c")), index.commit(A, rec("d"))]), reactor)
        assert sorted(record.seq for record in batches) == [3, 4]
    finally:
        index.stop()


@pytest_twisted.ensureDeferred
async def test_a_connection_lost_during_a_call_is_said_in_one_line(postgres: Any, reactor: Any) -> None:
    """
    PostgreSQL goes away in the middle of a call (here: its connection is
    ended from the inside): the call fails with L{IndexUnavailable}, which a
    client is told to ask again; the next call gets a new connection.
    """
    from boxsync.server.app import _answer
    from boxsync.server.pgindex import PostgresIndex, where
    from boxsync.wire import ErrorAnswer

    url = postgres.new_database()
    index = PostgresIndex(reactor, url, connections=1)
    index.start()
    try:
        await timed(index.commit(A, rec("a")), reactor)
        with pytest.raises(IndexUnavailable) as raised:
            await timed(index._run(lambda db: db.execute("SELECT pg_terminate_backend(pg_backend_pid())")), reactor)
        assert (await timed(index.commit(A, rec("b")), reactor)).seq == 2
    finally:
        index.stop()
    assert str(raised.value) == f"lost the connection to the index in PostgreSQL at {where(url)}"
    # What a client is told: ask again (503), not an internal error.
    assert _answer(raised.value) == ErrorAnswer(503, str(raised.value))


@pytest_twisted.ensureDeferred
async def test_an_unreachable_postgresql_is_said_in_one_line(reactor: Any) -> None:
    pytest.importorskip("psycopg")
    from boxsync.server.pgindex import PostgresIndex

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        index = PostgresIndex(reactor, f"postgresql://boxsync:secret@127.0.0.1:{port}/boxsync", timeout=0.5)
        index.start()
        try:
            with pytest.raises(IndexUnavailable) as raised:
                await timed(index.current_seq(A), reactor)
        finally:
            index.stop()
    assert str(raised.value) == f"cannot reach the index in PostgreSQL at 127.0.0.1:{port}/boxsync within 0.5 s"


def test_a_database_not_in_utf8_is_refused(postgres: Any) -> None:
    import psycopg

    from boxsync.server.pgindex import NotUTF8, migrate

    with psycopg.connect(postgres.url("postgres"), autocommit=True) as connection:
        connection.execute("CREATE DATABASE latin1 ENCODING 'LATIN1' TEMPLATE template0")
    with psycopg.connect(postgres.url("latin1")) as connection:
        with pytest.raises(NotUTF8, match="in LATIN1, not UTF8: make it with createdb --encoding UTF8"):
            migrate(connection)
