"""
The manifest read a piece at a time (L{boxsync.server.manifest}): it takes
and refuses exactly what L{parse_manifest} does, from bodies read in pieces
of any size, and gives the reactor a turn every so many entries.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any, Coroutine, TypeVar

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from boxsync.wire import (
    DeletedEntry,
    FileEntry,
    FolderEntry,
    Manifest,
    ProtocolError,
    encode_manifest,
    parse_manifest,
)
from boxsync.server.manifest import Entry
from boxsync.server import manifest as streamed
from boxsync.server.manifest import PAGE, YIELD_EVERY, PathSet, StreamedManifest, read_manifest

_T = TypeVar("_T")

SHA = "a" * 64


class TurningClock(Clock):
    """
    A fake reactor that counts the turns asked of it.
    """

    turns = 0

    def callLater(self, delay: float, *args: Any, **kwargs: Any) -> Any:
        self.turns += 1
        return super().callLater(delay, *args, **kwargs)


def run(coroutine: Coroutine[Any, Any, _T], clock: Clock) -> _T:
    """
    Run C{coroutine} to its end, turning the fake reactor as often as it
    asks.
    """
    d = Deferred.fromCoroutine(coroutine)
    clock.advance(0)
    results: list[Any] = []
    d.addBoth(results.append)
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


async def entries_of(m: StreamedManifest) -> list[Entry]:
    found: list[Entry] = []
    async for page in m.pages():
        assert 0 < len(page) <= PAGE
        found += page
    return found


def read(body: bytes, max_entries: int = 1_000_000) -> Manifest:
    """
    C{body} read as a stream, as a L{Manifest} to compare.
    """
    clock = Clock()
    m = run(read_manifest(BytesIO(body), max_entries, clock), clock)
    found = run(entries_of(m), clock)
    files = [e for e in found if isinstance(e, FileEntry)]
    deleted = [e for e in found if isinstance(e, DeletedEntry)]
    folders = [e for e in found if isinstance(e, FolderEntry)]
    assert (m.files, m.deleted, m.folders) == (len(files), len(deleted), len(folders))
    for entry in found:
        assert entry.path in m.listed
    return Manifest(m.client, m.cursor, files, deleted, m.features, folders)


def sample(n: int) -> Manifest:
    return Manifest(
        client="laptop",
        cursor=7,
        files=[FileEntry(f"d/é {i}.txt", SHA if i % 2 else None, i, i * 3, i % 5, True) for i in range(n)],
        deleted=[DeletedEntry(f"gone/{i}", i) for i in range(n // 3)],
        features={"executable", "folders"},
        folders=[FolderEntry(f"empty/{i}", i) for i in range(n // 4)],
    )


@pytest.mark.parametrize("read_size", [1, 7, 4096, 1 << 20])
def test_a_streamed_manifest_is_the_parsed_one(read_size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streamed, "READ_SIZE", read_size)
    for body in [
        encode_manifest(sample(1200)),
        json.dumps(sample(30).to_json(), indent=2).encode(),
        b"",
        b"{}",
        b' { "deleted" : [ ] , "cursor" : 12345678901 , "files" : [ ] , "other": {"x": [1, 2]} } ',
    ]:
        assert read(body) == parse_manifest(body)


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"{",
        b'{"files": [}',
        b'{"files": [{"path": "a", "size": 1}] trailing',
        b'{"files": {}}',
        b'{"deleted": null}',
        b'{"files": [1]}',
        b'{"deleted": [1]}',
        b'{"files": [{"path": "../a", "size": 1}]}',
        b'{"files": [{"path": "a", "sha256": null, "size": 1, "changed": false}]}',
        b'{"files": [{"path": "a", "size": -1}]}',
        b'{"files": [{"path": "a", "size": 1}], "deleted": [{"path": "a"}]}',
        b'{"files": [{"path": "a", "size": 1}, {"path": "a", "size": 1}]}',
        b'{"cursor": "1"}',
        b'{"client": 5}',
        b'{"files": [], "files": []}',
        b'{"cursor": 1, "cursor": 2}',
        b'{"folders": [{"path": "a"}], "files": [{"path": "a", "size": 1}]}',
        b'{"folders": 1}',
        b'{"features": "folders"}',
        b"\xff\xfe",
        b'{"client": "' + b"x" * 70000 + b'"}',
        b"[" * 100000,
    ],
)
def test_bad_manifests_are_refused(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        read(body)


def test_the_entry_limit() -> None:
    body = encode_manifest(sample(30))
    assert read(body, max_entries=47).files
    with pytest.raises(ProtocolError, match="over 46"):
        read(body, max_entries=46)


def test_two_paths_with_one_hash_are_not_listed_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Every path hashed alike: a path listed twice is still found, and
    distinct paths are still taken.
    """
    monkeypatch.setattr(PathSet, "hash", lambda self, path: 42)
    assert read(encode_manifest(sample(10))) == sample(10)
    twice = b'{"files": [{"path": "a", "size": 1}], "deleted": [{"path": "b"}, {"path": "a"}]}'
    with pytest.raises(ProtocolError, match="'a' is listed twice"):
        read(twice)


def test_the_reactor_gets_a_turn_every_so_many_entries() -> None:
    entries = 10 * YIELD_EVERY
    body = encode_manifest(Manifest(files=[FileEntry(f"f{i}", SHA, 1, 1) for i in range(entries)]))
    clock = TurningClock()
    m = run(read_manifest(BytesIO(body), 10**6, clock), clock)
    assert clock.turns == entries // YIELD_EVERY
    run(entries_of(m), clock)
    assert clock.turns == 2 * entries // YIELD_EVERY


def test_path_set() -> None:
    paths = PathSet()
    assert paths.add("a") and paths.add("b") and not paths.add("a")
    assert "a" in paths and "b" in paths and "c" not in paths and 5 not in paths
    # Keyed anew for each set.
    assert PathSet().hash("a") != PathSet().hash("a")
