"""
The server comes back with a box that is not the one a running client
synced with: an empty box folder where the box used to be (its disk not
mounted), or the box restored from a backup made before the client's last
changes, and maybe gone on from there with other clients' changes. To the
client, every file the box lacks looks deleted there. The client notices
(the box's id, the box's last change before its own cursor, or another
version where the box should have the one the client holds), forgets what
it knew of the old box, and compares every file with the new one as at a
first sync: it deletes nothing, and the box gets back what it lacks.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import attrs
import pytest

from boxsync.admin import run as admin
from boxsync.testing import Client, Server, tree, wait_until
from tests.faults import delete, get, output, put, sha
from tests.faults import server  # noqa: F401 (the fixture)


def write(folder: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)


def synced(folder: Path) -> set[str]:
    """
    The paths the client of C{folder} has recorded as synced (read while it
    runs, from its state file).
    """
    with closing(sqlite3.connect(f"file:{folder / '.boxsync/state.sqlite'}?mode=ro", uri=True)) as db:
        return {path for (path,) in db.execute("SELECT path FROM bases")}


def synced_around_a_backup(
    tmp_path: Path, server: Server, first: dict[str, bytes], later: dict[str, bytes], backup: Path | None
) -> Client:
    """
    A client A, running, that put C{first} into the box, then (once the
    server, stopped a moment, was copied to C{backup}, if given) C{later}.
    """
    a = Client(server, tmp_path / "a", "a")
    a.folder.mkdir()
    write(a.folder, first)
    a.start()
    try:
        wait_until(lambda: tree(server.box) == tree(a.folder), timeout=30, what="the box to have the files")
        if backup is not None:
            server.stop()
            shutil.copytree(server.box, backup, symlinks=True)
            server.start()
        write(a.folder, later)
        wait_until(lambda: tree(server.box) == tree(a.folder), timeout=30, what="the box to have the later files")
        # And A to have heard so: stopped before, it would not name its
        # history by them.
        wait_until(lambda: set(later) <= synced(a.folder), timeout=30, what="a to record the later files")
    except BaseException:
        a.kill()
        raise
    return a


@pytest.mark.parametrize("how", ["empty", "restored"])
def test_a_client_gives_a_box_that_lost_its_files_back_and_deletes_nothing(
    tmp_path: Path, server: Server, how: str
) -> None:
    first = {f"docs/f{n}.txt": f"file {n}\n".encode() for n in range(10)}
    later = {f"later/g{n}.txt": f"later {n}\n".encode() for n in range(5)}
    backup = tmp_path / "backup"
    a = synced_around_a_backup(tmp_path, server, first, later, backup if how == "restored" else None)
    try:
        everything = tree(a.folder)
        assert len(everything) == len(first) + len(later)
        server.stop()
        os.rename(server.box, tmp_path / "box-before")
        if how == "restored":
            os.rename(backup, server.box)
        else:
            server.box.mkdir()
        server.start()
        wait_until(lambda: tree(server.box) == everything, timeout=60, what="the box to have every file again")
        assert tree(a.folder) == everything
        assert "is not the one" in output(a)
    finally:
        a.stop()
    # A new client gets every file.
    b = Client(server, tmp_path / "b", "b")
    b.folder.mkdir()
    assert b.once().returncode == 0
    assert tree(b.folder) == everything


def test_a_box_restored_and_gone_on_past_a_client_s_changes_gets_them_back(tmp_path: Path, server: Server) -> None:
    """
    The box is restored from a backup made before A's last changes, and B
    commits more changes than A's since, before A comes back: the box's
    last change is past A's, so only the version A names its history by
    tells that the box's history is another. A's changes reach the box and
    B; A gets B's.
    """
    first = {f"docs/f{n}.txt": f"file {n}\n".encode() for n in range(5)}
    later = {f"later/g{n}.txt": f"later {n}\n".encode() for n in range(5)}
    from_b = {f"b/h{n}.txt": f"from b {n}\n".encode() for n in range(12)}
    a = synced_around_a_backup(tmp_path, server, first, later, tmp_path / "backup")
    a.stop()
    server.stop()
    os.rename(server.box, tmp_path / "box-before")
    os.rename(tmp_path / "backup", server.box)
    server.start()
    b = Client(server, tmp_path / "b", "b")
    b.folder.mkdir()
    write(b.folder, from_b)
    assert b.once().returncode == 0
    ran = Client(server, a.folder, "a").once()
    assert "went back to an earlier state" in ran.stdout + ran.stderr
    everything = {**first, **later, **from_b}
    assert tree(a.folder) == tree(server.box) == {path: sha(data) for path, data in everything.items()}
    assert b.once().returncode == 0
    assert tree(b.folder) == tree(server.box)


def test_a_box_restored_from_a_backup_gets_the_newer_versions_back_without_conflict_copies(
    tmp_path: Path, server: Server
) -> None:
    """
    A and B run; the box is backed up, A edits a file (B gets the edit),
    and the box is restored from the backup: both have a newer version than
    the box's, the one the box lost. It goes back up over the box's older
    one, which stays in the history; the file is no conflict on either
    side. Before, each client kept its copy as a conflict copy: two
    identical ones, and the file itself went back to the older version.
    """
    a, b = Client(server, tmp_path / "a", "a"), Client(server, tmp_path / "b", "b")
    write(a.folder, {"f.txt": b"v1\n", "g.txt": b"g\n"})
    a.start(), b.start()
    try:
        wait_until(lambda: tree(b.folder) == tree(a.folder) == tree(server.box), timeout=30, what="the first sync")
        server.stop()
        shutil.copytree(server.box, tmp_path / "backup", symlinks=True)
        server.start()
        write(a.folder, {"f.txt": b"v2, edited after the backup\n", "new.txt": b"new\n"})
        wait_until(lambda: tree(b.folder) == tree(a.folder) == tree(server.box), timeout=30, what="the edit")
        newer = tree(a.folder)
        server.stop()
        os.rename(server.box, tmp_path / "box-before")
        os.rename(tmp_path / "backup", server.box)
        server.start()
        wait_until(lambda: tree(server.box) == newer, timeout=60, what="the box to have the newer versions back")
        wait_until(lambda: tree(b.folder) == tree(a.folder) == newer, timeout=30, what="both to agree")
    finally:
        a.stop(), b.stop()
    assert "changed on both sides" not in output(a) + output(b)
    history = subprocess.run(
        [sys.executable, "-m", "boxsync.client", "history", "--server", server.url, f"--token={server.key}",
         "f.txt", "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert [v["sha256"] for v in json.loads(history.stdout)["versions"]] == [
        sha(b"v2, edited after the backup\n"), sha(b"v1\n")
    ]


def test_a_change_made_in_a_restored_box_is_still_a_conflict_with_the_version_it_lost(
    tmp_path: Path, server: Server
) -> None:
    """
    The box is restored from a backup made before A's edit, and the file
    is changed through the box before A comes back: that change is newer
    than the box's restore, not older than A's version, though its seq is
    below the last A had seen. A's copy is kept as a conflict copy, the
    box's change wins the name.
    """
    a = Client(server, tmp_path / "a", "a")
    a.folder.mkdir()
    write(a.folder, {"f.txt": b"v1\n", "g.txt": b"g\n"})
    a.once()
    server.stop()
    shutil.copytree(server.box, tmp_path / "backup", symlinks=True)
    server.start()
    write(a.folder, {"x.txt": b"x\n"})
    a.once()
    write(a.folder, {"f.txt": b"v2 of a\n"})
    a.once()
    server.stop()
    os.rename(server.box, tmp_path / "box-before")
    os.rename(tmp_path / "backup", server.box)
    server.start()
    _, headers, _ = get(server, "f.txt")
    status, _ = put(server, "f.txt", b"v3 through the box\n", base=int(headers["X-Boxsync-Seq"]))
    assert status == 201
    ran = a.once()
    assert "changed on both sides" in ran.stdout + ran.stderr
    files = tree(a.folder)
    assert files.pop("f.txt") == sha(b"v3 through the box\n")
    conflicts = {name: digest for name, digest in files.items() if ".conflict-" in name}
    assert list(conflicts.values()) == [sha(b"v2 of a\n")] and next(iter(conflicts)).startswith("f.conflict-a-")
    assert tree(server.box) == tree(a.folder)


def test_a_folder_moved_to_another_account_deletes_nothing_of_the_first(tmp_path: Path) -> None:
    """
    A folder synced with alice's box, then run with bob's token on the same
    server: bob's deletes are not of alice's files. Here bob's box has made
    and deleted a file of the same name, after more commits than alice's:
    taken as the same box, that delete would remove the folder's copy. The
    folder's files go to bob's box instead.
    """
    box = tmp_path / "box"
    tokens = {}
    for account in ("alice", "bob"):
        out, err = io.StringIO(), io.StringIO()
        assert admin(["token", "--box", str(box), "--account", account, "--client", "laptop"], out, err) == 0, err.getvalue()
        tokens[account] = out.getvalue().strip()
    alice = Server(box, key=tokens["alice"], options=["--tokens"]).start()
    bob = attrs.evolve(alice, key=tokens["bob"])
    try:
        folder = tmp_path / "laptop"
        folder.mkdir()
        write(folder, {"shared.txt": b"alice's\n"})
        Client(alice, folder, "laptop").once()
        status, made = put(bob, "shared.txt", b"bob's\n")
        assert status == 201
        for path in ("one.txt", "two.txt"):
            assert put(bob, path, path.encode())[0] == 201
        assert delete(bob, "shared.txt", int(made["seq"])) == 200  # type: ignore[call-overload]
        ran = Client(bob, folder, "laptop").once()
        assert (folder / "shared.txt").read_bytes() == b"alice's\n"
        assert "is not the one" in ran.stderr
        assert get(bob, "shared.txt")[2] == b"alice's\n"
    finally:
        alice.kill()
