"""
Changes of the ignore rules take effect both ways, on real processes: files
that stop being ignored are fetched at once by the other client (whose
cursor had passed them while it ignored them), files that become ignored
stay where they are, and a client's own list (C{.boxsync/ignore}) leaves
paths out of that client alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from boxsync.client.status import read_status
from boxsync.testing import Client, Server, tree, wait_until
from tests.faults import sha, stop_and_check
from tests.faults import server  # noqa: F401 (the fixture)


def status_of(client: Client) -> dict[str, object]:
    return read_status(client.folder) or {}


@pytest.mark.slow
def test_ignore_rules_changed_both_ways(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a")
    b = Client(server, tmp_path / "b", "b")
    for client in (a, b):
        client.folder.mkdir()
    (a.folder / ".boxsyncignore").write_text("*.log\n")
    (a.folder / "x.log").write_text("a's log")
    (a.folder / "keep.tmp").write_text("kept")
    (b.folder / ".boxsync").mkdir()
    (b.folder / ".boxsync/ignore").write_text("big/\n")
    (a.folder / "big").mkdir()
    (a.folder / "big/huge.bin").write_bytes(b"\0" * 4096)
    a.start()
    b.start()
    try:
        wait_until(lambda: "keep.tmp" in tree(b.folder), what="the first sync")
        assert "x.log" not in tree(server.box)
        # The rule goes: a sends x.log; b may hear of it before it has the
        # new rules (and pass it by), and gets it all the same.
        (a.folder / ".boxsyncignore").write_text("*.tmp\n")
        wait_until(lambda: tree(b.folder).get("x.log") == sha(b"a's log"), timeout=30, what="x.log on b")
        # keep.tmp is ignored now: it stays where it is, on both sides.
        assert tree(a.folder)["keep.tmp"] == tree(b.folder)["keep.tmp"] == sha(b"kept")
        # b's own list keeps big/ out of b alone.
        assert "big/huge.bin" in tree(server.box) and not (b.folder / "big").exists()
        # New rules are no trouble to show.
        wait_until(lambda: all(status_of(c).get("in_sync") for c in (a, b)), what="both in sync")
        assert [status_of(c).get("last_error") for c in (a, b)] == [None, None]
    finally:
        a.kill()
        b.kill()
    stop_and_check(server, "ignore rules changed", 1, b.folder)


@pytest.mark.slow
def test_a_path_no_longer_ignored_is_fetched_after_its_seq_went_by(tmp_path: Path, server: Server) -> None:
    """
    b ignores *.log while a (without that rule yet) uploads x.log: b's
    cursor passes its seq. When b's rule goes, b fetches it, live and
    without a restart.
    """
    a = Client(server, tmp_path / "a", "a")
    b = Client(server, tmp_path / "b", "b")
    for client in (a, b):
        (client.folder / ".boxsync").mkdir(parents=True)
    (b.folder / ".boxsync/ignore").write_text("*.log\n")
    a.start()
    b.start()
    try:
        (a.folder / "x.log").write_text("a's log")
        (a.folder / "after.txt").write_text("after")
        wait_until(lambda: "after.txt" in tree(b.folder), what="after.txt on b")
        assert "x.log" not in tree(b.folder)
        (b.folder / ".boxsync/ignore").write_text("")
        # b's own list is not watched: its next rescan (every 5 s here) sees it.
        wait_until(lambda: tree(b.folder).get("x.log") == sha(b"a's log"), timeout=30, what="x.log on b")
    finally:
        a.kill()
        b.kill()
    stop_and_check(server, "a path no longer ignored", 1, b.folder)
