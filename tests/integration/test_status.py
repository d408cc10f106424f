"""
``boxsync-client status`` (the status file a running client keeps, read back
with the folder's state) and ``boxsync-client ls`` (``GET /files``).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from boxsync.client import cli, commands
from boxsync.wire import ProtocolError, RemoteFile
from boxsync.client.passedover import PassedOver
from boxsync.client.progress import LogReporter
from boxsync.client.status import StatusFile, describe, read_status, status_path
from boxsync.testing import Client, Server, wait_until
from tests.helpers import RunningServer, json_of, put, sha, timed


# GET /files and ls


@pytest_twisted.ensureDeferred
async def test_listing_route(server: RunningServer, http: Any) -> None:
    for name in ("b.txt", "a.txt", "c/d.txt", "gone.txt"):
        assert (await put(http, server, name, name.encode(), base=0, X_Boxsync_Client="alice")).code == 201
    response = await put(http, server, "gone.txt", b"", base=None)
    deleted = await timed(
        http.delete(server.file_url("gone.txt"), headers=server.headers(X_Boxsync_Base=str((await json_of(response))["seq"]))),
        server.reactor,
    )
    assert deleted.code == 200
    response = await timed(http.get(f"{server.url}/files", headers=server.headers()), server.reactor)
    files = await json_of(response)
    assert [f["path"] for f in files] == ["a.txt", "b.txt", "c/d.txt"]
    assert files[0] == {
        "path": "a.txt", "size": 5, "sha256": sha(b"a.txt"), "seq": files[0]["seq"],
        "mtime_ns": files[0]["mtime_ns"], "origin": "alice", "executable": False,
    }
    # Tombstones are skipped without ending a page early.
    response = await timed(http.get(f"{server.url}/files?after=c/d.txt&limit=1", headers=server.headers()), server.reactor)
    assert await json_of(response) == []
    response = await timed(http.get(f"{server.url}/files?after=a.txt&limit=1", headers=server.headers()), server.reactor)
    assert [f["path"] for f in await json_of(response)] == ["b.txt"]
    for query in ("limit=0", "limit=1001", "limit=x"):
        response = await timed(http.get(f"{server.url}/files?{query}", headers=server.headers()), server.reactor)
        assert response.code == 400 and "limit" in (await json_of(response))["error"]
    response = await timed(http.get(f"{server.url}/files"), server.reactor)
    assert response.code == 401
    await response.text()


@pytest_twisted.ensureDeferred
async def test_ls(server: RunningServer, http: Any, reactor: Any) -> None:
    for index in range(5):
        await put(http, server, f"f{index}.bin", b"x" * (index * 700), base=0, X_Boxsync_Client=f"client{index}")
    options = cli.parse(["ls", "--server", server.url, "--token", server.key or ""], {}, config=Path("/nonexistent"))
    out = io.StringIO()
    await timed(_ls(reactor, options, out), reactor)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["PATH", "SIZE", "CHANGED", "BY", "MODIFIED"]
    assert [line.split()[0] for line in lines[1:-1]] == [f"f{i}.bin" for i in range(5)]
    assert "1.4 KiB" in lines[3] and "client2" in lines[3]
    assert lines[-1] == "5 files, 6.8 KiB"



@pytest_twisted.ensureDeferred
async def test_ls_of_a_folder_or_a_file(server: RunningServer, http: Any, reactor: Any) -> None:
    """
    C{ls PATH} lists the folder at PATH (its whole subtree) or the file at
    PATH, and nothing that merely starts with the same letters; a path with
    nothing there is one line of error.
    """
    paths = [
        "a.txt", "docs/a.txt", "docs/sub/b.txt", "docs/sub/é.txt", "docs-old/x.txt",
        "docs.txt", "docs0/y.txt", "w", "wz", "x", "x-1", "x.1", "zeta.txt",
    ]
    for path in paths:
        await put(http, server, path, path.encode(), base=0)

    async def listed(*argv: str) -> list[str]:
        options = cli.parse(["ls", "--server", server.url, "--token", server.key or "", *argv], {}, config=Path("/nonexistent"))
        out = io.StringIO()
        await timed(_ls(reactor, options, out), reactor)
        return [line.split()[0] for line in out.getvalue().splitlines()[1:-1]]

    below = ["docs/a.txt", "docs/sub/b.txt", "docs/sub/é.txt"]
    assert await listed("docs") == below
    assert await listed("/docs/") == below
    assert await listed("docs/sub") == below[1:]
    assert await listed("docs/sub/b.txt") == ["docs/sub/b.txt"]
    assert await listed(unicodedata.normalize("NFD", "docs/sub/é.txt")) == ["docs/sub/é.txt"]
    assert await listed("docs.txt") == ["docs.txt"]
    assert await listed("x") == ["x"]
    assert await listed("w") == ["w"]
    assert await listed(".") == paths_sorted(paths)
    assert len(await listed()) == len(paths)
    options = cli.parse(["ls", "--json", "--server", server.url, "--token", server.key or "", "docs/sub"], {}, config=Path("/nonexistent"))
    out = io.StringIO()
    await timed(_ls(reactor, options, out), reactor)
    assert [file["path"] for file in json.loads(out.getvalue())] == below[1:]
    for nothing in ("a", "docs/s", "nope/x.txt", "../x"):
        options = cli.parse(["ls", "--server", server.url, "--token", server.key or "", nothing], {}, config=Path("/nonexistent"))
        with pytest.raises(cli.UserError, match="box"):
            await timed(Deferred.fromCoroutine(cli._friendly(commands.ls(reactor, options, io.StringIO()), server.url, None, reactor)), reactor)


def paths_sorted(paths: list[str]) -> list[str]:
    return sorted(paths, key=lambda path: path.encode())

def _ls(reactor: Any, options: cli.Options, out: io.StringIO) -> Any:
    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(commands.ls(reactor, options, out, page=2))


def test_remote_file_from_json() -> None:
    entry = {"path": "a", "size": 1, "sha256": "0" * 64, "seq": 3, "mtime_ns": None, "origin": "x"}
    assert RemoteFile.from_json(entry) == RemoteFile("a", 1, "0" * 64, 3, None, "x")
    for bad in ([], {"path": "a"}, {**entry, "size": "big"}):
        with pytest.raises(ProtocolError):
            RemoteFile.from_json(bad)


def test_listing_table() -> None:
    assert commands.listing([]) == ["PATH  SIZE  CHANGED BY  MODIFIED", "0 files, 0 B"]
    # A name with a right-to-left override (a file may have one) does not
    # turn the rest of its line around on a terminal.
    files = [RemoteFile("\u202etxt.exe", 1, "0" * 64, 3, None, "a"), RemoteFile("café.txt", 2, "0" * 64, 4, None, "b")]
    assert commands.listing(files) == [
        "PATH           SIZE  CHANGED BY  MODIFIED",
        "\\u202etxt.exe   1 B  a",
        "café.txt        2 B  b",
        "2 files, 3 B",
    ]


# The status file


class FakeEngine:
    pending = 0
    in_sync = False
    problems: dict[str, str] = {}
    skipped = PassedOver()
    paused = False


def test_status_file(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "status.json"
    engine = FakeEngine()
    status = StatusFile(LogReporter(), path, clock, engine=engine)
    status.start()
    first = json.loads(path.read_text())
    assert first["pid"] == os.getpid() and first["running"] and not first["in_sync"]
    written = path.stat().st_mtime_ns
    os.utime(path, ns=(0, 0))
    clock.advance(0.5)
    assert path.stat().st_mtime_ns == 0, "an unchanged status is not written again"
    engine.pending = 3
    status.started("download", "big.bin", 2048)
    status.progress("big.bin", 1024)
    status({"log_namespace": "boxsync.client.engine.Engine", "log_level": LogLevel.info, "reason": "refused", "log_time": 5.0})
    status({"log_namespace": "elsewhere", "log_level": LogLevel.error, "log_format": "no"})
    status({"log_namespace": "boxsync.client.engine.Engine", "log_level": LogLevel.debug, "log_format": "no"})
    clock.advance(0.5)
    now = json.loads(path.read_text())
    assert now["pending"] == 3
    assert now["transfers"] == [{"kind": "download", "path": "big.bin", "size": 2048, "done": 1024}]
    assert now["last_error"] == {"message": "refused", "time": 5.0}
    status({"log_namespace": "boxsync.client.engine.Engine", "log_level": LogLevel.warn, "log_format": "{path}: gone", "path": "p"})
    status.finished("big.bin")
    engine.pending, engine.in_sync = 0, True
    clock.advance(0.5)
    now = json.loads(path.read_text())
    assert now["in_sync"] and now["in_sync_since"] and now["last_error"]["message"] == "p: gone"
    assert now["problems"] == {}
    engine.problems = {"locked/a.txt": "Permission denied"}
    engine.in_sync = False
    clock.advance(0.5)
    assert json.loads(path.read_text())["problems"] == {"locked/a.txt": "Permission denied"}
    status.close()
    assert json.loads(path.read_text())["running"] is False
    assert not list(tmp_path.glob("*.tmp")) and written


def test_a_status_file_that_cannot_be_written_is_said_once(tmp_path: Path) -> None:
    """
    The folder gone (moved away while the client stops for it): each write
    fails, is said once, and the status goes on; it is written again once
    it can be.
    """
    clock = Clock()
    folder = tmp_path / "hidden"
    said: list[dict[str, object]] = []
    globalLogPublisher.addObserver(said.append)
    try:
        status = StatusFile(LogReporter(), folder / "status.json", clock, engine=FakeEngine())
        status.start()
        status.started("download", "a.bin", 10)
        clock.advance(0.5)
        folder.mkdir()
        status.started("download", "b.bin", 10)
        clock.advance(0.5)
    finally:
        globalLogPublisher.removeObserver(said.append)
    warnings = [formatEvent(e) for e in said if e.get("log_namespace") == "boxsync.client.status"]
    assert len(warnings) == 1 and str(folder / "status.json") in warnings[0]
    assert [t["path"] for t in json.loads((folder / "status.json").read_text())["transfers"]] == ["a.bin", "b.bin"]


def test_status_of_a_crashed_client(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    with pytest.raises(FileNotFoundError, match="not a boxsync folder"):
        describe(folder)
    status_path(folder).parent.mkdir(parents=True)
    assert read_status(folder) is None
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    status_path(folder).write_text(json.dumps({"pid": int(dead.stdout), "running": True, "in_sync": True}))
    assert read_status(folder) == {"pid": int(dead.stdout), "running": False, "in_sync": False, "crashed": True}


@pytest.mark.parametrize("since, over", [(200.0, True), (50.0, False), (None, False)])
def test_the_last_error_says_when_it_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, since: float | None, over: bool
) -> None:
    """
    The last error stays shown, with its time; once the folder is in sync
    again after it, the line says so, so that an old trouble is not read as
    a trouble now.
    """
    from boxsync.client import status
    from boxsync.client.state import LocalState

    folder = tmp_path / "f"
    folder.mkdir()
    LocalState.open(folder).close()
    # The client that wrote the file runs.
    monkeypatch.setattr(status, "_alive", lambda pid: pid == 4242)
    status_path(folder).write_text(
        json.dumps(
            {
                "pid": 4242,
                "running": True,
                "in_sync": since is not None,
                "in_sync_since": since,
                "last_error": {"message": "x.txt: refused", "time": 100.0},
            }
        )
    )
    lines, in_sync = describe(folder)
    assert in_sync == (since is not None)
    [line] = [line for line in lines if line.startswith("last error:")]
    assert line.startswith("last error: x.txt: refused (")
    assert line.endswith(", over: in sync since)") == over


@pytest.mark.parametrize("expires, shown", [(None, None), (10, "token:      expired on 1970-01-01 00:00:10 UTC: ask for a new one")])
def test_status_says_when_the_token_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, expires: int | None, shown: str | None
) -> None:
    """
    The running client's token's expiry, as the client wrote it in its
    status file, is a line of C{status}; a shared key has none.
    """
    from boxsync.client import status
    from boxsync.client.state import LocalState

    folder = tmp_path / "f"
    folder.mkdir()
    LocalState.open(folder).close()
    monkeypatch.setattr(status, "_alive", lambda pid: pid == 4242)
    status_path(folder).write_text(json.dumps({"pid": 4242, "running": True, "token_expires": expires}))
    lines, _ = describe(folder)
    assert [line for line in lines if line.startswith("token:")] == ([] if shown is None else [shown])
    clock = Clock()
    written = StatusFile(LogReporter(), tmp_path / "status.json", clock, engine=FakeEngine(), token_expires=expires)
    written.start()
    assert json.loads((tmp_path / "status.json").read_text())["token_expires"] == expires
    written.close()


def test_names_a_terminal_would_act_on_are_shown_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A skipped name with a newline, a tab or a right-to-left override is
    one line of C{status}, escaped; other names are shown as they are.
    """
    from boxsync.client import status
    from boxsync.client.state import LocalState

    folder = tmp_path / "f"
    folder.mkdir()
    LocalState.open(folder).close()
    monkeypatch.setattr(status, "_alive", lambda pid: pid == 4242)
    skipped = {"new\nline.txt": "control character in path", "\u202eevil.txt": "odd", "café 😀.txt": "fine"}
    status_path(folder).write_text(json.dumps({"pid": 4242, "running": True, "in_sync": True, "skipped": skipped}))
    lines, _ = describe(folder)
    assert "  new\\nline.txt: control character in path" in lines
    assert "  \\u202eevil.txt: odd" in lines
    assert "  café 😀.txt: fine" in lines
    assert all(line.isprintable() for line in lines)


# status, run as a user runs it


def status_of(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "boxsync.client", "status", str(folder)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_status_command(tmp_path: Path) -> None:
    result = status_of(tmp_path / "nothing")
    assert result.returncode == 2 and "not a boxsync folder" in result.stderr
    server = Server(tmp_path / "box").start()
    client = Client(server, tmp_path / "alice", "alice")
    try:
        client.folder.mkdir()
        (client.folder / "a.txt").write_text("a")
        client.start()
        wait_until(lambda: (server.box / "a.txt").exists(), what="a.txt to reach the box")

        def in_sync() -> bool:
            status = read_status(client.folder)
            return bool(status and status["in_sync"])

        wait_until(in_sync, what="the client to report it is in sync")
        result = status_of(client.folder)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"running (pid {client.process.popen.pid})" in result.stdout  # type: ignore[union-attr]
        assert "in sync:    yes" in result.stdout and "tracked:    1 files" in result.stdout
        assert "last error: none" in result.stdout
        # Its own commit (seq 1) is applied: the cursor is past it.
        assert "cursor:     1\n" in result.stdout
        server.stop()
        wait_until(lambda: "last error: none" not in status_of(client.folder).stdout, what="the lost server to show")
        result = status_of(client.folder)
        assert result.returncode == 1 and "in sync:    no" in result.stdout
        client.stop()
        result = status_of(client.folder)
        assert result.returncode == 1 and "client:     not running" in result.stdout
        assert "in sync:    no when the client stopped (last error below)" in result.stdout
        # The lost server is the last error (in the system's own words).
        assert "cursor:" in result.stdout and "last error: none" not in result.stdout
        # Synced once, to its end: the folder was in sync when it stopped.
        server.start()
        client.once()
        result = status_of(client.folder)
        assert result.returncode == 1 and "in sync:    yes when the client stopped" in result.stdout
    finally:
        client.kill()
        server.kill()
