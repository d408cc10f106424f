"""
The box's group commit: uploads that arrive together share one index read,
one rename pass with one fsync per folder and one index transaction, and
each still succeeds or fails on its own. Real SQLite index, real folders.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

import pytest
import pytest_twisted
from attrs import define, field
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from zope.interface import implementer

from boxsync.paths import BadPath
from boxsync.server.box import Box, DigestMismatch, StaleBase
from boxsync.server.hub import Hub
from boxsync.server.index import _COLUMNS, _SCHEMA, FileRecord, IIndex, SQLiteIndex, _record, open_database
from boxsync.server.staging import BoxNotWritable, DiskFull, StagingFile, as_box_error
from boxsync.server.storage import BoxStorage
from boxsync.wire import Download
from tests.helpers import Recorder, sha, timed

ACCOUNT = "acct"


class ReadyStorage(BoxStorage):
    """
    Storage whose data fsync happens at once, on the calling thread: every
    upload of a burst reaches the commit queue before the first group ends.
    """

    def finish(self, staged: StagingFile, mtime_ns: int) -> Any:
        staged.finish(mtime_ns)
        return succeed(None)


@implementer(IIndex)
@define
class CountingIndex:
    """
    The real index, counting group commits, and failing them on demand.
    """

    real: SQLiteIndex
    commits: list[int] = field(factory=list)
    broken: bool = False

    def get(self, account: str, path: str) -> Any:
        return self.real.get(account, path)

    def get_many(self, account: str, paths: Sequence[str]) -> Any:
        return self.real.get_many(account, paths)

    def commit(self, account: str, record: FileRecord) -> Any:
        return self.real.commit(account, record)

    def commit_many(
        self,
        account: str,
        records: Sequence[FileRecord],
        expected: Sequence[int | None] | None = None,
        kept: Sequence[bool] | None = None,
    ) -> Any:
        self.commits.append(len(records))
        if self.broken:
            return fail(RuntimeError("the index is broken"))
        return self.real.commit_many(account, records, expected, kept)

    def since(self, account: str, seq: int, limit: int) -> Any:
        return self.real.since(account, seq, limit)

    def page(self, account: str, after: str, limit: int) -> Any:
        return self.real.page(account, after, limit)

    def restamp(self, account: str, stamps: Sequence[tuple[str, int]]) -> Any:
        return self.real.restamp(account, stamps)

    def current_seq(self, account: str) -> Any:
        return self.real.current_seq(account)

    def stats(self, account: str) -> Any:
        return self.real.stats(account)


@define
class Fixture:
    box: Box
    index: CountingIndex
    listener: Recorder
    root: Path

    def staged(self, data: bytes) -> StagingFile:
        staged = self.box.storage.new_staging()
        staged.write(data)
        return staged

    def upload(self, path: str, data: bytes, base: int | None = 0, **kwargs: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(
            self.box.upload(path, self.staged(data), base, kwargs.pop("sha256", None), None, **kwargs)
        )

    def staging_left(self) -> list[Path]:
        return list(self.box.storage.staging.iterdir())


@pytest_twisted.async_yield_fixture
async def fx(tmp_path: Path, reactor: Any) -> AsyncIterator[Fixture]:
    real = SQLiteIndex(reactor, tmp_path / "index.sqlite")
    real.start()
    index = CountingIndex(real)
    storage = ReadyStorage(reactor, tmp_path / "box")
    hub = Hub(reactor)
    listener = Recorder()
    hub.add(ACCOUNT, listener)
    try:
        yield Fixture(Box(ACCOUNT, index, storage, hub), index, listener, storage.root)
    finally:
        real.stop()


async def _settle(ds: list[Deferred[Any]], reactor: Any) -> list[tuple[bool, Any]]:
    results: list[tuple[bool, Any]] = await timed(DeferredList(ds, consumeErrors=True), reactor)
    return results


@pytest_twisted.ensureDeferred
async def test_a_burst_commits_in_groups_and_publishes_in_seq_order(fx: Fixture, reactor: Any) -> None:
    datas = {f"d{i % 3}/f{i}.bin": f"file {i}".encode() for i in range(40)}
    results = await _settle([fx.upload(path, data) for path, data in datas.items()], reactor)
    assert all(ok for ok, _ in results)
    records = [record for _, record in results]
    assert sorted(r.seq for r in records) == list(range(1, 41))
    # The first upload found the queue empty and went alone; the 39 that
    # arrived meanwhile went together.
    assert fx.index.commits == [1, 39]
    published = [e for e in fx.listener.events if isinstance(e, Download)]
    assert [e.seq for e in published] == list(range(1, 41))
    for record in records:
        assert (fx.root / record.path).read_bytes() == datas[record.path]
        assert record.sha256 == sha(datas[record.path])
    assert fx.staging_left() == []


@pytest_twisted.ensureDeferred
async def test_a_stale_upload_fails_alone(fx: Fixture, reactor: Any) -> None:
    first = await timed(fx.upload("a.txt", b"first"), reactor)
    results = await _settle(
        [
            fx.upload("a.txt", b"stale", base=0),
            fx.upload("b.txt", b"fine", base=0),
            fx.upload("c.txt", b"lies", sha256=sha(b"something else")),
        ],
        reactor,
    )
    (ok_a, stale), (ok_b, fine), (ok_c, lie) = results
    assert not ok_a and stale.check(StaleBase) and stale.value.current == first.seq
    assert ok_b and fine.path == "b.txt"
    assert not ok_c and lie.check(DigestMismatch)
    assert (fx.root / "a.txt").read_bytes() == b"first"
    assert not (fx.root / "c.txt").exists()
    assert fx.staging_left() == []


@pytest_twisted.ensureDeferred
async def test_two_uploads_of_one_path_in_a_burst_are_checked_one_after_the_other(
    fx: Fixture, reactor: Any
) -> None:
    results = await _settle(
        [
            fx.upload("p.txt", b"one", base=0),
            fx.upload("p.txt", b"two", base=0),
            fx.upload("q.txt", b"lww 1", base=None),
            fx.upload("q.txt", b"lww 2", base=None),
        ],
        reactor,
    )
    (ok1, one), (ok2, two), (ok3, q1), (ok4, q2) = results
    assert ok1 and not ok2 and two.check(StaleBase) and two.value.current == one.seq
    assert ok3 and ok4 and q2.seq > q1.seq
    assert (fx.root / "p.txt").read_bytes() == b"one"
    assert (fx.root / "q.txt").read_bytes() == b"lww 2"
    assert fx.staging_left() == []


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest_twisted.ensureDeferred
async def test_the_box_keeps_whether_each_version_is_executable(fx: Fixture, reactor: Any) -> None:
    script, target = b"#!/bin/sh\n", fx.root / "run.sh"
    first = await timed(fx.upload("run.sh", script, executable=True), reactor)
    assert first.executable and _mode(target) == 0o755
    # An upload that does not say keeps the mode of the version it replaces;
    # a new file is not executable.
    second = await timed(fx.upload("run.sh", script + b"echo\n", base=first.seq), reactor)
    plain = await timed(fx.upload("plain.txt", b"text"), reactor)
    assert second.executable and _mode(target) == 0o755
    assert not plain.executable and _mode(fx.root / "plain.txt") == 0o644
    # The mode alone: a new version of the same bytes, which stay in place.
    inode = target.stat().st_ino
    third = await timed(
        Deferred.fromCoroutine(fx.box.set_executable("run.sh", second.seq, second.sha256, False)), reactor
    )
    assert (third.seq, third.sha256, third.executable) == (plain.seq + 1, second.sha256, False)
    assert _mode(target) == 0o644 and target.stat().st_ino == inode
    assert third == await fx.index.get(ACCOUNT, "run.sh")
    assert fx.listener.events[-1] == Download("run.sh", second.sha256, second.size, second.mtime_ns, third.seq, False)
    # From a stale base, or with bytes the box does not have: refused.
    for base, digest in [(second.seq, second.sha256), (third.seq, sha(b"other bytes"))]:
        with pytest.raises(StaleBase):
            await timed(Deferred.fromCoroutine(fx.box.set_executable("run.sh", base, digest, True)), reactor)
    assert _mode(target) == 0o644 and (await fx.index.current_seq(ACCOUNT)) == third.seq
    # The same upload sent again (its answer lost) is not a conflict, but
    # the same bytes in another mode are.
    again = await timed(fx.upload("run.sh", script + b"echo\n", base=second.seq, executable=False), reactor)
    assert again == third
    with pytest.raises(StaleBase):
        await timed(fx.upload("run.sh", script + b"echo\n", base=second.seq, executable=True), reactor)


@pytest_twisted.ensureDeferred
async def test_an_upload_that_cannot_be_placed_fails_alone(fx: Fixture, reactor: Any) -> None:
    (fx.root / "folder").mkdir()
    await timed(fx.upload("warm.txt", b"x"), reactor)
    results = await _settle(
        [fx.upload("folder", b"a file where a folder is"), fx.upload("new/deep/y.txt", b"fine")],
        reactor,
    )
    (ok_x, failure), (ok_y, record) = results
    assert not ok_x and failure.check(BadPath) and (fx.root / "folder").is_dir()
    assert ok_y and (fx.root / "new/deep/y.txt").read_bytes() == b"fine"
    assert fx.index.commits[-1] == 1
    assert fx.staging_left() == []


@pytest_twisted.ensureDeferred
async def test_a_failed_commit_fails_its_group_and_the_box_goes_on(fx: Fixture, reactor: Any) -> None:
    fx.index.broken = True
    results = await _settle([fx.upload("a.txt", b"a"), fx.upload("b.txt", b"b")], reactor)
    assert [ok for ok, _ in results] == [False, False]
    assert all(failure.check(RuntimeError) for _, failure in results)
    assert [e for e in fx.listener.events if isinstance(e, Download)] == []
    assert fx.staging_left() == []
    fx.index.broken = False
    record = await timed(fx.upload("a.txt", b"again", base=None), reactor)
    assert record.seq == 1 and (fx.root / "a.txt").read_bytes() == b"again"


@pytest_twisted.ensureDeferred
async def test_a_failed_commit_puts_the_box_back_as_it_was(fx: Fixture, reactor: Any) -> None:
    """
    A commit is all or nothing: when the index cannot take it, what the
    group placed is taken out again and what it replaced or removed is put
    back, so the box still holds what the index says.
    """
    await timed(fx.upload("a.txt", b"v1"), reactor)
    await timed(fx.upload("gone.txt", b"kept"), reactor)
    fx.index.broken = True
    results = await _settle(
        [fx.upload("a.txt", b"v2", base=1), fx.upload("d/new.txt", b"new")], reactor
    )
    assert [ok for ok, _ in results] == [False, False]
    with pytest.raises(RuntimeError):
        await timed(Deferred.fromCoroutine(fx.box.delete("gone.txt", 2)), reactor)
    assert (fx.root / "a.txt").read_bytes() == b"v1"
    assert (fx.root / "gone.txt").read_bytes() == b"kept"
    assert not (fx.root / "d/new.txt").exists()
    assert fx.staging_left() == []
    fx.index.broken = False
    await timed(Deferred.fromCoroutine(fx.box.delete("gone.txt", 2)), reactor)
    assert not (fx.root / "gone.txt").exists() and fx.staging_left() == []


@pytest_twisted.ensureDeferred
async def test_an_index_on_a_full_disk_answers_disk_full(tmp_path: Path, reactor: Any) -> None:
    """
    SQLite's own "database or disk is full" (here: a page limit it was
    given) is L{DiskFull}, like a full disk anywhere else, and the box is
    left as the index says.
    """
    index = SQLiteIndex(reactor, tmp_path / "index.sqlite")
    index.start()
    try:
        storage = ReadyStorage(reactor, tmp_path / "box")
        box = Box(ACCOUNT, index, storage, Hub(reactor))
        fx = Fixture(box, index, Recorder(), storage.root)  # type: ignore[arg-type]
        await timed(fx.upload("a.txt", b"v1"), reactor)
        pages = await timed(index._run(lambda db: db.execute("PRAGMA page_count").fetchone()[0]), reactor)
        await timed(index._run(lambda db: db.execute(f"PRAGMA max_page_count={pages}")), reactor)
        long_name = "/".join(["n" * 200] * 12)  # rows of many pages
        results = await _settle([fx.upload(f"{long_name}{i}", b"x") for i in range(8)], reactor)
        assert not any(ok for ok, _ in results)
        assert all(failure.check(DiskFull) for _, failure in results)
        assert sorted(p.name for p in storage.root.iterdir() if p.name != ".boxsync") == ["a.txt"]
        assert fx.staging_left() == []
    finally:
        index.stop()


@pytest_twisted.ensureDeferred
async def test_a_cancelled_upload_is_still_committed_and_published(fx: Fixture, reactor: Any) -> None:
    d = fx.upload("a.txt", b"a")
    d.cancel()
    with pytest.raises(Exception):
        await d
    await timed(fx.upload("b.txt", b"b"), reactor)
    published = [e.path for e in fx.listener.events if isinstance(e, Download)]
    assert published == ["a.txt", "b.txt"]


@pytest_twisted.ensureDeferred
async def test_a_staging_file_that_cannot_be_made_durable_is_discarded(
    tmp_path: Path, reactor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = BoxStorage(reactor, tmp_path / "box")
    closed = storage.new_staging()
    closed.write(b"x")
    closed.close()
    with pytest.raises(ValueError):
        await timed(storage.finish(closed, 0), reactor)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    staged = storage.new_staging()
    staged.write(b"y")
    with pytest.raises(DiskFull):
        await timed(storage.finish(staged, 0), reactor)
    assert list(storage.staging.iterdir()) == []


#: What L{box_with_links} holds that is no regular file of the box.
NOT_FILES = ["link.txt", "via/outside.txt", "fifo", "d", "missing", "d/small.txt/below", "../outside.txt"]


def box_with_links(tmp_path: Path, reactor: Any) -> BoxStorage:
    """
    A box with one file, C{d/small.txt}, and a link to a file outside, a
    link to the folder outside and a FIFO.
    """
    storage = BoxStorage(reactor, tmp_path / "box")
    root = storage.root
    (root / "d").mkdir()
    (root / "d/small.txt").write_bytes(b"12345")
    (tmp_path / "outside.txt").write_bytes(b"secret")
    (root / "link.txt").symlink_to(tmp_path / "outside.txt")
    (root / "via").symlink_to(tmp_path)
    os.mkfifo(root / "fifo")
    return storage


def test_read_small_reads_only_regular_files_in_the_box(tmp_path: Path, reactor: Any) -> None:
    storage = box_with_links(tmp_path, reactor)
    assert storage.read_small("d/small.txt", 100) == b"12345"
    # Up to one byte more than the limit: the caller sees the file grew.
    assert storage.read_small("d/small.txt", 3) == b"1234"
    for path in NOT_FILES:
        assert storage.read_small(path, 100) is None, path


def test_a_batch_of_reads_opens_each_folder_once_in_a_row(
    tmp_path: Path, reactor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Files read one after the other through the box's L{Folders} open their
    folder once while they are in it, and read what they read alone.
    """
    from boxsync.server import beneath

    storage = box_with_links(tmp_path, reactor)
    for name in ("a", "b", "c"):
        (storage.root / "d" / name).write_bytes(name.encode())
    (storage.root / "e").mkdir()
    (storage.root / "e/x").write_bytes(b"x")
    opened: list[tuple[str, ...]] = []
    real = beneath._open_folders

    def counted(root: Path, names: Sequence[str], create: bool) -> int:
        opened.append(tuple(names))
        return real(root, names, create)

    monkeypatch.setattr(beneath, "_open_folders", counted)
    paths = ["d/a", "d/b", "d/c", "e/x", "d/small.txt", *NOT_FILES, "d/a"]
    with storage.folders() as folders:
        read = [storage.read_small(path, 100, folders) for path in paths]
    many = opened[:]
    opened.clear()
    assert read == [storage.read_small(path, 100) for path in paths]
    assert read[:5] == [b"a", b"b", b"c", b"x", b"12345"]
    assert many[:3] == [("d",), ("e",), ("d",)]
    assert len(many) < len(opened)


def test_open_file_reads_only_regular_files_in_the_box(tmp_path: Path, reactor: Any) -> None:
    storage = box_with_links(tmp_path, reactor)
    opened = storage.open_file("d/small.txt")
    assert opened is not None
    with opened:
        assert opened.read() == b"12345"
    assert storage.hash("d/small.txt") == sha(b"12345")
    for path in NOT_FILES:
        assert storage.open_file(path) is None, path
        assert storage.hash(path) is None, path


@pytest_twisted.ensureDeferred
async def test_nothing_is_placed_or_removed_through_a_link(tmp_path: Path, reactor: Any) -> None:
    """
    A folder of the box replaced by a link to the outside: a placement
    or a removal through it is refused (BadPath), and the outside is left
    as it was.
    """
    storage = BoxStorage(reactor, tmp_path / "box")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "old.txt").write_bytes(b"secret")
    (storage.root / "d").symlink_to(outside)
    staged = storage.new_staging()
    staged.write(b"new")
    [outcome] = await timed(storage.place_many([(staged, "d/old.txt", False)]), reactor)
    assert isinstance(outcome, BadPath)
    with pytest.raises(BadPath):
        await timed(storage.remove("d/old.txt"), reactor)
    assert [p.name for p in outside.iterdir()] == ["old.txt"]
    assert (outside / "old.txt").read_bytes() == b"secret"
    assert (storage.root / "d").is_symlink()
    assert list(storage.staging.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_removals_in_one_hop_are_all_made_or_none(tmp_path: Path, reactor: Any) -> None:
    """
    A batch's removals go to the thread together; one refused (through a
    link) puts back those made before it.
    """
    storage = BoxStorage(reactor, tmp_path / "box")
    (storage.root / "a").mkdir()
    (storage.root / "a/1.txt").write_bytes(b"one")
    (storage.root / "b.txt").write_bytes(b"two")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_bytes(b"secret")
    (storage.root / "link").symlink_to(outside)
    with pytest.raises(BadPath):
        await timed(storage.remove_many(["a/1.txt", "b.txt", "link/x.txt"]), reactor)
    assert (storage.root / "a/1.txt").read_bytes() == b"one"
    assert (storage.root / "b.txt").read_bytes() == b"two"
    assert (outside / "x.txt").read_bytes() == b"secret"
    changes = await timed(storage.remove_many(["a/1.txt", "b.txt", "gone.txt"]), reactor)
    assert [(c.path, c.previous is not None) for c in changes] == [("a/1.txt", True), ("b.txt", True), ("gone.txt", False)]
    assert not (storage.root / "a").exists() and not (storage.root / "b.txt").exists()
    await timed(storage.undo(changes), reactor)
    assert (storage.root / "a/1.txt").read_bytes() == b"one"


@pytest_twisted.ensureDeferred
async def test_an_undone_placement_makes_and_prunes_its_folders(tmp_path: Path, reactor: Any) -> None:
    storage = BoxStorage(reactor, tmp_path / "box")
    staged = storage.new_staging()
    staged.write(b"new")
    [change] = await timed(storage.place_many([(staged, "a/b/c.txt", False)]), reactor)
    assert (storage.root / "a/b/c.txt").read_bytes() == b"new"
    await timed(storage.undo([change]), reactor)
    assert not (storage.root / "a").exists()


@pytest_twisted.ensureDeferred
async def test_a_group_into_many_folders_holds_one_folder_open_at_a_time(tmp_path: Path, reactor: Any) -> None:
    """
    100 files, each into a folder of its own, placed with room for only 32
    more open files than the process has: each folder is opened, filled,
    fsynced and closed in turn.
    """
    import resource

    storage = BoxStorage(reactor, tmp_path / "box")
    moves = []
    for n in range(100):
        staged = storage.new_staging()
        staged.write(b"%d" % n)
        staged.close()
        moves.append((staged, f"f{n}/g/file.txt", False))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 32, hard))
    try:
        outcomes = await timed(storage.place_many(moves), reactor)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert [type(outcome).__name__ for outcome in outcomes] == ["Change"] * 100
    assert (storage.root / "f42/g/file.txt").read_bytes() == b"42"


def test_link_gives_only_a_regular_file_of_the_box_a_second_name(tmp_path: Path, reactor: Any) -> None:
    storage = box_with_links(tmp_path, reactor)
    assert storage.link("d/small.txt", storage.staging / "second")
    assert (storage.staging / "second").read_bytes() == b"12345"
    for n, path in enumerate(NOT_FILES):
        assert not storage.link(path, storage.staging / f"not-{n}"), path
    assert sorted(p.name for p in storage.staging.iterdir()) == ["second"]


def test_an_index_from_before_modes_were_kept_has_no_executable_file(tmp_path: Path) -> None:
    """
    Schema 3 adds whether each version is executable: the rows from before
    were written 0644, and are read as not executable.
    """
    path = tmp_path / "index.sqlite"
    db = sqlite3.connect(path)
    for number, steps in enumerate(_SCHEMA[:2], start=1):
        for statement in steps:
            db.execute(statement)
        db.execute(f"PRAGMA user_version={number}")
    db.execute(
        "INSERT INTO files (account, path, size, sha256, mtime_ns, seq, deleted, origin, ctime_ns) "
        "VALUES ('acct', 'run.sh', 1, ?, 2, 3, 0, 'laptop', 4)",
        (sha(b"x"),),
    )
    db.commit()
    db.close()
    db = open_database(path)
    try:
        rows = [_record(row) for row in db.execute(f"SELECT {_COLUMNS} FROM files")]
        assert rows == [FileRecord("run.sh", 1, sha(b"x"), 2, 3, False, "laptop", 4, executable=False)]
        assert db.execute("PRAGMA user_version").fetchone() == (len(_SCHEMA),)
    finally:
        db.close()


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM, errno.EROFS])
def test_a_box_that_may_not_be_written_is_said_so(code: int) -> None:
    """
    Writing in the box where one may not (its owner or mode, an immutable
    folder, a read-only mount) is a L{BoxNotWritable}, said without the
    errno in front; a full disk is a L{DiskFull}; other errors stay as
    they are.
    """
    met = OSError(code, os.strerror(code), "/box/.boxsync/staging/up-1", None, "notes.txt")
    said = as_box_error(met)
    assert isinstance(said, BoxNotWritable) and said.filename2 == "notes.txt"
    assert str(said) == f"the server cannot write in its box ({os.strerror(code)})"
    assert isinstance(as_box_error(OSError(errno.ENOSPC, "full")), DiskFull)
    other = FileNotFoundError(errno.ENOENT, "gone")
    assert as_box_error(other) is other
    assert as_box_error(said) is said
