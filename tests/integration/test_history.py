"""
The history routes over real HTTP: every overwritten or deleted version is
listed and readable (with Range), deleted files are in the trash, a folder
can be seen as it was at a time, a restore is a new commit that never
overwrites a newer edit, and an account never sees another's history.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest_twisted

from boxsync.wire import BEFORE_HEADER
from boxsync.wire.history import TRASH_ROWS_FEATURE, VersionEntry, iso_time
from tests.helpers import RunningServer, json_of, put, timed
from tests.integration.test_accounts import TokenServer, accounts  # noqa: F401 (the fixture)


async def get(http: Any, server: RunningServer, url: str, **headers: str) -> Any:
    return await timed(http.get(f"{server.url}{url}", headers=server.headers(**headers)), server.reactor)


async def delete(http: Any, server: RunningServer, path: str, base: int) -> Any:
    response = await timed(
        http.delete(server.file_url(path), headers=server.headers(X_Boxsync_Base=str(base))), server.reactor
    )
    await response.content()
    return response


async def restore(http: Any, server: RunningServer, path: str, seq: int, base: int | None) -> Any:
    body = json.dumps({"path": path, "seq": seq, "base": base}).encode()
    return await timed(http.post(f"{server.url}/restore", data=body, headers=server.headers()), server.reactor)


@pytest_twisted.ensureDeferred
async def test_every_version_is_listed_readable_and_restorable(server: RunningServer, http: Any) -> None:
    for content, base in ((b"first", 0), (b"second", 1), (b"third!", 2)):
        response = await put(http, server, "docs/report.txt", content, base=base, X_Boxsync_Client="laptop")
        assert response.code == 201
    listed = await json_of(await get(http, server, "/history/docs/report.txt"))
    versions = [VersionEntry.from_json(v) for v in listed["versions"]]
    assert [(v.seq, v.size, v.ended_seq) for v in versions] == [(3, 6, None), (2, 6, 3), (1, 5, 2)]
    assert listed["deleted"] is False and all(v.time and v.client == "laptop" for v in versions)
    # The bytes of an old version, whole and in part.
    assert await (await get(http, server, "/versions/1")).content() == b"first"
    part = await get(http, server, "/versions/2", Range="bytes=1-3")
    assert part.code == 206 and await part.content() == b"eco"
    assert await (await get(http, server, "/versions/3")).content() == b"third!"
    assert (await get(http, server, "/versions/99")).code == 404
    # A restore is a new commit; the version it replaced is kept too.
    response = await restore(http, server, "docs/report.txt", 1, base=3)
    assert response.code == 201 and (await json_of(response))["seq"] == 4
    assert (server.box / "docs/report.txt").read_bytes() == b"first"
    again = await json_of(await get(http, server, "/history/docs/report.txt"))
    assert [v["seq"] for v in again["versions"]] == [4, 3, 2, 1]
    # A restore from a base the path has moved on from is refused, and
    # changes nothing: a newer edit is never lost.
    assert (await put(http, server, "docs/report.txt", b"newer edit", base=4)).code == 201
    response = await restore(http, server, "docs/report.txt", 2, base=4)
    assert response.code == 412 and (await json_of(response))["seq"] == 5
    assert (server.box / "docs/report.txt").read_bytes() == b"newer edit"
    # A version of another path is not this one's.
    assert (await restore(http, server, "other.txt", 2, base=0)).code == 404
    # Restored twice, a version is a second name of the live file: the
    # rename of one name of a file over another does nothing, and its
    # staging name is not left behind.
    for _ in range(2):
        assert (await restore(http, server, "docs/report.txt", 1, base=None)).code == 201
    assert list((server.box / ".boxsync/staging").iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_deleted_files_are_in_the_trash_and_come_back(server: RunningServer, http: Any) -> None:
    for path in ("old/plan.txt", "old/notes.txt", "keep.txt"):
        assert (await put(http, server, path, path.encode(), base=0)).code == 201
    assert (await delete(http, server, "old/plan.txt", 1)).code == 200
    assert (await delete(http, server, "keep.txt", 3)).code == 200
    trash = (await json_of(await get(http, server, "/trash?under=old")))["files"]
    assert [(f["path"], f["seq"], f["deleted_seq"]) for f in trash] == [("old/plan.txt", 1, 4)]
    everything = (await json_of(await get(http, server, "/trash")))["files"]
    assert [f["path"] for f in everything] == ["keep.txt", "old/plan.txt"]
    # In rows, the same files with the same fields, times in ns.
    for under in ("", "?under=old", "?under=nowhere"):
        versions = (await json_of(await get(http, server, "/trash" + under)))["files"]
        rows = await json_of(await get(http, server, "/trash" + (under + "&" if under else "?") + "rows=1"))
        assert rows["columns"] == ["path", "seq", "time_ns", "size", "sha256", "client", "deleted_seq", "deleted_ns"]
        assert [
            (path, seq, iso_time(time_ns), size, sha256, client, deleted_seq, iso_time(deleted_ns))
            for path, seq, time_ns, size, sha256, client, deleted_seq, deleted_ns in rows["rows"]
        ] == [
            (f["path"], f["seq"], f["time"], f["size"], f["sha256"], f["client"], f["deleted_seq"], f["ended_time"])
            for f in versions
        ]
    first = await get(http, server, "/trash?rows=1&limit=1")
    assert len((await json_of(first))["rows"]) == 1
    # A full page names where the next starts; the last page does not.
    assert first.headers.getRawHeaders(BEFORE_HEADER) == ["5"]
    assert not (await get(http, server, "/trash?rows=1&limit=3")).headers.hasHeader(BEFORE_HEADER)
    # A page after the first: those deleted before its last.
    older = (await json_of(await get(http, server, "/trash?rows=1&before=5")))["rows"]
    assert [(row[0], row[6]) for row in older] == [("old/plan.txt", 4)]
    assert (await json_of(await get(http, server, "/trash?rows=1&before=4")))["rows"] == []
    assert (await get(http, server, "/trash?rows=1&before=-1")).code == 400
    assert TRASH_ROWS_FEATURE in (await json_of(await get(http, server, "/healthz")))["features"]
    history = await json_of(await get(http, server, "/history/old/plan.txt"))
    assert history["deleted"] is True and history["versions"][0]["deleted"] is True
    response = await restore(http, server, "old/plan.txt", 1, base=0)
    assert response.code == 201
    assert (server.box / "old/plan.txt").read_bytes() == b"old/plan.txt"
    assert [f["path"] for f in (await json_of(await get(http, server, "/trash")))["files"]] == ["keep.txt"]
    assert (await get(http, server, "/history/never.txt")).code == 404


@pytest_twisted.ensureDeferred
async def test_a_folder_as_it_was_at_a_time(server: RunningServer, http: Any) -> None:
    assert (await put(http, server, "d/a.txt", b"a1", base=0)).code == 201
    assert (await put(http, server, "d/b.txt", b"b1", base=0)).code == 201
    then = time.time_ns()
    await timed(a_moment(server), server.reactor)
    assert (await put(http, server, "d/a.txt", b"a2", base=1)).code == 201
    assert (await delete(http, server, "d/b.txt", 2)).code == 200
    assert (await put(http, server, "d/c.txt", b"c new", base=0)).code == 201
    snap = await json_of(await get(http, server, f"/snapshot?under=d&at={then}"))
    assert snap["at"] == iso_time(then)
    assert [(f["path"], f["seq"]) for f in snap["files"]] == [("d/a.txt", 1), ("d/b.txt", 2)]
    now = await json_of(await get(http, server, f"/snapshot?under=d&at={time.time_ns()}"))
    assert [(f["path"], f["seq"]) for f in now["files"]] == [("d/a.txt", 3), ("d/c.txt", 5)]
    assert (await get(http, server, "/snapshot?under=d")).code == 400
    assert (await get(http, server, "/snapshot?under=d&at=yesterday-ish")).code == 400


def a_moment(server: RunningServer) -> Any:
    from twisted.internet.task import deferLater

    return deferLater(server.reactor, 0.01, lambda: None)


@pytest_twisted.ensureDeferred
async def test_no_account_sees_another_s_history(accounts: TokenServer, http: Any) -> None:  # noqa: F811
    alice, bob = accounts.as_("laptop"), accounts.as_("desk")
    assert (await put(http, alice, "secret.txt", b"one", base=0)).code == 201
    assert (await put(http, alice, "secret.txt", b"two", base=1)).code == 201
    assert (await delete(http, alice, "secret.txt", 2)).code == 200
    assert (await get(http, alice, "/versions/1")).code == 200
    for url in ("/history/secret.txt", "/versions/1", "/versions/2"):
        assert (await get(http, bob, url)).code == 404, url
    assert (await json_of(await get(http, bob, "/trash")))["files"] == []
    snap = await json_of(await get(http, bob, f"/snapshot?at={time.time_ns()}"))
    assert snap["files"] == []
    assert (await restore(http, bob, "secret.txt", 1, base=0)).code == 404
    assert not (accounts.box / "bob" / "secret.txt").exists()
