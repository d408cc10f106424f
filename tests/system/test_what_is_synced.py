"""
What is synced besides a file's bytes, on real processes: whether a file is
executable (a change of that alone too, without sending the bytes again).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from boxsync.testing import Client, Server, tree, wait_until
from tests.faults import stop_and_check
from tests.faults import server  # noqa: F401 (the fixture)


def mode(path: Path) -> int | None:
    """
    The permission bits of the file at C{path}, or C{None} if there is none.
    """
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return None


@pytest.mark.slow
def test_the_executable_bit_travels_and_a_chmod_alone_too(tmp_path: Path, server: Server) -> None:
    a = Client(server, tmp_path / "a", "a").start()
    b = Client(server, tmp_path / "b", "b").start()
    try:
        script = a.folder / "run.sh"
        script.write_bytes(b"#!/bin/sh\necho synced\n")
        script.chmod(0o755)
        (a.folder / "notes.txt").write_text("not a program")
        (a.folder / "notes.txt").chmod(0o644)
        wait_until(
            lambda: mode(b.folder / "run.sh") == 0o755 and mode(b.folder / "notes.txt") == 0o644,
            what="run.sh executable on b",
        )
        assert (mode(server.box / "run.sh"), mode(server.box / "notes.txt")) == (0o755, 0o644)
        in_box = (server.box / "run.sh").stat().st_ino

        script.chmod(0o644)
        wait_until(lambda: mode(b.folder / "run.sh") == 0o644, what="b's run.sh to lose its x bits")
        assert mode(server.box / "run.sh") == 0o644
        # The bytes were not sent again: the box changed the mode of its file.
        assert (server.box / "run.sh").stat().st_ino == in_box
        assert tree(a.folder) == tree(b.folder) == tree(server.box)
    finally:
        a.kill()
        b.kill()
    stop_and_check(server, "executable bits", 2, a.folder, b.folder)
