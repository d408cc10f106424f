"""
The server's HTTP API against a real server on a loopback port.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from treq import content
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from boxsync.wire import (
    EXECUTABLE_FEATURE,
    FOLDERS_FEATURE,
    Delete,
    Hello,
    Download,
    FileEntry,
    Folder,
    InSync,
    Manifest,
    Ready,
    Upload,
)
from boxsync.server.adopt import QUIET_SECONDS, look_for_hand_changes
from boxsync.server.box import Box
from boxsync.server.index import FileRecord
from boxsync.server.storage import BoxStorage, LocalFile
from tests.helpers import RunningServer, json_of, look_later, open_raw_stream, open_stream, put, sha, timed


@pytest_twisted.ensureDeferred
async def test_healthz_needs_no_key(server: RunningServer, http: Any) -> None:
    response = await timed(http.get(f"{server.url}/healthz"), server.reactor)
    assert response.code == 200
    assert (await json_of(response)) == {
        "status": "ok",
        "features": ["sha256-trailer", "executable", "folders", "blocks", "trash-rows", "zstd", "gzip"],
    }


@pytest.mark.parametrize(
    "authorization, status",
    [(None, 401), ("Bearer wrong", 403), ("wrong", 403), ("Bearer ", 403)],
)
@pytest_twisted.ensureDeferred
async def test_auth(server: RunningServer, http: Any, authorization: str | None, status: int) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for response in [
        await http.get(server.file_url("a.txt"), headers=headers),
        await http.put(server.file_url("a.txt"), data=b"x", headers=headers),
        await http.post(f"{server.url}/sync", data=b"{}", headers=headers),
        await http.delete(server.file_url("a.txt"), headers=headers),
    ]:
        assert response.code == status
        assert "error" in await json_of(response)
    # Nothing was written by the refused upload.
    assert not (server.box / "a.txt").exists()
    assert list((server.box / ".boxsync" / "staging").iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_upload_download_round_trip(server: RunningServer, http: Any) -> None:
    data = os.urandom(300_000)
    response = await put(http, server, "dir/sub/file name é.bin", data, base=0, sha256=sha(data))
    assert response.code == 201
    record = await json_of(response)
    assert record["seq"] == 1 and record["sha256"] == sha(data) and record["size"] == len(data)
    assert (server.box / "dir/sub/file name é.bin").read_bytes() == data

    response = await http.get(server.file_url("dir/sub/file name é.bin"), headers=server.headers())
    assert response.code == 200
    assert response.headers.getRawHeaders("ETag") == [f'"{sha(data)}"']
    assert response.headers.getRawHeaders("X-Boxsync-Seq") == ["1"]
    assert await content(response) == data

    # The whole path percent-encoded, slashes included, names the same file.
    response = await http.get(
        f"{server.url}/files/dir%2Fsub%2Ffile%20name%20%C3%A9.bin", headers=server.headers()
    )
    assert await content(response) == data


@pytest_twisted.ensureDeferred
async def test_the_executable_bit_over_http(server: RunningServer, http: Any) -> None:
    """
    Each version is executable or not: as its upload says (a client that
    does not say keeps the mode of the version it replaces), or as a
    C{PATCH} of that alone says; downloads, listings and the events of a
    client that reads it tell it, and no one else's events carry it.
    """
    old = await open_stream(http, server, Manifest(cursor=0))
    new = await open_stream(http, server, Manifest(cursor=0, features={EXECUTABLE_FEATURE}))
    await old.ready()
    await new.ready()
    script = b"#!/bin/sh\n"
    first = await json_of(await put(http, server, "run.sh", script, base=0, X_Boxsync_Executable="1"))
    assert first["executable"] is True
    assert (server.box / "run.sh").stat().st_mode & 0o777 == 0o755
    second = await json_of(await put(http, server, "run.sh", script * 2, base=first["seq"]))
    assert second["executable"] is True
    response = await http.get(server.file_url("run.sh"), headers=server.headers())
    assert response.headers.getRawHeaders("X-Boxsync-Executable") == ["1"]
    await content(response)

    def patch(**headers: str) -> Any:
        return timed(http.patch(server.file_url("run.sh"), headers=server.headers(**headers)), server.reactor)

    for bad in [
        {"X_Boxsync_Base": "2", "X_Boxsync_Sha256": sha(script * 2)},
        {"X_Boxsync_Base": "2", "X_Boxsync_Executable": "0"},
        {"X_Boxsync_Base": "2", "X_Boxsync_Sha256": sha(script * 2), "X_Boxsync_Executable": "no"},
    ]:
        response = await patch(**bad)
        assert response.code == 400, bad
        await json_of(response)
    response = await patch(X_Boxsync_Base="1", X_Boxsync_Sha256=sha(script * 2), X_Boxsync_Executable="0")
    assert response.code == 412 and (await json_of(response))["seq"] == 2
    response = await patch(X_Boxsync_Base="2", X_Boxsync_Sha256=sha(script * 2), X_Boxsync_Executable="0")
    assert response.code == 200
    third = await json_of(response)
    assert (third["seq"], third["sha256"], third["executable"]) == (3, sha(script * 2), False)
    assert (server.box / "run.sh").stat().st_mode & 0o777 == 0o644
    listed = await json_of(await http.get(f"{server.url}/files", headers=server.headers()))
    assert [(f["path"], f["seq"], f["executable"]) for f in listed] == [("run.sh", 3, False)]
    await new.wait(lambda events: len(events) >= 5)
    await old.wait(lambda events: len(events) >= 5)
    assert [e.executable for e in new.events if isinstance(e, Download)] == [True, True, False]
    assert [e.executable for e in old.events if isinstance(e, Download)] == [None, None, None]
    old.close()
    new.close()


@pytest_twisted.ensureDeferred
async def test_folders_over_http(server: RunningServer, http: Any) -> None:
    """
    A folder synced as one of its own is committed (and made in the box)
    with C{PUT /folders/<path>} and deleted with C{DELETE}; the box keeps it
    while it holds nothing, and removes it only once nothing is in it. Only
    clients that read folders hear of them; C{GET /files} lists files.
    """
    old = await open_stream(http, server, Manifest(cursor=0))
    new = await open_stream(http, server, Manifest(cursor=0, features={FOLDERS_FEATURE}))
    await old.ready()
    await new.ready()

    def folder_url(path: str) -> str:
        return server.file_url(path).replace("/files/", "/folders/", 1)

    async def call(method: str, path: str, **headers: str) -> tuple[int, Any]:
        response = await timed(
            http.request(method, folder_url(path), headers=server.headers(**headers)), server.reactor
        )
        return response.code, await json_of(response)

    code, made = await call("PUT", "a/b/empty", X_Boxsync_Base="0")
    assert code == 201 and (made["path"], made["seq"], made["folder"], made["deleted"]) == ("a/b/empty", 1, True, False)
    assert (server.box / "a/b/empty").is_dir()
    # Made again: the version that has it, nothing new.
    assert await call("PUT", "a/b/empty", X_Boxsync_Base="0") == (201, made)
    # A file in it, then deleted: the folder stays, as a folder of its own.
    file = await json_of(await put(http, server, "a/b/empty/f", b"f", base=0))
    response = await http.delete(server.file_url("a/b/empty/f"), headers=server.headers(X_Boxsync_Base=str(file["seq"])))
    assert response.code == 200
    await response.text()
    assert (server.box / "a/b/empty").is_dir()
    assert await json_of(await http.get(f"{server.url}/files", headers=server.headers())) == []
    # A file's routes are not a folder's.
    response = await http.delete(server.file_url("a/b/empty"), headers=server.headers(X_Boxsync_Base="1"))
    assert response.code == 404
    await response.text()
    assert (await call("DELETE", "a/b/empty"))[0] == 400
    assert (await call("DELETE", "a/b/empty", X_Boxsync_Base="2"))[0] == 412
    code, gone = await call("DELETE", "a/b/empty", X_Boxsync_Base="1")
    assert code == 200 and (gone["seq"], gone["folder"], gone["deleted"]) == (4, True, True)
    assert not (server.box / "a").exists()
    assert (await call("DELETE", "a/b/empty", X_Boxsync_Base="4"))[0] == 404
    # A file where a folder would be.
    await put(http, server, "x", b"a file", base=0)
    assert (await call("PUT", "x", X_Boxsync_Base="0"))[0] == 412
    assert (await call("PUT", "x"))[0] == 400
    assert (await call("PUT", "x/y"))[0] == 400
    await new.wait(lambda events: any(isinstance(e, Delete) and e.path == "a/b/empty" for e in events))
    await old.wait(lambda events: any(isinstance(e, Delete) and e.path == "a/b/empty" for e in events))
    assert Folder("a/b/empty", 1) in new.events
    assert not any(isinstance(e, Folder) for e in old.events)
    old.close()
    new.close()


@pytest_twisted.ensureDeferred
async def test_range_and_if_range(server: RunningServer, http: Any) -> None:
    data = bytes(range(256)) * 100
    await put(http, server, "r.bin", data)
    response = await http.get(server.file_url("r.bin"), headers=server.headers(Range="bytes=1000-"))
    assert response.code == 206
    assert await content(response) == data[1000:]
    # If-Range with the current ETag keeps the range; with another, whole file.
    etag = f'"{sha(data)}"'
    response = await http.get(
        server.file_url("r.bin"), headers=server.headers(Range="bytes=10-19", If_Range=etag)
    )
    assert response.code == 206 and await content(response) == data[10:20]
    response = await http.get(
        server.file_url("r.bin"), headers=server.headers(Range="bytes=10-19", If_Range='"old"')
    )
    assert response.code == 200 and await content(response) == data


@pytest_twisted.ensureDeferred
async def test_digest_mismatch_commits_nothing(server: RunningServer, http: Any) -> None:
    response = await put(http, server, "bad.txt", b"these bytes", sha256=sha(b"other bytes"))
    assert response.code == 400
    assert "sha256" in (await json_of(response))["error"]
    assert not (server.box / "bad.txt").exists()
    response = await http.get(server.file_url("bad.txt"), headers=server.headers())
    assert response.code == 404
    assert list((server.box / ".boxsync" / "staging").iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_stale_base_is_refused(server: RunningServer, http: Any) -> None:
    first = await json_of(await put(http, server, "n.txt", b"one", base=0))
    second = await json_of(await put(http, server, "n.txt", b"two", base=first["seq"]))
    assert second["seq"] == first["seq"] + 1
    # A writer that started from the first version loses, and learns the seq.
    response = await put(http, server, "n.txt", b"three", base=first["seq"])
    assert response.code == 412
    assert (await json_of(response))["seq"] == second["seq"]
    # Base 0 means "must not exist".
    assert (await put(http, server, "n.txt", b"four", base=0)).code == 412
    assert (server.box / "n.txt").read_bytes() == b"two"
    # The same holds for deletes.
    response = await http.delete(server.file_url("n.txt"), headers=server.headers(X_Boxsync_Base="1"))
    assert response.code == 412
    assert (server.box / "n.txt").read_bytes() == b"two"


@pytest_twisted.ensureDeferred
async def test_delete_commits_a_tombstone(server: RunningServer, http: Any) -> None:
    record = await json_of(await put(http, server, "d/x.txt", b"x", base=0))
    response = await http.delete(
        server.file_url("d/x.txt"), headers=server.headers(X_Boxsync_Base=str(record["seq"]))
    )
    assert response.code == 200
    tombstone = await json_of(response)
    assert tombstone["deleted"] is True and tombstone["seq"] == record["seq"] + 1
    assert not (server.box / "d").exists()
    assert (await http.get(server.file_url("d/x.txt"), headers=server.headers())).code == 404
    again = await http.delete(
        server.file_url("d/x.txt"), headers=server.headers(X_Boxsync_Base=str(tombstone["seq"]))
    )
    assert again.code == 404
    assert (await http.delete(server.file_url("d/x.txt"), headers=server.headers())).code == 400
    # A deleted path can be created again from base 0.
    assert (await put(http, server, "d/x.txt", b"again", base=0)).code == 201


@pytest.mark.parametrize(
    "path",
    [
        "..%2Fescape.txt",
        "a/..%2F..%2Fescape.txt",
        "%2Fetc%2Fpasswd",
        ".boxsync/index.sqlite",
        ".boxsync%2Fstaging%2Fx",
        "a%00b",
        "a%0Ab",
        "a//b",
        "a/./b",
        "x" * 256,
        "a%5C..%5Cb",
    ],
)
@pytest_twisted.ensureDeferred
async def test_path_attacks(server: RunningServer, http: Any, tmp_path: Path, path: str) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    url = f"{server.url}/files/{path}"
    for response in [
        await http.put(url, data=b"evil", headers=server.headers()),
        await http.get(url, headers=server.headers()),
        await http.delete(url, headers=server.headers(X_Boxsync_Base="0")),
    ]:
        assert response.code in (400, 404), (path, response.code)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not any(server.box.rglob("*evil*"))
    assert list((server.box / ".boxsync" / "staging").iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_symlink_never_leads_out(server: RunningServer, http: Any, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (server.box / "link").symlink_to(outside)
    (server.box / "file-link").symlink_to(outside / "secret.txt")
    assert (await put(http, server, "link/new.txt", b"evil")).code == 400
    assert not (outside / "new.txt").exists()
    for path in ["link/secret.txt", "file-link"]:
        assert (await http.get(server.file_url(path), headers=server.headers())).code == 404


@pytest_twisted.ensureDeferred
async def test_plan_and_live_events(server: RunningServer, http: Any) -> None:
    a = await json_of(await put(http, server, "a.txt", b"a", base=0))
    await put(http, server, "b.txt", b"b", base=0)
    manifest = Manifest(
        client="t",
        files=[
            FileEntry("a.txt", sha(b"a"), 1, 0, base=0, changed=True),
            FileEntry("c.txt", sha(b"c"), 1, 0, base=0, changed=True),
        ],
    )
    stream = await open_stream(http, server, manifest)
    try:
        events = await stream.ready()
        kinds = {(e.name, getattr(e, "path", None)) for e in events}
        assert kinds == {
            ("hello", None),
            ("insync", "a.txt"),
            ("download", "b.txt"),
            ("upload", "c.txt"),
            ("ready", None),
        }
        assert InSync("a.txt", a["seq"]) in events
        # A commit by someone else arrives live, once.
        record = await json_of(await put(http, server, "live.txt", b"live", base=0))
        events = await stream.wait(lambda es: any(getattr(e, "path", "") == "live.txt" for e in es))
        assert events[-1] == Download("live.txt", sha(b"live"), 4, record["mtime_ns"], record["seq"])
        await http.delete(server.file_url("live.txt"), headers=server.headers(X_Boxsync_Base=str(record["seq"])))
        events = await stream.wait(lambda es: isinstance(es[-1], Delete))
        assert events[-1] == Delete("live.txt", record["seq"] + 1)
    finally:
        stream.close()


@pytest_twisted.ensureDeferred
async def test_own_commits_are_not_echoed(server: RunningServer, http: Any) -> None:
    mine = await open_stream(http, server, Manifest())
    other = await open_stream(http, server, Manifest())
    try:
        hello = (await mine.ready())[0]
        await other.ready()
        await put(http, server, "m.txt", b"m", base=0, X_Boxsync_Stream=hello.stream)
        await other.wait(lambda es: isinstance(es[-1], Download))
        await put(http, server, "o.txt", b"o", base=0)
        await mine.wait(lambda es: isinstance(es[-1], Download))
        assert [e.path for e in mine.events if isinstance(e, Download)] == ["o.txt"]
    finally:
        mine.close()
        other.close()


@pytest_twisted.ensureDeferred
async def test_fan_out_and_disconnect(server: RunningServer, http: Any) -> None:
    assert server.service is not None
    hub = server.service.hub
    streams = [await open_stream(http, server, Manifest(client=f"c{i}")) for i in range(50)]
    for stream in streams:
        await stream.ready()
    assert hub.count() == 50
    await put(http, server, "fan.txt", b"fan", base=0)
    for stream in streams:
        events = await stream.wait(lambda es: isinstance(es[-1], Download))
        assert events[-1].path == "fan.txt"
    for stream in streams:
        stream.close()
    for stream in streams:
        await timed(stream.done, server.reactor)
    # The server notices each disconnect and drops the listener.
    from twisted.internet.task import deferLater

    for _ in range(100):
        if hub.count() == 0:
            break
        await deferLater(server.reactor, 0.01, lambda: None)
    assert hub.count() == 0


@pytest_twisted.ensureDeferred
async def test_reconnect_with_cursor_gets_only_changes(server: RunningServer, http: Any) -> None:
    for name in ["1", "2", "3"]:
        await put(http, server, f"{name}.txt", name.encode(), base=0)
    stream = await open_stream(http, server, Manifest(cursor=2))
    try:
        events = await stream.ready()
        assert [e.path for e in events if isinstance(e, Download)] == ["3.txt"]
    finally:
        stream.close()
    stream = await open_stream(http, server, Manifest(), Last_Event_ID="3")
    try:
        events = await stream.ready()
        assert [e for e in events if isinstance(e, (Download, Upload))] == []
    finally:
        stream.close()


@pytest_twisted.ensureDeferred
async def test_the_event_stream_in_gzip(server: RunningServer, http: Any) -> None:
    """
    Asked with C{Accept-Encoding: gzip}, the event stream comes in gzip, a
    fraction of the bytes, each event flushed as it is written: a live
    event arrives at once. Without, it comes as it is.
    """
    for n in range(200):
        await put(http, server, f"plan/{n:03d}.txt", b"%d" % n, base=0)
    plain = await open_raw_stream(server, Manifest())
    try:
        assert plain.unzip is None
        expected = await plain.ready()
    finally:
        plain.close()
    stream = await open_raw_stream(server, Manifest(), Accept_Encoding="gzip")
    try:
        assert stream.unzip is not None
        events = await stream.ready()
        assert [e for e in events if not isinstance(e, (Hello, Ready))] == [
            e for e in expected if not isinstance(e, (Hello, Ready))
        ]
        assert stream.received * 2 < plain.received
        await put(http, server, "live.txt", b"now", base=0)
        await stream.wait(lambda events: any(isinstance(e, Download) and e.path == "live.txt" for e in events))
    finally:
        stream.close()


@pytest_twisted.ensureDeferred
async def test_bad_manifest(server: RunningServer, http: Any) -> None:
    for body in [b"not json", b"[]", b'{"files": [{"path": "../x", "sha256": "0", "size": 1}]}', b'{"cursor": -1}']:
        response = await http.post(
            f"{server.url}/sync", data=body, headers=server.headers(Accept="text/event-stream")
        )
        assert response.code == 400
        assert "error" in await json_of(response)
    assert server.service is not None and server.service.hub.count() == 0


@pytest_twisted.ensureDeferred
async def test_restart_keeps_files_and_seq(server: RunningServer, http: Any) -> None:
    await put(http, server, "keep.txt", b"keep", base=0)
    record = await json_of(await put(http, server, "keep.txt", b"kept", base=1))
    await server.restart()
    response = await http.get(server.file_url("keep.txt"), headers=server.headers())
    assert await content(response) == b"kept"
    assert response.headers.getRawHeaders("X-Boxsync-Seq") == [str(record["seq"])]
    after = await json_of(await put(http, server, "new.txt", b"new", base=0))
    assert after["seq"] == record["seq"] + 1


@pytest_twisted.ensureDeferred
async def test_adoption_never_hashes_through_a_link(
    server: RunningServer, http: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A box file replaced by a link to the outside after the start-up walk
    saw it as a file: it is not hashed through the link, and is taken as
    gone (a tombstone), never as the outside file's content.
    """
    await put(http, server, "swapped.txt", b"inside", base=0)
    await server.stop()
    (tmp_path / "outside.txt").write_bytes(b"outside")
    target = server.box / "swapped.txt"
    target.unlink()
    target.symlink_to(tmp_path / "outside.txt")
    walk = BoxStorage.walk

    def walked(self: BoxStorage) -> Iterator[LocalFile]:
        yield from walk(self)
        # What the walk saw a moment before the swap.
        yield LocalFile("swapped.txt", 7, 1, 1)

    monkeypatch.setattr(BoxStorage, "walk", walked)
    await server.start()
    listing = await json_of(await http.get(server.url + "/files", headers=server.headers()))
    assert listing == []
    assert (await http.get(server.file_url("swapped.txt"), headers=server.headers())).code == 404


@pytest_twisted.ensureDeferred
async def test_adopts_folders_and_modes_changed_by_hand(server: RunningServer, http: Any) -> None:
    """
    At start-up, a folder of its own removed from the box by hand is
    deleted, an empty folder made by hand is one of its own (a folder with
    files is not), and a file made executable by hand is a new version.
    """
    await put(http, server, "run.sh", b"#!/bin/sh\n", base=0)
    for path in ("kept", "gone"):
        response = await http.put(
            server.file_url(path).replace("/files/", "/folders/", 1), headers=server.headers(X_Boxsync_Base="0")
        )
        assert response.code == 201
        await response.text()
    await server.stop()
    (server.box / "run.sh").chmod(0o755)
    (server.box / "gone").rmdir()
    (server.box / "new/empty").mkdir(parents=True)
    (server.box / "full").mkdir()
    (server.box / "full/f").write_bytes(b"f")
    await server.start()
    index = server.service.index  # type: ignore[union-attr]
    rows = {path: await index.get("default", path) for path in ("run.sh", "kept", "gone", "new", "new/empty", "full")}
    assert rows["run.sh"].executable and rows["run.sh"].seq == 4
    assert rows["kept"].folder and not rows["kept"].deleted and rows["kept"].seq == 2
    assert rows["gone"].folder and rows["gone"].deleted
    assert rows["new/empty"].folder and not rows["new/empty"].deleted
    assert rows["new"] is None and rows["full"] is None
    # Checked again, nothing more changes.
    seq = await index.current_seq("default")
    await server.restart()
    assert await server.service.index.current_seq("default") == seq  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_adopts_files_changed_by_hand(server: RunningServer, http: Any) -> None:
    await put(http, server, "gone.txt", b"gone", base=0)
    await put(http, server, "edited.txt", b"old", base=0)
    await server.stop()
    (server.box / "gone.txt").unlink()
    (server.box / "edited.txt").write_bytes(b"edited by hand")
    (server.box / "deep/er").mkdir(parents=True)
    (server.box / "deep/er/new.txt").write_bytes(b"dropped in")
    (server.box / ".boxsync/staging/up-crashed").write_bytes(b"half an upload")
    await server.start()
    assert list((server.box / ".boxsync/staging").iterdir()) == []
    stream = await open_stream(http, server, Manifest())
    try:
        events = await stream.ready()
    finally:
        stream.close()
    downloads = {e.path: e for e in events if isinstance(e, Download)}
    assert set(downloads) == {"edited.txt", "deep/er/new.txt"}
    assert downloads["edited.txt"].sha256 == sha(b"edited by hand")
    assert downloads["deep/er/new.txt"].seq > 2
    assert (await http.get(server.file_url("gone.txt"), headers=server.headers())).code == 404


@pytest_twisted.ensureDeferred
async def test_a_box_copied_without_its_dates_or_touched_makes_no_new_version(
    server: RunningServer, http: Any
) -> None:
    """
    The box copied with C{cp -r} (every file's mtime now) and the server
    started on the copy, then a file touched while it runs: the bytes are
    the versions the index has, so no version is made (no event, nothing
    for the clients to fetch, no history) and each file gets its version's
    mtime back. Before, every file of the box became a new version, dated
    the day of the copy, on every client.
    """
    await put(http, server, "a.txt", b"a", base=0)
    await put(http, server, "deep/b.txt", b"b", base=0)
    before = {path: (server.box / path).stat().st_mtime_ns for path in ("a.txt", "deep/b.txt")}
    await server.stop()
    for path in before:
        os.utime(server.box / path)
    await server.start()
    stream = await open_stream(http, server, Manifest())
    try:
        events = await stream.ready()
        assert max(e.seq for e in events if isinstance(e, Download)) == 2
        assert {path: (server.box / path).stat().st_mtime_ns for path in before} == before
        os.utime(server.box / "a.txt", ns=(5 * 10**18, 5 * 10**18))
        taken = await look_later(service_box(server))
        assert (taken.added, taken.changed, taken.removed) == (0, 0, 0)
        assert (server.box / "a.txt").stat().st_mtime_ns == before["a.txt"]
        # Its stamps are known again: the next look reads nothing.
        again = await look_later(service_box(server))
        assert again == taken
    finally:
        stream.close()
    listed = await json_of(await http.get(f"{server.url}/history/a.txt", headers=server.headers()))
    assert [version["seq"] for version in listed["versions"]] == [1]


@pytest_twisted.ensureDeferred
async def test_a_range_that_is_not_even_text_is_ignored(server: RunningServer, http: Any) -> None:
    """
    A Range header of bytes that are not UTF-8 is malformed: the whole file
    is sent, on every route that sends one (it was a 500).
    """
    from tests.integration.test_legacy import http_request, send

    assert (await put(http, server, "r.txt", b"0123456789", base=0)).code == 201
    for target in ("/files/r.txt", "/download/r.txt", "/versions/1"):
        headers: list[tuple[str, bytes | str]] = [("Authorization", f"Bearer {server.key}"), ("Range", b"\xb7")]
        raw = await send(server, http_request(server, "GET", target, headers))
        await raw.response()
        assert raw.status == 200 and raw.body == b"0123456789", target


@pytest_twisted.ensureDeferred
async def test_files_changed_by_hand_while_the_server_runs_are_taken(server: RunningServer, http: Any) -> None:
    """
    A file written in the box by hand, one put there and one removed while
    the server runs: the next look takes each as the start-up adoption
    would, and tells the streams open; the look after takes nothing more.
    Before, the edited file was served under its old sha256 until a restart
    (every client fetching it found it was not that version, and tried
    again, forever).
    """
    assert service_box(server) is not None
    await put(http, server, "gone.txt", b"gone", base=0)
    await put(http, server, "edited.txt", b"old", base=0)
    stream = await open_stream(http, server, Manifest())
    try:
        await stream.ready()
        (server.box / "gone.txt").unlink()
        (server.box / "edited.txt").write_bytes(b"edited by hand")
        (server.box / "deep").mkdir()
        (server.box / "deep/new.txt").write_bytes(b"dropped in")
        taken = await look_later(service_box(server))
        assert (taken.added, taken.changed, taken.removed) == (1, 1, 1)
        events = await stream.wait(lambda events: sum(isinstance(e, (Download, Delete)) for e in events) >= 5)
        late = [e for e in events if isinstance(e, (Download, Delete)) and e.seq > 2]
        assert {(type(e).__name__, e.path) for e in late} == {
            ("Delete", "gone.txt"), ("Download", "edited.txt"), ("Download", "deep/new.txt")
        }
        edited = await http.get(server.file_url("edited.txt"), headers=server.headers())
        assert await content(edited) == b"edited by hand"
        assert edited.headers.getRawHeaders("ETag") == [f'"{sha(b"edited by hand")}"']
        again = await look_later(service_box(server))
        assert (again.added, again.changed, again.removed) == (0, 0, 0)
    finally:
        stream.close()


@pytest_twisted.ensureDeferred
async def test_a_file_still_being_written_in_the_box_is_left_for_a_later_look(server: RunningServer) -> None:
    """
    A file copied into the box by hand, the copy still under way when the
    server looks: it is left as it is (no version, nothing to the clients),
    counted as unsettled, and taken whole once left alone for
    L{QUIET_SECONDS}. Before, each look made a version of what was written
    so far, and clients got the file torn.
    """
    box = service_box(server)
    (server.box / "video.bin").write_bytes(b"the first part")
    changed_ns = (server.box / "video.bin").stat().st_ctime_ns
    soon = await look_for_hand_changes(box, now_ns=lambda: changed_ns + int(QUIET_SECONDS * 1e9) // 2)
    assert (soon.added, soon.unsettled) == (0, 1)
    assert await box.index.get(box.account, "video.bin") is None
    with open(server.box / "video.bin", "ab") as f:
        f.write(b", and the rest")
    later = await look_later(box)
    assert (later.added, later.unsettled) == (1, 0)
    row = await box.index.get(box.account, "video.bin")
    assert row is not None and row.sha256 == sha(b"the first part, and the rest")


@pytest_twisted.ensureDeferred
async def test_a_commit_made_after_a_look_wins_over_what_it_found_by_hand(server: RunningServer, http: Any) -> None:
    """
    What a look found changed by hand is not taken if a client committed
    the path, or the file changed, since the look: the next look decides.
    """
    box = service_box(server)
    await put(http, server, "doc.txt", b"v1", base=0)
    row = await box.index.get(box.account, "doc.txt")
    (server.box / "doc.txt").write_bytes(b"by hand")
    found = box.storage.look("doc.txt")
    assert found is not None and found.size == 7
    # A client's commit comes between the look and the take.
    assert (await put(http, server, "doc.txt", b"the client's", base=row.seq)).code == 201
    assert await box.take_by_hand(by_hand(found, b"by hand"), row, found) is None
    assert (server.box / "doc.txt").read_bytes() == b"the client's"
    assert (await box.index.get(box.account, "doc.txt")).sha256 == sha(b"the client's")
    # The file changed again since it was found: nothing either.
    row = await box.index.get(box.account, "doc.txt")
    (server.box / "doc.txt").write_bytes(b"by hand, once")
    found = box.storage.look("doc.txt")
    (server.box / "doc.txt").write_bytes(b"by hand, twice")
    assert await box.take_by_hand(by_hand(found, b"by hand, once"), row, found) is None
    # Found as it is, it is taken.
    found = box.storage.look("doc.txt")
    taken = await box.take_by_hand(by_hand(found, b"by hand, twice"), row, found)
    assert taken is not None and taken.origin == "box" and taken.seq == row.seq + 1


def by_hand(found: LocalFile | None, data: bytes) -> FileRecord:
    """
    The new version a file found in the box by hand, with the bytes
    C{data}, is.
    """
    assert found is not None
    return FileRecord(
        found.path, found.size, sha(data), found.mtime_ns, 0, False, "box", found.ctime_ns, found.executable
    )


@contextmanager
def warnings_said() -> Iterator[list[str]]:
    """
    The warnings logged while the block runs, formatted, in order.
    """
    said: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") == LogLevel.warn:
            said.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        yield said
    finally:
        globalLogPublisher.removeObserver(observe)


def service_box(server: RunningServer) -> Box:
    assert server.service is not None and server.service.box is not None
    return server.service.box


@pytest_twisted.ensureDeferred
async def test_a_name_the_wire_cannot_carry_in_the_box_is_said_once_escaped(server: RunningServer) -> None:
    """
    Files and a folder put in the box by hand under names no client could
    be given (not UTF-8, a newline): not synced, and said so in the log
    once each, escaped, however often the box is looked at. Before, each
    look (every 5 minutes) said them again, and a newline in a name began
    a line of the log of its own.
    """
    root = os.fsencode(server.box)
    (server.box / "ok.txt").write_bytes(b"ok")
    for name in (b"bad\xff.txt", b"two\nlines.txt"):
        with open(os.path.join(root, name), "wb") as f:
            f.write(b"x")
    os.mkdir(os.path.join(root, b"dir\xfe"))
    with open(os.path.join(root, b"dir\xfe", b"in.txt"), "wb") as f:
        f.write(b"x")
    with warnings_said() as said:
        for _ in range(3):
            taken = await look_later(service_box(server))
            assert taken.checked == 1
    lines = [line for line in said if "is not synced" in line]
    assert len(lines) == 3 and all("\n" not in line for line in lines)
    assert any("two\\nlines.txt" in line for line in lines)
    assert any("bad\\udcff.txt" in line for line in lines) and any("dir\\udcfe" in line for line in lines)


@pytest_twisted.ensureDeferred
async def test_a_link_or_a_fifo_in_the_box_is_said_once_not_synced(server: RunningServer) -> None:
    """
    A symbolic link, a link to a folder and a FIFO put in the box by hand
    are not synced (a link would let a client read or write outside the
    box), and the log says so, once each, however often the box is looked
    at. Before, the walk left them out without a word.
    """
    (server.box / "ok.txt").write_bytes(b"ok")
    (server.box / "sub").mkdir()
    (server.box / "sub" / "in.txt").write_bytes(b"in")
    (server.box / "link.txt").symlink_to("ok.txt")
    (server.box / "folder-link").symlink_to("sub")
    os.mkfifo(server.box / "sub" / "pipe")
    with warnings_said() as said:
        for _ in range(3):
            taken = await look_later(service_box(server))
            assert taken.checked == 2
    lines = [line for line in said if "is not synced" in line]
    assert len(lines) == 3
    assert sum("symbolic link" in line for line in lines) == 2
    assert any("pipe" in line and "not a regular file" in line for line in lines)
    box = service_box(server)
    listed = await box.index.page(box.account, "", 10)
    assert sorted(f.path for f in listed if not f.deleted) == ["ok.txt", "sub/in.txt"]
