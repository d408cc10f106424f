"""
Writers that race the sync: three clients editing the same few files at
once, and a file that changes while it is being uploaded.

The tests keep a log of every version they write, and an observer (an event
stream of its own) records every version the box commits; afterwards the
logs are checked against what the folders and the box hold.
"""

from __future__ import annotations

import errno
import os
import random
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import attrs
import pytest
import pytest_twisted
from attrs import define, field, frozen
from twisted.internet.defer import Deferred

from boxsync.client.placing import swap
from boxsync.fs import exchange
from boxsync.client.scanner import scan_one
from boxsync.paths import BadPath
from boxsync.wire import Conflict, Delete, Download, InSync, Upload
from boxsync.testing import Client, Server, tree, wait_until
from tests.conftest import KEY
from tests.faults import Observer, converged, copied_in_slowly, in_sync, output, record, sha, staged, temp_files
from tests.faults import server  # noqa: F401 (the fixture)
from tests.helpers import Folder, edit_keeping_stamps, running_server, timed


def replace_and_read(new: Path, target: Path) -> bytes | None:
    """
    Put the file C{new} at C{target} as an editor saving it does (a rename),
    and return exactly what it replaced (C{None}: nothing), with no window in
    which the sync could slip a download in unseen.
    """
    while True:
        try:
            # Swap the two atomically: new's name then holds the old file.
            exchange(new, target)
        except FileNotFoundError:
            try:
                os.link(new, target)  # unlike a rename, never replaces
            except FileExistsError:
                continue  # it appeared meanwhile: swap after all
            new.unlink()
            return None
        replaced = new.read_bytes()
        new.unlink()
        return replaced


@frozen
class Write:
    client: str
    path: str
    sha256: str
    replaced: str | None
    text: str


@define
class WriteLog:
    """
    Every version the writers wrote, with what each one replaced.
    """

    writes: list[Write] = field(factory=list)
    _lock: threading.Lock = field(factory=threading.Lock)

    def add(self, write: Write) -> None:
        with self._lock:
            self.writes.append(write)

    def written(self) -> set[str]:
        return {w.sha256 for w in self.writes}

    def replaced_by_a_writer(self) -> set[str]:
        return {w.replaced for w in self.writes if w.replaced is not None}


@pytest.fixture
def observer(server: Server) -> Iterator[Observer]:
    watching = Observer(server).start()
    try:
        yield watching
    finally:
        watching.stop()


FILES = ["notes.txt", "todo.txt", "deep/plan.txt"]
ROUNDS = 70  # per client: 210 versions in all


def writer(client: Client, log: WriteLog, seed: int, failures: list[BaseException]) -> None:
    """
    Write ROUNDS new versions of FILES into the client's folder, at random,
    as fast as a person saving in a hurry.
    """
    rng = random.Random(seed)
    scratch = client.folder.parent / f"scratch-{client.name}"
    scratch.mkdir(exist_ok=True)
    try:
        for n in range(ROUNDS):
            path = rng.choice(FILES)
            data = f"{client.name} {path} {n:04d} ".ljust(63, "~").encode() + b"\n"
            new = scratch / "new"
            new.write_bytes(data)
            target = client.folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            replaced = replace_and_read(new, target)
            was = None if replaced is None else sha(replaced)
            log.add(Write(client.name, path, sha(data), was, data.decode().rstrip("~\n")))
            time.sleep(rng.uniform(0, 0.15))  # pacing the writes, not a wait for the sync
    except BaseException as e:
        failures.append(e)


@pytest.mark.slow
def test_racing_writers_lose_nothing(tmp_path: Path, server: Server, observer: Observer) -> None:
    clients = [Client(server, tmp_path / name, name).start() for name in "abc"]
    log = WriteLog()
    failures: list[BaseException] = []
    try:
        threads = [
            threading.Thread(target=writer, args=(client, log, seed, failures))
            for seed, client in enumerate(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not failures, failures
        assert len(log.writes) == 3 * ROUNDS
        folders = [client.folder for client in clients]
        wait_until(lambda: converged(*folders, server.box), timeout=90, what="the folders to agree")
    finally:
        for client in clients:
            client.kill()
    final = tree(server.box)
    written = log.written()
    # Every file anywhere is a whole version someone wrote (no torn or
    # unknown content), and so is every version the box ever committed.
    assert set(final.values()) <= written
    assert observer.versions() <= written
    # Nothing lost: a version is still there (as the file or as a conflict
    # copy), or a writer replaced it knowing it (it read it back as what it
    # replaced). Nothing the sync replaced without keeping it.
    lost = written - set(final.values()) - log.replaced_by_a_writer()
    assert not lost, f"versions lost: {[w.text for w in log.writes if w.sha256 in lost]}"
    conflicts = [p for p in final if ".conflict-" in p]
    for folder in folders:
        assert not temp_files(folder)
    # The clients were killed mid-whatever: the server removes what they were
    # uploading once it has seen their connections end.
    wait_until(lambda: not staged(server.box), timeout=30, what="the staging folder to be empty")
    record(
        "racing writers",
        faults=len(log.writes),
        files=len(written) + len(final) * (len(folders) + 1),
    )
    print(f"{len(log.writes)} versions, {len(observer.versions())} committed, {len(conflicts)} conflict copies")


@pytest.mark.slow
def test_a_file_changing_while_it_is_uploaded_is_never_committed_torn(
    tmp_path: Path, server: Server, observer: Observer
) -> None:
    a = Client(server, tmp_path / "a", "a")
    a.folder.mkdir()
    log_file = a.folder / "app.log"
    rng = random.Random(7)
    header = b"entries: 00000000\n"
    body = bytearray(os.urandom(16 * 2**20))
    status = b"status: step 0000\n"
    log_file.write_bytes(header + body + status)
    states = {sha(header + body + status)}
    a.start()
    try:
        # A log: each step, by a writer that opens the file, writes and closes
        # it, overwrites the status line at its end with a new entry and a new
        # status line; every third step also updates the header at its start.
        # An upload that read the file while it changed would send a mix.
        for step in range(1, 61):
            entry = f"{step:04d} ".encode() + os.urandom(32 * 1024).hex().encode() + b"\n"
            with open(log_file, "r+b") as f:
                f.seek(len(header) + len(body))
                status = f"status: step {step:04d}\n".encode()
                f.write(entry + status)
                body += entry
                if step % 3 == 0:
                    header = f"entries: {step:08d}\n".encode()
                    f.seek(0)
                    f.write(header)
            states.add(sha(header + body + status))
            time.sleep(rng.uniform(0.01, 0.08))  # the writer's pace, not a wait for the sync
        final = sha(header + body + status)
        # Once it is stable, the client uploads it again.
        wait_until(lambda: tree(server.box).get("app.log") == final, timeout=60, what="the last version")
    finally:
        a.kill()
    committed = observer.versions("app.log")
    torn = committed - states
    assert not torn, f"{len(torn)} versions committed that the file never was"
    assert not staged(server.box)
    print(f"{len(states)} states, {len(committed)} committed, {output(a).count('changed while sent')} sent while changing")
    record("file changing while uploaded", faults=60, files=len(committed))


def test_swap_keeps_an_edit_saved_after_the_look(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("base")
    seen = scan_one(tmp_path, "f.txt", None)
    # An editor saves a new version between the engine's look and its move.
    (tmp_path / "saved").write_text("edit")
    os.rename(tmp_path / "saved", target)
    download = tmp_path / "download"
    download.write_text("download")
    # Seen changed: nothing is moved, and the engine looks again (and keeps
    # the edit as a conflict copy).
    with pytest.raises(FileExistsError):
        swap(download, target, seen, tmp_path)
    assert target.read_text() == "edit" and download.read_text() == "download"


def test_swap_sees_an_edit_with_its_stamps_kept(tmp_path: Path) -> None:
    """
    An edit in place whose mtime is set back since the look is not taken
    for the file seen (only its ctime moved): nothing is replaced.
    """
    target = tmp_path / "f.txt"
    target.write_text("base")
    seen = scan_one(tmp_path, "f.txt", None)
    edit_keeping_stamps(target, b"edit")
    download = tmp_path / "download"
    download.write_text("download")
    with pytest.raises(FileExistsError):
        swap(download, target, seen, tmp_path)
    assert target.read_text() == "edit" and download.read_text() == "download"


def test_swap_replaces_what_it_saw(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("base")
    seen = scan_one(tmp_path, "f.txt", None)
    download = tmp_path / "download"
    download.write_text("download")
    assert swap(download, target, seen, tmp_path) is None
    assert target.read_text() == "download" and not download.exists()


def test_swap_never_replaces_a_file_that_appeared(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    download = tmp_path / "download"
    download.write_text("download")
    target.write_text("new here")  # after a look that found nothing
    with pytest.raises(FileExistsError):
        swap(download, target, None, tmp_path)
    assert target.read_text() == "new here" and download.exists()
    target.unlink()
    assert swap(download, target, None, tmp_path) is None
    assert target.read_text() == "download" and not download.exists()


@pytest_twisted.ensureDeferred
async def test_plan_entries_older_than_an_upload_change_nothing(reactor: Any, tmp_path: Path) -> None:
    # A plan is made from the manifest; by the time its entries run, this
    # client may have uploaded the file again (a change its watcher
    # reported). The entries about the older version have nothing left to
    # do: no upload from the old base, no conflict copy, no old download.
    async with running_server(reactor, tmp_path / "box", KEY) as server:
        folder = Folder(reactor, server, tmp_path / "a", "a")
        log_file = folder.root / "app.log"
        engine = folder.engine()

        async def run(job: Any) -> None:
            await timed(Deferred.fromCoroutine(job), reactor)

        try:
            log_file.write_bytes(b"one\n")
            await run(engine._local_change("app.log"))
            first = folder.state.get("app.log")
            log_file.write_bytes(b"one\ntwo\n")
            await run(engine._upload_event(Upload("app.log", 0)))
            assert folder.state.get("app.log").seq == 2  # type: ignore[union-attr]
            log_file.write_bytes(b"one\ntwo\nthree\n")
            old = Download("app.log", sha(b"one\n"), 4, first.mtime_ns, 1)  # type: ignore[union-attr]
            await run(engine._conflict_event(Conflict(*attrs.astuple(old))))
            await run(engine._download(old))
            await run(engine._insync(InSync("app.log", 1)))
            await run(engine._delete_local(Delete("app.log", 1)))
            assert folder.state.get("app.log").seq == 2  # type: ignore[union-attr]
            await run(engine._upload_event(Upload("app.log", 1)))
            assert tree(folder.root) == tree(server.box) == {"app.log": sha(b"one\ntwo\nthree\n")}
        finally:
            await folder.close()


def test_swap_makes_missing_folders_and_never_replaces_a_folder(tmp_path: Path) -> None:
    download = tmp_path / "download"
    download.write_text("download")
    deep = tmp_path / "a/b/c.txt"
    assert swap(download, deep, None, tmp_path) is None
    assert deep.read_text() == "download" and not download.exists()
    download.write_text("again")
    (tmp_path / "folder").mkdir()
    with pytest.raises(FileExistsError):
        swap(download, tmp_path / "folder", None, tmp_path)
    assert (tmp_path / "folder").is_dir() and download.exists()
    # Through a link to a folder outside: refused, nothing written there.
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "linked").symlink_to(outside)
    with pytest.raises(BadPath):
        swap(download, tmp_path / "linked/x/y.txt", None, tmp_path)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("cannot", [errno.ENOSYS, errno.EINVAL])
def test_swap_without_renameat2_still_never_replaces_what_appeared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cannot: int
) -> None:
    """
    Where the system or the file system has no C{renameat2}, a new file is
    placed by a hard link (which never replaces either), and a seen one by a
    plain rename.
    """
    from boxsync import fs

    def unavailable(a: Path, b: Path, flags: int) -> None:
        raise OSError(cannot, os.strerror(cannot))

    monkeypatch.setattr(fs, "_rename2", unavailable)
    download = tmp_path / "download"
    download.write_text("download")
    target = tmp_path / "d/f.txt"
    target.parent.mkdir()
    target.write_text("new here")
    with pytest.raises(FileExistsError):
        swap(download, target, None, tmp_path)
    assert target.read_text() == "new here" and download.exists()
    seen = scan_one(tmp_path, "d/f.txt", None)
    assert swap(download, target, seen, tmp_path) is None
    assert target.read_text() == "download" and not download.exists()
    download.write_text("deeper")
    assert swap(download, tmp_path / "e/g/h.txt", None, tmp_path) is None
    assert (tmp_path / "e/g/h.txt").read_text() == "deeper" and not download.exists()


@pytest.mark.slow
def test_a_file_copied_in_slowly_goes_up_once_whole(tmp_path: Path, server: Server, observer: Observer) -> None:
    """
    A file made in A's folder and written a piece every 0.3 s (a copy from
    a slow disk, a download saved as it comes), then closed, while A
    rescans its folder every half second: it goes up once, whole, when
    closed; B never has a part of it. Before, it went up 30 ms after it was
    made (quiet since its creation, though open), and again at each rescan
    that found it grown, and B got each part as a version of its own.
    """
    a = Client(server, tmp_path / "a", "a", rescan=0.5).start()
    b = Client(server, tmp_path / "b", "b", rescan=None).start()
    try:
        # Its first scan done (a file being written then would go up as it
        # is, as at any start: not what this test is about).
        wait_until(lambda: in_sync(a) and in_sync(b), what="a and b in sync")
        whole, seen = copied_in_slowly(a.folder / "video.bin", 6, b.folder / "video.bin")
    finally:
        a.kill()
        b.kill()
    assert seen <= {len(whole)}, sorted(seen)
    assert observer.versions("video.bin") == {sha(whole)}
