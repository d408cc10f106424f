"""
The client's history commands against a real server: the versions of a
file, the trash, and restores of a version, of a deleted file and of a
folder as it was at a time (with and without --exact), each a new commit
that leaves a path changed meanwhile as it is.
"""

from __future__ import annotations

import io
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted

from twisted.internet.defer import Deferred

from boxsync.client import api as client_api
from boxsync.client import history
from boxsync.client.history import UserError
from boxsync.server import history as server_history
from boxsync.wire import ProtocolError
from boxsync.wire.history import iso_time
from tests.helpers import RunningServer, put, timed
from tests.integration.test_history import a_moment


def options(server: RunningServer, json_out: bool = False) -> Any:
    return SimpleNamespace(
        server=server.url, token=server.key, cacert=None, insecure=False, name="tester",
        idle_timeout=10.0, json=json_out, limit_up=None, limit_down=None,
    )


async def delete(http: Any, server: RunningServer, path: str, base: int) -> None:
    response = await timed(
        http.delete(server.file_url(path), headers=server.headers(X_Boxsync_Base=str(base))), server.reactor
    )
    assert response.code == 200
    await response.content()


async def run(work: Any, server: RunningServer) -> str:
    out = io.StringIO()
    await timed(Deferred.fromCoroutine(work(out)), server.reactor)
    return out.getvalue()


@pytest_twisted.ensureDeferred
async def test_history_and_restore_of_a_version(server: RunningServer, http: Any) -> None:
    for content, base in ((b"v1", 0), (b"v2 longer", 1), (b"v3", 2)):
        assert (await put(http, server, "notes.txt", content, base=base)).code == 201
    shown = await run(lambda out: history.history(server.reactor, options(server), "notes.txt", out), server)
    lines = shown.splitlines()
    assert lines[0].split()[:2] == ["PATH", "SEQ"] and "current" in lines[1] and lines[-1] == "3 versions"
    as_json = json.loads(
        await run(lambda out: history.history(server.reactor, options(server, True), "notes.txt", out), server)
    )
    assert [v["seq"] for v in as_json["versions"]] == [3, 2, 1] and as_json["deleted"] is False
    assert {"path", "seq", "time", "size", "sha256", "client"} <= set(as_json["versions"][0])
    said = await run(
        lambda out: history.restore(server.reactor, options(server), "notes.txt", 1, None, False, out), server
    )
    assert "restored version 1 as seq 4" in said
    assert (server.box / "notes.txt").read_bytes() == b"v1"
    with pytest.raises(UserError):
        await run(lambda out: history.restore(server.reactor, options(server), "notes.txt", None, None, False, out), server)
    with pytest.raises(UserError):
        await run(lambda out: history.restore(server.reactor, options(server), "notes.txt", 77, None, False, out), server)
    with pytest.raises(UserError):
        await run(lambda out: history.history(server.reactor, options(server), "nothing.txt", out), server)


@pytest_twisted.ensureDeferred
async def test_a_restore_of_a_version_no_longer_kept_fails(server: RunningServer, http: Any) -> None:
    """
    A version listed a moment before is gone when the restore comes (its
    file lost, or forgotten by the history's tidy meanwhile): the restore
    says so and exits 1, as for a path changed meanwhile; before, it
    exited 0, and a script took the file for restored.
    """
    for content, base in ((b"v1", 0), (b"v2", 1)):
        assert (await put(http, server, "notes.txt", content, base=base)).code == 201
    (server.box / ".boxsync/versions/1").unlink()
    out = io.StringIO()
    code = await timed(
        Deferred.fromCoroutine(history.restore(server.reactor, options(server), "notes.txt", 1, None, False, out)),
        server.reactor,
    )
    assert (code, out.getvalue()) == (1, "notes.txt: that version is no longer kept\n")
    assert (server.box / "notes.txt").read_bytes() == b"v2"


@pytest_twisted.ensureDeferred
async def test_trash_and_restore_of_a_deleted_file(server: RunningServer, http: Any) -> None:
    assert (await put(http, server, "docs/old-plan.txt", b"the plan", base=0)).code == 201
    assert (await put(http, server, "docs/keep.txt", b"kept", base=0)).code == 201
    await delete(http, server, "docs/old-plan.txt", 1)
    listed = json.loads(await run(lambda out: history.trash(server.reactor, options(server, True), "docs", out), server))
    assert [(f["path"], f["deleted_seq"]) for f in listed] == [("docs/old-plan.txt", 3)]
    shown = await run(lambda out: history.trash(server.reactor, options(server), "", out), server)
    assert "docs/old-plan.txt" in shown and shown.splitlines()[-1] == "1 deleted files"
    said = await run(
        lambda out: history.restore(server.reactor, options(server), "docs/old-plan.txt", None, None, False, out),
        server,
    )
    assert "restored version 1" in said and (server.box / "docs/old-plan.txt").read_bytes() == b"the plan"


@pytest_twisted.ensureDeferred
async def test_the_trash_of_an_older_server(
    server: RunningServer, http: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The trash comes a page at a time; a server from before the trash in
    rows answers in versions, a page at first, then all, and one from
    before the header naming the next page is asked for it once a page is
    read: the command prints the same.
    """
    monkeypatch.setattr(client_api, "TRASH_PAGE", 2)
    for n in range(3):
        assert (await put(http, server, f"old/{n}.txt", b"%d" % n, base=0)).code == 201
        await delete(http, server, f"old/{n}.txt", 2 * n + 1)
    in_rows = await run(lambda out: history.trash(server.reactor, options(server, True), "", out), server)
    listed = json.loads(in_rows)
    assert [(f["path"], f["seq"], f["deleted_seq"]) for f in listed] == [
        ("old/2.txt", 5, 6), ("old/1.txt", 3, 4), ("old/0.txt", 1, 2)
    ]
    fields = {"path", "seq", "time", "size", "sha256", "client", "deleted_seq", "deleted_time"}
    assert all(set(f) == fields for f in listed)
    assert all(f["time"] < f["deleted_time"] <= iso_time(time.time_ns()) for f in listed)
    plain = await run(lambda out: history.trash(server.reactor, options(server), "", out), server)
    # A server that does not name the next page: asked once a page is read.
    monkeypatch.setattr(server_history, "BEFORE_HEADER", "X-Unknown")
    assert await run(lambda out: history.trash(server.reactor, options(server, True), "", out), server) == in_rows
    real_query = server_history.query
    monkeypatch.setattr(server_history, "query", lambda request, name: None if name == "rows" else real_query(request, name))
    assert await run(lambda out: history.trash(server.reactor, options(server, True), "", out), server) == in_rows
    assert await run(lambda out: history.trash(server.reactor, options(server), "", out), server) == plain


@pytest_twisted.ensureDeferred
async def test_a_bad_page_of_the_trash_is_refused(
    server: RunningServer, http: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_api, "TRASH_PAGE", 2)
    for n in range(3):
        assert (await put(http, server, f"old/{n}.txt", b"%d" % n, base=0)).code == 201
        await delete(http, server, f"old/{n}.txt", 2 * n + 1)
    real_rows = server_history.trash_rows
    monkeypatch.setattr(server_history, "trash_rows", lambda rows: real_rows(rows.upper()))
    with pytest.raises(ProtocolError):
        await run(lambda out: history.trash(server.reactor, options(server, True), "", out), server)


@pytest_twisted.ensureDeferred
async def test_a_trash_listing_cut_short_is_not_taken_for_the_whole(
    server: RunningServer, http: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The trash is printed a page at a time as the pages come: a bad second
    page ends the command with an error, the first page printed and the
    JSON list left unclosed.
    """
    monkeypatch.setattr(client_api, "TRASH_PAGE", 2)
    for n in range(3):
        assert (await put(http, server, f"old/{n}.txt", b"%d" % n, base=0)).code == 201
        await delete(http, server, f"old/{n}.txt", 2 * n + 1)
    answered: list[str] = []
    real_rows = server_history.trash_rows

    def rows(text: str) -> bytes:
        answered.append(text)
        return real_rows(text.upper() if len(answered) > 1 else text)

    monkeypatch.setattr(server_history, "trash_rows", rows)
    out = io.StringIO()
    with pytest.raises(ProtocolError):
        await timed(Deferred.fromCoroutine(history.trash(server.reactor, options(server, True), "", out)), server.reactor)
    printed = out.getvalue()
    assert len(answered) == 2
    assert "old/2.txt" in printed and "old/1.txt" in printed and "old/0.txt" not in printed
    with pytest.raises(json.JSONDecodeError):
        json.loads(printed)


@pytest_twisted.ensureDeferred
async def test_a_folder_restored_as_it_was(server: RunningServer, http: Any) -> None:
    assert (await put(http, server, "d/a.txt", b"a1", base=0)).code == 201
    assert (await put(http, server, "d/b.txt", b"b1", base=0)).code == 201
    assert (await put(http, server, "elsewhere.txt", b"e1", base=0)).code == 201
    then = str(time.time_ns())
    await timed(a_moment(server), server.reactor)
    assert (await put(http, server, "d/a.txt", b"a2", base=1)).code == 201
    await delete(http, server, "d/b.txt", 2)
    assert (await put(http, server, "d/new.txt", b"made since", base=0)).code == 201
    assert (await put(http, server, "elsewhere.txt", b"e2", base=3)).code == 201
    said = json.loads(
        await run(lambda out: history.restore(server.reactor, options(server, True), "d", None, then, False, out), server)
    )
    assert [(o["path"], o["result"].split()[0]) for o in said] == [("d/a.txt", "restored"), ("d/b.txt", "restored")]
    assert (server.box / "d/a.txt").read_bytes() == b"a1" and (server.box / "d/b.txt").read_bytes() == b"b1"
    assert (server.box / "d/new.txt").exists() and (server.box / "elsewhere.txt").read_bytes() == b"e2"
    # Again, exactly: what was made since goes too (into the history).
    said = json.loads(
        await run(lambda out: history.restore(server.reactor, options(server, True), "d", None, then, True, out), server)
    )
    assert [(o["path"], o["result"]) for o in said] == [("d/new.txt", "deleted (made since)")]
    assert not (server.box / "d/new.txt").exists()
    with pytest.raises(UserError):
        await run(lambda out: history.restore(server.reactor, options(server), "d", 3, then, False, out), server)
    with pytest.raises(UserError):
        await run(lambda out: history.restore(server.reactor, options(server), "d", None, None, True, out), server)


@pytest_twisted.ensureDeferred
async def test_a_version_restored_as_another_file_leaves_the_path_as_it_is(server: RunningServer, http: Any) -> None:
    """
    C{restore --as NEW}: a deleted file whose folder is now a file, an old
    version beside the current one, the current one itself: each a new file
    at C{NEW}, the path restored from left as it is; a file already at
    C{NEW} with other bytes is never replaced.
    """
    assert (await put(http, server, "docs/a.txt", b"precious", base=0)).code == 201
    await delete(http, server, "docs/a.txt", 1)
    assert (await put(http, server, "docs", b"a file in the way", base=0)).code == 201

    def restore(path: str, seq: int | None, to: str) -> Any:
        return lambda out: history.restore(server.reactor, options(server), path, seq, None, False, out, to=to)

    said = await run(restore("docs/a.txt", None, "rescued/a.txt"), server)
    assert said == "docs/a.txt: restored version 1 as seq 4 at rescued/a.txt\n"
    assert (server.box / "rescued/a.txt").read_bytes() == b"precious"
    assert (server.box / "docs").read_bytes() == b"a file in the way"

    assert (await put(http, server, "docs", b"edited", base=3)).code == 201
    await run(restore("docs", 3, "docs-before"), server)
    await run(restore("docs", 5, "docs-copy"), server)  # the live version
    assert (server.box / "docs-before").read_bytes() == b"a file in the way"
    assert (server.box / "docs-copy").read_bytes() == b"edited" == (server.box / "docs").read_bytes()
    out = io.StringIO()
    code = await timed(Deferred.fromCoroutine(restore("docs", 3, "docs-copy")(out)), server.reactor)
    assert (code, out.getvalue()) == (1, "docs: docs-copy is in the box: left as it is\n")
    assert (server.box / "docs-copy").read_bytes() == b"edited"
    with pytest.raises(UserError):
        await run(restore("docs", 3, "/"), server)


@pytest_twisted.ensureDeferred
async def test_a_folder_restored_as_it_was_into_another(server: RunningServer, http: Any) -> None:
    """
    C{restore FOLDER --at TIME --as NEW}: the folder's files as they were
    then, each at its place under C{NEW}; the folder is left as it is.
    """
    assert (await put(http, server, "d/a.txt", b"a1", base=0)).code == 201
    assert (await put(http, server, "d/sub/b.txt", b"b1", base=0)).code == 201
    then = str(time.time_ns())
    await timed(a_moment(server), server.reactor)
    assert (await put(http, server, "d/a.txt", b"a2", base=1)).code == 201
    await delete(http, server, "d/sub/b.txt", 2)

    async def restored() -> Any:
        return json.loads(
            await run(
                lambda out: history.restore(
                    server.reactor, options(server, True), "d", None, then, False, out, to="old/d"
                ),
                server,
            )
        )

    said = await restored()
    assert [(o["path"], o["result"].split(" at ")[-1]) for o in said] == [
        ("d/a.txt", "old/d/a.txt"),
        ("d/sub/b.txt", "old/d/sub/b.txt"),
    ]
    assert (server.box / "old/d/a.txt").read_bytes() == b"a1" and (server.box / "old/d/sub/b.txt").read_bytes() == b"b1"
    assert (server.box / "d/a.txt").read_bytes() == b"a2" and not (server.box / "d/sub/b.txt").exists()
    # Again: nothing left to restore there.
    assert await restored() == []
