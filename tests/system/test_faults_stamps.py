"""
Edits that leave a file's size, mtime and inode as they were: an in-place
rewrite of the same length whose mtime is then set back, as C{cp -p},
C{rsync -t}, C{tar x} and editors that keep timestamps do. The ctime still
moves, on a client's folder and in the server's box alike, so neither side
takes the edit for the file it had.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from boxsync.testing import Client, Server, tree, wait_until
from tests.faults import copied_in_slowly, get, in_sync, index_rows, sha, stop_and_check
from tests.helpers import edit_keeping_stamps
from tests.faults import server  # noqa: F401 (the fixture)


@pytest.mark.slow
def test_client_edits_with_stamps_kept_are_synced(tmp_path: Path, server: Server) -> None:
    """
    Each such edit on A reaches B, live and across a restart of A; an edit
    B makes after it is an ordinary next version, with nothing overwritten.
    """
    a = Client(server, tmp_path / "a", "a")
    b = Client(server, tmp_path / "b", "b")
    a.folder.mkdir()
    target = a.folder / "doc.txt"
    target.write_bytes(b"A000")
    a.start()
    b.start()
    edits = [b"B000", b"C000", b"D000"]
    try:
        wait_until(lambda: tree(b.folder) == tree(a.folder) != {}, what="the first version on B")
        for data in edits:
            edit_keeping_stamps(target, data)
            wait_until(
                lambda: tree(b.folder).get("doc.txt") == sha(data), what=f"{data!r} on B"
            )
        # Across a restart of A: the edit is made while it is not running.
        a.stop()
        edit_keeping_stamps(target, b"E000")
        a.start()
        wait_until(lambda: tree(b.folder).get("doc.txt") == sha(b"E000"), what="the offline edit on B")
        # B's next edit replaces it everywhere, with no conflict copy: A had
        # nothing unsynced.
        (b.folder / "doc.txt").write_bytes(b"F0000")
        wait_until(lambda: tree(a.folder) == tree(b.folder) == {"doc.txt": sha(b"F0000")}, what="F on A")
    finally:
        a.kill()
        b.kill()
    stop_and_check(server, "edits with stamps kept, client", len(edits) + 1, a.folder, b.folder)


@pytest.mark.slow
def test_box_edit_with_stamps_kept_is_adopted(tmp_path: Path, server: Server) -> None:
    """
    A box file edited by hand that way while the server is down is hashed
    again when it starts: its ETag is the new content's, and a new client
    gets the new bytes.
    """
    a = Client(server, tmp_path / "a", "a", rescan=None)
    a.folder.mkdir()
    (a.folder / "doc.txt").write_bytes(b"A000")
    a.once()
    server.stop()
    edit_keeping_stamps(server.box / "doc.txt", b"B000")
    server.start()
    status, headers, body = get(server, "doc.txt")
    assert (status, body) == (200, b"B000")
    assert sha(b"B000") in str(headers["ETag"])
    fresh = Client(server, tmp_path / "fresh", "fresh", rescan=None)
    fresh.folder.mkdir()
    fresh.once()
    assert tree(fresh.folder) == {"doc.txt": sha(b"B000")}
    # Its ctime alone moving (same bytes, same mtime) makes no new version.
    server.stop()
    (seq_before,) = [row.seq for row in index_rows(server.box)[0] if row.path == "doc.txt"]
    os.chmod(server.box / "doc.txt", 0o644)
    server.start()
    stop_and_check(server, "edits with stamps kept, box", 1, fresh.folder)
    assert [row.seq for row in index_rows(server.box)[0] if row.path == "doc.txt"] == [seq_before]


@pytest.mark.slow
def test_box_edits_by_hand_while_the_server_runs_reach_every_client(tmp_path: Path) -> None:
    """
    A file edited by hand in the box while the server runs (one with its
    stamps kept among them), one put there and one removed: each reaches
    the client that synced the box, and one that joins after. Before, they
    waited for a restart of the server, and a client joining found the
    edited file was not the version it was told of, and tried again,
    forever.
    """
    server = Server(tmp_path / "box", options=["--look-interval", "0.5"]).start()
    a = Client(server, tmp_path / "a", "a", rescan=None)
    a.folder.mkdir()
    for name in ("doc.txt", "kept.txt", "gone.txt"):
        (a.folder / name).write_bytes(b"A000")
    a.start()
    try:
        wait_until(lambda: len(tree(server.box)) == 3, what="the files in the box")
        (server.box / "doc.txt").write_bytes(b"edited by hand")
        edit_keeping_stamps(server.box / "kept.txt", b"B000")
        (server.box / "new.txt").write_bytes(b"put by hand")
        os.unlink(server.box / "gone.txt")
        expected = {"doc.txt": sha(b"edited by hand"), "kept.txt": sha(b"B000"), "new.txt": sha(b"put by hand")}
        wait_until(lambda: tree(a.folder) == expected, what="the changes made by hand on a")
        b = Client(server, tmp_path / "b", "b", rescan=None)
        b.folder.mkdir()
        assert b.once().returncode == 0
        assert tree(b.folder) == expected
    finally:
        a.kill()
    stop_and_check(server, "box edits by hand, server running", 4, a.folder, b.folder)


@pytest.mark.slow
def test_a_file_copied_into_the_box_by_hand_reaches_a_client_whole(tmp_path: Path) -> None:
    """
    A large file copied into the box by hand, slowly (a piece every 0.3 s,
    as a copy from a slow disk goes), while the server looks at the box
    every half second: the running client gets it once, whole, and never a
    part of it; the history holds one version. Before, each look made a
    version of what was written so far, and the client got each.
    """
    server = Server(tmp_path / "box", options=["--look-interval", "0.5"]).start()
    b = Client(server, tmp_path / "b", "b", rescan=None).start()
    try:
        wait_until(lambda: in_sync(b), what="b in sync")
        whole, seen = copied_in_slowly(server.box / "video.bin", 8, b.folder / "video.bin")
        assert seen <= {len(whole)}, sorted(seen)
        listed = subprocess.run(
            [sys.executable, "-m", "boxsync.client", "history", "video.bin", "--json", "--server", server.url,
             f"--token={server.key}"],
            capture_output=True, text=True, timeout=60,
        )
        assert [v["size"] for v in json.loads(listed.stdout)["versions"]] == [len(whole)], listed.stdout
    finally:
        b.kill()
        server.stop()
