"""
The client's decisions (L{boxsync.client.reconcile}), from a base and a look
at the file alone: pure logic, no folder, no server.
"""

from __future__ import annotations

import pytest

from boxsync.client import reconcile
from boxsync.client.reconcile import (
    DeleteHere,
    Fetch,
    Forget,
    Nothing,
    Record,
    Remove,
    Revive,
    Send,
    SendEdit,
    SendMode,
    TakeMode,
)
from boxsync.client.scanner import Here
from boxsync.client.state import folder_base
from boxsync.client.scanner import LocalFile
from boxsync.client.state import Base
from boxsync.wire import Download, Upload

OURS = "a" * 64
THEIRS = "b" * 64


def base(seq: int = 3, sha256: str = OURS, executable: bool = False) -> Base:
    return Base("f", sha256, 1, 1, 1, seq, 1, executable)


def file(sha256: str | None = OURS, changed: bool = False, seq: int = 3, executable: bool = False) -> LocalFile:
    return LocalFile("f", sha256, 1, 1, 1, 1, seq, changed, executable=executable)


def edited(seq: int = 3) -> LocalFile:
    """
    The file, its bytes changed since its base (of C{seq}).
    """
    return file(THEIRS, changed=True, seq=seq)


def made_executable(seq: int = 3) -> LocalFile:
    """
    The file, made executable since its base (of C{seq}): the same bytes.
    """
    return file(OURS, changed=True, seq=seq, executable=True)


def test_outdated() -> None:
    assert reconcile.outdated(base(5), 5) and reconcile.outdated(base(6), 5)
    assert not reconcile.outdated(base(4), 5) and not reconcile.outdated(None, 5)


@pytest.mark.parametrize(
    "found, expected",
    [
        (None, Fetch(keep_local=False)),
        (file(THEIRS, changed=True), Record(7)),  # already has that content
        (file(OURS, changed=False), Fetch(keep_local=False)),
        (file(OURS, changed=True), Fetch(keep_local=True)),  # an unseen edit is kept
    ],
)
def test_on_download(found: LocalFile | None, expected: reconcile.Action) -> None:
    assert reconcile.on_download(Download("f", THEIRS, 1, 1, 7), found) == expected


@pytest.mark.parametrize(
    "unanswered, found, expected",
    [
        # The server's version is the upload whose answer was lost, and the
        # file was edited since: the edit goes up from it.
        (THEIRS, file(OURS, changed=True), SendEdit(THEIRS, 7, False)),
        (THEIRS, file(OURS, changed=False), Fetch(keep_local=False)),  # not edited since: theirs
        (THEIRS, None, Fetch(keep_local=False)),  # deleted here since: the version comes back
        ("c" * 64, file(OURS, changed=True), Fetch(keep_local=True)),  # another's version
    ],
)
def test_on_download_of_an_upload_whose_answer_was_lost(
    unanswered: str, found: LocalFile | None, expected: reconcile.Action
) -> None:
    assert reconcile.on_download(Download("f", THEIRS, 1, 1, 7), found, unanswered) == expected


@pytest.mark.parametrize(
    "executable, found, expected",
    [
        (True, file(OURS), TakeMode(7, True)),  # the server's mode comes down
        (False, file(OURS, executable=True), TakeMode(7, False)),
        (False, file(OURS, changed=True, seq=0, executable=True), TakeMode(7, False)),  # never synced
        (True, file(OURS, executable=True), Record(7)),
        (None, file(OURS, executable=True), Record(7)),  # a server that does not say
        (False, made_executable(), SendMode(7)),  # a change of the mode here goes up
    ],
)
def test_on_download_of_the_same_bytes(
    executable: bool | None, found: LocalFile, expected: reconcile.Action
) -> None:
    assert reconcile.on_download(Download("f", OURS, 1, 1, 7, executable), found) == expected


@pytest.mark.parametrize(
    "had, found, expected",
    [
        (base(), None, Forget()),
        (base(), file(changed=False), DeleteHere()),
        (base(), edited(), Revive(9)),  # the edit wins over the delete
        (base(), made_executable(), Revive(9)),
        (None, file(changed=True, seq=0), Revive(9)),
    ],
)
def test_on_delete(had: Base | None, found: LocalFile | None, expected: reconcile.Action) -> None:
    assert reconcile.on_delete(9, had, found) == expected


@pytest.mark.parametrize(
    "sent, found, expected",
    [
        ((OURS, False), None, Nothing()),
        ((OURS, False), file(OURS), Record(4)),
        (None, file(OURS), Record(4)),
        ((OURS, False), file(THEIRS), SendEdit(OURS, 4)),  # edited since the manifest
        ((OURS, False), file(OURS, executable=True), SendEdit(OURS, 4)),
        ((OURS, True), file(OURS), SendEdit(OURS, 4, True)),
    ],
)
def test_on_insync(sent: tuple[str, bool] | None, found: LocalFile | None, expected: reconcile.Action) -> None:
    assert reconcile.on_insync(4, sent, found) == expected


@pytest.mark.parametrize(
    "had, found, expected",
    [
        (None, None, Nothing()),
        (base(), None, Remove(3)),
        (base(), file(changed=False), Nothing()),
        (base(), edited(), Send(3)),
        (None, file(changed=True, seq=0), Send(0)),
        # Only its mode changed: the bytes stay where they are.
        (base(), made_executable(), SendMode(3)),
        (base(executable=True), file(OURS, changed=True), SendMode(3)),
    ],
)
def test_on_local_change(had: Base | None, found: LocalFile | None, expected: reconcile.Action) -> None:
    assert reconcile.on_local_change(had, found) == expected


@pytest.mark.parametrize(
    "had, found, expected",
    [
        (base(2), None, Nothing()),
        (base(2), edited(2), Send(2)),
        (base(2), made_executable(2), SendMode(2)),
        # The plan's base is not this file's: the bytes go up too.
        (base(1), made_executable(1), Send(2)),
        # Uploaded since the plan was made: only a later change goes up.
        (base(5), file(changed=False, seq=5), Nothing()),
        (base(5), edited(5), Send(5)),
        (base(5), made_executable(5), SendMode(5)),
    ],
)
def test_on_upload(had: Base | None, found: LocalFile | None, expected: reconcile.Action) -> None:
    assert reconcile.on_upload(Upload("f", 2), had, found) == expected


EMPTY, FOLDER, NOTHING, FILE, OTHER = Here.EMPTY, Here.FOLDER, Here.NOTHING, Here.FILE, Here.OTHER


def test_what_concerns_a_folder() -> None:
    assert reconcile.is_folder(folder_base("f", 3), NOTHING)
    assert reconcile.is_folder(folder_base("f", 3), FILE)
    assert reconcile.is_folder(None, EMPTY) and reconcile.is_folder(base(), FOLDER)
    assert not reconcile.is_folder(None, NOTHING) and not reconcile.is_folder(base(), FILE)


@pytest.mark.parametrize(
    "here, expected",
    [
        (NOTHING, reconcile.MakeFolder(7)),
        (EMPTY, reconcile.RecordFolder(7)),
        (FOLDER, reconcile.RecordFolder(7)),
        (FILE, reconcile.Clash("the box has a folder where this folder has a file")),
        (OTHER, reconcile.Clash("the box has a folder where this folder has a link or a special file")),
    ],
)
def test_on_folder(here: Here, expected: reconcile.Action) -> None:
    assert reconcile.on_folder(7, here) == expected


def test_a_folder_in_the_place_of_a_file() -> None:
    assert reconcile.on_folder(7, FILE, file()) == reconcile.MakeFolder(7, over_file=True)
    # An edit the server has not seen (or a file never synced) is kept.
    assert reconcile.on_folder(7, FILE, edited()) == reconcile.MakeFolder(7, over_file=True, keep_local=True)
    assert reconcile.on_folder(7, FILE, file(changed=True, seq=0)) == reconcile.MakeFolder(7, True, True)


@pytest.mark.parametrize(
    "had, here, expected",
    [
        (folder_base("f", 3), EMPTY, reconcile.DeleteFolderHere()),
        # Never a folder that holds anything: what is in it may not be synced.
        (folder_base("f", 3), FOLDER, reconcile.KeepFolder()),
        (folder_base("f", 3), NOTHING, Forget()),
        (folder_base("f", 3), FILE, Forget()),
        # A folder that was never synced here is not the one deleted.
        (None, EMPTY, Nothing()),
        (None, FOLDER, Nothing()),
        (base(), EMPTY, Forget()),  # a file here that became a folder
    ],
)
def test_on_folder_delete(had: Base | None, here: Here, expected: reconcile.Action) -> None:
    assert reconcile.on_folder_delete(had, here) == expected


@pytest.mark.parametrize(
    "had, here, expected",
    [
        (None, EMPTY, reconcile.SendFolder(0)),
        (None, FOLDER, Nothing()),  # comes with what it holds
        (folder_base("f", 3), EMPTY, Nothing()),
        (folder_base("f", 3), FOLDER, Nothing()),  # stays a folder of its own
        (folder_base("f", 3), NOTHING, reconcile.RemoveFolder(3)),
        (folder_base("f", 3), FILE, reconcile.RemoveFolder(3)),  # the file is new after
        (base(), EMPTY, Remove(3)),  # the folder is new after
    ],
)
def test_on_folder_change(had: Base | None, here: Here, expected: reconcile.Action) -> None:
    assert reconcile.on_folder_change(had, here) == expected


@pytest.mark.parametrize(
    "had, here, expected",
    [
        (None, EMPTY, reconcile.SendFolder(2)),
        (folder_base("f", 2), FOLDER, reconcile.SendFolder(2)),
        (folder_base("f", 5), EMPTY, Nothing()),  # sent since the plan was made
        (None, NOTHING, Nothing()),
        (base(), EMPTY, Nothing()),
    ],
)
def test_on_folder_upload(had: Base | None, here: Here, expected: reconcile.Action) -> None:
    assert reconcile.on_folder_upload(Upload("f", 2), had, here) == expected


def test_on_folder_remove_and_insync() -> None:
    had = folder_base("f", 4)
    assert reconcile.on_folder_remove(4, had, NOTHING) == reconcile.RemoveFolder(4)
    assert reconcile.on_folder_remove(4, had, FILE) == reconcile.RemoveFolder(4)
    assert reconcile.on_folder_remove(4, had, EMPTY) == Nothing()  # made again since
    assert reconcile.on_folder_remove(4, base(4), FOLDER) == Remove(4)  # a file that became a folder
    assert reconcile.on_folder_insync(4, FOLDER) == reconcile.RecordFolder(4)
    assert reconcile.on_folder_insync(4, NOTHING) == Nothing()
