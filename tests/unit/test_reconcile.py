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
)
from boxsync.client.scanner import LocalFile
from boxsync.client.state import Base
from boxsync.wire import Download, Upload

OURS = "a" * 64
THEIRS = "b" * 64


def base(seq: int = 3, sha256: str = OURS) -> Base:
    return Base("f", sha256, 1, 1, 1, seq, 1)


def file(sha256: str | None = OURS, changed: bool = False, seq: int = 3) -> LocalFile:
    return LocalFile("f", sha256, 1, 1, 1, 1, seq, changed)


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
    "had, found, expected",
    [
        (base(), None, Forget()),
        (base(), file(changed=False), DeleteHere()),
        (base(), file(changed=True), Revive(9)),  # the edit wins over the delete
        (None, file(changed=True, seq=0), Revive(9)),
    ],
)
def test_on_delete(had: Base | None, found: LocalFile | None, expected: reconcile.Action) -> None:
    assert reconcile.on_delete(9, had, found) == expected


@pytest.mark.parametrize(
    "sent, found, expected",
    [
        (OURS, None, Nothing()),
        (OURS, file(OURS), Record(4)),
        (None, file(OURS), Record(4)),
        (OURS, file(THEIRS), SendEdit(OURS, 4)),  # edited since the manifest
    ],
)
def test_on_insync(sent: str | None, found: LocalFile | None, expected: reconcile.Action) -> None:
    assert reconcile.on_insync(4, sent, found) == expected


@pytest.mark.parametrize(
    "had, found, expected",
    [
        (None, None, Nothing()),
        (base(), None, Remove(3)),
        (base(), file(changed=False), Nothing()),
        (base(), file(changed=True), Send(3)),
        (None, file(changed=True, seq=0), Send(0)),
    ],
)
def test_on_local_change(had: Base | None, found: LocalFile | None, expected: reconcile.Action) -> None:
    assert reconcile.on_local_change(had, found) == expected


@pytest.mark.parametrize(
    "had, found, expected",
    [
        (base(2), None, Nothing()),
        (base(2), file(changed=True), Send(2)),
        # Uploaded since the plan was made: only a later change goes up.
        (base(5), file(changed=False, seq=5), Nothing()),
        (base(5), file(changed=True, seq=5), Send(5)),
    ],
)
def test_on_upload(had: Base | None, found: LocalFile | None, expected: reconcile.Action) -> None:
    assert reconcile.on_upload(Upload("f", 2), had, found) == expected
