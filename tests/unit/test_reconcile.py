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
