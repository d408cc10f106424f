"""
Another client's file arrives at a path where this client has a symbolic
link or a FIFO (neither of which is synced): the link or FIFO is kept, under
a conflict name, with a warning, never replaced in silence.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from boxsync.testing import Client, Server, tree, wait_until
from tests.faults import output, sha, stop_and_check
from tests.faults import server  # noqa: F401 (the fixture)


@pytest.mark.slow
def test_a_link_or_fifo_in_the_way_is_kept(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a")
    b = Client(server, tmp_path / "b", "b")
    b.folder.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("not in the box")
    (b.folder / "link.txt").symlink_to(outside)
    os.mkfifo(b.folder / "pipe")
    a.start()
    b.start()
    try:
        a.folder.mkdir(exist_ok=True)
        (a.folder / "link.txt").write_text("a's file")
        (a.folder / "pipe").write_text("a's other file")
        wait_until(
            lambda: tree(b.folder) == {"link.txt": sha(b"a's file"), "pipe": sha(b"a's other file")},
            what="a's files on b",
        )
        kept = {p.name: p for p in b.folder.iterdir() if ".conflict-b-" in p.name}
        links = [p for p in kept.values() if p.is_symlink()]
        fifos = [p for p in kept.values() if stat.S_ISFIFO(p.lstat().st_mode)]
        assert len(links) == 1 and os.readlink(links[0]) == str(outside), kept
        assert len(fifos) == 1 and fifos[0].name.startswith("pipe.conflict-b-"), kept
        assert outside.read_text() == "not in the box"
        assert output(b).count("was a link or a special file") == 2
    finally:
        a.kill()
        b.kill()
    stop_and_check(server, "link or FIFO in the way", 2, a.folder)
