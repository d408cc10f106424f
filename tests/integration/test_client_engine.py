"""
The client's engine in this process, against a real server on a loopback
port, on temporary folders.
"""

from __future__ import annotations

import hashlib
import os
import time
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from boxsync.client.cli import Options, UserError, parse, run
from boxsync.client.engine import SMALL_FILE, Engine
from boxsync.client.placing import conflict_name
from boxsync.client.results import DownloadResult
from boxsync.client.ignore import IgnoreRules
from boxsync.client.scanner import SETTLED_NS
from boxsync.client.session import NotInSync
from boxsync.client.state import Base
from boxsync.paths import normalize
from boxsync.client.progress import MOVED_BACK, NOTED_START, LogReporter, RichReporter, reporter_for
from boxsync.client.transfers import Transfers
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.web._newclient import ResponseNeverReceived
from tests.faults import sha
from tests.helpers import RunningServer, json_of, put, timed
from boxsync.testing import tree


@pytest.mark.parametrize(
    "path, expected",
    [
        ("notes.txt", "notes.conflict-laptop-20261124-101500.txt"),
        ("a/b/archive.tar.gz", "a/b/archive.tar.conflict-laptop-20261124-101500.gz"),
        ("Makefile", "Makefile.conflict-laptop-20261124-101500"),
        ("d/.bashrc", "d/.bashrc.conflict-laptop-20261124-101500"),
    ],
)
def test_conflict_name(path: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import calendar
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    when = float(calendar.timegm((2026, 11, 24, 10, 15, 0)))
    assert conflict_name(path, "laptop", when) == expected
    assert conflict_name(path, "my laptop/1", when).count("/") == path.count("/")


@pytest.mark.parametrize(
    "name",
    [
        "n" * 240 + ".txt",
        "é" * 127 + ".md",  # 254 bytes: a cut never splits a character
        "x." + "y" * 250,  # not an extension
        "z" * 255,
    ],
)
def test_a_conflict_name_stays_a_name_this_file_system_takes(name: str, tmp_path: Path) -> None:
    for client in ["laptop", "a" * 200]:
        made = conflict_name(f"deep/{name}", client, 1.8e9)
        folder, _, kept = made.rpartition("/")
        assert folder == "deep" and len(kept.encode()) <= 255
        assert normalize(made) == made  # a wire path, in NFC
        (tmp_path / kept).write_text("a file of that name")
        assert ".conflict-" in kept and kept[:8] == name[:8]
    if name.endswith((".txt", ".md")):
        assert made.endswith(name[name.rindex(".") :])



def test_a_conflict_name_far_down_stays_within_the_longest_path() -> None:
    folder = "/".join(["f" * 200] * 20)  # 4,019 bytes
    path = f"{folder}/{'n' * 60}.txt"  # 4,084 bytes
    made = conflict_name(path, "laptop", 1.8e9)
    assert normalize(made) == made and len(made.encode()) <= 4096
    assert made.startswith(f"{folder}/nnn") and made.endswith(".txt") and ".conflict-laptop-" in made


@pytest_twisted.ensureDeferred
async def test_two_folders_converge(folders: Any, reactor: Any, server: RunningServer) -> None:
    a, b = folders("a"), folders("b")
    (a.root / "x/y").mkdir(parents=True)
    (a.root / "x/y/a.txt").write_text("a")
    (b.root / "b.bin").write_bytes(os.urandom(70_000))
    for folder in (a, b, a):
        await folder.sync()
    assert tree(a.root) == tree(b.root) == tree(server.box)
    assert a.state.cursor >= 1 and b.state.cursor >= 1
    # A second run sends only what changed: nothing.
    engine = a.engine(once=True)
    await a.sync(engine)
    assert a.state.get("b.bin") is not None and a.state.get("b.bin").seq == 2


@pytest_twisted.ensureDeferred
async def test_a_once_whose_stream_ends_says_why_and_starts_over(
    folders: Any, reactor: Any, server: RunningServer
) -> None:
    """
    A C{--once} whose stream the client ends itself (the server's hello
    names another box than the folder's) says why in its next attempt's
    reason, compares every file, and leaves no failure behind: the end of
    the stream, which wakes the session from within the stream's own
    callbacks, is taken over, not awaited there.
    """
    from twisted.logger import globalLogPublisher

    a = folders("a")
    (a.root / "x.txt").write_text("x")
    await a.sync()
    a.state.box = "another box's id"
    reasons: list[str] = []

    def observe(event: Any) -> None:
        if "reason" in event and "delay" in event:
            reasons.append(str(event["reason"]))

    globalLogPublisher.addObserver(observe)
    try:
        await a.sync()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert reasons == ["the server's box is not the one this folder was synced with (it is another box)"]
    assert a.state.box != "another box's id" and a.state.get("x.txt") is not None


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest_twisted.ensureDeferred
async def test_the_executable_bit_is_synced_and_a_chmod_alone_too(
    folders: Any, reactor: Any, server: RunningServer
) -> None:
    """
    A file made executable reaches the box and the other folder so; one
    whose mode alone changes sends no bytes (the box keeps its file, and
    gives it the new mode) and the other folder follows. A file too large
    for a batch goes the same way (its mode in the download's headers).
    """
    a, b = folders("a"), folders("b")
    (a.root / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (a.root / "run.sh").chmod(0o755)
    (a.root / "notes.txt").write_text("plain")
    (a.root / "notes.txt").chmod(0o644)
    (a.root / "big.bin").write_bytes(os.urandom(SMALL_FILE + 1))
    (a.root / "big.bin").chmod(0o750)
    await a.sync()
    await b.sync()
    for folder in (server.box, b.root):
        assert (_mode(folder / "run.sh"), _mode(folder / "notes.txt")) == (0o755, 0o644)
    assert _mode(server.box / "big.bin") == 0o755 and _mode(b.root / "big.bin") & 0o111
    inode = (server.box / "run.sh").stat().st_ino
    seq = a.state.get("run.sh").seq

    (a.root / "run.sh").chmod(0o644)
    (a.root / "notes.txt").chmod(0o755)
    await a.sync()
    assert (_mode(server.box / "run.sh"), _mode(server.box / "notes.txt")) == (0o644, 0o755)
    # Not sent again: the box file is the one that was there.
    assert (server.box / "run.sh").stat().st_ino == inode
    assert a.state.get("run.sh").seq > seq and a.state.get("run.sh").executable is False
    await b.sync()
    assert (_mode(b.root / "run.sh"), _mode(b.root / "notes.txt")) == (0o644, 0o755)
    assert b.state.get("notes.txt").executable is True
    assert tree(a.root) == tree(b.root) == tree(server.box)
    # In sync, the next run has nothing to do on either side.
    seq = await server.service.index.current_seq("default")  # type: ignore[union-attr]
    await a.sync()
    await b.sync()
    assert await server.service.index.current_seq("default") == seq  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_without_the_patch_route_a_chmod_alone_sends_the_file(
    folders: Any, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A server without C{PATCH /files/<path>} (it answers 405) gets the whole
    file again for a change of its executable bit alone.
    """
    from boxsync.client.api import BoxsyncAPI
    from boxsync.client.errors import APIError

    async def no_route(*args: Any) -> Any:
        raise APIError(405, "Method Not Allowed")

    a = folders("a")
    (a.root / "run.sh").write_bytes(b"#!/bin/sh\n")
    await a.sync()
    inode = (server.box / "run.sh").stat().st_ino
    monkeypatch.setattr(BoxsyncAPI, "set_executable", no_route)
    (a.root / "run.sh").chmod(0o755)
    await a.sync()
    assert _mode(server.box / "run.sh") == 0o755 and (server.box / "run.sh").stat().st_ino != inode
    assert a.state.get("run.sh").executable and a.state.get("run.sh").seq == 2


@pytest_twisted.ensureDeferred
async def test_empty_folders_are_synced(folders: Any, reactor: Any, server: RunningServer) -> None:
    """
    An empty folder made on one side is made on the other (and in the box);
    removed, it is removed there too, but never while something is in it
    there: a file not synced yet (which then goes up), or an ignored one.
    """
    a, b = folders("a"), folders("b")
    (a.root / "empty/deeper").mkdir(parents=True)
    (a.root / "plain").mkdir()
    (a.root / "plain/f.txt").write_text("f")
    for name in ("keep-new", "keep-ignored", "gone"):
        (a.root / name).mkdir()
    await a.sync()
    await b.sync()
    for root in (b.root, server.box):
        assert all((root / name).is_dir() for name in ("empty/deeper", "keep-new", "keep-ignored", "gone"))
    assert b.state.get("empty/deeper").folder and b.state.get("empty") is None

    (b.root / "keep-new/new.txt").write_text("not synced yet")
    (b.root / ".boxsync/ignore").write_text("*.tmp\n")
    (b.root / "keep-ignored/x.tmp").write_text("ignored")
    for name in ("empty/deeper", "keep-new", "keep-ignored", "gone"):
        (a.root / name).rmdir()
    await a.sync()
    assert not (server.box / "gone").exists() and not (server.box / "empty/deeper").exists()
    # What is left empty is a folder of its own now.
    assert (server.box / "empty").is_dir() and a.state.get("empty").folder
    await b.sync()
    assert not (b.root / "gone").exists() and not (b.root / "empty/deeper").exists()
    assert (b.root / "empty").is_dir()
    assert (b.root / "keep-new/new.txt").read_text() == "not synced yet"
    assert (b.root / "keep-ignored/x.tmp").read_text() == "ignored"
    assert b.state.get("keep-ignored") is None
    await a.sync()
    assert (a.root / "keep-new/new.txt").read_text() == "not synced yet"
    assert not (a.root / "keep-ignored").exists()
    synced = {path: digest for path, digest in tree(b.root).items() if not path.endswith(".tmp")}
    assert tree(a.root) == synced == tree(server.box)
    # In sync: nothing more to do on either side.
    seq = await server.service.index.current_seq("default")  # type: ignore[union-attr]
    await b.sync()
    await a.sync()
    assert await server.service.index.current_seq("default") == seq  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_a_file_becomes_a_folder_and_a_folder_a_file(folders: Any, server: RunningServer) -> None:
    """
    What was at a path is deleted first; what is there now is new after.
    """
    a, b = folders("a"), folders("b")
    (a.root / "x").write_text("a file")
    (a.root / "y").mkdir()
    await a.sync()
    await b.sync()
    assert (b.root / "x").is_file() and (b.root / "y").is_dir()
    (a.root / "x").unlink()
    (a.root / "x").mkdir()
    (a.root / "y").rmdir()
    (a.root / "y").write_text("a file now")
    await a.sync()
    assert (server.box / "x").is_dir() and (server.box / "y").read_text() == "a file now"
    await b.sync()
    assert (b.root / "x").is_dir() and (b.root / "y").read_text() == "a file now"
    assert b.state.get("x").folder and not b.state.get("y").folder


@pytest_twisted.ensureDeferred
async def test_the_cursor_moves_past_the_clients_own_commits(
    folders: Any, server: RunningServer, http: Any
) -> None:
    a = folders("a")
    for name in ("one", "two", "three"):
        (a.root / name).write_text(name)
    await a.sync()
    assert a.state.cursor == 3
    # Its own delete too; then another client's commit, which it hears.
    (a.root / "one").unlink()
    await put(http, server, "other", b"other", base=0)
    await a.sync()
    assert a.state.cursor == 5 and (a.root / "other").read_text() == "other"

@pytest_twisted.ensureDeferred
async def test_download_over_a_local_edit_keeps_a_conflict_copy(
    folders: Any, reactor: Any, server: RunningServer, http: Any
) -> None:
    a = folders("a")
    (a.root / "doc.txt").write_text("base")
    await a.sync()
    # The server moves on while the local copy is edited too.
    record = await json_of(await put(http, server, "doc.txt", b"theirs", base=1))
    (a.root / "doc.txt").write_text("mine")
    await a.sync()
    copies = sorted(p.name for p in a.root.glob("doc.conflict-a-*.txt"))
    assert len(copies) == 1
    assert (a.root / "doc.txt").read_text() == "theirs"
    assert (a.root / copies[0]).read_text() == "mine"
    assert a.state.get("doc.txt").seq == record["seq"]
    # The conflict copy reached the box like any file.
    assert (server.box / copies[0]).read_text() == "mine"


@pytest_twisted.ensureDeferred
async def test_remote_delete_of_a_locally_edited_file_keeps_the_edit(
    folders: Any, reactor: Any, server: RunningServer, http: Any
) -> None:
    a = folders("a")
    (a.root / "keep.txt").write_text("v1")
    (a.root / "gone.txt").write_text("v1")
    await a.sync()
    for path in ["keep.txt", "gone.txt"]:
        base = a.state.get(path).seq
        response = await http.delete(server.file_url(path), headers=server.headers(X_Boxsync_Base=str(base)))
        assert response.code == 200
    (a.root / "keep.txt").write_text("v2, edited after the delete")
    await a.sync()
    assert not (a.root / "gone.txt").exists()
    assert (server.box / "keep.txt").read_text() == "v2, edited after the delete"
    assert tree(a.root) == tree(server.box)


@pytest_twisted.ensureDeferred
async def test_stale_upload_becomes_a_conflict_copy(
    folders: Any, reactor: Any, server: RunningServer, http: Any
) -> None:
    a = folders("a")
    (a.root / "race.txt").write_text("v1")
    await a.sync()
    engine = a.engine()
    # Another client commits between our scan and our upload.
    await put(http, server, "race.txt", b"theirs", base=1)
    (a.root / "race.txt").write_text("ours")
    await timed(engine.submit("race.txt", lambda: engine._local_change("race.txt")), reactor)
    copies = list(a.root.glob("race.conflict-a-*.txt"))
    assert len(copies) == 1 and copies[0].read_text() == "ours"
    await a.sync()
    assert (a.root / "race.txt").read_text() == "theirs"
    assert tree(a.root) == tree(server.box)


@pytest_twisted.ensureDeferred
async def test_a_new_file_another_client_committed_first_is_a_conflict_only_if_it_differs(
    folders: Any, reactor: Any, server: RunningServer, http: Any
) -> None:
    """
    A file new here (no base) goes up while another client commits the
    same path first: refused as stale, it is compared with theirs by the
    resync's plan. The same bytes are no conflict (before, they made a
    conflict copy of identical content); other bytes still are.
    """
    a = folders("a")
    await a.sync()
    engine = a.engine()
    for path, ours, theirs in [("same.txt", b"same", b"same"), ("other.txt", b"ours", b"theirs")]:
        assert (await put(http, server, path, theirs)).code == 201
        (a.root / path).write_bytes(ours)
        await timed(engine.submit(path, lambda: engine._local_change(path)), reactor)
    assert list(a.root.glob("*.conflict-*")) == []
    await a.sync()
    [copy] = a.root.glob("*.conflict-*")
    assert copy.name.startswith("other.conflict-a-") and copy.read_bytes() == b"ours"
    assert (a.root / "same.txt").read_bytes() == b"same" and (a.root / "other.txt").read_bytes() == b"theirs"
    assert tree(a.root) == tree(server.box)


@pytest_twisted.ensureDeferred
async def test_an_upload_whose_answer_was_lost_is_no_conflict(
    folders: Any, reactor: Any, server: RunningServer, monkeypatch: Any
) -> None:
    """
    The server commits an upload whose answer never comes (the connection
    drops, the server stops); the file is edited again and sent from the
    old base, refused as stale: the server's version is found to be this
    client's own, so the edit goes up from it, with no conflict copy.
    """
    a = folders("a")
    (a.root / "lost.txt").write_text("v1")
    await a.sync()
    engine = a.engine()
    real = Transfers.upload

    async def answer_lost(self: Transfers, *args: Any, **kwargs: Any) -> Any:
        await real(self, *args, **kwargs)
        raise ResponseNeverReceived([Failure(ConnectionLost())])

    monkeypatch.setattr(Transfers, "upload", answer_lost)
    (a.root / "lost.txt").write_text("v2")
    await timed(engine.submit("lost.txt", lambda: engine._local_change("lost.txt")), reactor)
    monkeypatch.undo()
    assert (server.box / "lost.txt").read_text() == "v2"
    (a.root / "lost.txt").write_text("v3, edited after")
    await timed(engine.submit("lost.txt", lambda: engine._local_change("lost.txt")), reactor)
    await a.sync()
    assert list(a.root.glob("lost.conflict-*")) == []
    assert (server.box / "lost.txt").read_text() == "v3, edited after"
    assert tree(a.root) == tree(server.box)


@pytest_twisted.ensureDeferred
async def test_ignored_files_stay_local(folders: Any, reactor: Any, server: RunningServer) -> None:
    a = folders("a")
    (a.root / ".boxsyncignore").write_text("*.tmp\nbuild/\n")
    (a.root / "scratch.tmp").write_text("x")
    (a.root / "build").mkdir()
    (a.root / "build/out.o").write_text("x")
    (a.root / "kept.txt").write_text("x")
    await a.sync()
    assert set(tree(server.box)) == {".boxsyncignore", "kept.txt"}



@pytest_twisted.ensureDeferred
async def test_a_name_in_nfd_keeps_its_form_here_and_is_nfc_on_the_wire(
    folders: Any, server: RunningServer, http: Any
) -> None:
    """
    A file and a folder named in NFD (as from a Mac) reach the box under
    their NFC names; a new version comes back into the NFD-named file (no
    second copy), an edit made meanwhile is kept as a conflict copy, and a
    new file arrives in NFC.
    """
    nfd = unicodedata.normalize("NFD", "café")
    a = folders("a")
    (a.root / nfd).mkdir()
    (a.root / nfd / f"{nfd}.txt").write_text("from a Mac")
    await a.sync()
    assert tree(server.box) == {"café/café.txt": sha(b"from a Mac")}
    base = a.state.get("café/café.txt").seq
    await put(http, server, "café/café.txt", b"edited elsewhere", base=base)
    await put(http, server, "café/über.txt", b"new", base=0)
    await a.sync()
    assert sorted(os.listdir(a.root / nfd)) == sorted([f"{nfd}.txt", "über.txt"])
    assert (a.root / nfd / f"{nfd}.txt").read_text() == "edited elsewhere"
    # Both sides changed it: the local edit is kept, the server's version
    # takes the NFD name.
    base = a.state.get("café/café.txt").seq
    await put(http, server, "café/café.txt", b"theirs", base=base)
    (a.root / nfd / f"{nfd}.txt").write_text("mine")
    await a.sync()
    assert (a.root / nfd / f"{nfd}.txt").read_text() == "theirs"
    copies = [name for name in os.listdir(a.root / nfd) if ".conflict-a-" in name]
    assert len(copies) == 1 and (a.root / nfd / copies[0]).read_text() == "mine"
    assert tree(server.box)[f"café/{copies[0]}"] == sha(b"mine")
    assert not (a.root / "café").exists()

@pytest_twisted.ensureDeferred
async def test_cli_run_once(tmp_path: Path, reactor: Any, server: RunningServer, http: Any) -> None:
    await put(http, server, "from-server.txt", b"hello", base=0)
    options = parse(["--server", server.url, "--token", server.key, "--name", "cli", "--once", "-q", str(tmp_path / "cli")])
    from twisted.internet.defer import Deferred

    await timed(Deferred.fromCoroutine(run(reactor, options)), reactor)
    assert (tmp_path / "cli/from-server.txt").read_bytes() == b"hello"
    bad = parse(["--server", server.url, "--token", "nope", "--once", str(tmp_path / "cli2")])
    with pytest.raises(UserError, match="refused the token"):
        await timed(Deferred.fromCoroutine(run(reactor, bad)), reactor)


def test_parse_defaults_and_environment(tmp_path: Path) -> None:
    options = parse([], environ={"BOXSYNC_SERVER": "http://h:1/", "BOXSYNC_TOKEN": "t", "BOXSYNC_NAME": "n"})
    assert options == Options("http://h:1", "t", "n", Path("./box"), False, 0, 4, 300.0)
    options = parse(["--server", "http://x", "-vv", "--once", "--transfers", "2", str(tmp_path)], environ={})
    assert (options.server, options.verbosity, options.once, options.transfers) == ("http://x", 2, True, 2)
    with pytest.raises(SystemExit):
        parse(["--transfers", "0"], environ={})


def test_reporters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    assert isinstance(reporter_for(io.StringIO(), quiet=False), LogReporter)
    out = io.StringIO()
    rich = RichReporter(Console(file=out, force_terminal=True, width=100))
    rich.started("download", "a/b.bin", 1000)
    rich.progress("a/b.bin", 600)
    rich.finished("a/b.bin", "changed while sent")
    rich.message("hello there")
    rich.close()
    assert "hello there" in out.getvalue() and "changed while sent" in out.getvalue()
    from twisted.logger import Logger, formatEvent

    lines: list[str] = []
    monkeypatch.setattr(LogReporter, "log", Logger(observer=lambda event: lines.append(formatEvent(event))))
    log = LogReporter()
    log.started("upload", "x", 3)
    log.progress("x", 3)
    log.finished("x")
    log.finished("x")  # no longer running: nothing
    big = NOTED_START + 1
    log.started("download", "big.iso", big)
    log.finished("big.iso", "changed on the server meanwhile")
    log.started("download", "gone", 1)
    log.close()
    log.finished("gone")
    assert lines == [
        "uploaded x (3 bytes)",
        f"download big.iso ({big} bytes) started",
        f"downloaded big.iso ({big} bytes): changed on the server meanwhile",
    ]


def test_the_terminal_counts_what_batches_move() -> None:
    """
    A transfer in a batch reports no bytes as they move: once it ends well,
    it counts whole in the total all the same (not "0/22 bytes"), and the
    total counts the files; one that fails leaves the total.
    """
    import io

    from rich.console import Console

    out = io.StringIO()
    rich = RichReporter(Console(file=out, force_terminal=True, width=120))
    rich.started("upload", "small.txt", 22)
    rich.started("upload", "other.txt", 10)
    rich.started("download", "big.bin", 1000)
    rich.progress("big.bin", 400)
    rich.finished("small.txt")
    rich.finished("other.txt")
    rich.finished("big.bin", "failed")
    total = rich._progress.tasks[0]
    assert (total.completed, total.total) == (432, 432)
    assert total.description == "all transfers: 2 of 2 files"
    rich.close()
    assert "all transfers: 2 of 2 files" in out.getvalue()

def test_log_reporter_sums_up_a_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Past its burst of lines in a second, the log reporter sums up the
    transfers that ended well in one line per kind at the end of that
    second; one with a note still gets its own line, and a new second starts
    a new burst.
    """
    from twisted.internet.task import Clock
    from twisted.logger import Logger, formatEvent

    lines: list[str] = []
    monkeypatch.setattr(LogReporter, "log", Logger(observer=lambda event: lines.append(formatEvent(event))))
    clock = Clock()
    log = LogReporter(clock, burst=2)

    def move(kind: str, path: str, size: int, note: str | None = None) -> None:
        log.started(kind, path, size)
        log.finished(path, note)

    for i in range(5):
        move("download", f"d{i}", 10)
    move("upload", "u", 7)
    move("download", "bad", 3, "failed")
    move("download", "m0", 5, MOVED_BACK)
    move("download", "m1", 5, MOVED_BACK)
    clock.advance(0.5)
    move("download", "d5", 10)
    assert lines == ["downloaded d0 (10 bytes)", "downloaded d1 (10 bytes)", "downloaded bad (3 bytes): failed"]
    clock.advance(0.5)
    assert lines[3:] == [
        "downloaded 4 more files (40 bytes) in the last second",
        f"downloaded 2 more files (10 bytes) in the last second: {MOVED_BACK}",
        "uploaded 1 more file (7 bytes) in the last second",
    ]
    move("download", "d6", 10)
    move("download", "m2", 5, MOVED_BACK)
    move("download", "d8", 10)
    assert lines[6:] == ["downloaded d6 (10 bytes)", f"downloaded m2 (5 bytes): {MOVED_BACK}"]
    log.close()
    assert lines[8:] == ["downloaded 1 more file (10 bytes) in the last second"]
    assert clock.getDelayedCalls() == []
    assert isinstance(reporter_for(None, quiet=True, clock=clock), LogReporter)
    assert reporter_for(None, quiet=True, clock=clock, every_file=True).clock is None  # type: ignore[attr-defined]


def test_log_reporter_sums_up_a_burst_of_deletes(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Deletes share the burst with transfers: past it, they are summed up at
    the end of the second, files apart from folders and those made on the
    server apart from those made here. A live display shows each.
    """
    import io

    from rich.console import Console
    from twisted.internet.task import Clock
    from twisted.logger import Logger, formatEvent

    lines: list[str] = []
    monkeypatch.setattr(LogReporter, "log", Logger(observer=lambda event: lines.append(formatEvent(event))))
    clock = Clock()
    log = LogReporter(clock, burst=2)
    log.deleted("a.txt")
    log.started("upload", "u", 7)
    log.finished("u")
    for i in range(3):
        log.deleted(f"f{i}.txt")
    log.deleted("g.txt", on_server=True)
    log.deleted("g", on_server=True, folder=True)
    log.deleted("h", on_server=True, folder=True)
    assert lines == ["deleted a.txt", "uploaded u (7 bytes)"]
    clock.advance(1)
    assert lines[2:] == [
        "deleted 3 more files in the last second",
        "deleted 1 more file on the server in the last second",
        "deleted 2 more folders on the server in the last second",
    ]
    log.deleted("d", folder=True)
    log.deleted("e.txt", on_server=True)
    assert lines[5:] == ["deleted the folder d", "deleted e.txt on the server"]
    assert clock.getDelayedCalls() == []
    out = io.StringIO()
    rich = RichReporter(Console(file=out, force_terminal=True, width=100))
    for i in range(5):
        rich.deleted(f"r{i}", on_server=True, folder=True)
    rich.close()
    assert all(f"deleted the folder r{i} on the server" in out.getvalue() for i in range(5))


@pytest_twisted.ensureDeferred
async def test_many_identical_files_download_at_once(folders: Any, server: RunningServer) -> None:
    a, b = folders("a"), folders("b")
    for i in range(12):
        (a.root / f"copy{i}.bin").write_bytes(b"same bytes " * 50_000)
    (a.root / "empty").write_bytes(b"")
    await a.sync()
    await b.sync()
    assert tree(b.root) == tree(a.root) == tree(server.box)


@pytest_twisted.ensureDeferred
async def test_insync_for_a_file_edited_since_the_manifest_keeps_the_edit(
    folders: Any, server: RunningServer, http: Any
) -> None:
    from boxsync.wire import InSync

    a = folders("a")
    (a.root / "f.txt").write_text("the server's version")
    await a.sync()
    base = a.state.get("f.txt")
    engine = a.engine()
    # The manifest said "the server's version"; then the file was edited.
    engine._sent = {"f.txt": base.sha256}
    (a.root / "f.txt").write_text("edited after the scan")
    await timed(engine.submit("f.txt", lambda: engine._insync(InSync("f.txt", base.seq))), a.reactor)
    recorded = a.state.get("f.txt")
    assert recorded.sha256 == base.sha256 and recorded.seq == base.seq
    # The edit is not taken for the base: it goes up.
    await a.sync()
    assert (server.box / "f.txt").read_text() == "edited after the scan"


@pytest_twisted.ensureDeferred
async def test_a_change_reported_again_before_its_job_starts_is_looked_at_once(
    folders: Any, reactor: Any
) -> None:
    from twisted.internet.defer import Deferred

    looked: list[str] = []

    class Recording(Engine):
        async def _local_change(self, path: str) -> None:
            looked.append(path)

    a = folders("a")
    engine = Recording(reactor, a.root, a.api, a.state, IgnoreRules.load(a.root), LogReporter(), "a")
    held: Deferred[None] = Deferred()

    async def hold() -> None:
        await held

    busy = engine.submit("x", hold)
    engine.changed("x")
    engine.changed("x")
    engine.changed("y")
    assert looked == ["y"] and engine.pending == 2
    held.callback(None)
    await timed(busy, reactor)
    assert looked == ["y", "x"] and engine.pending == 0
    # Once its job has started, a new report is a new job.
    engine.changed("x")
    assert looked == ["y", "x", "x"]


@pytest_twisted.ensureDeferred
async def test_a_report_of_a_file_unchanged_since_its_base_makes_no_job(
    folders: Any, reactor: Any, server: RunningServer
) -> None:
    looked: list[str] = []

    class Recording(Engine):
        async def _local_change(self, path: str) -> None:
            looked.append(path)

    a, b = folders("a"), folders("b")
    (a.root / "d").mkdir()
    (a.root / "d/placed.txt").write_text("from a")
    await a.sync()
    await b.sync()
    engine = Recording(reactor, b.root, b.api, b.state, IgnoreRules.load(b.root), LogReporter(), "b")
    # The watcher's report of the file B has just placed: nothing to do.
    engine.changed("d/placed.txt")
    assert looked == [] and engine.pending == 0
    # The same file, touched since: its job looks at it.
    target = b.root / "d/placed.txt"
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 1))
    engine.changed("d/placed.txt")
    assert looked == ["d/placed.txt"]
    # Gone, or replaced by a folder: a job, too.
    target.unlink()
    engine.changed("d/placed.txt")
    (b.root / "d/placed.txt").mkdir()
    engine.changed("d/placed.txt")
    assert looked == ["d/placed.txt"] * 3


@pytest_twisted.ensureDeferred
async def test_large_transfers_wait_for_a_transfer_slot_small_ones_do_not(
    folders: Any, reactor: Any
) -> None:
    from twisted.internet.defer import Deferred

    a = folders("a")
    engine = a.engine(transfers=1, jobs=8)
    started: list[str] = []
    gates: dict[str, Deferred[None]] = {name: Deferred() for name in ("big1", "big2", "small")}

    def transfer(name: str, size: int) -> Deferred[str]:
        async def send() -> str:
            started.append(name)
            await gates[name]
            return name

        return Deferred.fromCoroutine(engine._transfers._move(size, send, send))

    big1 = transfer("big1", SMALL_FILE + 1)
    big2 = transfer("big2", SMALL_FILE + 1)
    small = transfer("small", SMALL_FILE)
    assert started == ["big1", "small"]
    gates["small"].callback(None)
    assert await timed(small, reactor) == "small"
    gates["big1"].callback(None)
    assert await timed(big1, reactor) == "big1"
    assert started == ["big1", "small", "big2"]
    gates["big2"].callback(None)
    assert await timed(big2, reactor) == "big2"


def settled(path: Path, size: int) -> bytes:
    """
    Write C{size} random bytes to C{path}, as if a while ago (a file written
    just now may still be being written, and is hashed before an upload).
    """
    data = os.urandom(size)
    path.write_bytes(data)
    old = time.time_ns() - 2 * SETTLED_NS
    os.utime(path, ns=(old, old))
    return data


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """
    The names of the files the scanner reads to hash them (or to cut them
    into blocks as it hashes them), as it does.
    """
    from boxsync.client import scanner

    names: list[str] = []
    for name in ("_hash_stable", "_cut"):
        real = getattr(scanner, name)

        def counting(local: Any, real: Any = real) -> Any:
            names.append(Path(local).name)
            return real(local)

        monkeypatch.setattr(scanner, name, counting)
    return names


@pytest_twisted.ensureDeferred
async def test_without_the_trailer_feature_every_file_is_hashed_first(
    folders: Any, server: RunningServer, monkeypatch: pytest.MonkeyPatch, hashed: list[str]
) -> None:
    """
    A server that does not list C{sha256-trailer} would keep a trailer as
    part of the file: the client then hashes every file before it uploads
    it, and sends its sha256 ahead.
    """
    from boxsync.client.api import BoxsyncAPI

    async def no_features(self: BoxsyncAPI) -> frozenset[str]:
        return frozenset()

    monkeypatch.setattr(BoxsyncAPI, "features", no_features)
    a = folders("a")
    data = settled(a.root / "big.bin", 3 * SMALL_FILE)
    await a.sync()
    assert hashed == ["big.bin"]
    assert (server.box / "big.bin").read_bytes() == data


@pytest_twisted.ensureDeferred
async def test_a_file_that_changed_as_it_was_hashed_and_sent_is_refused(
    folders: Any, server: RunningServer
) -> None:
    """
    Hashed as it is sent, a file that is no longer as it was when its size
    was taken, or that is shorter, commits nothing: the server is sent a
    sha256 that matches no bytes, as for a file that changed after hashing.
    """
    from twisted.web._newclient import RequestGenerationFailed, WrongBodyLength

    from boxsync.client.errors import APIError

    a = folders("a")
    local = a.root / "big.bin"
    local.write_bytes(os.urandom(3 * SMALL_FILE))
    assert {"sha256-trailer", "executable", "folders"} <= await a.api.features()
    with pytest.raises(APIError) as refused:
        await a.api.upload("big.bin", local, 0, None, None, hash_as_sent=True, unchanged=lambda: False)
    assert refused.value.status == 400 and "sha256" in refused.value.message
    with pytest.raises(RequestGenerationFailed) as short:
        await a.api.upload("big.bin", local, 0, None, None, size=4 * SMALL_FILE, hash_as_sent=True)
    assert short.value.reasons[0].check(WrongBodyLength)
    assert not (server.box / "big.bin").exists()
    result = await a.api.upload("big.bin", local, 0, None, None, hash_as_sent=True)
    assert result.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
    assert (server.box / "big.bin").read_bytes() == local.read_bytes()


@pytest_twisted.ensureDeferred
async def test_a_file_written_to_as_it_is_hashed_and_sent_is_hashed_first_then(
    folders: Any, server: RunningServer, monkeypatch: pytest.MonkeyPatch, hashed: list[str]
) -> None:
    """
    A new file sent unhashed that turns out to have changed as it was read
    (the server refuses it) is hashed first and sent again, in the same
    job: no resync, and the server has it whole.
    """
    from boxsync.client.api import BoxsyncAPI

    real_upload = BoxsyncAPI.upload
    real_features = BoxsyncAPI.features
    spoiled: list[str] = []

    async def features(self: BoxsyncAPI) -> frozenset[str]:
        # A server without blocks: large files move whole.
        return frozenset(await real_features(self)) - {"blocks"}

    monkeypatch.setattr(BoxsyncAPI, "features", features)

    async def upload(self: BoxsyncAPI, path: str, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("hash_as_sent") and not spoiled:
            spoiled.append(path)
            kwargs["unchanged"] = lambda: False  # as if written to meanwhile
        return await real_upload(self, path, *args, **kwargs)

    monkeypatch.setattr(BoxsyncAPI, "upload", upload)
    a = folders("a")
    data = settled(a.root / "big.bin", 3 * SMALL_FILE)
    engine = await a.sync()
    assert spoiled == ["big.bin"] and hashed == ["big.bin"]
    assert (server.box / "big.bin").read_bytes() == data
    assert engine.last_error is None


@pytest_twisted.ensureDeferred
async def test_a_new_file_is_read_once_before_its_upload(
    folders: Any, server: RunningServer, hashed: list[str]
) -> None:
    """
    The scan hashes a new small file for the manifest; the upload the plan
    asks for reuses that hash while the file's stat is unchanged, and reads
    it again only if it changed since. A new file that moves alone and was
    written a while ago is not read before its upload at all: it is hashed
    as it is sent, and its base has that hash.
    """
    from boxsync.client import scanner

    a = folders("a")
    data = settled(a.root / "big.bin", 3 * SMALL_FILE)
    settled(a.root / "small.txt", 5)
    # Written just now: it may still be being written, and is hashed first.
    (a.root / "fresh.bin").write_bytes(os.urandom(3 * SMALL_FILE))
    await a.sync()
    assert sorted(hashed) == ["fresh.bin", "small.txt"]
    assert (server.box / "big.bin").read_bytes() == data
    base = a.engine(once=True).state.get("big.bin")
    assert base is not None and base.sha256 == hashlib.sha256(data).hexdigest()
    # The scan's hash stands only while the file's stat is what it saw.
    engine = a.engine(once=True)
    (a.root / "new.txt").write_text("one")
    seen = scanner.scan_one(a.root, "new.txt", None)
    assert seen is not None
    reused = engine._looks.unchanged_since_scan(seen, None)
    assert reused is not None and reused.sha256 == seen.sha256 and reused.changed
    base = a.state.get("big.bin")
    big = scanner.scan_one(a.root, "big.bin", base)
    assert big is not None and engine._looks.unchanged_since_scan(big, base) == big
    (a.root / "new.txt").write_text("two, longer")
    assert engine._looks.unchanged_since_scan(seen, None) is None
    (a.root / "new.txt").unlink()
    assert engine._looks.unchanged_since_scan(seen, None) is None


@pytest_twisted.ensureDeferred
async def test_unfinished_downloads_that_cannot_resume_are_removed(
    folders: Any, server: RunningServer, http: Any
) -> None:
    import hashlib
    import time

    from boxsync.client.placing import TMP_DAYS

    b = folders("b")
    tmp = b.root / ".boxsync" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    old, recent = tmp / "dl-0-old", tmp / "dl-0-recent"
    for partial in (old, recent):
        partial.write_bytes(b"part")
    weeks_ago = time.time() - (TMP_DAYS + 1) * 86400
    os.utime(old, (weeks_ago, weeks_ago))
    # Of an earlier version of a.txt, superseded before it finished.
    where = hashlib.sha256(b"a.txt").hexdigest()[:16]
    superseded = tmp / f"dl-{where}-{'0' * 32}"
    superseded.write_bytes(b"half of an old version")
    assert (await put(http, server, "a.txt", b"the new version", base=0)).code == 201
    await b.sync()
    assert (b.root / "a.txt").read_bytes() == b"the new version"
    assert sorted(p.name for p in tmp.iterdir()) == ["dl-0-recent"]


@pytest_twisted.ensureDeferred
async def test_an_unfinished_download_of_a_file_deleted_since_is_removed(
    folders: Any, server: RunningServer, http: Any
) -> None:
    """
    B's download of gone.bin was cut short; the file is deleted on the
    server before B tries again: what came of it goes when B hears of the
    delete (before, it stayed in B's hidden folder, taking room, until a
    restart a week later).
    """
    b = folders("b")
    assert (await put(http, server, "keep.txt", b"kept", base=0)).code == 201
    await b.sync()
    content = os.urandom(2 * SMALL_FILE)
    created = await put(http, server, "gone.bin", content, base=0)
    assert created.code == 201
    where = hashlib.sha256(b"gone.bin").hexdigest()[:16]
    half = b.root / ".boxsync" / "tmp" / f"dl-{where}-{sha(content)[:32]}"
    half.write_bytes(content[: SMALL_FILE])
    seq = (await json_of(created))["seq"]
    response = await http.delete(server.file_url("gone.bin"), headers=server.headers(X_Boxsync_Base=str(seq)))
    assert response.code == 200
    await b.sync()
    assert tree(b.root) == tree(server.box)
    assert not half.exists()


@pytest_twisted.ensureDeferred
async def test_a_long_queue_of_jobs_that_finish_at_once_all_run(folders: Any, reactor: Any) -> None:
    """
    Thousands of jobs waiting for a slot, each finishing without waiting
    for anything (as the watcher's reports of files just downloaded do),
    all run: one job's end does not start the next inside itself, which
    would nest until Python's recursion limit and lose the jobs past it.
    """
    from twisted.internet.defer import Deferred, gatherResults

    a = folders("a")
    engine = a.engine(jobs=1, transfers=1)
    held: Deferred[None] = Deferred()
    ran: list[int] = []

    async def hold() -> None:
        await held

    async def quick(i: int) -> None:
        ran.append(i)

    jobs = [engine.submit("first", hold)]
    for i in range(3000):
        jobs.append(engine.submit(f"f{i}", lambda i=i: quick(i)))  # type: ignore[misc]
    assert ran == [] and engine.pending == 3001
    held.callback(None)
    await timed(gatherResults(jobs), reactor)
    assert ran == list(range(3000)) and engine.pending == 0


@pytest_twisted.ensureDeferred
async def test_a_download_is_never_placed_over_a_folder(folders: Any, reactor: Any) -> None:
    """
    A folder where a download goes is never written over: it is kept under
    a conflict name, whole, what it holds forgotten as synced (the box,
    which has a file there, deleted all of it: what is left was made or
    changed here since), and the download takes its place.
    """
    from boxsync.wire import Download

    a = folders("a")
    engine = a.engine()
    (a.root / "x/deeper").mkdir(parents=True)
    (a.root / "x/inside.txt").write_text("kept")
    (a.root / "x/deeper/synced.txt").write_text("edited here")
    a.state.put_many([Base("x/deeper/synced.txt", "1" * 64, 6, 1, 1, 3), Base("x0", "1" * 64, 6, 1, 1, 4)])
    temp = a.root / ".boxsync/tmp/dl-test"
    temp.write_text("server's x")
    await engine._actions.place(
        temp, a.root / "x", Download("x", "0" * 64, 10, 1, 5), DownloadResult("0" * 64, 10, 5), None
    )
    assert (a.root / "x").read_text() == "server's x" and a.state.get("x") is not None
    [kept] = [name for name in os.listdir(a.root) if name.startswith("x.conflict-")]
    assert tree(a.root / kept) == {"deeper/synced.txt": sha(b"edited here"), "inside.txt": sha(b"kept")}
    assert a.state.get("x/deeper/synced.txt") is None and a.state.get("x0") is not None


@pytest_twisted.ensureDeferred
async def test_a_version_that_cannot_be_had_whole_is_not_left_out_in_silence(
    folders: Any, server: RunningServer
) -> None:
    """
    The box's copy of a file changed behind the server's back (a disk's
    bit rot): every block of it B fetches is checked, and one does not
    match. No newer version comes to explain it, so B does not take the
    file for replaced meanwhile and call itself in sync without it: it
    syncs again, and says which file it could not get.
    """
    a, b = folders("a"), folders("b")
    (a.root / "big.bin").write_bytes(os.urandom(3 * 2**20))
    (a.root / "small.txt").write_bytes(b"fine")
    await a.sync()
    box_file = server.box / "big.bin"
    stamps = box_file.stat()
    with open(box_file, "r+b") as out:
        out.seek(2**20)
        out.write(b"\0" * 4096)
    os.utime(box_file, ns=(stamps.st_atime_ns, stamps.st_mtime_ns))
    with pytest.raises(NotInSync, match="big.bin: version [0-9]+ could not be had whole"):
        await b.sync()
    assert set(tree(b.root)) == {"small.txt"}


@pytest_twisted.ensureDeferred
async def test_a_file_gone_between_its_look_and_its_upload_is_no_failure(
    folders: Any, reactor: Any, server: RunningServer
) -> None:
    """
    A file renamed or removed right after it was looked at (a save through
    a temporary name): its upload, alone or in a batch, sends nothing for
    it and ends quietly, the other files of the batch going up. Before, the
    upload failed with C{FileNotFoundError}, or sent no bytes and was
    refused for its sha256, and either way the session started over.
    """
    from boxsync.client.batch import Batcher
    from boxsync.wire import BatchFile

    a = folders("a")
    engine = a.engine()
    (a.root / "tmp.txt").write_bytes(b"saved through a temporary name")
    file = await engine._look("tmp.txt", to_upload=True)
    assert file is not None
    os.unlink(a.root / "tmp.txt")
    await engine._actions.upload(file, 0)
    assert a.state.get("tmp.txt") is None and not (server.box / "tmp.txt").exists()

    batcher = Batcher(a.api, reactor, engine._thread)
    (a.root / "kept.txt").write_bytes(b"kept")
    (a.root / "gone.txt").write_bytes(b"gone")
    sent = [
        batcher.upload(BatchFile(name, len(data), sha(data), 1, 0), a.root / name)
        for name, data in (("kept.txt", b"kept"), ("gone.txt", b"gone"))
    ]
    os.unlink(a.root / "gone.txt")
    kept = await timed(sent[0], reactor)
    assert kept.seq > 0 and (server.box / "kept.txt").read_bytes() == b"kept"
    with pytest.raises(FileNotFoundError):
        await timed(sent[1], reactor)
    assert batcher.supported is True and not (server.box / "gone.txt").exists()


@pytest_twisted.ensureDeferred
async def test_a_box_file_a_default_rule_keeps_out_is_listed_until_it_is_gone(
    folders: Any, server: RunningServer, http: Any
) -> None:
    """
    A box file a default rule keeps from this folder (a C{*.part} put in
    the box through the web page) is not brought here, but listed with
    why, after a restart too (the box tells it once); no longer once it is
    deleted in the box. A box file the folder's own rules leave out is the
    user's word, not listed. Before, neither was said anywhere.
    """
    a = folders("a")
    (a.root / ".boxsyncignore").write_text("*.log\n")
    await a.sync()
    seqs = {}
    for path, data in [("movie.part", b"half a movie"), ("run.log", b"log"), ("ok.txt", b"ok")]:
        response = await put(http, server, path, data)
        assert response.code == 201
        seqs[path] = (await json_of(response))["seq"]
    engine = await a.sync()
    assert sorted(tree(a.root)) == [".boxsyncignore", "ok.txt"]
    [(path, why)] = engine.skipped.items()
    assert path == "movie.part" and "in the box" in why and "!*.part" in why
    assert len(engine.skipped) == 1
    engine = await a.sync()  # a restart: the box tells only what is new
    assert [path for path, _ in engine.skipped.items()] == ["movie.part"]
    response = await http.delete(
        server.file_url("movie.part"), headers=server.headers(X_Boxsync_Base=str(seqs["movie.part"]))
    )
    assert response.code in (200, 204)
    engine = await a.sync()
    assert len(engine.skipped) == 0
    assert len(a.engine(once=True).skipped) == 0 and a.state.left_in_box() == {}
