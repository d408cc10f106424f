"""
The three-way plan rules, one table row at a time, and the plan over a real
SQLite index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_twisted

from boxsync.wire import (
    Conflict,
    Delete,
    DeletedEntry,
    Download,
    FileEntry,
    Folder,
    FolderEntry,
    InSync,
    Manifest,
    Remove,
    Upload,
)
from boxsync.server.index import FileRecord, SQLiteIndex
from boxsync.server.plan import decide, plan, unlisted

A, B = "a" * 64, "b" * 64


def live(seq: int, sha: str = A, executable: bool = False) -> FileRecord:
    return FileRecord("f", 1, sha, 0, seq, executable=executable)


def tomb(seq: int) -> FileRecord:
    return FileRecord("f", 0, A, 0, seq, deleted=True)


def mine(base: int, changed: bool, sha: str = B, executable: bool | None = None) -> FileEntry:
    return FileEntry("f", sha, 1, 0, base, changed, executable)


@pytest.mark.parametrize(
    "entry, row, expected",
    [
        # server has nothing
        (mine(0, True), None, Upload("f", 0)),
        (mine(3, False), None, Upload("f", 0)),
        # same sha256
        (mine(5, False, A), live(5), None),
        (mine(0, True, A), live(5), InSync("f", 5)),
        (mine(2, True, A), live(5), InSync("f", 5)),
        # same sha256, another mode: the client's change of it goes up...
        (mine(5, True, A, True), live(5), Upload("f", 5)),
        (mine(4, True, A, True), live(5), Upload("f", 5)),
        (mine(5, True, A, False), live(5, A, True), Upload("f", 5)),
        # ... else the server's comes down
        (mine(4, False, A, True), live(5), Download("f", A, 1, 0, 5, False)),
        (mine(0, True, A, True), live(5), Download("f", A, 1, 0, 5, False)),
        (mine(0, True, A, False), live(5, A, True), Download("f", A, 1, 0, 5, True)),
        # a client that does not tell the mode plans as before
        (mine(5, False, A), live(5, A, True), None),
        (mine(2, True, A), live(5, A, True), InSync("f", 5)),
        (mine(5, False, A, True), live(5, A, True), None),
        # seq == base
        (mine(5, True), live(5), Upload("f", 5)),
        (mine(5, False), live(5), None),
        # seq != base
        (mine(4, False), live(5), Download("f", A, 1, 0, 5, False)),
        (mine(4, True), live(5), Conflict("f", A, 1, 0, 5, False)),
        (mine(4, True, B, False), live(5, A, True), Conflict("f", A, 1, 0, 5, True)),
        (mine(0, True), live(5), Conflict("f", A, 1, 0, 5, False)),
        # tombstone
        (mine(4, False), tomb(6), Delete("f", 6)),
        (mine(4, True), tomb(6), Upload("f", 6)),
        (mine(0, True), tomb(6), Upload("f", 6)),
        # a new file the client has not hashed (it hashes it as it uploads)
        (FileEntry("f", None, 1, 0, 0, True), None, Upload("f", 0)),
        (FileEntry("f", None, 1, 0, 0, True), live(5), Conflict("f", A, 1, 0, 5, False)),
        (FileEntry("f", None, 1, 0, 0, True), tomb(6), Upload("f", 6)),
        # the client deleted the file
        (DeletedEntry("f", 5), live(5), Remove("f", 5)),
        (DeletedEntry("f", 4), live(5), Download("f", A, 1, 0, 5, False)),
        (DeletedEntry("f", 4), tomb(6), None),
        (DeletedEntry("f", 4), None, None),
    ],
)
def test_decide(entry: Any, row: FileRecord | None, expected: Any) -> None:
    assert decide(entry, row) == expected


def folder(seq: int, deleted: bool = False) -> FileRecord:
    return FileRecord("f", 0, "", 0, seq, deleted, folder=True)


@pytest.mark.parametrize(
    "entry, row, expected",
    [
        # a folder the client has
        (FolderEntry("f", 0), None, Upload("f", 0)),
        (FolderEntry("f", 0), folder(5), InSync("f", 5)),
        (FolderEntry("f", 5), folder(5), None),
        (FolderEntry("f", 4), folder(5), InSync("f", 5)),
        (FolderEntry("f", 0), folder(6, deleted=True), Upload("f", 6)),
        (FolderEntry("f", 5), folder(6, deleted=True), Delete("f", 6)),
        # a file in the box where the client has a folder, and the other way round
        (FolderEntry("f", 0), live(5), Download("f", A, 1, 0, 5, False)),
        (mine(0, True), folder(5), Folder("f", 5)),
        (mine(4, True), folder(6, deleted=True), Upload("f", 6)),
        # a folder the client deleted
        (DeletedEntry("f", 5), folder(5), Remove("f", 5)),
        (DeletedEntry("f", 4), folder(5), Folder("f", 5)),
        (DeletedEntry("f", 5), folder(6, deleted=True), None),
    ],
)
def test_decide_folders(entry: Any, row: FileRecord | None, expected: Any) -> None:
    assert decide(entry, row) == expected


def test_unlisted() -> None:
    assert unlisted(live(5), cursor=4) == Download("f", A, 1, 0, 5, False)
    assert unlisted(live(5), cursor=5) is None
    assert unlisted(tomb(6), cursor=4) == Delete("f", 6)
    assert unlisted(folder(6), cursor=4) == Folder("f", 6)
    assert unlisted(folder(6, deleted=True), cursor=4) == Delete("f", 6)
    assert unlisted(folder(6, deleted=True), cursor=0) is None
    # A client with no cursor has nothing to delete.
    assert unlisted(tomb(6), cursor=0) is None


@pytest_twisted.async_yield_fixture
async def index(tmp_path: Path, reactor: Any) -> AsyncIterator[SQLiteIndex]:
    idx = SQLiteIndex(reactor, tmp_path / "index.sqlite")
    idx.start()
    try:
        yield idx
    finally:
        idx.stop()


async def collect(index: SQLiteIndex, manifest: Manifest, upto: int) -> list[Any]:
    return [event async for event in plan(index, "acct", manifest, upto)]


@pytest_twisted.ensureDeferred
async def test_plan_over_the_index(index: SQLiteIndex) -> None:
    rows = await index.commit_many(
        "acct",
        [FileRecord(f"p{i:05}", i, A, 0, 0) for i in range(1200)]
        + [FileRecord("p00007", 0, A, 0, 0, deleted=True)],
    )
    assert rows[-1].seq == 1201
    # Another account's rows never show up.
    await index.commit("other", FileRecord("secret", 1, A, 0, 0))
    everything = await collect(index, Manifest(), 1201)
    assert len(everything) == 1199
    assert all(isinstance(e, Download) for e in everything)
    manifest = Manifest(
        cursor=1100,
        files=[FileEntry("p00001", A, 1, 0, 1, False), FileEntry("new", B, 1, 0, 0, True)],
        deleted=[DeletedEntry("p00002", 3)],
    )
    events = await collect(index, manifest, 1201)
    assert Upload("new", 0) in events
    assert Remove("p00002", 3) in events
    assert InSync("p00001", 2) in events
    downloads = [e for e in events if isinstance(e, Download)]
    assert [e.seq for e in downloads] == list(range(1101, 1201))
    assert Delete("p00007", 1201) in events
    # Commits after "upto" are left to the live events.
    assert await collect(index, Manifest(cursor=1100), 1150) == [
        e for e in downloads if e.seq <= 1150
    ]
    stats = await index.stats("acct")
    assert (stats.files, stats.seq) == (1199, 1201)


@pytest_twisted.ensureDeferred
async def test_a_changed_file_where_the_box_now_has_files_below_it_is_told_of_the_folder(
    index: SQLiteIndex,
) -> None:
    """
    The box deleted C{f} and has files below it now (a folder made in its
    place), or had them and deleted them too: a client's edit of C{f} is
    told of the folder (it makes it and keeps its file as a conflict copy)
    while any is live, and is uploaded (an edit wins over a delete) once
    none is.
    """
    await index.commit("acct", FileRecord("f", 1, A, 0, 0))
    [gone, *_] = await index.commit_many(
        "acct",
        [FileRecord("f", 0, A, 0, 0, deleted=True)]
        + [FileRecord(f"f/old{i:04}", 0, A, 0, 0, deleted=True) for i in range(1100)]
        + [FileRecord("f/zz", 1, A, 0, 0), FileRecord("f0", 1, A, 0, 0)],
    )
    edited = Manifest(cursor=1, files=[FileEntry("f", B, 1, 0, 1, True)])
    # Past a page of deleted files below it.
    assert await collect(index, edited, gone.seq) == [Folder("f", gone.seq)]
    [zz] = await index.commit_many("acct", [FileRecord("f/zz", 0, A, 0, 0, deleted=True)])
    assert await collect(index, edited, gone.seq) == [Upload("f", gone.seq)]


@pytest_twisted.ensureDeferred
async def test_a_file_below_a_folder_the_box_made_a_file_is_left_to_that_file_s_download(
    index: SQLiteIndex,
) -> None:
    """
    The box replaced the folder C{d} by a file: a client's edit of C{d/x},
    and its new C{d/y/z}, are not uploaded (the box would refuse them) but
    left to the download of C{d}, which keeps the client's folder as a
    conflict copy. A path whose folders above are folders, or gone, is
    uploaded as ever.
    """
    [x, _] = await index.commit_many("acct", [FileRecord("d/x", 1, A, 0, 0), FileRecord("e/x", 1, A, 0, 0)])
    await index.commit_many(
        "acct", [FileRecord("d/x", 0, A, 0, 0, deleted=True), FileRecord("e/x", 0, A, 0, 0, deleted=True)]
    )
    [d] = await index.commit_many("acct", [FileRecord("d", 1, B, 0, 0)])
    edited = Manifest(
        cursor=x.seq,
        files=[
            FileEntry("d/x", B, 1, 0, x.seq, True),
            FileEntry("d/y/z", B, 1, 0, 0, True),
            FileEntry("e/x", B, 1, 0, x.seq, True),
            FileEntry("top", B, 1, 0, 0, True),
        ],
    )
    events = await collect(index, edited, d.seq)
    assert [event for event in events if isinstance(event, Upload)] == [Upload("e/x", d.seq - 1), Upload("top", 0)]
    assert [(event.path, event.seq) for event in events if isinstance(event, Download)] == [("d", d.seq)]


@pytest_twisted.ensureDeferred
async def test_a_file_made_a_folder_by_the_client_is_deleted_before_what_goes_in_it(
    index: SQLiteIndex,
) -> None:
    """
    The client replaced the box's file C{d} by a folder: it lists C{d} as
    deleted and its new files below it. They are uploaded, and after C{d}'s
    own event (its delete, or its download if the box changed it since),
    which they then wait for: sent first, they would be refused, a file in
    the way.
    """
    [d] = await index.commit_many("acct", [FileRecord("d", 1, A, 0, 0)])
    manifest = Manifest(
        cursor=d.seq,
        files=[FileEntry("d/new", B, 1, 0, 0, True), FileEntry("e", B, 1, 0, 0, True)],
        deleted=[DeletedEntry("d", d.seq)],
    )
    assert await collect(index, manifest, d.seq) == [Upload("e", 0), Remove("d", d.seq), Upload("d/new", 0)]
    [changed] = await index.commit_many("acct", [FileRecord("d", 1, B, 0, 0)])
    events = await collect(index, manifest, changed.seq)
    assert [(type(e), e.path) for e in events] == [(Upload, "e"), (Download, "d"), (Upload, "d/new")]
